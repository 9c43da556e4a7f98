//! The ViT / DINOv2 backbone (`dlrt::models::vit`) on tiny configs, in f64 on NdArray:
//! HF config parsing, safetensors round trips, the one load error that lists every problem,
//! adapters at S = 0, position-embedding interpolation, a forward pass checked against a
//! naive loop implementation written from the HF tensors, and one abc-PSI step on the adapters.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{backend::AutodiffBackend, Tensor, TensorData};
use common::{max_abs, tiny_vit as tiny, B};
use dlrt::integrators::IntegratorKind;
use dlrt::io::{read_safetensors, write_safetensors, TensorMap};
use dlrt::layers::{AdapterTarget, Attention, Pass};
use dlrt::linalg::TruncationConfig;
use dlrt::models::vit::{interpolate_pos_encoding, Projection, Variant, ViT, ViTConfig};
use dlrt::optim::Optimizer;
use dlrt::train::Trainer;
use dlrt::Error;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const VARIANTS: [Variant; 2] = [Variant::ViT, Variant::Dinov2];

fn model(variant: Variant, seed: u64) -> ViT<B> {
    ViT::random(tiny(variant), &mut StdRng::seed_from_u64(seed), &Default::default()).unwrap()
}

fn images(batch: usize, side: [usize; 2], seed: u64) -> Tensor<B, 4> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f64> =
        (0..batch * 3 * side[0] * side[1]).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_data(TensorData::new(values, [batch, 3, side[0], side[1]]), &Default::default())
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    (a - b).abs().max().into_scalar()
}

/// Writes `model.safetensors` and `config.json` into `dir`; returns both paths.
fn write(dir: &Path, tensors: &TensorMap, config: &ViTConfig) -> (PathBuf, PathBuf) {
    let (weights, json) = (dir.join("model.safetensors"), dir.join("config.json"));
    write_safetensors(&weights, tensors, Default::default()).unwrap();
    std::fs::write(&json, config.to_json()).unwrap();
    (weights, json)
}

#[test]
fn hf_config_json_is_read_with_unknown_keys_and_variant_defaults() {
    // Abridged from google/vit-base-patch16-224 and facebook/dinov2-small on the HF hub.
    let vit = r#"{"architectures": ["ViTForImageClassification"], "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu", "hidden_size": 768, "id2label": {"0": "tench"}, "image_size": 224,
        "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
        "model_type": "vit", "num_attention_heads": 12, "num_channels": 3, "num_hidden_layers": 12,
        "patch_size": 16, "qkv_bias": true}"#;
    assert_eq!(serde_json::from_str::<ViTConfig>(vit).unwrap(), ViTConfig::vit_base_patch16_224());
    // No intermediate_size: DINOv2's MLP width is hidden_size · mlp_ratio.
    let dino = r#"{"architectures": ["Dinov2Model"], "drop_path_rate": 0.0, "hidden_act": "gelu",
        "hidden_size": 384, "image_size": 518, "layer_norm_eps": 1e-06, "layerscale_value": 1.0,
        "mlp_ratio": 4, "model_type": "dinov2", "num_attention_heads": 6, "num_channels": 3,
        "num_hidden_layers": 12, "patch_size": 14, "qkv_bias": true, "use_swiglu_ffn": false}"#;
    let cfg: ViTConfig = serde_json::from_str(dino).unwrap();
    assert_eq!(cfg, ViTConfig::dinov2_small());
    assert_eq!((cfg.intermediate_size, cfg.grid()), (1536, 37));
    for variant in VARIANTS {
        assert_eq!(serde_json::from_str::<ViTConfig>(&tiny(variant).to_json()).unwrap(), tiny(variant));
    }
    // transformers 5 rejects a float mlp_ratio.
    assert!(tiny(Variant::Dinov2).to_json().contains("\"mlp_ratio\": 2,"));
}

