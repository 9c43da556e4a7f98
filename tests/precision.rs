//! Mixed precision on the CPU backend (`precision = "bf16"`): a tiny random DINOv2 with
//! adapters trains with its frozen part in bf16 to within a stated tolerance of the same run in
//! f32, while the factors, biases, head and optimizer state stay f32, and the merged export is
//! f32.

mod common;

use burn::tensor::{DType, Int, Tensor, TensorData};
use common::tiny_vit;
use dlrt::integrators::IntegratorKind;
use dlrt::layers::{AdapterTarget, Precision};
use dlrt::linalg::TruncationConfig;
use dlrt::models::vit::{Projection, Variant};
use dlrt::models::{ViT, ViTClassifier};
use dlrt::optim::{Optimizer, OptimizerConfig};
use dlrt::train::{loss::cross_entropy, Trainer};
use dlrt::TrainBackend;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

type B = TrainBackend;

const CLASSES: usize = 4;
const BATCH: usize = 16;
const STEPS: usize = 30;

/// A fixed batch of 28 px images and labels.
fn batch() -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let mut rng = StdRng::seed_from_u64(1);
    let values: Vec<f32> = (0..BATCH * 3 * 28 * 28).map(|_| StandardNormal.sample(&mut rng)).collect();
    let device = Default::default();
    let images = Tensor::from_data(TensorData::new(values, [BATCH, 3, 28, 28]), &device);
    let labels = (0..BATCH as i64).map(|i| i % CLASSES as i64).collect();
    (images, Tensor::from_data(TensorData::new(labels, [BATCH]), &device))
}

/// `STEPS` abc-PSI steps (Adam) on one batch; the loss before each step and after the last.
fn train(precision: Precision) -> (Vec<f64>, ViTClassifier<B>, Trainer<B>) {
    let device = Default::default();
    let backbone =
        ViT::<B>::random(tiny_vit(Variant::Dinov2), &mut StdRng::seed_from_u64(2), &device).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut model =
        ViTClassifier::new(backbone, &AdapterTarget::DEFAULT, 4, CLASSES, &mut rng, &device).unwrap();
    model.backbone.set_precision(precision).unwrap();
    let truncation = TruncationConfig::relative(0.05).with_bounds(1, Some(8));
    let opt = Optimizer::new(OptimizerConfig::adamw(0.0), 1e-2).unwrap();
    let mut trainer = Trainer::new(IntegratorKind::AbcPsi, &truncation, opt).unwrap();
    trainer.prepare(&mut model).unwrap();
    let (images, labels) = batch();
    let loss = |m: &ViTClassifier<B>| cross_entropy(m.forward(images.clone()), labels.clone());
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        losses.push(trainer.step(&mut model, loss).unwrap().loss);
    }
    let last = loss(&model);
    assert_eq!(last.dtype(), DType::F32, "the loss is f32");
    losses.push(last.into_scalar() as f64);
    (losses, model, trainer)
}

#[test]
fn a_bf16_backbone_trains_like_f32_and_keeps_the_trained_part_f32() {
    let (f32_losses, _, _) = train(Precision::F32);
    let (bf16_losses, mut model, trainer) = train(Precision::Bf16);
    let (first, last) = (f32_losses[0], f32_losses[STEPS]);
    assert!(last < 0.5 * first, "the f32 run learns: {first} → {last}");
    assert!(bf16_losses[STEPS] < 0.5 * bf16_losses[0], "the bf16 run learns: {bf16_losses:?}");
    // Tolerances: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2 %), so the first
    // forward pass may differ by a few per mille (1 % allowed); along the 30 steps the loss
    // curves may drift apart by at most 2 % of the starting loss.
    assert!((bf16_losses[0] - first).abs() <= 0.01 * first, "first losses {} vs {first}", bf16_losses[0]);
    for (k, (b, f)) in bf16_losses.iter().zip(&f32_losses).enumerate() {
        assert!((b - f).abs() <= 0.02 * first, "after {k} steps: bf16 {b} vs f32 {f}");
    }
    // The casts happened: the runs are not the same run.
    assert!(bf16_losses.iter().zip(&f32_losses).any(|(a, b)| a != b));

    // The frozen part is bf16, everything trained is f32.
    let fc1 = model.backbone.projection(0, AdapterTarget::MlpFc1).unwrap();
    assert_eq!(fc1.dtype(), DType::BF16);
    for (_, target, l) in model.backbone.adapters() {
        assert_eq!(l.base().unwrap().dtype(), DType::BF16, "{target:?}: W0");
        let bias = l.bias().unwrap().dtype();
        for (name, dtype) in [("U", l.u().dtype()), ("S", l.s().dtype()), ("V", l.v().dtype()), ("b", bias)] {
            assert_eq!(dtype, DType::F32, "{target:?}: {name}");
        }
    }
    assert_eq!(model.head.weight().dtype(), DType::F32);
    let mut moments = 0;
    for layer in &trainer.state.low_rank {
        let s = &layer.slots;
        for slot in [&s.k, &s.l, &s.s, &s.u, &s.v, &s.bias] {
            for m in slot.state.iter().flat_map(|st| [&st.moment_1, &st.moment_2]).flatten() {
                assert_eq!(m.dtype(), DType::F32, "optimizer state");
                moments += 1;
            }
        }
    }
    assert!(moments > 0, "Adam has state after {STEPS} steps");

    // The merged export is f32: W0 (bf16 values) + U S Vᵀ, not rounded to bf16.
    let (_, _, query) = model.backbone.adapters().next().unwrap();
    let expected = query.base().unwrap().clone().cast(DType::F32) + query.delta_weight();
    let expected: Vec<f32> = expected.transpose().into_data().to_vec().unwrap();
    let tensors = model.backbone.to_tensors();
    let (_, exported) = &tensors["encoder.layer.0.attention.attention.query.weight"];
    assert_eq!(exported, &expected);
    let off_bf16 = exported.iter().filter(|&&v| half_bf16(v) != v).count();
    assert!(off_bf16 > exported.len() / 2, "the export was rounded to bf16");
    model.backbone.merge_adapters().unwrap();
    match model.backbone.projection(0, AdapterTarget::Query).unwrap() {
        Projection::Frozen(l) => assert_eq!(l.weight().dtype(), DType::F32),
        Projection::Adapted(_) => panic!("merged"),
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as f32.
fn half_bf16(v: f32) -> f32 {
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}
