//! The integrators' updates batched across layers (all but LoRA's, which has no decomposition):
//! the tall factors never leave the device, and every layer of a phase shares each device→host read and each upload.
//!
//! ```text
//! (2) augment, after the K-step, per layer (K1 n×r, U0 n×r):
//!     device:   N0 = (I − U0U0ᵀ)² K1                        (classical Gram–Schmidt, twice)
//!     read 1:   U0ᵀU0, N0ᵀN0, the squared column norms of K1 (every layer in one tensor)
//!     host:     C = (3I − U0ᵀU0)/2 (one polar step), T1 = CholeskyQR(N0ᵀN0), or where N0
//!               is too ill-conditioned for that, shifted CholeskyQR (of N0ᵀN0 + sI)
//!     upload 1; device: U = U0 C, N1 = N0 T1, N2 = N1 − U (Uᵀ N1)
//!     read 2:   N2ᵀN2;  host: T2 = CholeskyQR(N2ᵀN2)
//!     upload 2; device: Û = [U | N2 T2], (3) S̄ = (Ûᵀ U0) S0
//!     after a shifted T1, N2 T2 is not orthonormal yet: read 3 and upload 3 repeat round 2
//!     for those layers only (shifted CholeskyQR3), and a fourth round when κ(N0) nears u⁻¹
//! (5) truncate, after the L-step, per layer (L1 m×2r):
//!     read 1:   L1ᵀL1 = Z Λ Zᵀ;  host: σ = √λ, r1 by the rule, Z_k = Z[:, :r1]
//!     upload 1; device: Y1 = L1 Z_k
//!     read 2:   Y1ᵀY1;  host: Y1 = Y R̃ (CholeskyQR), R̃ = P Σ Q̃ᵀ
//!     upload 2; device: U ← Û (Z_k Q̃), S ← Σ, V ← Y1 (R̃⁻¹ P)
//! ```
//!
//! The augmentation is [`crate::linalg::augment_basis`] with its tall products moved to the
//! device and CholeskyQR2 (shifted CholeskyQR3 where needed) done from Gram matrices
//! ([`crate::linalg::gram`]). The truncation
//! keeps U S Vᵀ = Û Z_k Z_kᵀ L1ᵀ, the projection of W1 = Û L1ᵀ onto the kept eigenvectors of
//! L1ᵀL1; the second round makes V orthonormal and Σ the exact singular values of that
//! projection, however accurate the eigenvalues were. A layer whose Gram matrices fail a check
//! (a remainder lost to round-off, not orthonormal after four rounds, kept σ too small for the
//! eigenvalues: σ_{r1} < 1e-3 σ₁ in f32) takes the exact per-layer path with its own reads;
//! [`batched_counts`] counts them.
//!
//! A non-finite K1, U0 or L1 shows up in the Gram matrices, which are read anyway, so the
//! per-layer finiteness reads of [`LowRankLinear::set_factors`] are skipped here. An abc-PSI
//! step so reads 2 values per pass (the loss) plus 2 per phase, whatever the number of
//! layers, and 1 more in an augmentation where some layer needs a shifted pass (in f32 from
//! κ ≈ 3e3). The host work per layer is k×k (k ≤ 2r) and runs side by side. `dlrt bench`'s
//! host QR and SVD columns then include the device products of each phase, which the reads
//! wait for.
//!
//! Parallel BUG ([`super::parallel_bug`]) augments its U and V bases with the same rounds
//! ([`augment_bases`], all bases of all layers together) and truncates its 2r×2r cores Ŝ in
//! one read ([`truncate_cores_all`]); rank-adaptive BUG ([`super::bug`]) does the same with
//! its augmentation after the L-pass and its truncation after the S-pass. PSI and bc-PSI take
//! their thin QRs of K1 and L1 from the Gram matrices too ([`qr_all`]: the rounds of an
//! augmentation without a basis, R the product of the passes' R factors).
//!
//! On the CPU the per-layer path is as fast (docs/performance-log.md, 2026-11-30), so this runs
//! by default only on a GPU ([`super::abc_psi::AbcPsi::batched`]).
#![allow(non_snake_case)]

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{backend::AutodiffBackend, Tensor};
use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::layers::LowRankLinear;
use crate::linalg::convert::HostClock;
use crate::linalg::gram::{cholesky_step, gram_truncation, next_pass, GramPass};
use crate::linalg::qr::departure;
use crate::linalg::single_precision;
use crate::linalg::{
    augment_basis, host_truncated_svd, read_all, tensor_qr, thin_svd, upload_all, TruncationConfig,
};
use crate::{Error, Result};

