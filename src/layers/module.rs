//! [`LowRankLinear`] as a Burn [`Module`], so that it sits inside a model a user writes in Burn
//! (next to `burn::nn::Linear`, `Conv2d`, …), moves between devices with it and is saved and
//! loaded through Burn's records and recorders.
//!
//! The factors U, S, V, the bias and an adapter's frozen base are [`Param`]s that do not require
//! gradients: the module's visitors and mappers see them (so records and devices cover them),
//! but a Burn optimizer stepping the whole model finds no gradient for them and leaves them to
//! the integrator. The leaves of a training pass are not part of the module.
//!
//! # Records of another rank
//!
//! The rank is part of the state, not of the architecture: a [`LowRankLinearRecord`] loads at
//! its own rank (U n×r, S r×r, V m×r from the record), whatever rank the layer had before.
//! Burn's `load_record` does not check shapes; [`LowRankLinear::load_checked`] does (n and m
//! must be the layer's, S must fit U and V, the bias and base must be present exactly when the
//! layer has them) and names the layer in its error, and [`LowRankLinear::validate`] checks a
//! layer after a whole model was loaded with Burn's `load_record`.

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor, Param,
};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use super::LowRankLinear;
use crate::{Error, Result};

/// The record of a [`LowRankLinear`]: its factors, bias and frozen base at their own rank.
#[derive(Record)]
pub struct LowRankLinearRecord<B: Backend> {
    /// U (n×r).
    pub u: Param<Tensor<B, 2>>,
    /// S (r×r).
    pub s: Param<Tensor<B, 2>>,
    /// V (m×r).
    pub v: Param<Tensor<B, 2>>,
    /// The bias (m).
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// An adapter's frozen base W0 (n×m).
    pub base: Option<Param<Tensor<B, 2>>>,
}

/// The container type a [`LowRankLinear`] reports when a visitor enters its fields
/// ([`super::visit`] finds the layers by it).
pub(super) const CONTAINER: &str = "Struct:LowRankLinear";

impl<B: Backend> Module<B> for LowRankLinear<B> {
    type Record = LowRankLinearRecord<B>;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.u.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        let mut layer = self.map_params(|p| p.fork(device), |p| p.fork(device));
        layer.leaves = None;
        layer
    }

    fn to_device(self, device: &B::Device) -> Self {
        self.map_params(|p| p.to_device(device), |p| p.to_device(device))
    }

    // Each field is entered by name, as `#[derive(Module)]` does, so that paths read
    // `layer.u`, `layer.bias`, ….
    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        macro_rules! field {
            ($name:ident) => {
                visitor.enter_module(stringify!($name), CONTAINER);
                Module::<B>::visit(&self.$name, visitor);
                visitor.exit_module(stringify!($name), CONTAINER);
            };
        }
        field!(u);
        field!(s);
        field!(v);
        field!(bias);
        field!(base);
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        let Self { u, s, v, bias, base, leaves, autocast } = self;
        macro_rules! field {
            ($name:ident) => {{
                mapper.enter_module(stringify!($name), CONTAINER);
                let t = Module::<B>::map($name, mapper);
                mapper.exit_module(stringify!($name), CONTAINER);
                t
            }};
        }
        let (u, s, v, bias, base) = (field!(u), field!(s), field!(v), field!(bias), field!(base));
        Self { u, s, v, bias, base, leaves, autocast }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            u: self.u.load_record(record.u),
            s: self.s.load_record(record.s),
            v: self.v.load_record(record.v),
            bias: self.bias.load_record(record.bias),
            base: self.base.load_record(record.base),
            leaves: None,
            autocast: self.autocast,
        }
    }

    fn into_record(self) -> Self::Record {
        LowRankLinearRecord {
            u: self.u.into_record(),
            s: self.s.into_record(),
            v: self.v.into_record(),
            bias: self.bias.into_record(),
            base: self.base.into_record(),
        }
    }
}

