//! The gradient δ = ∂ℒ/∂z of a layer's output, caught as the backward pass goes through z.
//!
//! The one-pass form of abc-PSI records each layer's input x and output gradient δ
//! ([`super::Pass::Activations`]). Burn keeps gradients only for leaves, so the portable way
//! to get δ adds a zero leaf P to z and reads ∂ℒ/∂P = δ; that allocates, fills and adds a
//! [rows, m] tensor per layer and call and keeps it until the step reads the gradients (for a
//! ViT-B/16 adapter at batch 256, 150 MB each in f32). [`capture`] is an identity autodiff op
//! instead: its backward puts the incoming gradient in a slot and passes it on unchanged. A
//! one-element leaf beside z makes the op tracked even where nothing before z is trainable,
//! as the zero leaf did. The training backends are recognised at run time
//! ([`super::backends`]); on any other backend the caller keeps the zero leaf.

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::backends::as_backend;

/// Where [`capture`]'s backward leaves δ: a `Tensor<I, 2>` of the inner backend I, type-erased
/// so that layers generic over their backend can hold it.
#[derive(Clone, Debug, Default)]
pub struct GradSlot(Arc<Mutex<Option<Captured>>>);

/// The type-erased δ of a [`GradSlot`].
struct Captured(Box<dyn Any + Send>);

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Captured")
    }
}

impl GradSlot {
    /// δ, once the backward pass has gone through the op (and `None` before, or when the loss
    /// did not depend on z).
    pub fn take<B: AutodiffBackend>(&self) -> Option<Tensor<B, 2>> {
        let captured = self.0.lock().expect("no panic while capturing").take()?;
        let inner = captured.0.downcast::<Tensor<B::InnerBackend, 2>>().ok()?;
        Some(Tensor::from_inner(*inner))
    }
}

/// z unchanged, and the slot its gradient will arrive in, on the training backends (autodiff
/// over the CPU backend, and over CUDA with the `cuda` feature); `Err(z)` on any other.
pub fn capture<B: Backend>(z: Tensor<B, 2>) -> Result<(Tensor<B, 2>, GradSlot), Tensor<B, 2>> {
    let z = match capture_as::<B, Flex, NoCheckpointing>(z) {
        Err(z) => z,
        done => return done,
    };
    #[cfg(feature = "cuda")]
    let z = match capture_as::<B, burn::backend::Cuda, NoCheckpointing>(z) {
        Err(z) => z,
        done => return done,
    };
    Err(z)
}

/// [`capture_autodiff`] when `B` is `Autodiff<I, C>`; `Err(z)` untouched otherwise.
fn capture_as<B: Backend, I: Backend, C: CheckpointStrategy>(
    z: Tensor<B, 2>,
) -> Result<(Tensor<B, 2>, GradSlot), Tensor<B, 2>> {
    let (z, slot) = capture_autodiff(as_backend::<B, Autodiff<I, C>, 2>(z)?);
    let z = as_backend::<Autodiff<I, C>, B, 2>(z).expect("B is Autodiff<I, C>");
    Ok((z, slot))
}

/// The identity on `Autodiff<I, C>` whose backward stores the gradient of its output in the
/// returned slot (module docs).
pub fn capture_autodiff<I: Backend, C: CheckpointStrategy>(
    z: Tensor<Autodiff<I, C>, 2>,
) -> (Tensor<Autodiff<I, C>, 2>, GradSlot) {
    let trigger = Tensor::<Autodiff<I, C>, 1>::zeros([1], &z.device()).require_grad();
    let z = z.into_primitive().tensor();
    let trigger = trigger.into_primitive().tensor();
    let slot = GradSlot::default();
    let out = match CaptureGrad.prepare::<C>([z.node.clone(), trigger.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(slot.clone(), z.primitive),
        OpsKind::UnTracked(prep) => prep.finish(z.primitive),
    };
    (Tensor::from_primitive(TensorPrimitive::Float(out)), slot)
}

/// The backward step of [`capture_autodiff`]; its state is the slot.
#[derive(Debug)]
struct CaptureGrad;

impl<I: Backend> Backward<I, 2> for CaptureGrad {
    type State = GradSlot;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, _trigger] = ops.parents;
        let delta = grads.consume::<I>(&ops.node);
        let captured = Tensor::<I, 2>::from_primitive(TensorPrimitive::Float(delta.clone()));
        *ops.state.0.lock().expect("no panic while capturing") = Some(Captured(Box::new(captured)));
        if let Some(node) = node_z {
            grads.register::<I>(node.id, delta);
        }
    }
}
