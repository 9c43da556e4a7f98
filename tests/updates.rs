//! What one step of each integrator does to every parameter, in f64 at round-off: parallel
//! BUG's tangent step, the bias and dense-layer steps per pass, bc-PSI's and BUG's full steps
//! (the analogues of T1–T3 of the notes, `shared/dlrt-notes.md` §1), the rank bounds and the
//! absolute truncation rule, the extreme ranks 1 and min(n, m), and the fixed point at the best
//! rank-r approximation.
#![allow(non_snake_case)]

mod common;

use burn::tensor::Tensor;
use common::*;
use dlrt::integrators::IntegratorKind::{self, *};
use dlrt::layers::Network;
use dlrt::linalg::{orth, thin_svd, to_faer, TruncationConfig};
use dlrt::optim::Optimizer;
use dlrt::problems::MatrixProblem;
use dlrt::train::Trainer;
use dlrt::{DenseLinear, LowRankLinear};
use rand::{rngs::StdRng, SeedableRng};

const ROUND_OFF: f64 = 1e-12;

/// Every method with low-rank layers.
const LOW_RANK: [IntegratorKind; 7] = [AbcPsi, AbcPsiOnePass, BcPsi, Psi, Bug, ParallelBug, Lora];
/// The methods that choose a new rank every step.
const ADAPTIVE: [IntegratorKind; 4] = [AbcPsi, AbcPsiOnePass, Bug, ParallelBug];

fn problem(n: usize, m: usize, r: usize, seed: u64) -> MatrixProblem<B> {
    let mut rng = StdRng::seed_from_u64(seed);
    MatrixProblem::new(LowRankLinear::random(n, m, r, false, 1.0, &mut rng, &Default::default()).unwrap())
}

/// A prepared trainer for `kind` with plain SGD of step λ.
fn trainer(
    kind: IntegratorKind,
    truncation: TruncationConfig,
    lr: f64,
    p: &mut impl Network<B>,
) -> Trainer<B> {
    let t = Trainer::new(kind, &truncation, Optimizer::sgd(lr)).unwrap();
    t.prepare(p).unwrap();
    t
}

/// Pass `i` of a step on ½‖x W + 1bᵀ − A‖² (x = I).
fn ls_pass(p: &mut MatrixProblem<B>, t: &mut Trainer<B>, i: usize, a: &T2) {
    t.pass(p, i, &mut |p: &MatrixProblem<B>| p.least_squares(a)).unwrap();
}

fn ls_step(p: &mut MatrixProblem<B>, t: &mut Trainer<B>, a: &T2) -> f64 {
    t.step(p, |p| p.least_squares(a)).unwrap().loss
}

fn sigma(w: &T2) -> Vec<f64> {
    thin_svd(to_faer(w).as_ref(), "W").unwrap().sigma
}

/// ‖(σ_{k+1}, …)‖₂.
fn tail(sigma: &[f64], k: usize) -> f64 {
    sigma[k..].iter().map(|s| s * s).sum::<f64>().sqrt()
}

/// Column sums of an n×m matrix, as a vector of length m.
fn column_sums(x: T2) -> Tensor<B, 1> {
    let m = x.dims()[1];
    x.sum_dim(0).reshape([m])
}

/// x W + 1bᵀ for x = I: b added to every row.
fn plus_bias(w: T2, b: &Tensor<B, 1>) -> T2 {
    w + b.clone().unsqueeze::<2>()
}

fn max_abs1(t: Tensor<B, 1>) -> f64 {
    t.abs().max().into_scalar()
}

