//! A Burn module a user wrote, trained without any dlrt-specific code in it: its low-rank
//! layers are found by visiting the module.
//!
//! [`ModuleNetwork`] visits the module with a Burn [`ModuleVisitor`] and finds every
//! [`LowRankLinear`] in it (alone, as the core of a [`super::LowRankConv2d`], in a `Vec`, …) by
//! the container type that [`super::module`]'s `visit` reports for its fields. For each it
//! builds a *view*: a [`LowRankLinear`] holding the same parameters under the same
//! [`ParamId`]s. The views are what a [`Network`] hands the training step; the integrators step
//! them as they step any layer.
//!
//! Two things connect the views back to the module:
//!
//! - **The forward.** A pass's leaves live in the views, but the user's forward runs the
//!   module's own layers. While the loss is evaluated ([`ModuleNetwork::evaluate`]) each view is
//!   published under its U's id, and a layer of the module without leaves of its own evaluates
//!   the published view instead; the module's layers and the views share the
//!   id, so the module's forward computes exactly the pass's parametrization and the gradients
//!   reach the views' leaves. The publication ends with the forward, also on a panic.
//! - **The new factors.** [`ModuleNetwork::finish`] maps the module with a Burn
//!   [`ModuleMapper`] that replaces U, S, V and the bias by the views' values, found by id; the
//!   ranks may have changed. A frozen adapter base is never written.
//!
//! Layers that share parameters (one layer used twice in the module) are one view. A model's
//! other parameters are Burn's to step (`Trainer::step_module`'s `others`).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{backend::AutodiffBackend, backend::Backend, Tensor, TensorPrimitive};

use super::module::CONTAINER;
use super::{DenseLinear, LowRankLinear, Network};
use crate::{Error, Result};

/// Views published for the forward that is running, by the id of their U (module docs). Ids
/// are unique, so the trainers of several threads do not see each other's views.
static PUBLISHED: Mutex<BTreeMap<ParamId, Box<dyn Any + Send>>> = Mutex::new(BTreeMap::new());
/// Forwards running with views published: every other forward (dlrt's own models, evaluation)
/// skips the map's lock.
static PUBLISHING: AtomicUsize = AtomicUsize::new(0);

/// The published view of the layer whose U has id `u`, if a forward of a
/// [`ModuleNetwork`] is running.
pub(super) fn published<B: Backend>(u: ParamId) -> Option<LowRankLinear<B>> {
    if PUBLISHING.load(Ordering::Acquire) == 0 {
        return None;
    }
    let views = PUBLISHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    views.get(&u)?.downcast_ref::<LowRankLinear<B>>().cloned()
}

/// Ends a publication when dropped.
struct Publication(Vec<ParamId>);

impl Drop for Publication {
    fn drop(&mut self) {
        let mut views = PUBLISHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.0.iter().for_each(|id| {
            views.remove(id);
        });
        PUBLISHING.fetch_sub(1, Ordering::Release);
    }
}

/// A Burn module seen as a [`Network`]: its low-rank layers, found by visiting it (module
/// docs); it has no [`DenseLinear`] layers (its other parameters are Burn's).
pub struct ModuleNetwork<'m, B: Backend, M> {
    model: &'m mut M,
    paths: Vec<String>,
    layers: Vec<LowRankLinear<B>>,
}

impl<'m, B: Backend, M: Module<B>> ModuleNetwork<'m, B, M> {
    /// Finds the low-rank layers of `model` ([`low_rank_layers`]).
    pub fn new(model: &'m mut M) -> Result<Self> {
        let (paths, layers) = low_rank_layers(model)?.into_iter().unzip();
        Ok(Self { model, paths, layers })
    }

    /// Each low-rank layer's path in the module (`conv1.core`, `blocks.0.fc`, …), in order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The views, in [`Self::paths`]' order.
    pub fn layers(&self) -> &[LowRankLinear<B>] {
        &self.layers
    }

    /// The module, which the views are written back to by [`Self::finish`].
    pub fn model(&self) -> &M {
        self.model
    }

    /// The module, mutable: what a Burn optimizer steps.
    pub fn model_mut(&mut self) -> &mut M {
        self.model
    }

