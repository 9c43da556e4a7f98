//! Conversions between Burn tensors (row-major, backend element type) and faer matrices (f64,
//! or f32 for the f32 augmentation), and the counters `dlrt bench` reports about them.
//!
//! Every host decomposition goes through here, so this is where a device→host copy happens:
//! one per call, of the (small) matrix being decomposed. Elements are widened to f64 on the
//! host, which makes the decompositions accurate even when the backend computes in f32; only
//! [`super::augment_basis`] works on f32 data as it is, and checks what it gets.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{backend::Backend, ElementConversion, Tensor, TensorData};
use faer::{Mat, MatRef};

use super::HostFloat;

static HOST_READS: AtomicU64 = AtomicU64::new(0);

/// Device→host reads made so far by this process (decompositions, finiteness checks, loss
/// values): each is a synchronisation point on a GPU, so `dlrt bench` reports them per step.
pub fn host_reads() -> u64 {
    HOST_READS.load(Ordering::Relaxed)
}

static HOST_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes copied between device and host so far by this process, both ways (the reads of
/// [`host_reads`] and the uploads of host results): `dlrt bench` reports them per step.
pub fn host_bytes() -> u64 {
    HOST_BYTES.load(Ordering::Relaxed)
}

/// Records one device→host read of `bytes` bytes.
pub(crate) fn note_host_read(bytes: usize) {
    HOST_READS.fetch_add(1, Ordering::Relaxed);
    note_upload(bytes);
}

/// Records `bytes` bytes copied between host and device without a read (an upload).
pub(crate) fn note_upload(bytes: usize) {
    HOST_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

static QR_NANOS: AtomicU64 = AtomicU64::new(0);
static SVD_NANOS: AtomicU64 = AtomicU64::new(0);

/// Wall time spent so far by this process in the host decompositions on tensors, their
/// device↔host copies included, summed over calls (and so over layers that update side by
/// side): `dlrt bench` reports it per step to show where an update's time goes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostTime {
    /// Seconds in QR-type calls: [`super::augment_basis`], [`super::orth`], [`super::tensor_qr`].
    pub qr: f64,
    /// Seconds in [`super::truncated_svd`].
    pub svd: f64,
}

/// The host decompositions' time so far ([`HostTime`]).
pub fn host_time() -> HostTime {
    let secs = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 * 1e-9;
    HostTime { qr: secs(&QR_NANOS), svd: secs(&SVD_NANOS) }
}

/// Adds the time from its creation to its drop to one of the [`HostTime`] clocks, so that
/// every return path of a timed call is counted.
pub(crate) struct HostClock {
    clock: &'static AtomicU64,
    started: std::time::Instant,
}

impl HostClock {
    /// Times a QR-type call.
    pub(crate) fn qr() -> Self {
        Self { clock: &QR_NANOS, started: std::time::Instant::now() }
    }

    /// Times an SVD-type call.
    pub(crate) fn svd() -> Self {
        Self { clock: &SVD_NANOS, started: std::time::Instant::now() }
    }
}

impl Drop for HostClock {
    fn drop(&mut self) {
        self.clock.fetch_add(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Copies a rank-2 tensor to the host as an f64 faer matrix of the same shape.
///
/// This is a synchronisation point on asynchronous backends.
pub fn to_faer<B: Backend>(t: &Tensor<B, 2>) -> Mat<f64> {
    f64_matrix(&read(t))
}

/// A rank-2 tensor's values on the host (one device→host read, counted), with its shape.
pub(crate) fn read<B: Backend>(t: &Tensor<B, 2>) -> TensorData {
    let data = t.to_data();
    note_host_read(data.bytes.len());
    data
}

/// Several small matrices on the host from one device→host read (one synchronisation point
/// on a GPU, whatever their number), as f64 faer matrices of their shapes.
pub fn read_all<B: Backend>(parts: &[Tensor<B, 2>]) -> Vec<Mat<f64>> {
    if parts.is_empty() {
        return Vec::new();
    }
    let flat: Vec<Tensor<B, 1>> =
        parts.iter().map(|t| t.clone().reshape([t.dims()[0] * t.dims()[1]])).collect();
    let data = Tensor::cat(flat, 0).into_data();
    note_host_read(data.bytes.len());
    let values: Vec<f64> = match data.as_slice::<f32>() {
        Ok(v) => v.iter().map(|&x| x as f64).collect(),
        Err(_) => {
            data.convert::<f64>().into_vec::<f64>().expect("TensorData::convert::<f64> yields f64 storage")
        }
    };
    let mut offset = 0;
    parts
        .iter()
        .map(|t| {
            let [rows, cols] = t.dims();
            let m =
                MatRef::from_row_major_slice(&values[offset..offset + rows * cols], rows, cols).to_owned();
            offset += rows * cols;
            m
        })
        .collect()
}

/// Uploads several small host matrices in one host→device copy, then splits them on the
/// device (the counterpart of [`read_all`]).
pub fn upload_all<B: Backend>(mats: &[MatRef<'_, f64>], device: &B::Device) -> Vec<Tensor<B, 2>> {
    let total: usize = mats.iter().map(|m| m.nrows() * m.ncols()).sum();
    if total == 0 {
        return mats.iter().map(|m| Tensor::zeros([m.nrows(), m.ncols()], device)).collect();
    }
    let mut values: Vec<B::FloatElem> = Vec::with_capacity(total);
    for m in mats {
        for i in 0..m.nrows() {
            values.extend(m.row(i).iter().map(|&x| x.elem::<B::FloatElem>()));
        }
    }
    note_upload(total * std::mem::size_of::<B::FloatElem>());
    let all = Tensor::<B, 1>::from_data(TensorData::new(values, [total]), device);
    let mut offset = 0;
    mats.iter()
        .map(|m| {
            let (rows, cols) = (m.nrows(), m.ncols());
            let t = if rows * cols == 0 {
                Tensor::zeros([rows, cols], device)
            } else {
                all.clone().slice(offset..offset + rows * cols).reshape([rows, cols])
            };
            offset += rows * cols;
            t
        })
        .collect()
}

/// The values of `data` (rank 2) as an f64 faer matrix.
pub(crate) fn f64_matrix(data: &TensorData) -> Mat<f64> {
    let (rows, cols) = (data.shape[0], data.shape[1]);
    // faer transposes the row-major buffer into its column-major layout (per-element index
    // arithmetic here cost as much as the QR it feeds); f32 is widened first in one pass.
    if let Ok(values) = data.as_slice::<f64>() {
        return MatRef::from_row_major_slice(values, rows, cols).to_owned();
    }
    let widened: Vec<f64> = match data.as_slice::<f32>() {
        Ok(values) => values.iter().map(|&x| x as f64).collect(),
        Err(_) => data
            .clone()
            .convert::<f64>()
            .into_vec::<f64>()
            .expect("TensorData::convert::<f64> yields f64 storage"),
    };
    MatRef::from_row_major_slice(&widened, rows, cols).to_owned()
}

/// The values of `data` (rank 2) as an f32 faer matrix, without widening; `None` unless they
/// are stored as f32.
pub(crate) fn f32_matrix(data: &TensorData) -> Option<Mat<f32>> {
    let values = data.as_slice::<f32>().ok()?;
    Some(MatRef::from_row_major_slice(values, data.shape[0], data.shape[1]).to_owned())
}

/// Uploads a faer matrix (f64, or f32 from an f32 step) as a rank-2 tensor in the backend's
/// float type.
pub fn from_faer<B: Backend, T: HostFloat>(m: MatRef<'_, T>, device: &B::Device) -> Tensor<B, 2> {
    let (rows, cols) = (m.nrows(), m.ncols());
    // faer is column-major, Burn row-major: faer copies the transposed view, then one
    // sequential pass narrows to the backend's element type.
    let row_major = m.transpose().to_owned();
    let mut values: Vec<B::FloatElem> = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        values.extend(row_major.col(i).iter().map(|&x| x.into().elem::<B::FloatElem>()));
    }
    note_upload(values.len() * std::mem::size_of::<B::FloatElem>());
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn round_trip_keeps_layout_and_values() {
        let device = Default::default();
        let t = Tensor::<NdArray<f64>, 2>::from_data([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let m = to_faer(&t);
        assert_eq!((m.nrows(), m.ncols()), (2, 3));
        assert_eq!(m[(1, 0)], 4.0);
        assert_eq!(m[(0, 2)], 3.0);
        let back: Tensor<NdArray<f64>, 2> = from_faer(m.as_ref(), &device);
        assert_eq!(back.to_data(), t.to_data());
    }
}