#[test]
fn parallel_bug_step_is_w0_minus_the_tangent_projected_gradient() {
    let mut rng = StdRng::seed_from_u64(200);
    let a = gaussian(30, 25, &mut rng);
    let (lr, r) = (0.7, 3);
    let mut p = problem(30, 25, r, 201);
    let (U0, V0, W0) = (p.layer.u().clone(), p.layer.v().clone(), p.layer.to_dense());
    let G = W0.clone() - a.clone();
    // ϑ far below round-off of ‖W1‖: the truncation keeps all 2r directions.
    let mut t = trainer(ParallelBug, TruncationConfig::relative(1e-15), lr, &mut p);
    ls_step(&mut p, &mut t, &a);
    let W1 = p.layer.to_dense();
    let expected = W0.clone() - tangent_projection(&U0, &V0, &G).mul_scalar(lr);
    let err = fro(W1.clone() - expected.clone()) / fro(W1.clone());
    assert!(err < ROUND_OFF, "‖W1 − (W0 − λP(W0)G)‖/‖W1‖ = {err:e}");
    assert!(p.layer.rank() <= 2 * r, "rank {} > 2r", p.layer.rank());
    assert!(orthonormality_error(p.layer.u()) < ROUND_OFF && orthonormality_error(p.layer.v()) < ROUND_OFF);
    // The Galerkin step in the same bases, W0 − λÛÛᵀGV̂V̂ᵀ (a core with its (2,2) block
    // −λŨᵀGṼ filled in), is far from it here: the check above tells the two apart.
    let U_hat = orth(&Tensor::cat(vec![U0.clone(), G.clone().matmul(V0.clone())], 1));
    let V_hat = orth(&Tensor::cat(vec![V0, G.clone().transpose().matmul(U0)], 1));
    let galerkin = W0
        - U_hat
            .clone()
            .matmul(U_hat.transpose().matmul(G).matmul(V_hat.clone()))
            .matmul(V_hat.transpose())
            .mul_scalar(lr);
    assert!(fro(galerkin - expected) > 1e-3 * fro(W1));
}

#[test]
fn bias_takes_one_step_from_the_gradient_of_the_pass_that_steps_it() {
    // ℒ = ½‖W + 1bᵀ − A‖² (x = I): ∇_b = column sums of W + 1bᵀ − A at the state the stepping
    // pass evaluates. That state is W0 for every method but bc-PSI (U1U1ᵀW0, its S̃ does not
    // keep W0) and PSI (U1 S̃ V0ᵀ after its backward S-step); their biases step in the L-pass.
    let (n, m, r, lr) = (12, 9, 3, 0.3);
    let mut rng = StdRng::seed_from_u64(210);
    let a = gaussian(n, m, &mut rng);
    let layer = LowRankLinear::from_factors(
        orthonormal(n, r, &mut rng),
        diag(&[3.0, 2.0, 0.5]),
        orthonormal(m, r, &mut rng),
        Some(vector(&[0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.0, -2.0, 1.0])),
    )
    .unwrap();
    for kind in LOW_RANK {
        let mut p = MatrixProblem::new(layer.clone());
        let mut t = trainer(kind, TruncationConfig::relative(0.01), lr, &mut p);
        let (U0, S0, V0, W0) =
            (p.layer.u().clone(), p.layer.s().clone(), p.layer.v().clone(), p.layer.to_dense());
        let b0 = p.layer.bias().unwrap().clone();
        let passes = t.spec().passes.len();
        let (mut stepped, mut W_pass, mut U_after_k) = (None, None, None);
        for i in 0..passes {
            let (W_before, b_before) = (p.layer.to_dense(), p.layer.bias().unwrap().clone());
            ls_pass(&mut p, &mut t, i, &a);
            if i == 0 {
                U_after_k = Some(p.layer.u().clone());
            }
            if max_abs1(p.layer.bias().unwrap().clone() - b_before) > 0.0 {
                assert!(stepped.is_none(), "{kind}: the bias stepped in passes {stepped:?} and {i}");
                (stepped, W_pass) = (Some(i), Some(W_before));
            }
        }
        assert_eq!(stepped, Some(passes - 1), "{kind}: the bias steps in the last pass");
        let W_pass = W_pass.unwrap();
        // The documented state of that pass, from W0 and the new basis U1 of the K-pass.
        let U1 = U_after_k.unwrap();
        let documented = match kind {
            BcPsi => U1.clone().matmul(U1.transpose().matmul(W0.clone())),
            Psi => {
                // K1 = U0S0 − λG0V0 = U1Ŝ; S-pass at U1ŜV0ᵀ; S̃ = Ŝ + λ U1ᵀ G(U1ŜV0ᵀ) V0.
                let G0 = plus_bias(W0.clone(), &b0) - a.clone();
                let K1 = U0.clone().matmul(S0.clone()) - G0.matmul(V0.clone()).mul_scalar(lr);
                assert!(fro(outside_span(&U1, &K1)) < ROUND_OFF * fro(K1.clone()));
                let S_hat = U1.clone().transpose().matmul(K1);
                let W_s = U1.clone().matmul(S_hat.clone()).matmul(V0.clone().transpose());
                let G_s = plus_bias(W_s, &b0) - a.clone();
                let S_tilde = S_hat + U1.clone().transpose().matmul(G_s).matmul(V0.clone()).mul_scalar(lr);
                U1.matmul(S_tilde).matmul(V0.clone().transpose())
            }
            _ => W0.clone(),
        };
        let off = fro(W_pass.clone() - documented) / fro(W0.clone());
        assert!(off < ROUND_OFF, "{kind}: the stepping pass is not at the documented state ({off:e})");
        if matches!(kind, BcPsi | Psi) {
            assert!(
                fro(W_pass.clone() - W0.clone()) > 1e-3 * fro(W0.clone()),
                "{kind}: W_pass = W0 tells nothing"
            );
        }
        let b1 = b0.clone() - column_sums(plus_bias(W_pass, &b0) - a.clone()).mul_scalar(lr);
        let err = max_abs1(p.layer.bias().unwrap().clone() - b1.clone()) / max_abs1(b1);
        assert!(err < ROUND_OFF, "{kind}: b1 is not b0 − λ∇_b ℒ at the stepping pass ({err:e})");
    }
}