#[test]
fn bad_configs_and_adapter_names_are_errors_that_name_the_field() {
    let base = tiny(Variant::ViT).to_json();
    for (from, to, field) in [
        ("\"num_attention_heads\": 2", "\"num_attention_heads\": 3", "num_attention_heads"),
        ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"gelu_new\"", "hidden_act"),
        ("\"model_type\": \"vit\"", "\"model_type\": \"deit\"", "model_type"),
        ("\"intermediate_size\": 32", "\"x\": 32", "intermediate_size"),
    ] {
        let json = base.replace(from, to);
        assert_ne!(json, base, "the test edits {from}");
        let err = serde_json::from_str::<ViTConfig>(&json).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    assert_eq!("mlp_fc1".parse::<AdapterTarget>().unwrap(), AdapterTarget::MlpFc1);
    let err = "qkv".parse::<AdapterTarget>().unwrap_err().to_string();
    assert!(err.contains("query, key, value, attention_output, mlp_fc1, mlp_fc2"), "{err}");
    let targets: Vec<AdapterTarget> = serde_json::from_str(r#"["query", "attention_output"]"#).unwrap();
    assert_eq!(targets, [AdapterTarget::Query, AdapterTarget::AttentionOutput]);
}

#[test]
fn safetensors_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let x = images(2, [28, 28], 1);
    for variant in VARIANTS {
        let vit = model(variant, 2);
        let (weights, json) = (dir.path().join("model.safetensors"), dir.path().join("config.json"));
        vit.save(&weights).unwrap();
        std::fs::write(&json, vit.config().to_json()).unwrap();
        let back = ViT::<B>::load(&weights, &json, &Default::default()).unwrap();
        assert_eq!(back.to_tensors(), vit.to_tensors());
        let (y, y_back) = (vit.forward(x.clone()), back.forward(x.clone()));
        assert_eq!(y.dims(), [2, 16]);
        assert_eq!(max_diff(y.clone(), y_back), 0.0, "{variant:?}");

        // HF's names and PyTorch's [out, in] layout, on disk.
        let (file, _) = read_safetensors(&weights).unwrap();
        let (prefix, fc1) = match variant {
            Variant::ViT => ("vit.", "intermediate.dense"),
            Variant::Dinov2 => ("", "mlp.fc1"),
        };
        let shape = |name: &str| file.get(&format!("{prefix}{name}")).map(|(s, _)| s.clone());
        assert_eq!(shape("embeddings.patch_embeddings.projection.weight"), Some(vec![16, 3, 7, 7]));
        assert_eq!(shape("embeddings.position_embeddings"), Some(vec![1, 17, 16]));
        assert_eq!(shape(&format!("encoder.layer.1.{fc1}.weight")), Some(vec![32, 16]));
        let has_scale = shape("encoder.layer.0.layer_scale2.lambda1").is_some();
        assert_eq!(has_scale, variant == Variant::Dinov2);

        // ViTModel files have no `vit.` prefix, and heads, poolers and the mask token are ignored.
        let mut bare: TensorMap =
            file.into_iter().map(|(k, v)| (k.strip_prefix("vit.").unwrap_or(&k).to_string(), v)).collect();
        for extra in ["classifier.weight", "pooler.dense.bias", "embeddings.mask_token"] {
            bare.insert(extra.into(), (vec![1, 16], vec![0.0; 16]));
        }
        let (weights, json) = write(dir.path(), &bare, vit.config());
        let bare = ViT::<B>::load(&weights, &json, &Default::default()).unwrap();
        assert_eq!(max_diff(y, bare.forward(x.clone())), 0.0);
    }
}

