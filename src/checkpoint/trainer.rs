//! What a [`crate::train::Trainer`] carries between the steps of a Burn module of your own: the
//! optimizer state of each low-rank layer's factors (moments and the bases they are expressed
//! in) and the integrator's counters. The module itself is saved with Burn's records; this file
//! completes it, so that training resumes as if it had not stopped.
//!
//! Tensors are stored under each layer's path in the module (`conv1.core.opt.k.m1`, …; roles
//! and parts as in a checkpoint, [`super`]); the metadata holds the format, the integrator,
//! the layers' paths and ranks, the optimizer step counts and the counters. A state loads only
//! into a module with the same low-rank layers at the same ranks: the module's record saved at
//! the same step.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;

use super::{factor_slots, get_factor_slots, meta_json, put_slot, to_json};
use crate::integrators::{CounterSnapshot, IntegratorKind, LayerState, TrainState};
use crate::io::{read_safetensors, write_safetensors, TensorMap};
use crate::layers::LowRankLinear;
use crate::{Error, Result};

/// The format this code writes and reads.
pub const FORMAT: &str = "dlrt-trainer-state-1";

/// Saves `state` and `counters` of a trainer of `kind` for the module whose low-rank layers are
/// `layers` (paths and layers, [`crate::layers::low_rank_layers`]) to `path`, atomically.
pub fn save<B: Backend>(
    path: &Path,
    layers: &[(String, LowRankLinear<B>)],
    kind: IntegratorKind,
    state: &TrainState<B>,
    counters: CounterSnapshot,
) -> Result<()> {
    let (mut tensors, mut times) = (TensorMap::new(), BTreeMap::new());
    for ((name, _), layer_state) in layers.iter().zip(&state.low_rank) {
        for (role, slot) in factor_slots(&layer_state.slots) {
            put_slot(&format!("{name}.opt.{role}"), slot, &mut tensors, &mut times);
        }
    }
    let paths: Vec<&str> = layers.iter().map(|(name, _)| name.as_str()).collect();
    let ranks: Vec<usize> = layers.iter().map(|(_, layer)| layer.rank()).collect();
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("integrator".to_string(), kind.name().to_string()),
        ("paths".to_string(), to_json(&paths)),
        ("ranks".to_string(), to_json(&ranks)),
        ("optimizer_steps".to_string(), to_json(&times)),
        ("counters".to_string(), to_json(&counters)),
    ]);
    write_safetensors(path, &tensors, meta)
}

/// Loads what [`save`] wrote, for a trainer of `kind` and the module whose low-rank layers are
/// `layers`; errors name the file and the field or layer that does not fit.
pub fn load<B: Backend>(
    path: &Path,
    layers: &[(String, LowRankLinear<B>)],
    kind: IntegratorKind,
    device: &B::Device,
) -> Result<(TrainState<B>, CounterSnapshot)> {
    let (mut tensors, meta) = read_safetensors(path)?;
    let field = |key: &str| meta.get(key).map(String::as_str).unwrap_or("missing");
    super::require_format(path, &meta, FORMAT)?;
    if field("integrator") != kind.name() {
        return Err(Error::bad_file(path, "metadata.integrator", kind.name(), field("integrator")));
    }
    let paths: Vec<String> = meta_json(&meta, path, "paths")?;
    let ranks: Vec<usize> = meta_json(&meta, path, "ranks")?;
    let ours: Vec<&str> = layers.iter().map(|(name, _)| name.as_str()).collect();
    if paths != ours || ranks.len() != paths.len() {
        return Err(Error::bad_file(
            path,
            "metadata.paths",
            format!("the module's low-rank layers {ours:?}"),
            format!("{paths:?}"),
        ));
    }
    for ((name, layer), &rank) in layers.iter().zip(&ranks) {
        if layer.rank() != rank {
            return Err(Error::bad_file(
                path,
                format!("metadata.ranks ({name})"),
                format!("the module's rank {} (its record saved with this state)", layer.rank()),
                rank,
            ));
        }
    }
    let times: BTreeMap<String, usize> = meta_json(&meta, path, "optimizer_steps")?;
    let mut state = TrainState::default();
    for (name, layer) in layers {
        let [n, r] = layer.u().dims();
        let dims = [n, layer.v().dims()[0], r];
        let slots = get_factor_slots(name, dims, &mut tensors, &times, path, device)?;
        state.low_rank.push(LayerState { slots, pending: None });
    }
    if let Some(name) = tensors.keys().next() {
        return Err(Error::bad_file(
            path,
            name,
            "only the optimizer state of the module's layers",
            "an unexpected tensor",
        ));
    }
    Ok((state, meta_json(&meta, path, "counters")?))
}