/// A low-rank layer (with bias) followed by a dense one: z = (x W + 1bᵀ) D + 1cᵀ, x = I.
#[derive(Clone)]
struct Stack {
    low: LowRankLinear<B>,
    dense: DenseLinear<B>,
}

impl Stack {
    fn forward(&self) -> T2 {
        self.dense.forward(self.low.forward(eye(self.low.n())))
    }
}

impl Network<B> for Stack {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![&mut self.low]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        vec![&mut self.dense]
    }
}

#[test]
fn dense_layer_takes_one_sgd_step_from_the_gradient_at_the_start_of_the_step() {
    // With H = W + 1bᵀ and R = H D + 1cᵀ − A: ∇_D = HᵀR, ∇_c = column sums of R, at the step's
    // start. PSI's later passes see other W (and all passes would see a D already stepped), so
    // a second step, or one from a later pass, shows.
    let (n, m, k, r, lr) = (10, 8, 6, 3, 0.05);
    let mut rng = StdRng::seed_from_u64(220);
    let a = gaussian(n, k, &mut rng);
    let stack = Stack {
        low: LowRankLinear::from_factors(
            orthonormal(n, r, &mut rng),
            diag(&[3.0, 2.0, 1.0]),
            orthonormal(m, r, &mut rng),
            Some(gaussian(1, m, &mut rng).reshape([m])),
        )
        .unwrap(),
        dense: DenseLinear::from_weights(
            gaussian(m, k, &mut rng),
            Some(gaussian(1, k, &mut rng).reshape([k])),
        )
        .unwrap(),
    };
    for kind in LOW_RANK {
        let mut net = stack.clone();
        let mut t = trainer(kind, TruncationConfig::relative(0.01), lr, &mut net);
        let (D0, c0) = (net.dense.weight().clone(), net.dense.bias().unwrap().clone());
        let H0 = net.low.forward(eye(n));
        let R = net.forward() - a.clone();
        let D1 = D0 - H0.transpose().matmul(R.clone()).mul_scalar(lr);
        let c1 = c0 - column_sums(R).mul_scalar(lr);
        t.step(&mut net, |net: &Stack| (net.forward() - a.clone()).powf_scalar(2.0).sum().mul_scalar(0.5))
            .unwrap();
        let err_D = fro(net.dense.weight().clone() - D1.clone()) / fro(D1);
        let err_c = max_abs1(net.dense.bias().unwrap().clone() - c1.clone()) / max_abs1(c1);
        assert!(
            err_D < ROUND_OFF && err_c < ROUND_OFF,
            "{kind}: dense step off by {err_D:e} (W), {err_c:e} (b)"
        );
    }
}