#[test]
fn one_load_error_names_the_file_and_every_bad_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let vit = model(Variant::ViT, 3);
    let mut tensors = vit.to_tensors();
    let missing = "vit.encoder.layer.1.attention.attention.key.bias";
    tensors.remove(missing).unwrap();
    tensors.insert("vit.encoder.layer.0.extra.weight".into(), (vec![2], vec![1.0, 2.0]));
    tensors.insert("vit.layernorm.weight".into(), (vec![17], vec![1.0; 17]));
    tensors.insert("vit.embeddings.mask_token".into(), (vec![1, 1, 16], vec![0.0; 16]));
    tensors.insert("classifier.weight".into(), (vec![10, 16], vec![0.0; 160]));
    let (weights, json) = write(dir.path(), &tensors, vit.config());
    let err = ViT::<B>::load(&weights, &json, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::BadFile { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        weights.to_str().unwrap(),
        &format!("1 missing: [{missing}]"),
        "1 unexpected: [vit.encoder.layer.0.extra.weight]",
        "1 mis-shaped: [vit.layernorm.weight (expected [16], got [17])]",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    assert!(!msg.contains("mask_token") && !msg.contains("classifier"), "{msg}");
}

#[test]
fn adapters_at_s_zero_leave_the_outputs_unchanged() {
    let x = images(2, [28, 28], 4);
    for variant in VARIANTS {
        let mut vit = model(variant, 5);
        let y0 = vit.forward(x.clone());
        let mut rng = StdRng::seed_from_u64(6);
        vit.add_adapters(&AdapterTarget::DEFAULT, 4, &mut rng).unwrap();
        assert_eq!(vit.low_rank_layers_mut().len(), 2 * 3);
        vit.add_adapters(
            &[AdapterTarget::AttentionOutput, AdapterTarget::MlpFc1, AdapterTarget::MlpFc2],
            4,
            &mut rng,
        )
        .unwrap();
        let ranks: Vec<_> = vit.low_rank_layers_mut().iter().map(|l| (l.n(), l.m(), l.rank())).collect();
        let block = [(16, 16, 4), (16, 16, 4), (16, 16, 4), (16, 16, 4), (16, 32, 4), (32, 16, 4)];
        assert_eq!(
            ranks,
            [block, block].concat(),
            "blocks in order, projections in AdapterTarget::ALL order"
        );
        // U S Vᵀ with S = 0 adds exact zeros.
        assert!(max_diff(y0.clone(), vit.forward(x.clone())) <= 1e-12, "{variant:?}");
        // r(n + m) + r² + m per adapter.
        let per_block = 4 * (4 * 32 + 16 + 16) + 2 * (4 * 48 + 16) + 16 + 32;
        assert_eq!(vit.adapter_params(), 2 * per_block);

        // Adding twice, or a rank that does not fit, is an error that changes nothing.
        let err = vit.add_adapters(&[AdapterTarget::Query], 2, &mut rng).unwrap_err();
        assert!(err.to_string().contains("already has an adapter"), "{err}");
        let mut fresh = model(variant, 5);
        let err = fresh.add_adapters(&AdapterTarget::ALL, 17, &mut rng).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(fresh.low_rank_layers_mut().is_empty());

        // Merging folds W0 + U S Vᵀ back into dense projections.
        vit.merge_adapters().unwrap();
        assert!(vit.low_rank_layers_mut().is_empty());
        assert!(max_diff(y0, vit.forward(x.clone())) <= 1e-12);
    }
}

#[test]
fn position_interpolation_is_the_identity_on_the_stored_grid_and_resizes_otherwise() {
    let mut rng = StdRng::seed_from_u64(7);
    let values: Vec<f64> = (0..17 * 16).map(|_| StandardNormal.sample(&mut rng)).collect();
    let pos = Tensor::<B, 3>::from_data(TensorData::new(values, [1, 17, 16]), &Default::default());
    let same = interpolate_pos_encoding(pos.clone(), [4, 4], [4, 4]);
    assert!(max_diff(same, pos.clone()) <= 1e-12);
    let bigger = interpolate_pos_encoding(pos.clone(), [4, 4], [6, 5]);
    assert_eq!(bigger.dims(), [1, 31, 16]);
    assert_eq!(max_diff(bigger.narrow(1, 0, 1), pos.narrow(1, 0, 1)), 0.0, "the CLS row is kept");
    // The bicubic weights sum to one: a constant grid stays constant.
    let constant = Tensor::<B, 3>::full([1, 17, 16], 0.25, &Default::default());
    let resized = interpolate_pos_encoding(constant, [4, 4], [6, 6]);
    assert!(max_abs(resized.reshape([37, 16]).sub_scalar(0.25)) <= 1e-12);

    for variant in VARIANTS {
        let vit = model(variant, 8);
        for side in [[42, 42], [28, 42], [45, 30]] {
            let x = images(2, side, 9);
            let tokens = vit.forward_tokens(x.clone());
            assert_eq!(tokens.dims(), [2, 1 + (side[0] / 7) * (side[1] / 7), 16], "{side:?}");
            let y = vit.forward(x);
            assert_eq!(y.dims(), [2, 16]);
            assert!(y.to_data().to_vec::<f64>().unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

/// A naive ViT written from the HF tensors with loops, in PyTorch's conventions: W is
/// [out, in], `y_o = Σ_i W[o][i] x_i + b_o`. Returns every token after the final norm.
struct Reference<'a> {
    tensors: &'a TensorMap,
    prefix: &'a str,
    config: &'a ViTConfig,
}

impl Reference<'_> {
    fn t(&self, name: &str) -> Vec<f64> {
        let (_, values) = &self.tensors[&format!("{}{name}", self.prefix)];
        values.iter().map(|&v| v as f64).collect()
    }

    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (w, b) = (self.t(&format!("{name}.weight")), self.t(&format!("{name}.bias")));
        let n = x.len();
        (0..b.len()).map(|o| b[o] + (0..n).map(|i| w[o * n + i] * x[i]).sum::<f64>()).collect()
    }

    fn layer_norm(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (g, b) = (self.t(&format!("{name}.weight")), self.t(&format!("{name}.bias")));
        let d = x.len() as f64;
        let mean = x.iter().sum::<f64>() / d;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d;
        let inv = 1.0 / (var + self.config.layer_norm_eps).sqrt();
        x.iter().enumerate().map(|(i, v)| (v - mean) * inv * g[i] + b[i]).collect()
    }

    /// `image` is [C][H][W] flattened; returns [T][D].
    fn forward(&self, image: &[f64]) -> Vec<Vec<f64>> {
        let c = self.config;
        let (d, p, g, ch) = (c.hidden_size, c.patch_size, c.grid(), c.num_channels);
        let side = g * p;
        let (kernel, kb) = (
            self.t("embeddings.patch_embeddings.projection.weight"),
            self.t("embeddings.patch_embeddings.projection.bias"),
        );
        let (cls, pos) = (self.t("embeddings.cls_token"), self.t("embeddings.position_embeddings"));
        let mut x = vec![(0..d).map(|e| cls[e] + pos[e]).collect::<Vec<f64>>()];
        for gy in 0..g {
            for gx in 0..g {
                let token = x.len();
                x.push(
                    (0..d)
                        .map(|e| {
                            let mut z = kb[e] + pos[token * d + e];
                            for (k, i, j) in
                                (0..ch).flat_map(|k| (0..p).flat_map(move |i| (0..p).map(move |j| (k, i, j))))
                            {
                                let pixel = image[k * side * side + (gy * p + i) * side + gx * p + j];
                                z += kernel[((e * ch + k) * p + i) * p + j] * pixel;
                            }
                            z
                        })
                        .collect(),
                );
            }
        }
        let dino = c.variant == Variant::Dinov2;
        for l in 0..c.num_hidden_layers {
            let at = |key: &str| format!("encoder.layer.{l}.{key}");
            let (norm1, norm2, fc1, fc2) = if dino {
                ("norm1", "norm2", "mlp.fc1", "mlp.fc2")
            } else {
                ("layernorm_before", "layernorm_after", "intermediate.dense", "output.dense")
            };
            let lambda = |key: &str| if dino { self.t(&at(key)) } else { vec![1.0; d] };
            let (lambda1, lambda2) = (lambda("layer_scale1.lambda1"), lambda("layer_scale2.lambda1"));
            let h: Vec<_> = x.iter().map(|t| self.layer_norm(&at(norm1), t)).collect();
            let proj = |key: &str| -> Vec<Vec<f64>> {
                h.iter().map(|t| self.linear(&at(&format!("attention.attention.{key}")), t)).collect()
            };
            let (q, k, v) = (proj("query"), proj("key"), proj("value"));
            let (heads, tokens) = (c.num_attention_heads, x.len());
            let d_h = d / heads;
            let mut context = vec![vec![0.0; d]; tokens];
            for head in 0..heads {
                let cols = head * d_h..(head + 1) * d_h;
                for t in 0..tokens {
                    let scores: Vec<f64> = (0..tokens)
                        .map(|u| cols.clone().map(|e| q[t][e] * k[u][e]).sum::<f64>() / (d_h as f64).sqrt())
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for e in cols.clone() {
                        context[t][e] = (0..tokens).map(|u| weights[u] / total * v[u][e]).sum();
                    }
                }
            }
            for t in 0..tokens {
                let o = self.linear(&at("attention.output.dense"), &context[t]);
                (0..d).for_each(|e| x[t][e] += lambda1[e] * o[e]);
                let hidden: Vec<f64> = self
                    .linear(&at(fc1), &self.layer_norm(&at(norm2), &x[t]))
                    .into_iter()
                    .map(gelu)
                    .collect();
                let m = self.linear(&at(fc2), &hidden);
                (0..d).for_each(|e| x[t][e] += lambda2[e] * m[e]);
            }
        }
        x.iter().map(|t| self.layer_norm("layernorm", t)).collect()
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / 2f64.sqrt()))
}

/// erf(x) = 2/√π · e^{−x²} · Σ_n 2ⁿ x^{2n+1} / (1·3·…·(2n+1)): all terms positive, so the sum
/// loses no digits to cancellation; |erf(6)| = 1 − 2e-17.
fn erf(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..500 {
        term *= 2.0 * x * x / (2 * n + 1) as f64;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

#[test]
fn forward_matches_a_naive_reference_written_from_the_hf_tensors() {
    // erf(0.5) = 0.5204998778130465 (Abramowitz & Stegun, table 7.1).
    assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
    let x = images(2, [28, 28], 10);
    let pixels = x.to_data().to_vec::<f64>().unwrap();
    for variant in VARIANTS {
        let vit = model(variant, 11);
        let tensors = vit.to_tensors();
        let prefix = if variant == Variant::ViT { "vit." } else { "" };
        let reference = Reference { tensors: &tensors, prefix, config: vit.config() };
        let got = vit.forward_tokens(x.clone()).to_data().to_vec::<f64>().unwrap();
        let image = 3 * 28 * 28;
        let mut worst = 0.0f64;
        for b in 0..2 {
            let expected = reference.forward(&pixels[b * image..(b + 1) * image]);
            for (t, token) in expected.iter().enumerate() {
                for (e, value) in token.iter().enumerate() {
                    worst = worst.max((got[(b * 17 + t) * 16 + e] - value).abs());
                }
            }
        }
        assert!(worst < 1e-10, "{variant:?}: max |ViT − reference| = {worst:e}");
    }
}

#[test]
fn an_abc_psi_step_trains_only_the_adapters() {
    let mut vit = model(Variant::Dinov2, 12);
    vit.add_adapters(&AdapterTarget::DEFAULT, 2, &mut StdRng::seed_from_u64(13)).unwrap();
    let x = images(4, [28, 28], 14);
    let target = vit.forward(x.clone()).mul_scalar(0.5);
    let loss = |v: &ViT<B>| (v.forward(x.clone()) - target.clone()).square().sum().mul_scalar(0.5);
    let frozen = |v: &ViT<B>| match v.projection(1, AdapterTarget::MlpFc1) {
        Some(Projection::Frozen(l)) => l.weight().clone(),
        _ => panic!("fc1 has no adapter"),
    };
    let (before, fc1) = (loss(&vit).into_scalar(), frozen(&vit));
    let truncation = TruncationConfig::relative(0.01);
    let mut trainer = Trainer::<B>::new(IntegratorKind::AbcPsi, &truncation, Optimizer::sgd(0.01)).unwrap();
    trainer.prepare(&mut vit).unwrap();
    trainer.step(&mut vit, loss).unwrap();
    let after = loss(&vit).into_scalar();
    assert!(after < before, "loss {before} → {after}");
    assert_eq!(max_abs(frozen(&vit) - fc1), 0.0);
    assert!(vit.low_rank_layers_mut().iter().any(|l| l.delta_weight().abs().max().into_scalar() > 0.0));
}

/// Each adapter's ∇_K, ∇_L, ∇_S and ∇_b from one tangent pass of `loss`, and ∇ of the images.
fn tangent_grads<A: AutodiffBackend>(
    vit: &mut ViT<A>,
    x: &Tensor<A, 4>,
    kernel: Attention,
) -> (Vec<Tensor<A, 2>>, Tensor<A, 4>) {
    vit.set_attention(kernel);
    for l in vit.low_rank_layers_mut() {
        l.begin_pass(Pass::Tangent);
    }
    let x = x.clone().require_grad();
    let loss = vit.forward_tokens(x.clone()).tanh().sum();
    let grads = loss.backward();
    let image_grad = x.grad(&grads).map(Tensor::from_inner).expect("the images need a gradient");
    let mut factor_grads = Vec::new();
    for l in vit.low_rank_layers_mut() {
        let g = l.take_grads(&grads);
        let bias = g.bias.expect("∇b").unsqueeze::<2>();
        factor_grads.extend([g.k.expect("∇K"), g.l.expect("∇L"), g.s.expect("∇S"), bias]);
    }
    (factor_grads, image_grad)
}

/// On NdArray, `Fused` is Burn's attention op (under autodiff its explicit fallback): the
/// outputs and every gradient agree to 1e-12 in f64.
#[test]
fn fused_attention_matches_the_explicit_softmax_in_value_and_gradients() {
    for variant in VARIANTS {
        let mut vit = model(variant, 21);
        vit.add_adapters(&AdapterTarget::DEFAULT, 2, &mut StdRng::seed_from_u64(22)).unwrap();
        // Non-zero S, so that the adapters take part in the forward pass.
        let mut rng = StdRng::seed_from_u64(23);
        let x = images(2, [28, 21], 24);
        let before = vit.forward_tokens(x.clone());
        for l in vit.low_rank_layers_mut() {
            let s = l.s().clone().add_scalar(0.3) + common::gaussian(2, 2, &mut rng).mul_scalar(0.1);
            l.set_factors(l.u().clone(), s, l.v().clone()).unwrap();
        }
        assert!(max_diff(vit.forward_tokens(x.clone()), before) > 1e-3, "the adapters change the output");
        let mut explicit = vit.clone();
        explicit.set_attention(Attention::Explicit);
        vit.set_attention(Attention::Fused);
        let (fused_out, explicit_out) = (vit.forward_tokens(x.clone()), explicit.forward_tokens(x.clone()));
        assert!(max_diff(fused_out, explicit_out) < 1e-12, "{variant:?}: outputs differ");
        let (fused, fused_x) = tangent_grads(&mut vit, &x, Attention::Fused);
        let (reference, reference_x) = tangent_grads(&mut explicit, &x, Attention::Explicit);
        assert_eq!(fused.len(), 4 * 3 * tiny(variant).num_hidden_layers);
        for (i, (g, r)) in fused.into_iter().zip(reference).enumerate() {
            let scale = r.clone().abs().max().into_scalar();
            assert!(scale > 0.0, "{variant:?}: gradient {i} is zero");
            let diff = max_diff(g, r);
            assert!(
                diff <= 1e-12 * scale.max(1.0),
                "{variant:?}: gradient {i} differs by {diff:e} (scale {scale:e})"
            );
        }
        assert!(max_diff(fused_x, reference_x) < 1e-12, "{variant:?}: image gradients differ");
    }
}

/// The same on the CPU training backend in f32, where `Fused` runs the CPU backend's kernel
/// forward and dlrt's backward (`dlrt::layers::attention`); NdArray above runs Burn's op. The
/// loss and every gradient of a fine-tuning pass agree to 1e-5 relative (to the gradient's
/// largest entry, or 1 if that is smaller).
#[test]
fn fused_attention_trains_like_the_explicit_softmax_on_the_cpu_training_backend() {
    type F = dlrt::TrainBackend;
    let device = Default::default();
    for variant in VARIANTS {
        let mut vit = ViT::<F>::random(tiny(variant), &mut StdRng::seed_from_u64(41), &device).unwrap();
        vit.add_adapters(&AdapterTarget::DEFAULT, 2, &mut StdRng::seed_from_u64(42)).unwrap();
        let mut rng = StdRng::seed_from_u64(43);
        for l in vit.low_rank_layers_mut() {
            let s = common::gaussian(2, 2, &mut rng).mul_scalar(0.3).into_data().convert::<f32>();
            let s = l.s().clone().add(Tensor::from_data(s, &device));
            l.set_factors(l.u().clone(), s, l.v().clone()).unwrap();
        }
        let x = Tensor::<F, 4>::from_data(images(2, [28, 21], 44).into_data().convert::<f32>(), &device);
        let loss = |vit: &ViT<F>| vit.forward_tokens(x.clone()).tanh().sum().into_scalar() as f64;
        let mut explicit = vit.clone();
        explicit.set_attention(Attention::Explicit);
        vit.set_attention(Attention::Fused);
        let (fused_loss, explicit_loss) = (loss(&vit), loss(&explicit));
        let scale = explicit_loss.abs().max(1.0);
        assert!(
            (fused_loss - explicit_loss).abs() <= 1e-5 * scale,
            "{variant:?}: loss {fused_loss} vs {explicit_loss}"
        );
        let (fused, fused_x) = tangent_grads(&mut vit, &x, Attention::Fused);
        let (reference, reference_x) = tangent_grads(&mut explicit, &x, Attention::Explicit);
        assert_eq!(fused.len(), 4 * 3 * tiny(variant).num_hidden_layers);
        let max = |t: Tensor<F, 2>| t.abs().max().into_scalar() as f64;
        for (i, (g, r)) in fused.into_iter().zip(reference).enumerate() {
            let scale = max(r.clone());
            assert!(scale > 0.0, "{variant:?}: gradient {i} is zero");
            // Relative to at least 1: ∇b of the key projection is zero but for round-off (the
            // softmax ignores a shift shared by a row's scores).
            let diff = max(g - r);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{variant:?}: gradient {i} differs by {diff:e} (scale {scale:e})"
            );
        }
        let scale = reference_x.clone().abs().max().into_scalar() as f64;
        let diff = (fused_x - reference_x).abs().max().into_scalar() as f64;
        assert!(diff <= 1e-5 * scale, "{variant:?}: image gradients differ by {diff:e} (scale {scale:e})");
    }
}

/// The fused kernel of the CPU backend itself, without autodiff:
/// both of its strategies, the one that holds the T×T scores (short sequences) and the tiled
/// one (T² above 2¹⁸, here T = 1 + 23² = 530), in f32.
#[test]
fn the_cpu_backends_fused_kernel_matches_the_explicit_softmax() {
    type F = dlrt::CpuBackend;
    let device = Default::default();
    let mut vit = ViT::<F>::random(tiny(Variant::Dinov2), &mut StdRng::seed_from_u64(31), &device).unwrap();
    for side in [28, 161] {
        let x = Tensor::<F, 4>::from_data(images(1, [side, side], 32).into_data().convert::<f32>(), &device);
        vit.set_attention(Attention::Explicit);
        let explicit = vit.forward_tokens(x.clone());
        vit.set_attention(Attention::Fused);
        let fused = vit.forward_tokens(x);
        let scale = explicit.clone().abs().max().into_scalar() as f64;
        let diff = (fused - explicit).abs().max().into_scalar() as f64;
        assert!(diff <= 1e-5 * scale, "{side} px: max |fused − explicit| = {diff:e} (scale {scale})");
    }
}

/// The CPU training backend (flex f32 under autodiff, whose GELU, layer norms and explicit
/// attention's softmax are fused kernels) gives the loss and the image gradient of the f64
/// model (NdArray, the exact chain of tensor ops) to f32 round-off: the fused forward and
/// backward passes change a fine-tuning step by no more than f32 arithmetic does.
#[test]
fn the_training_backend_with_the_fused_gelu_matches_f64_in_loss_and_gradients() {
    type F = dlrt::TrainBackend;
    let device = Default::default();
    for variant in VARIANTS {
        let mut reference = model(variant, 41);
        let mut vit = ViT::<F>::random(tiny(variant), &mut StdRng::seed_from_u64(41), &device).unwrap();
        reference.add_adapters(&AdapterTarget::DEFAULT, 2, &mut StdRng::seed_from_u64(42)).unwrap();
        vit.add_adapters(&AdapterTarget::DEFAULT, 2, &mut StdRng::seed_from_u64(42)).unwrap();
        for (l, r) in vit.low_rank_layers_mut().into_iter().zip(reference.low_rank_layers_mut()) {
            let s = r.s().clone().add_scalar(0.3);
            r.set_factors(r.u().clone(), s.clone(), r.v().clone()).unwrap();
            let s = Tensor::from_data(s.into_data().convert::<f32>(), &device);
            l.set_factors(l.u().clone(), s, l.v().clone()).unwrap();
        }
        let x = images(2, [28, 21], 43).require_grad();
        let loss = reference.forward_tokens(x.clone()).tanh().sum();
        let grad = x.grad(&loss.backward()).unwrap().into_data().to_vec::<f64>().unwrap();
        let x32 = Tensor::<F, 4>::from_data(x.into_data().convert::<f32>(), &device).require_grad();
        let loss32 = vit.forward_tokens(x32.clone()).tanh().sum();
        let grad32 =
            x32.grad(&loss32.backward()).unwrap().into_data().convert::<f64>().to_vec::<f64>().unwrap();
        let (loss, loss32) = (loss.into_scalar(), loss32.into_scalar() as f64);
        assert!((loss - loss32).abs() <= 1e-5 * loss.abs().max(1.0), "{variant:?}: loss {loss} vs {loss32}");
        let scale = grad.iter().fold(0f64, |m, g| m.max(g.abs()));
        let gap = grad.iter().zip(&grad32).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap <= 1e-5 * scale, "{variant:?}: image gradients differ by {gap:e} (scale {scale:e})");
    }
}
