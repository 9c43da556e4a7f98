//! The `[optimizer]` section: [`OptimizerConfig`] (the update rule and its hyper-parameters),
//! plus the learning rate λ and its [`Schedule`].
//!
//! ```toml
//! [optimizer]
//! kind = "adam"         # "sgd" (default), "momentum" or "adam"
//! weight_decay = 0.1    # a hyper-parameter of that kind (beta; beta1, beta2, eps, weight_decay)
//! lr = 0.004            # λ
//! schedule = "cosine"   # or "constant" (default)
//! warmup_steps = 100    # linear warm-up to λ before the schedule (default 0)
//! ```
//!
//! The section is one flat table, but its keys belong to two owners: `lr`, `schedule` and
//! `warmup_steps` to the run, the rest to [`OptimizerConfig`], an internally tagged enum.
//! serde's `flatten` cannot combine them, because it disables `deny_unknown_fields` and unknown
//! keys must be errors. So the section is read by hand: take the run's keys out of the table
//! and read the rest as an [`OptimizerConfig`], which names any key that does not belong to its
//! kind.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::optim::{Optimizer, OptimizerConfig};
use crate::Result;

/// Learning-rate schedule over a run (computed by `train::schedule::learning_rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// λ throughout.
    #[default]
    Constant,
    /// Cosine decay from λ towards 0 over the steps of the run after the warm-up.
    Cosine,
}

/// The optimizer of the factor and dense steps: the `[optimizer]` section (module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerSection {
    /// The update rule (`kind`) and its hyper-parameters; `sgd` (the paper's Euler step) when
    /// `kind` is absent.
    pub rule: OptimizerConfig,
    /// Learning rate λ.
    pub lr: f64,
    /// How λ changes over the run.
    pub schedule: Schedule,
    /// Steps of linear warm-up, λ (k+1)/(w+1) at step k < w, before the schedule starts
    /// (`train::schedule`); 0 (the default) starts at λ.
    pub warmup_steps: u64,
}

impl OptimizerSection {
    /// Plain SGD with step size λ = `lr` and no schedule (the paper's setting).
    pub fn sgd(lr: f64) -> Self {
        Self { rule: OptimizerConfig::Sgd, lr, schedule: Schedule::Constant, warmup_steps: 0 }
    }

    /// The `kind` key: `sgd`, `momentum` or `adam`.
    pub fn kind(&self) -> &'static str {
        match self.rule {
            OptimizerConfig::Sgd => "sgd",
            OptimizerConfig::Momentum { .. } => "momentum",
            OptimizerConfig::Adam { .. } => "adam",
        }
    }

    /// The optimizer at the section's λ (before any schedule); validates the rule and λ.
    pub fn build(&self) -> Result<Optimizer> {
        Optimizer::new(self.rule.clone(), self.lr)
    }

    /// Checks the rule and λ; an error names its field in the section (`optimizer.lr`).
    pub fn validate(&self) -> Result<()> {
        self.build().map(drop).map_err(|e| super::prefix(e, "optimizer."))?;
        super::toml_integer("optimizer.warmup_steps", self.warmup_steps)
    }
}