#[test]
fn bc_psi_step_is_the_projected_step_at_u1_u1t_w0() {
    // (1) K1 = U0S0 − λG(W0)V0, U1 = orth(K1); (3) S̃ = (U1ᵀU0)S0, so the L-pass is at
    // W̃ = U1U1ᵀW0; (4)–(5) W1 = U1 L1ᵀ = W̃ − λ U1U1ᵀ G(W̃). After a warm-up step S0 is a
    // full (triangular) matrix, so an element-wise (U1ᵀU0) ∘ S0 would differ.
    let mut rng = StdRng::seed_from_u64(230);
    let a = gaussian(30, 20, &mut rng);
    let lr = 0.4;
    let mut p = problem(30, 20, 4, 231);
    let mut t = trainer(BcPsi, TruncationConfig::default(), lr, &mut p);
    ls_step(&mut p, &mut t, &a);
    let (U0, S0, V0, W0) =
        (p.layer.u().clone(), p.layer.s().clone(), p.layer.v().clone(), p.layer.to_dense());
    let off_diagonal = S0.clone() - S0.clone() * eye(4);
    assert!(max_abs(off_diagonal) > 1e-3, "the warm-up should leave S0 non-diagonal");
    ls_pass(&mut p, &mut t, 0, &a);
    let U1 = p.layer.u().clone();
    let K1 = U0.matmul(S0) - (W0.clone() - a.clone()).matmul(V0).mul_scalar(lr);
    assert!(fro(outside_span(&U1, &K1)) < ROUND_OFF * fro(K1));
    ls_pass(&mut p, &mut t, 1, &a);
    let P = |X: T2| U1.clone().matmul(U1.clone().transpose().matmul(X));
    let W_tilde = P(W0.clone());
    let expected = W_tilde.clone() - P(W_tilde - a.clone()).mul_scalar(lr);
    let err = fro(p.layer.to_dense() - expected.clone()) / fro(expected);
    assert!(err < ROUND_OFF, "‖W1 − (U1U1ᵀW0 − λU1U1ᵀG(U1U1ᵀW0))‖/‖W1‖ = {err:e}");
    assert_eq!(p.layer.rank(), 4);
    assert!(orthonormality_error(p.layer.u()) < ROUND_OFF && orthonormality_error(p.layer.v()) < ROUND_OFF);
}

#[test]
fn bug_augmented_bases_hold_w0_and_the_s_step_is_the_galerkin_step() {
    let mut rng = StdRng::seed_from_u64(240);
    let a = gaussian(40, 30, &mut rng);
    let (lr, r) = (0.6, 5);
    let mut p = problem(40, 30, r, 241);
    let (U0, V0, W0) = (p.layer.u().clone(), p.layer.v().clone(), p.layer.to_dense());
    let G = W0.clone() - a.clone();
    let mut t = trainer(Bug, TruncationConfig::relative(1e-15), lr, &mut p);
    // The K-pass keeps K1 aside: the L-pass evaluates W0 with the same factors.
    ls_pass(&mut p, &mut t, 0, &a);
    assert!(fro(p.layer.u().clone() - U0.clone()) == 0.0 && fro(p.layer.to_dense() - W0.clone()) == 0.0);
    ls_pass(&mut p, &mut t, 1, &a);
    let (U_hat, V_hat) = (p.layer.u().clone(), p.layer.v().clone());
    assert_eq!((U_hat.dims()[1], V_hat.dims()[1]), (2 * r, 2 * r));
    assert!(orthonormality_error(&U_hat) < ROUND_OFF && orthonormality_error(&V_hat) < ROUND_OFF);
    // T1: Û Ŝ V̂ᵀ = W0.
    let err = fro(p.layer.to_dense() - W0.clone()) / fro(W0.clone());
    assert!(err < ROUND_OFF, "ÛŜV̂ᵀ moved W0 by {err:e}");
    // T3: span(Û) ⊇ span(U0) + span(GV0), span(V̂) ⊇ span(V0) + span(GᵀU0).
    let (GV0, GtU0) = (G.clone().matmul(V0.clone()), G.clone().transpose().matmul(U0.clone()));
    assert!(fro(outside_span(&U_hat, &U0)) < ROUND_OFF && fro(outside_span(&V_hat, &V0)) < ROUND_OFF);
    assert!(fro(outside_span(&U_hat, &GV0)) < ROUND_OFF * fro(GV0));
    assert!(fro(outside_span(&V_hat, &GtU0)) < ROUND_OFF * fro(GtU0));
    // T2: W1 = W0 − λ ÛÛᵀ G V̂V̂ᵀ (ϑ keeps every direction).
    ls_pass(&mut p, &mut t, 2, &a);
    let step =
        U_hat.clone().matmul(U_hat.transpose().matmul(G).matmul(V_hat.clone())).matmul(V_hat.transpose());
    let expected = W0 - step.mul_scalar(lr);
    let err = fro(p.layer.to_dense() - expected.clone()) / fro(expected);
    assert!(err < ROUND_OFF, "‖W1 − (W0 − λÛÛᵀGV̂V̂ᵀ)‖/‖W1‖ = {err:e}");
}