static LAYER_PHASES: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// How the batched phases have gone so far in this process: each fallback costs a GPU its own
/// device→host reads, so `dlrt bench` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchedCounts {
    /// Layer-phases (the augmentation of one basis, or one layer's truncation) that entered a
    /// batched phase.
    pub layer_phases: u64,
    /// Of those, the ones that took the exact per-layer path.
    pub fallbacks: u64,
}

impl std::ops::Sub for BatchedCounts {
    type Output = Self;
    fn sub(self, b: Self) -> Self {
        Self { layer_phases: self.layer_phases - b.layer_phases, fallbacks: self.fallbacks - b.fallbacks }
    }
}

/// The counts so far ([`BatchedCounts`]).
pub fn batched_counts() -> BatchedCounts {
    BatchedCounts {
        layer_phases: LAYER_PHASES.load(Ordering::Relaxed),
        fallbacks: FALLBACKS.load(Ordering::Relaxed),
    }
}

/// Records one phase of `layers` layers, `fallbacks` of which took the per-layer path.
fn count(layers: usize, fallbacks: usize) {
    LAYER_PHASES.fetch_add(layers as u64, Ordering::Relaxed);
    FALLBACKS.fetch_add(fallbacks as u64, Ordering::Relaxed);
}

fn non_finite(what: &str, i: usize) -> Error {
    Error::NonFinite { context: format!("abc-PSI {what} of low-rank layer {i}") }
}

/// Most Gram rounds of an augmentation: CholeskyQR2 takes two, shifted CholeskyQR3 three, and
/// a remainder with κ near u⁻¹ four ([`next_pass`]); beyond that, the per-layer path.
const MAX_ROUNDS: usize = 4;

/// An augmentation's remainder between its rounds.
struct Remainder<B: AutodiffBackend> {
    /// B0 after the polar step.
    U: Tensor<B, 2>,
    /// N0 times the passes so far.
    N: Tensor<B, 2>,
    /// Whether the last pass has been taken (N is orthonormal).
    done: bool,
}

/// One augmentation of a batched phase: orth([B0 | X]) = [B | N] for a low-rank layer.
pub struct Augmentation<B: AutodiffBackend> {
    /// The layer's index among the low-rank layers, for errors.
    pub layer: usize,
    /// What B0 and X are, for errors ("U0 or K1").
    pub names: &'static str,
    /// B0 (n×r), orthonormal.
    pub basis: Tensor<B, 2>,
    /// X (n×k).
    pub new: Tensor<B, 2>,
}

/// (2) and (3) for every layer: `items` holds each layer (factors U0, S0, V0) with its K1.
pub fn augment_all<B: AutodiffBackend>(items: &mut [(&mut LowRankLinear<B>, Tensor<B, 2>)]) -> Result<()> {
    let pairs: Vec<Augmentation<B>> = items
        .iter()
        .enumerate()
        .map(|(i, (layer, K1))| Augmentation {
            layer: i,
            names: "U0 or K1",
            basis: layer.u().clone(),
            new: K1.clone(),
        })
        .collect();
    let U_hats = augment_bases(&pairs, "abc-PSI")?;
    for ((layer, _), (U_hat, from_gram)) in items.iter_mut().zip(U_hats) {
        let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
        let S_bar = super::steps::bc_s_step(&U_hat, &U0, S0);
        match from_gram {
            true => layer.set_factors_checked_elsewhere(U_hat, S_bar, V0)?,
            false => layer.set_factors(U_hat, S_bar, V0)?,
        }
    }
    Ok(())
}