impl<B: Backend> LowRankLinear<B> {
    fn map_params(
        self,
        mut f2: impl FnMut(Param<Tensor<B, 2>>) -> Param<Tensor<B, 2>>,
        f1: impl FnOnce(Param<Tensor<B, 1>>) -> Param<Tensor<B, 1>>,
    ) -> Self {
        let Self { u, s, v, bias, base, leaves, autocast } = self;
        Self { u: f2(u), s: f2(s), v: f2(v), bias: bias.map(f1), base: base.map(&mut f2), leaves, autocast }
    }

    /// Loads `record` after checking that it fits this layer (module docs); `layer` names the
    /// layer in the error. The rank comes from the record.
    pub fn load_checked(self, record: LowRankLinearRecord<B>, layer: &str) -> Result<Self> {
        let (n, m) = (self.n(), self.m());
        let (u, s, v) = (record.u.dims(), record.s.dims(), record.v.dims());
        let fits = u[0] == n && v[0] == m && s == [u[1], v[1]] && u[1] >= 1 && u[1] <= n.min(m) && v[1] <= m;
        if !fits {
            return Err(Error::shape(
                format!("record of {layer} (LowRankLinear, n×m = {n}×{m})"),
                format!("U [{n}, r], S [r, r], V [{m}, r] with 1 ≤ r ≤ {}", n.min(m)),
                format!("U {u:?}, S {s:?}, V {v:?}"),
            ));
        }
        for (what, ours, theirs) in [
            ("bias", self.bias.is_some(), record.bias.is_some()),
            ("base", self.base.is_some(), record.base.is_some()),
        ] {
            if ours != theirs {
                let has = |b: bool| if b { "a" } else { "no" };
                return Err(Error::shape(
                    format!("record of {layer}"),
                    format!("{} {what}", has(ours)),
                    format!("{} {what}", has(theirs)),
                ));
            }
        }
        if let Some(b) = &record.bias {
            if b.dims() != [m] {
                return Err(Error::shape(
                    format!("bias in the record of {layer}"),
                    format!("[{m}]"),
                    format!("{:?}", b.dims()),
                ));
            }
        }
        if let Some(w0) = &record.base {
            if w0.dims() != [n, m] {
                return Err(Error::shape(
                    format!("base in the record of {layer}"),
                    format!("[{n}, {m}]"),
                    format!("{:?}", w0.dims()),
                ));
            }
        }
        let layer = self.load_record(record);
        super::low_rank_linear::check_finite(layer.s(), "factor S of a loaded record")?;
        Ok(layer)
    }

    /// Checks that U, S, V, the bias and the base fit together (after a model was loaded with
    /// Burn's `load_record`, which does not); `layer` names the layer in the error.
    pub fn validate(&self, layer: &str) -> Result<()> {
        let (u, s, v) = (self.u.dims(), self.s.dims(), self.v.dims());
        let bias_ok = self.bias.as_ref().is_none_or(|b| b.dims() == [v[0]]);
        let base_ok = self.base.as_ref().is_none_or(|w0| w0.dims() == [u[0], v[0]]);
        if s != [u[1], v[1]] || !bias_ok || !base_ok {
            return Err(Error::shape(
                format!("{layer} (LowRankLinear)"),
                "U [n, r_u], S [r_u, r_v], V [m, r_v], bias [m], base [n, m]",
                format!("U {u:?}, S {s:?}, V {v:?}"),
            ));
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for LowRankLinear<B> {
    type InnerModule = LowRankLinear<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        LowRankLinear {
            u: self.u.valid(),
            s: self.s.valid(),
            v: self.v.valid(),
            bias: self.bias.valid(),
            base: self.base.valid(),
            leaves: None,
            autocast: self.autocast,
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        let LowRankLinear { u, s, v, bias, base, autocast, .. } = module;
        Self {
            u: Param::from_inner(u),
            s: Param::from_inner(s),
            v: Param::from_inner(v),
            bias: Option::from_inner(bias),
            base: Option::from_inner(base),
            leaves: None,
            autocast,
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for LowRankLinear<B::InnerBackend> {
    type TrainModule = LowRankLinear<B>;
}

impl<B: Backend> ModuleDisplayDefault for LowRankLinear<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&self.to_string()).optional()
    }
}

impl<B: Backend> ModuleDisplay for LowRankLinear<B> {}