/// What is written: the rule's keys (`kind` first), then `lr`, `schedule` and a warm-up.
#[derive(Serialize)]
struct Written<'a> {
    #[serde(flatten)]
    rule: &'a OptimizerConfig,
    lr: f64,
    schedule: Schedule,
    #[serde(skip_serializing_if = "is_zero")]
    warmup_steps: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Serialize for OptimizerSection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Written { rule: &self.rule, lr: self.lr, schedule: self.schedule, warmup_steps: self.warmup_steps }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptimizerSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let lr = table.remove("lr").ok_or_else(|| D::Error::missing_field("lr"))?;
        let lr = f64::deserialize(lr).map_err(|e| D::Error::custom(format!("`lr`: {e}")))?;
        let schedule = match table.remove("schedule") {
            Some(v) => Schedule::deserialize(v).map_err(|e| D::Error::custom(format!("`schedule`: {e}")))?,
            None => Schedule::default(),
        };
        let warmup_steps = match table.remove("warmup_steps") {
            Some(v) => u64::deserialize(v).map_err(|e| {
                D::Error::custom(format!("`warmup_steps`: {e} (expected a count of steps ≥ 0)"))
            })?,
            None => 0,
        };
        let kind = table.entry("kind").or_insert_with(|| "sgd".into()).clone();
        // serde reads an internally tagged unit variant without looking at the other keys:
        // every key but `kind` is foreign to `sgd`.
        if kind.as_str() == Some("sgd") {
            if let Some(key) = table.keys().find(|k| *k != "kind") {
                return Err(D::Error::custom(format!("unknown field `{key}` with kind = \"sgd\"")));
            }
        }
        let rule = OptimizerConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(format!("{e} (with kind = {kind})")))?;
        Ok(Self { rule, lr, schedule, warmup_steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Doc {
        optimizer: OptimizerSection,
    }

    fn parse(body: &str) -> std::result::Result<OptimizerSection, String> {
        toml::from_str::<Doc>(&format!("[optimizer]\n{body}")).map(|d| d.optimizer).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_reads_with_its_defaults() {
        assert_eq!(parse("lr = 0.01").unwrap(), OptimizerSection::sgd(0.01));
        let momentum = parse("kind = \"momentum\"\nlr = 1\nschedule = \"cosine\"").unwrap();
        assert_eq!(
            momentum,
            OptimizerSection {
                rule: OptimizerConfig::Momentum { beta: 0.9 },
                lr: 1.0,
                schedule: Schedule::Cosine,
                warmup_steps: 0,
            }
        );
        let warm = parse("lr = 1\nschedule = \"cosine\"\nwarmup_steps = 50").unwrap();
        assert_eq!((warm.schedule, warm.warmup_steps), (Schedule::Cosine, 50));
        let adam = parse("kind = \"adam\"\nweight_decay = 0.1\nlr = 0.004").unwrap();
        assert_eq!(adam.rule, OptimizerConfig::adamw(0.1));
        assert_eq!((adam.kind(), adam.lr, adam.schedule), ("adam", 0.004, Schedule::Constant));
    }

    #[test]
    fn round_trips_with_kind_first() {
        for section in [
            OptimizerSection::sgd(0.01),
            OptimizerSection {
                rule: OptimizerConfig::Momentum { beta: 0.5 },
                lr: 0.1,
                schedule: Schedule::Cosine,
                warmup_steps: 0,
            },
            OptimizerSection {
                rule: OptimizerConfig::adamw(0.1),
                lr: 4e-3,
                schedule: Schedule::Cosine,
                warmup_steps: 30,
            },
        ] {
            let text = toml::to_string(&Doc { optimizer: section.clone() }).unwrap();
            assert!(text.starts_with("[optimizer]\nkind = "), "{text}");
            assert_eq!(text.contains("warmup_steps"), section.warmup_steps > 0, "{text}");
            assert_eq!(toml::from_str::<Doc>(&text).unwrap().optimizer, section, "{text}");
        }
    }

    #[test]
    fn foreign_and_unknown_keys_are_named() {
        for (body, key) in [
            ("kind = \"sgd\"\nlr = 1\nbeta = 0.9", "beta"),
            ("lr = 1\nbeta1 = 0.9", "beta1"),
            ("kind = \"momentum\"\nlr = 1\nbeta1 = 0.9", "beta1"),
            ("kind = \"adam\"\nlr = 1\nbeta = 0.9", "beta"),
            ("kind = \"adam\"\nlr = 1\nlearning_rate = 0.9", "learning_rate"),
            ("kind = \"rmsprop\"\nlr = 1", "rmsprop"),
            ("kind = \"sgd\"", "lr"),
            ("lr = \"fast\"", "lr"),
            ("lr = 1\nschedule = \"linear\"", "linear"),
            ("lr = 1\nwarmup_steps = -5", "warmup_steps"),
            ("lr = 1\nwarmup_steps = 0.5", "warmup_steps"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(key), "{body}: {err}");
        }
    }
}