#[test]
fn rank_bounds_bind_when_the_tolerance_asks_for_more_or_fewer() {
    let mut rng = StdRng::seed_from_u64(250);
    // Full rank with a flat spectrum: ϑ = 1e-12 keeps every direction, r_max = 5 caps it.
    let full = gaussian(20, 15, &mut rng);
    // One dominant direction: ϑ = 0.9 keeps 1, r_min = 3 holds the rank at 3.
    let dominant = with_spectrum(20, 15, &[10.0, 1.0, 0.5, 0.3, 0.2, 0.1], &mut rng);
    for kind in ADAPTIVE {
        let mut p = problem(20, 15, 3, 251);
        let mut t = trainer(kind, TruncationConfig::relative(1e-12).with_bounds(2, Some(5)), 0.5, &mut p);
        for step in 0..4 {
            ls_step(&mut p, &mut t, &full);
            let dims = (p.layer.u().dims()[1], p.layer.s().dims(), p.layer.v().dims()[1]);
            assert_eq!(dims, (5, [5, 5], 5), "{kind}: step {step} left the r_max = 5 cap");
        }
        let mut free = problem(20, 15, 4, 252);
        let mut t = trainer(kind, TruncationConfig::relative(0.9), 0.5, &mut free);
        ls_step(&mut free, &mut t, &dominant);
        assert!(free.layer.rank() < 3, "{kind}: without r_min, ϑ = 0.9 keeps {}", free.layer.rank());
        let mut p = problem(20, 15, 4, 252);
        let mut t = trainer(kind, TruncationConfig::relative(0.9).with_bounds(3, None), 0.5, &mut p);
        for step in 0..4 {
            ls_step(&mut p, &mut t, &dominant);
            assert_eq!(p.layer.rank(), 3, "{kind}: step {step} went under r_min = 3");
            assert_eq!(p.layer.v().dims()[1], 3);
        }
    }
}

#[test]
fn absolute_truncation_drops_the_longest_tail_below_the_tolerance() {
    // W1 before truncation is known at W0: abc-PSI W0 − λQQᵀG with Q = orth([U0 | GV0]) (T2),
    // parallel BUG W0 − λP(W0)G. ϑ is set halfway between two tail norms of W1, so the
    // absolute rule ‖σ_{r1+1:}‖₂ < ϑ keeps exactly r1 = 5 of 2r = 8.
    let mut rng = StdRng::seed_from_u64(260);
    let a = gaussian(30, 20, &mut rng);
    let (lr, r) = (0.5, 4);
    for kind in [AbcPsi, ParallelBug] {
        let mut p = problem(30, 20, r, 261);
        let (U0, V0, W0) = (p.layer.u().clone(), p.layer.v().clone(), p.layer.to_dense());
        let G = W0.clone() - a.clone();
        let W1 = match kind {
            AbcPsi => {
                let Q = orth(&Tensor::cat(vec![U0.clone(), G.clone().matmul(V0)], 1));
                W0 - Q.clone().matmul(Q.transpose().matmul(G)).mul_scalar(lr)
            }
            _ => W0.clone() - tangent_projection(&U0, &V0, &G).mul_scalar(lr),
        };
        let s = sigma(&W1);
        let tol = (tail(&s, 4) + tail(&s, 5)) / 2.0;
        // The relative rule with the same number would pick another rank.
        let norm = tail(&s, 0);
        let relative = (0..=s.len()).find(|&k| tail(&s, k) < tol * norm).unwrap();
        assert!(relative != 5, "ϑ = {tol} does not tell the rules apart");
        let truncation = TruncationConfig { tol, absolute: true, ..TruncationConfig::default() };
        let mut t = trainer(kind, truncation, lr, &mut p);
        ls_step(&mut p, &mut t, &a);
        assert_eq!(p.layer.rank(), 5, "{kind}: ϑ = {tol} absolute");
        let dropped = fro(W1.clone() - p.layer.to_dense());
        assert!((dropped - tail(&s, 5)).abs() < 1e-10 * norm, "{kind}: dropped {dropped} ≠ ‖σ_6:‖");
        assert!(dropped < tol);
    }
}

