//! Training passes: which leaves of a low-rank layer a forward/backward pass trains, and the
//! gradients it hands back.
//!
//! Each training pass evaluates the same W through different trainable leaves, so autodiff
//! returns the factor gradient an integrator needs (with G = ∇_W ℒ):
//!
//! | [`Pass`] | forward | leaves | gradients |
//! |---|---|---|---|
//! | `K` | x K Vᵀ, K = U S | K (n×r_v) | ∇_K = G V |
//! | `L` | x U Lᵀ, L = V Sᵀ | L (m×r_u) | ∇_L = Gᵀ U |
//! | `S` | x U S Vᵀ | S | ∇_S = Uᵀ G V |
//! | `Tangent` | x (K Vᵀ + U Lᵀ − U S Vᵀ) | K, L, S | G V, Gᵀ U, −Uᵀ G V |
//! | `Factors` | x U S Vᵀ | U, V | G V Sᵀ, Gᵀ U S |
//! | `Activations` | x U S Vᵀ + P, P = 0 | P (batch×m) | x and δ = ∇_P ℒ, so G = xᵀ δ |
//!
//! The `Activations` pass trains no factor: it records the layer's input x and the output
//! gradient δ, which an identity op on the output catches in the backward pass on the training
//! backends ([`super::capture`]) and the gradient of a zero probe P added to the output gives
//! elsewhere. From them [`FactorGrads::g_times`] and
//! [`FactorGrads::gt_times`] give G V and Gᵀ U for *any* basis after the pass, which lets an
//! integrator take two factor steps at the same W from one forward/backward pass.
//!
//! The bias is a leaf in every pass; the integrator decides in which pass it steps. A
//! [`Network`] exposes its layers to the training step, which calls
//! [`LowRankLinear::begin_pass`] before the forward and [`LowRankLinear::take_grads`] after the
//! backward.
//!
//! # Rank buckets
//!
//! [`LowRankLinear::begin_pass_bucketed`] with a bucket b > 1 pads U, S and V with zero columns
//! (and S with zero rows) to widths rounded up to a multiple of b ([`bucket_width`]) before
//! building the leaves, so a device compiles and tunes its kernels for a few widths rather than
//! for every rank the truncation picks. The padding changes no value: with U_p = [U | 0],
//! V_p = [V | 0] and S_p = [S 0; 0 0], every forward above computes the same z (x U_p S_p V_pᵀ
//! = x U S Vᵀ, K_p = U_p S_p = [K | 0], L_p = [L | 0]), and the leading r_u×r_v block of each
//! leaf's gradient is the unpadded gradient (∇_{K_p} = G V_p = [G V | 0], ∇_{S_p} = U_pᵀ G V_p,
//! ∇_{U_p} = G V_p S_pᵀ, …). [`LowRankLinear::take_grads`] slices that block back out, so
//! integrators, optimizers and checkpoints only ever see the true-rank factors.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    ops::PadMode,
    Tensor,
};
use serde::{Deserialize, Serialize};

use super::{contiguous, matmul, DenseLinear, LowRankLinear};

/// The forward parametrization a pass evaluates each low-rank layer in (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pass {
    /// `x K Vᵀ`, K = U S trainable.
    K,
    /// `x U Lᵀ`, L = V Sᵀ trainable.
    L,
    /// `x U S Vᵀ`, S trainable.
    S,
    /// `x (K Vᵀ + U Lᵀ − U S Vᵀ)`, K, L, S trainable: all tangent directions in one pass.
    Tangent,
    /// `x U S Vᵀ`, U and V trainable as free factors.
    Factors,
    /// Dense layers only: low-rank layers are evaluated as they are, with no leaf.
    Dense,
    /// `x U S Vᵀ` with no factor leaf: the pass records the layer's input x and output
    /// gradient δ, so the integrator can form G V and Gᵀ U for bases it builds afterwards.
    Activations,
}

/// A network a training step can drive: it exposes its low-rank and its dense layers.
pub trait Network<B: AutodiffBackend> {
    /// The low-rank layers, in a fixed order.
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>>;
    /// The dense (trainable, not low-rank) layers, in a fixed order.
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>>;
}

/// The gradients one pass produced for a layer's leaves (module docs).
#[derive(Clone, Debug, Default)]
pub struct FactorGrads<B: Backend> {
    /// ∇_K ℒ.
    pub k: Option<Tensor<B, 2>>,
    /// ∇_L ℒ.
    pub l: Option<Tensor<B, 2>>,
    /// ∇_S ℒ.
    pub s: Option<Tensor<B, 2>>,
    /// ∇_U ℒ.
    pub u: Option<Tensor<B, 2>>,
    /// ∇_V ℒ.
    pub v: Option<Tensor<B, 2>>,
    /// ∇_b ℒ.
    pub bias: Option<Tensor<B, 1>>,
    /// The layer's input x (rows of every call in the pass, stacked), `Activations` pass.
    pub input: Option<Tensor<B, 2>>,
    /// The gradient δ = ∂ℒ/∂z of the layer's output, rows matching `input`.
    pub output_grad: Option<Tensor<B, 2>>,
}