    /// `f` of the module, with every view published for its forward (module docs).
    pub fn evaluate<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        let _publication = {
            let mut views = PUBLISHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let ids = self.layers.iter().map(|view| view.u.id).collect();
            for view in &self.layers {
                views.insert(view.u.id, Box::new(view.clone()));
            }
            PUBLISHING.fetch_add(1, Ordering::Release);
            Publication(ids)
        };
        f(self.model)
    }

    /// Writes the views' factors and biases back into the module.
    pub fn finish(self) {
        let mut values = BTreeMap::new();
        for view in self.layers {
            let LowRankLinear { u, s, v, bias, .. } = view;
            for p in [u, s, v] {
                let (id, t, _) = p.consume();
                values.insert(id, t.into_primitive());
            }
            if let Some(b) = bias {
                let (id, t, _) = b.consume();
                values.insert(id, t.into_primitive());
            }
        }
        *self.model = self.model.clone().map(&mut Writer { values });
    }
}

impl<B: AutodiffBackend, M: Module<B>> Network<B> for ModuleNetwork<'_, B, M> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        self.layers.iter_mut().collect()
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

/// The low-rank layers of `model` with their paths (`conv1.core`, `blocks.0`, …), in the order
/// its visit meets them, each once: views sharing the module's parameter ids (module docs).
pub fn low_rank_layers<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<(String, LowRankLinear<B>)>> {
    let mut finder = Finder { path: Vec::new(), open: None, found: Vec::new(), error: None };
    model.visit(&mut finder);
    match finder.error {
        Some(e) => Err(e),
        None => Ok(finder.found),
    }
}

/// A layer whose fields the visit is in.
struct Open<B: Backend> {
    path: String,
    u: Option<Param<Tensor<B, 2>>>,
    s: Option<Param<Tensor<B, 2>>>,
    v: Option<Param<Tensor<B, 2>>>,
    bias: Option<Param<Tensor<B, 1>>>,
    base: Option<Param<Tensor<B, 2>>>,
    field: Option<String>,
}

struct Finder<B: Backend> {
    path: Vec<String>,
    open: Option<Open<B>>,
    found: Vec<(String, LowRankLinear<B>)>,
    error: Option<Error>,
}

/// `p` as a parameter of rank `E` under the same id (a visitor sees parameters of every rank
/// through one generic method).
fn with_rank<B: Backend, const D: usize, const E: usize>(p: &Param<Tensor<B, D>>) -> Param<Tensor<B, E>> {
    Param::initialized(p.id, Tensor::from_primitive(p.val().into_primitive()))
}

impl<B: Backend> ModuleVisitor<B> for Finder<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == CONTAINER {
            let path = self.path.join(".");
            let open = self.open.get_or_insert_with(|| Open {
                path,
                u: None,
                s: None,
                v: None,
                bias: None,
                base: None,
                field: None,
            });
            open.field = Some(name.to_string());
        }
        self.path.push(name.to_string());
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(open) = &mut self.open else { return };
        let expected = if open.field.as_deref() == Some("bias") { 1 } else { 2 };
        if D != expected {
            self.error.get_or_insert_with(|| {
                Error::shape(
                    format!("{} of the low-rank layer {}", open.field.as_deref().unwrap_or("?"), open.path),
                    format!("a {expected}-D tensor"),
                    format!("a {D}-D tensor"),
                )
            });
            return;
        }
        match open.field.as_deref() {
            Some("u") => open.u = Some(with_rank(param)),
            Some("s") => open.s = Some(with_rank(param)),
            Some("v") => open.v = Some(with_rank(param)),
            Some("bias") => open.bias = Some(with_rank(param)),
            Some("base") => open.base = Some(with_rank(param)),
            _ => {}
        }
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        self.path.pop();
        // `base` is the last field a LowRankLinear visits (`super::module`).
        if container_type != CONTAINER || name != "base" {
            return;
        }
        let Some(open) = self.open.take() else { return };
        let (Some(u), Some(s), Some(v)) = (open.u, open.s, open.v) else {
            self.error.get_or_insert_with(|| {
                Error::shape(format!("the low-rank layer {}", open.path), "parameters U, S and V", "fewer")
            });
            return;
        };
        if self.found.iter().any(|(_, view)| view.u.id == u.id) {
            return; // the same layer, used again
        }
        let view = LowRankLinear { u, s, v, bias: open.bias, base: open.base, leaves: None, autocast: None };
        if let Err(e) = view.validate(&open.path) {
            self.error.get_or_insert(e);
            return;
        }
        self.found.push((open.path, view));
    }
}

/// Replaces the parameters whose ids it holds.
struct Writer<B: Backend> {
    values: BTreeMap<ParamId, TensorPrimitive<B>>,
}

impl<B: Backend> ModuleMapper<B> for Writer<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // `get`, not `remove`: a layer used twice holds the same parameters twice.
        match self.values.get(&param.id) {
            Some(value) => {
                let (id, _, mapper) = param.consume();
                Param::from_mapped_value(id, Tensor::from_primitive(value.clone()), mapper)
            }
            None => param,
        }
    }
}
