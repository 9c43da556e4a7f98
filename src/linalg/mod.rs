//! Host linear algebra on faer, in f64 (and in f32 for the augmentation of f32 backends, checked
//! and redone in f64 where it falls short).
//!
//! The integrators need a handful of small dense decompositions per layer and step: a thin QR
//! of an n×2r basis, an SVD of a 2r×2r core (or a thin SVD of an m×2r factor), and the
//! truncation rule that picks the new rank. Burn has no thin QR worth using (burn-linalg forms
//! the full n×n Q), so these run on the host in faer. The n×2r transfer per layer and step is
//! small next to the layer's matrix products.
//!
//! - [`convert`]: Burn tensor ⇄ faer matrix, the only place the two meet.
//! - [`qr`]: thin QR and orthonormal bases ([`orth`]).
//! - [`gram`]: the host halves of decompositions that leave the tall factors on the device:
//!   CholeskyQR and the truncated SVD from Gram matrices, for phases batched across layers.
//! - [`svd`]: thin SVD with a typed non-convergence error.
//! - [`mod@truncate`]: the rank-selection rule ‖(σ_{r1+1}, …)‖₂ < ϑ‖σ‖₂ and its config, and the
//!   truncated SVD (from the Gram matrix's eigendecomposition where that is accurate enough).
#![allow(non_snake_case)]

pub mod convert;
pub mod gram;
pub mod qr;
pub mod svd;
pub mod truncate;

pub use convert::{from_faer, host_bytes, host_reads, host_time, read_all, to_faer, upload_all, HostTime};

/// Makes faer run sequentially. The matrices here are small (n×2r, 2r×2r): waking rayon's
/// threads for them costs more than the work (docs/performance-log.md).
/// Called before every decomposition; after the first call it is one atomic load.
pub(crate) fn sequential() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| faer::set_global_parallelism(faer::Par::Seq));
}

/// The element types of the host decompositions: f64, and f32 where the f32 form of a step
/// is accurate enough and checked ([`augment_basis`]).
pub trait HostFloat: faer::traits::RealField + Copy + Into<f64> {
    /// Machine epsilon of this type.
    const EPSILON: f64;
    /// Whether CholeskyQR2 retries as shifted CholeskyQR3 when its plain passes give up
    /// ([`cholesky_qr2`]): in f32, where that happens in training; f64 callers fall back to
    /// Householder instead.
    const SHIFTED_RETRY: bool;
    /// The nearest value of this type.
    fn of(x: f64) -> Self;
}

impl HostFloat for f64 {
    const EPSILON: f64 = f64::EPSILON;
    const SHIFTED_RETRY: bool = false;
    fn of(x: f64) -> Self {
        x
    }
}

impl HostFloat for f32 {
    const EPSILON: f64 = f32::EPSILON as f64;
    const SHIFTED_RETRY: bool = true;
    fn of(x: f64) -> Self {
        x as f32
    }
}

/// Whether the backend computes in f32 or less, where host results need only f32 accuracy
/// (the f32 augmentation, the Gram-matrix SVD).
pub(crate) fn single_precision<B: burn::tensor::backend::Backend>() -> bool {
    std::mem::size_of::<B::FloatElem>() <= 4
}

/// Column j of an owned (column-major) faer matrix as a slice, so loops over it vectorise
/// (faer's column iterators are strided and do not).
pub(crate) fn column<T: HostFloat>(m: &mut faer::Mat<T>, j: usize) -> &mut [T] {
    m.col_mut(j).try_as_col_major_mut().expect("an owned faer matrix is column-major").as_slice_mut()
}

pub use qr::{
    augment_basis, augment_f32_in_place, cholesky_qr2, householder_qr, orth, tensor_qr, thin_qr, ThinQr,
};
pub use svd::{thin_svd, Svd};
pub use truncate::{
    gram_svd, host_truncated_svd, truncate, truncated_svd, GramSvd, HostTruncatedSvd, TruncatedSvd,
    TruncationConfig,
};