impl<B: Backend> FactorGrads<B> {
    /// `G V = xᵀ (δ V)` (n×k) for an m×k `v`, from an `Activations` pass.
    pub fn g_times(&self, v: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let (x, delta) = (self.input.as_ref()?, self.output_grad.as_ref()?);
        Some(matmul(x.clone().transpose(), matmul(delta.clone(), v.clone())))
    }

    /// `Gᵀ U = δᵀ (x U)` (m×k) for an n×k `u`, from an `Activations` pass.
    pub fn gt_times(&self, u: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let (x, delta) = (self.input.as_ref()?, self.output_grad.as_ref()?);
        Some(matmul(delta.clone().transpose(), matmul(x.clone(), u.clone())))
    }

    /// ∇_K ℒ = G V for the current V: the K leaf's gradient, or [`Self::g_times`] after an
    /// `Activations` pass.
    pub fn grad_k(&self, v: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.k.clone().or_else(|| self.g_times(v))
    }

    /// ∇_L ℒ = Gᵀ U for the current U: the L leaf's gradient, or [`Self::gt_times`] after an
    /// `Activations` pass.
    pub fn grad_l(&self, u: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.l.clone().or_else(|| self.gt_times(u))
    }
}

/// What an `Activations` pass records in the forward: each call's input and where its output
/// gradient δ arrives. Behind a mutex because `forward` takes `&self`.
pub(super) type Recorded<B> = Arc<Mutex<Vec<(Tensor<B, 2>, Probe<B>)>>>;

/// Where an `Activations` pass finds a call's output gradient δ.
#[derive(Clone, Debug)]
pub(super) enum Probe<B: Backend> {
    /// Caught by the identity op of [`super::capture`] on the training backends.
    Captured(super::capture::GradSlot),
    /// The gradient of a zero leaf added to the output, on other backends.
    Leaf(Tensor<B, 2>),
}

/// Trainable leaves of the current pass.
#[derive(Clone, Debug)]
pub(super) struct Leaves<B: Backend> {
    pub(super) pass: Pass,
    pub(super) k: Option<Tensor<B, 2>>,
    pub(super) l: Option<Tensor<B, 2>>,
    pub(super) s: Option<Tensor<B, 2>>,
    pub(super) u: Option<Tensor<B, 2>>,
    pub(super) v: Option<Tensor<B, 2>>,
    pub(super) bias: Option<Tensor<B, 1>>,
    pub(super) recorded: Option<Recorded<B>>,
    /// U, S, V zero-padded to the rank bucket (module docs), which the forward multiplies with
    /// in place of the layer's own; `None` when nothing is padded.
    pub(super) padded: Option<Padded<B>>,
}

/// A pass's zero-padded factors and the true widths (r_u, r_v) to slice gradients back to.
#[derive(Clone, Debug)]
pub(super) struct Padded<B: Backend> {
    pub(super) u: Tensor<B, 2>,
    pub(super) s: Tensor<B, 2>,
    pub(super) v: Tensor<B, 2>,
    pub(super) widths: (usize, usize),
}

/// The width a factor of rank `r` is padded to in bucket `bucket`: r rounded up to a multiple
/// of the bucket, but no more than `cap` (the layer's largest rank, min(n, m)) and never less
/// than r (an augmented basis may be wider than min(n, m)).
pub fn bucket_width(r: usize, bucket: NonZeroUsize, cap: usize) -> usize {
    r.next_multiple_of(bucket.get()).min(cap).max(r)
}

/// `t` (rows×cols) with zero rows and columns appended to `[rows, cols]`.
fn pad_zeros<B: Backend>(t: Tensor<B, 2>, [rows, cols]: [usize; 2]) -> Tensor<B, 2> {
    let [r, c] = t.dims();
    if [r, c] == [rows, cols] {
        return t;
    }
    t.pad([(0, rows - r), (0, cols - c)], PadMode::Constant(0.0))
}

impl<B: AutodiffBackend> LowRankLinear<B> {
    /// Makes the leaves of `pass` trainable (module docs); the next forward uses them.
    pub fn begin_pass(&mut self, pass: Pass) {
        self.begin_pass_bucketed(pass, NonZeroUsize::MIN);
    }