/// [B | N] = orth([B0 | X]) for every item, in the rounds of the module docs; an item the Gram
/// matrices do not serve goes through [`augment_basis`]. With each result, whether it came
/// from the Gram matrices (which were checked for finiteness).
pub fn augment_bases<B: AutodiffBackend>(
    items: &[Augmentation<B>],
    method: &str,
) -> Result<Vec<(Tensor<B, 2>, bool)>> {
    let Some(device) = items.first().map(|item| item.basis.device()) else {
        return Ok(Vec::new());
    };
    let _clock = HostClock::qr();
    // As augment_basis: a remainder column below this fraction of K1's norm is round-off.
    let sound = if single_precision::<B>() { 1e-6 } else { 1e-8 };
    // The unit round-off of the device products that form the Gram matrices.
    let u = if single_precision::<B>() { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
    let N0: Vec<Tensor<B, 2>> = items
        .iter()
        .map(|item| {
            let B0 = &item.basis;
            let mut N = item.new.clone();
            for _ in 0..2 {
                N = N.clone() - B0.clone().matmul(B0.clone().transpose().matmul(N));
            }
            N
        })
        .collect();
    let mut parts = Vec::with_capacity(3 * items.len());
    for (item, N) in items.iter().zip(&N0) {
        parts.push(item.basis.clone().transpose().matmul(item.basis.clone()));
        parts.push(N.clone().transpose().matmul(N.clone()));
        parts.push(item.new.clone().powi_scalar(2).sum_dim(0));
    }
    let host = read_all(&parts);
    let sizes: Vec<[usize; 2]> = items.iter().map(|item| item.new.dims()).collect();
    let first: Vec<Option<(Mat<f64>, Mat<f64>)>> = (0..items.len())
        .into_par_iter()
        .map(|i| {
            let (G_U, G_N, k2) = (&host[3 * i], &host[3 * i + 1], &host[3 * i + 2]);
            if !(G_U.is_all_finite() && G_N.is_all_finite() && k2.is_all_finite()) {
                let (layer, names) = (items[i].layer, items[i].names);
                return Err(Error::NonFinite {
                    context: format!("{method} augmentation ({names}) of low-rank layer {layer}"),
                });
            }
            let ([n, k], r) = (sizes[i], G_U.nrows());
            let sound_remainder = (0..k).all(|j| G_N[(j, j)].sqrt() > sound * k2[(0, j)].sqrt());
            if r + k > n || departure(G_U.as_ref()) >= 0.1 || !sound_remainder {
                return Ok(None);
            }
            let C = Mat::from_fn(r, r, |a, b| if a == b { 1.5 } else { 0.0 } - 0.5 * G_U[(a, b)]);
            Ok(next_pass(G_N.as_ref(), n, u, 1, MAX_ROUNDS).map(|pass| (C, pass.step.T)))
        })
        .collect::<Result<_>>()?;
    let mats: Vec<MatRef<'_, f64>> =
        first.iter().flatten().flat_map(|(C, T1)| [C.as_ref(), T1.as_ref()]).collect();
    let mut up = upload_all::<B>(&mats, &device).into_iter();
    let mut remainders: Vec<Option<Remainder<B>>> = Vec::with_capacity(items.len());
    for ((item, N), plan) in items.iter().zip(N0).zip(&first) {
        remainders.push(plan.as_ref().map(|_| {
            let (C, T1) = (up.next().expect("one C per plan"), up.next().expect("one T1 per plan"));
            Remainder { U: item.basis.clone().matmul(C), N: N.matmul(T1), done: false }
        }));
    }
    // Round 2 ends CholeskyQR2. A later round runs only while some layer needs it, for those
    // layers, in one read.
    for round in 2..=MAX_ROUNDS {
        let active: Vec<usize> =
            (0..items.len()).filter(|&i| remainders[i].as_ref().is_some_and(|x| !x.done)).collect();
        if active.is_empty() {
            break;
        }
        let mut grams = Vec::with_capacity(active.len());
        for &i in &active {
            let x = remainders[i].as_mut().expect("an active layer has a remainder");
            // The last pass magnified N's round-off along U too: project it off again.
            x.N = x.N.clone() - x.U.clone().matmul(x.U.clone().transpose().matmul(x.N.clone()));
            grams.push(x.N.clone().transpose().matmul(x.N.clone()));
        }
        let host = read_all(&grams);
        let passes: Vec<Option<GramPass>> = host
            .par_iter()
            .zip(&active)
            .map(|(G, &i)| next_pass(G.as_ref(), sizes[i][0], u, round, MAX_ROUNDS))
            .collect();
        let mats: Vec<MatRef<'_, f64>> = passes.iter().flatten().map(|p| p.step.T.as_ref()).collect();
        let mut up = upload_all::<B>(&mats, &device).into_iter();
        for (&i, pass) in active.iter().zip(&passes) {
            match pass {
                Some(pass) => {
                    let x = remainders[i].as_mut().expect("an active layer has a remainder");
                    x.N = x.N.clone().matmul(up.next().expect("one T per pass"));
                    x.done = pass.last;
                }
                None => remainders[i] = None,
            }
        }
    }
    let mut fallbacks = 0;
    let mut augmented = Vec::with_capacity(items.len());
    for (item, remainder) in items.iter().zip(remainders) {
        augmented.push(match remainder {
            Some(Remainder { U, N, done: true }) => (Tensor::cat(vec![U, N], 1), true),
            _ => {
                fallbacks += 1;
                (augment_basis(&item.new, &item.basis), false)
            }
        });
    }
    count(items.len(), fallbacks);
    Ok(augmented)
}

/// One result of [`qr_all`]: X = Q R.
pub struct BatchedQr<B: AutodiffBackend> {
    /// n×k, orthonormal columns.
    pub Q: Tensor<B, 2>,
    /// k×k, upper triangular.
    pub R: Tensor<B, 2>,
    /// Whether it came from the Gram matrices (which were checked for finiteness) rather than
    /// the per-layer QR.
    pub from_gram: bool,
}

/// One X of [`qr_all`] between its rounds.
struct QrRounds<B: AutodiffBackend> {
    /// X times the passes so far.
    X: Tensor<B, 2>,
    /// The product of the passes' R factors so far (X₀ = X R).
    R: Mat<f64>,
    /// Whether the last pass has been taken.
    done: bool,
}

/// Thin QR X = Q R of every X in `items` (PSI's and bc-PSI's fixed-rank steps), X n×k with
/// n ≥ k, in the rounds of [`augment_bases`] without a basis: read every XᵀX at once, upload
/// every pass T, X ← X T, until X is orthonormal (CholeskyQR2, or shifted CholeskyQR3 where a
/// column is nearly dependent), with R the product of the passes' R factors, uploaded with the
/// last T. An X the Gram matrices do not serve goes through [`tensor_qr`] (its own read).
/// `names(i)` names X_i in errors ("K1 of low-rank layer 2").
pub fn qr_all<B: AutodiffBackend>(
    items: &[Tensor<B, 2>],
    names: impl Fn(usize) -> String,
) -> Result<Vec<BatchedQr<B>>> {
    let Some(device) = items.first().map(|X| X.device()) else {
        return Ok(Vec::new());
    };
    let _clock = HostClock::qr();
    let u = if single_precision::<B>() { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
    let mut current: Vec<Option<QrRounds<B>>> = items
        .iter()
        .map(|X| {
            let [n, k] = X.dims();
            (k > 0 && n >= k).then(|| QrRounds { X: X.clone(), R: Mat::identity(k, k), done: false })
        })
        .collect();
    let mut results: Vec<Option<Tensor<B, 2>>> = vec![None; items.len()];
    for round in 1..=MAX_ROUNDS {
        let active: Vec<usize> =
            (0..items.len()).filter(|&i| current[i].as_ref().is_some_and(|c| !c.done)).collect();
        if active.is_empty() {
            break;
        }
        let grams: Vec<Tensor<B, 2>> = active
            .iter()
            .map(|&i| {
                let X = &current[i].as_ref().expect("an active item").X;
                X.clone().transpose().matmul(X.clone())
            })
            .collect();
        let host = read_all(&grams);
        if let Some(j) = host.iter().position(|G| !G.is_all_finite()) {
            return Err(Error::NonFinite { context: names(active[j]) });
        }
        let passes: Vec<Option<GramPass>> = host
            .par_iter()
            .zip(&active)
            .map(|(G, &i)| next_pass(G.as_ref(), items[i].dims()[0], u, round, MAX_ROUNDS))
            .collect();
        // X₀ = X R with R = R_k ⋯ R_1, the passes' R factors so far.
        for (&i, pass) in active.iter().zip(&passes) {
            if let Some(pass) = pass {
                let c = current[i].as_mut().expect("an active item");
                c.R = &pass.step.R * &c.R;
            }
        }
        // Every pass's T, then the R of every item whose last pass this is.
        let last =
            |(&i, pass): (&usize, &Option<GramPass>)| pass.as_ref().is_some_and(|p| p.last).then_some(i);
        let lasts: Vec<usize> = active.iter().zip(&passes).filter_map(last).collect();
        let mut mats: Vec<MatRef<'_, f64>> = passes.iter().flatten().map(|p| p.step.T.as_ref()).collect();
        mats.extend(lasts.iter().map(|&i| current[i].as_ref().expect("an item with a last pass").R.as_ref()));
        let mut up = upload_all::<B>(&mats, &device).into_iter();
        let T: Vec<Tensor<B, 2>> =
            passes.iter().flatten().map(|_| up.next().expect("one T per pass")).collect();
        let mut T = T.into_iter();
        for (&i, pass) in active.iter().zip(passes) {
            match pass {
                Some(pass) => {
                    let c = current[i].as_mut().expect("an active item");
                    c.X = c.X.clone().matmul(T.next().expect("one T per pass"));
                    if pass.last {
                        c.done = true;
                        results[i] = Some(up.next().expect("one R per last pass"));
                    }
                }
                None => current[i] = None,
            }
        }
    }
    let mut fallbacks = 0;
    let mut out = Vec::with_capacity(items.len());
    for ((X, c), R) in items.iter().zip(current).zip(results) {
        out.push(match (c, R) {
            (Some(QrRounds { X: Q, done: true, .. }), Some(R)) => BatchedQr { Q, R, from_gram: true },
            _ => {
                fallbacks += 1;
                let (Q, R) = tensor_qr(X);
                BatchedQr { Q, R, from_gram: false }
            }
        });
    }
    count(items.len(), fallbacks);
    Ok(out)
}

/// (5) for every layer: `items` holds each layer (U = Û) with its L1; `exact` truncates one
/// layer the per-layer way, for those the Gram matrices do not serve.
pub fn truncate_all<B: AutodiffBackend>(
    items: &mut [(&mut LowRankLinear<B>, Tensor<B, 2>)],
    cfg: &TruncationConfig,
    exact: impl Fn(&mut LowRankLinear<B>, Tensor<B, 2>) -> Result<()>,
) -> Result<()> {
    let Some(device) = items.first().map(|(layer, _)| layer.u().device()) else {
        return Ok(());
    };
    let _clock = HostClock::svd();
    let min_ratio = if single_precision::<B>() { 1e-3 } else { crate::linalg::truncate::GRAM_SVD_MIN_RATIO };
    let grams: Vec<Tensor<B, 2>> =
        items.iter().map(|(_, L1)| L1.clone().transpose().matmul(L1.clone())).collect();
    let host = read_all(&grams);
    let sizes: Vec<(usize, usize)> = items.iter().map(|(layer, _)| (layer.n(), layer.m())).collect();
    let first: Vec<Option<Mat<f64>>> = host
        .par_iter()
        .enumerate()
        .map(|(i, G)| {
            if !G.is_all_finite() {
                return Err(non_finite("L1", i));
            }
            let (n, m) = sizes[i];
            Ok(gram_truncation(G.as_ref(), cfg, n, m, min_ratio).map(|t| t.Z))
        })
        .collect::<Result<_>>()?;
    let mats: Vec<MatRef<'_, f64>> = first.iter().flatten().map(|Z| Z.as_ref()).collect();
    let mut up = upload_all::<B>(&mats, &device).into_iter();
    let Y1: Vec<Option<Tensor<B, 2>>> = items
        .iter()
        .zip(&first)
        .map(|((_, L1), k)| k.as_ref().map(|_| L1.clone().matmul(up.next().expect("one Z_k per plan"))))
        .collect();
    let grams: Vec<Tensor<B, 2>> =
        Y1.iter().flatten().map(|Y| Y.clone().transpose().matmul(Y.clone())).collect();
    let host = read_all(&grams);
    let kept: Vec<&Mat<f64>> = first.iter().flatten().collect();
    // Per layer of round 2: (Z_k Q̃, Σ, R̃⁻¹ P), or None for the exact path.
    let second: Vec<Option<[Mat<f64>; 3]>> = host
        .par_iter()
        .zip(kept)
        .map(|(G, Z)| {
            let step = cholesky_step(G.as_ref(), Some(0.5))?;
            let svd = thin_svd(step.R.as_ref(), "abc-PSI R̃").ok()?;
            let r1 = svd.sigma.len();
            let Sigma = Mat::from_fn(r1, r1, |i, j| if i == j { svd.sigma[i] } else { 0.0 });
            Some([Z * &svd.V, Sigma, &step.T * &svd.U])
        })
        .collect();
    let mats: Vec<MatRef<'_, f64>> =
        second.iter().flatten().flat_map(|f| f.iter().map(|m| m.as_ref())).collect();
    let mut up = upload_all::<B>(&mats, &device).into_iter();
    let mut second = second.into_iter();
    let mut fallbacks = 0;
    for ((layer, L1), Y1) in items.iter_mut().zip(Y1) {
        let factors = match Y1 {
            Some(Y1) => second.next().expect("one result per layer of round 2").map(|_| {
                let mut next = || up.next().expect("three factors per accepted layer");
                let (rot_U, Sigma, rot_V) = (next(), next(), next());
                (layer.u().clone().matmul(rot_U), Sigma, Y1.matmul(rot_V))
            }),
            None => None,
        };
        match factors {
            Some((U, S, V)) => layer.set_factors_checked_elsewhere(U, S, V)?,
            None => {
                fallbacks += 1;
                exact(layer, L1.clone())?
            }
        }
    }
    count(items.len(), fallbacks);
    Ok(())
}

/// A truncation W = Û Ŝ V̂ᵀ of a small core Ŝ (parallel BUG's step (4)) for one layer.
pub struct CoreTruncation<'a, B: AutodiffBackend> {
    /// The layer, whose factors become U ← Û P, S ← Σ, V ← V̂ Q.
    pub layer: &'a mut LowRankLinear<B>,
    /// Û (n×p), orthonormal.
    pub U_hat: Tensor<B, 2>,
    /// Ŝ (p×q).
    pub S_hat: Tensor<B, 2>,
    /// V̂ (m×q), orthonormal.
    pub V_hat: Tensor<B, 2>,
}

/// Truncates every layer's core Ŝ = P Σ Qᵀ by `cfg`, as [`super::steps::truncate_core`] does
/// per layer, with all cores in one read and all of P, Σ, Q in one upload.
pub fn truncate_cores_all<B: AutodiffBackend>(
    items: Vec<CoreTruncation<'_, B>>,
    cfg: &TruncationConfig,
    method: &str,
) -> Result<()> {
    let Some(device) = items.first().map(|item| item.S_hat.device()) else {
        return Ok(());
    };
    let _clock = HostClock::svd();
    let cores: Vec<Tensor<B, 2>> = items.iter().map(|item| item.S_hat.clone()).collect();
    let host = read_all(&cores);
    let f32_accuracy = single_precision::<B>();
    let svds = host
        .par_iter()
        .zip(&items)
        .enumerate()
        .map(|(i, (S_hat, item))| {
            let context = format!("{method} Ŝ of low-rank layer {i}");
            host_truncated_svd(S_hat.as_ref(), cfg, item.layer.n(), item.layer.m(), f32_accuracy, &context)
        })
        .collect::<Result<Vec<_>>>()?;
    let mats: Vec<MatRef<'_, f64>> =
        svds.iter().flat_map(|t| [t.P.as_ref(), t.Sigma.as_ref(), t.Q.as_ref()]).collect();
    let mut up = upload_all::<B>(&mats, &device).into_iter();
    for item in items {
        let mut next = || up.next().expect("P, Σ and Q per layer");
        let (P, Sigma, Q) = (next(), next(), next());
        item.layer.set_factors_checked_elsewhere(item.U_hat.matmul(P), Sigma, item.V_hat.matmul(Q))?;
    }
    count(svds.len(), 0);
    Ok(())
}