#[test]
fn ranks_one_and_full_take_finite_orthonormal_steps() {
    for (n, m) in [(12, 8), (8, 12)] {
        let mut rng = StdRng::seed_from_u64(270);
        let a = gaussian(n, m, &mut rng);
        for r in [1, n.min(m)] {
            for kind in LOW_RANK {
                // Plain factorization is not robust: its stable step shrinks with ‖A‖, ‖B‖.
                let lr = if kind == Lora { 0.02 } else { 0.3 };
                let mut p = problem(n, m, r, 271);
                let mut t = trainer(kind, TruncationConfig::relative(0.01), lr, &mut p);
                let first = ls_step(&mut p, &mut t, &a);
                ls_step(&mut p, &mut t, &a);
                ls_step(&mut p, &mut t, &a);
                let W = p.layer.to_dense();
                let last = 0.5 * fro(W.clone() - a.clone()).powi(2);
                let what = format!("{kind}, {n}×{m}, r = {r}");
                assert!(fro(W).is_finite() && last < first, "{what}: loss {first} → {last}");
                let rank = p.layer.rank();
                assert!(
                    (1..=n.min(m)).contains(&rank) && p.layer.v().dims()[1] == rank,
                    "{what}: rank {rank}"
                );
                if matches!(kind, BcPsi | Psi | Lora) {
                    assert_eq!(rank, r, "{what}: a fixed-rank method changed the rank");
                }
                // LoRA's factors A, B are free; every other method keeps orthonormal bases.
                if kind != Lora {
                    let e = orthonormality_error(p.layer.u()).max(orthonormality_error(p.layer.v()));
                    assert!(e < ROUND_OFF, "{what}: ‖UᵀU − I‖, ‖VᵀV − I‖ up to {e:e}");
                }
            }
        }
    }
}

#[test]
fn best_rank_r_approximation_is_a_fixed_point_of_every_integrator() {
    // At W0 = A_r, G = A_r − A has G V0 = 0 and Gᵀ U0 = 0: the factor steps do nothing, and
    // what augmentation adds (directions orthogonal to U0 or V0 carrying at most λσ_{r+1})
    // falls below σ_r and is truncated away at the bounds (r, r).
    let mut rng = StdRng::seed_from_u64(280);
    let a = with_spectrum(30, 20, &[10.0, 8.0, 6.0, 5.0, 0.5, 0.2, 0.1], &mut rng);
    let a_r = best_rank(&a, 4);
    let start = LowRankLinear::<B>::from_dense(&a_r, Some(4), &TruncationConfig::default(), None).unwrap();
    for kind in LOW_RANK {
        let mut p = MatrixProblem::new(start.clone());
        let mut t = trainer(kind, TruncationConfig::relative(1e-12).with_bounds(4, Some(4)), 0.5, &mut p);
        ls_step(&mut p, &mut t, &a);
        let err = fro(p.layer.to_dense() - a_r.clone()) / fro(a_r.clone());
        assert!(err < ROUND_OFF, "{kind}: ‖W1 − A_r‖/‖A_r‖ = {err:e}");
    }
}

#[test]
fn adaptive_constructors_reject_an_invalid_truncation() {
    use dlrt::integrators::{abc_psi, bug, parallel_bug};
    let bad = [TruncationConfig::relative(1.5), TruncationConfig::relative(0.1).with_bounds(4, Some(2))];
    for t in bad {
        assert!(abc_psi::AbcPsi::new(t.clone()).is_err(), "abc-PSI took {t:?}");
        assert!(bug::Bug::new(t.clone()).is_err(), "BUG took {t:?}");
        assert!(parallel_bug::ParallelBug::new(t.clone()).is_err(), "parallel BUG took {t:?}");
    }
    assert!(abc_psi::AbcPsi::new(TruncationConfig::default()).is_ok());
}

#[test]
fn a_trainer_rejects_an_invalid_optimizer() {
    use dlrt::optim::OptimizerConfig;
    // Optimizer's fields are public and `Optimizer::sgd` checks nothing: the trainer checks.
    let zero_eps = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 0.0, weight_decay: 0.0 };
    let bad = [Optimizer::sgd(0.0), Optimizer::sgd(f64::NAN), Optimizer { config: zero_eps, lr: 1e-3 }];
    for opt in bad {
        let err =
            Trainer::<B>::new(AbcPsi, &TruncationConfig::default(), opt.clone()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("lr") || err.to_string().contains("eps"), "{opt:?}: {err}");
        assert!(Trainer::<B>::from_integrator(None, opt).is_err());
    }
    assert!(Trainer::<B>::new(AbcPsi, &TruncationConfig::default(), Optimizer::sgd(0.01)).is_ok());
}