    /// [`Self::begin_pass`] with the factors zero-padded to widths that are multiples of
    /// `bucket` (module docs, "Rank buckets"); a bucket of 1 pads nothing.
    pub fn begin_pass_bucketed(&mut self, pass: Pass, bucket: NonZeroUsize) {
        let (ru, rv) = (self.u.dims()[1], self.v.dims()[1]);
        let cap = self.n().min(self.m());
        let (pu, pv) = (bucket_width(ru, bucket, cap), bucket_width(rv, bucket, cap));
        let padded = ((pu, pv) != (ru, rv)).then(|| Padded {
            u: pad_zeros(self.u.val(), [self.n(), pu]),
            s: pad_zeros(self.s.val(), [pu, pv]),
            v: pad_zeros(self.v.val(), [self.m(), pv]),
            widths: (ru, rv),
        });
        let (u, s, v) = match &padded {
            Some(p) => (p.u.clone(), p.s.clone(), p.v.clone()),
            None => (self.u.val(), self.s.val(), self.v.val()),
        };
        let leaf = |t: Tensor<B, 2>| Some(t.detach().require_grad());
        let mut leaves = Leaves {
            pass,
            k: None,
            l: None,
            s: None,
            u: None,
            v: None,
            bias: None,
            recorded: None,
            padded: None,
        };
        match pass {
            Pass::K => leaves.k = leaf(u.matmul(s)),
            Pass::L => leaves.l = leaf(v.matmul(s.transpose())),
            Pass::S => leaves.s = leaf(s),
            Pass::Tangent => {
                leaves.k = leaf(u.matmul(s.clone()));
                leaves.l = leaf(v.matmul(s.clone().transpose()));
                leaves.s = leaf(s);
            }
            Pass::Factors => {
                leaves.u = leaf(u);
                leaves.v = leaf(v);
            }
            Pass::Activations => leaves.recorded = Some(Recorded::default()),
            Pass::Dense => {}
        }
        leaves.bias = self.bias.as_ref().map(|b| b.val().detach().require_grad());
        leaves.padded = padded;
        self.leaves = Some(leaves);
    }

    /// The widths (U's, V's) of the factors the current pass's forward multiplies with: the
    /// rank bucket's widths while a padded pass is open, otherwise the layer's ranks.
    pub fn pass_widths(&self) -> (usize, usize) {
        match self.leaves.as_ref().and_then(|l| l.padded.as_ref()) {
            Some(p) => (p.u.dims()[1], p.v.dims()[1]),
            None => (self.u.dims()[1], self.v.dims()[1]),
        }
    }

    /// Drops this pass's leaves: the step was abandoned (a NaN loss).
    pub fn abort_pass(&mut self) {
        self.leaves = None;
    }

    /// The gradients of this pass's leaves, and the leaves' values (K0, L0, …) dropped.
    pub fn take_grads(&mut self, grads: &B::Gradients) -> FactorGrads<B> {
        let Some(l) = self.leaves.take() else {
            return FactorGrads::default();
        };
        // A padded leaf's gradient is cut back to its leading block, the unpadded gradient
        // (module docs); `block` gives that block's size from the leaf's and (r_u, r_v).
        let widths = l.padded.as_ref().map(|p| p.widths);
        let g2 = |t: Option<Tensor<B, 2>>, block: fn([usize; 2], (usize, usize)) -> [usize; 2]| {
            let g = Tensor::<B, 2>::from_inner(t?.grad(grads)?);
            // Autodiff hands back the gradient of a leaf used transposed in the forward (L in
            // x U Lᵀ, V in x U S Vᵀ) as a transposed view; element-wise ops on it would walk it
            // strided on the CPU.
            Some(contiguous(match widths {
                Some(w) => {
                    let [rows, cols] = block(g.dims(), w);
                    g.slice([0..rows, 0..cols])
                }
                None => g,
            }))
        };
        let (mut input, mut output_grad) = (None, None);
        if let Some(recorded) = l.recorded {
            let calls = std::mem::take(&mut *recorded.lock().expect("no panic while recording"));
            // A layer called k times in the pass has G = Σ xᵢᵀ δᵢ = [x₁; …]ᵀ [δ₁; …].
            let delta = |p: Probe<B>| match p {
                Probe::Captured(slot) => slot.take::<B>(),
                Probe::Leaf(p) => Some(Tensor::from_inner(p.grad(grads)?)),
            };
            let (xs, deltas): (Vec<_>, Vec<_>) =
                calls.into_iter().filter_map(|(x, p)| Some((x, delta(p)?))).unzip();
            let stack = |mut t: Vec<Tensor<B, 2>>| match t.len() {
                0 => None,
                1 => t.pop(),
                _ => Some(Tensor::cat(t, 0)),
            };
            (input, output_grad) = (stack(xs), stack(deltas));
        }
        FactorGrads {
            input,
            output_grad,
            k: g2(l.k, |[n, _], (_, rv)| [n, rv]),
            l: g2(l.l, |[m, _], (ru, _)| [m, ru]),
            s: g2(l.s, |_, (ru, rv)| [ru, rv]),
            u: g2(l.u, |[n, _], (ru, _)| [n, ru]),
            v: g2(l.v, |[m, _], (_, rv)| [m, rv]),
            bias: l.bias.and_then(|b| b.grad(grads)).map(Tensor::from_inner),
        }
    }
}
