//! The properties T1–T7 of the notes (`shared/dlrt-notes.md`, §1), checked in f64 on matrix
//! problems through the same training step that trains networks.
//!
//! Tolerances are stated per check; "round-off" means a few hundred ulps of the quantities
//! involved, well below any algorithmic error these tests would catch.
#![allow(non_snake_case)]

mod common;

use burn::tensor::Tensor;
use common::*;
use dlrt::integrators::abc_psi::{AbcPsi, AbcPsiForm};
use dlrt::integrators::{BatchedUpdate, IntegratorKind};
use dlrt::layers::Network;
use dlrt::linalg::TruncationConfig;
use dlrt::optim::Optimizer;
use dlrt::problems::MatrixProblem;
use dlrt::train::Trainer;
use dlrt::LowRankLinear;
use rand::{rngs::StdRng, SeedableRng};

const ROUND_OFF: f64 = 1e-12;

fn problem(n: usize, m: usize, r: usize, rng: &mut StdRng) -> MatrixProblem<B> {
    MatrixProblem::new(LowRankLinear::random(n, m, r, false, 1.0, rng, &Default::default()).unwrap())
}

/// A trainer for `kind`; the helpers below set its optimizer before each pass.
fn build(kind: IntegratorKind, truncation: TruncationConfig) -> Trainer<B> {
    Trainer::new(kind, &truncation, Optimizer::sgd(1.0)).unwrap()
}

/// A trainer for a configured abc-PSI.
fn abc_psi(integ: AbcPsi) -> Trainer<B> {
    Trainer::from_integrator(Some(Box::new(integ)), Optimizer::sgd(1.0)).unwrap()
}

/// Runs pass `i` of a step on the least-squares loss ½‖W − A‖².
fn ls_pass(p: &mut MatrixProblem<B>, integ: &mut Trainer<B>, opt: &Optimizer, i: usize, a: &T2) -> f64 {
    integ.opt = opt.clone();
    integ.pass(p, i, &mut |p: &MatrixProblem<B>| p.least_squares(a)).unwrap()
}

fn ls_step(p: &mut MatrixProblem<B>, integ: &mut Trainer<B>, opt: &Optimizer, a: &T2) -> f64 {
    integ.opt = opt.clone();
    integ.step(p, |p| p.least_squares(a)).unwrap().loss
}

fn loss(w: &T2, a: &T2) -> f64 {
    0.5 * fro(w.clone() - a.clone()).powi(2)
}

#[test]
fn t1_abc_psi_bc_s_step_keeps_w0_but_bc_psi_does_not() {
    let mut rng = StdRng::seed_from_u64(10);
    let a = gaussian(40, 30, &mut rng);
    let opt = Optimizer::sgd(0.3);
    for kind in [IntegratorKind::AbcPsi, IntegratorKind::BcPsi] {
        let mut p = problem(40, 30, 6, &mut StdRng::seed_from_u64(11));
        let W0 = p.layer.to_dense();
        let mut integ = build(kind, TruncationConfig::relative(0.01));
        ls_pass(&mut p, &mut integ, &opt, 0, &a);
        let err = fro(p.layer.to_dense() - W0.clone()) / fro(W0.clone());
        match kind {
            // Û S̄ V0ᵀ = W0 to round-off, with Û of width 2r.
            IntegratorKind::AbcPsi => {
                assert_eq!(p.layer.u().dims(), [40, 12]);
                assert!(err < ROUND_OFF, "abc-PSI changed W0 by {err:e}");
            }
            // U1 S̃ V0ᵀ = U1 U1ᵀ W0, a different matrix.
            _ => {
                let U1 = p.layer.u().clone();
                let projected = U1.clone().matmul(U1.transpose()).matmul(W0.clone());
                assert!(fro(p.layer.to_dense() - projected) < ROUND_OFF * fro(W0));
                assert!(err > 1e-3, "bc-PSI's S-step should not preserve W0 here, moved {err:e}");
            }
        }
    }
}

#[test]
fn t2_t3_abc_psi_step_is_w0_minus_projected_gradient_in_both_forms() {
    let mut rng = StdRng::seed_from_u64(20);
    let a = gaussian(50, 35, &mut rng);
    let lr = 0.7;
    let opt = Optimizer::sgd(lr);
    let mut results = Vec::new();
    for form in [AbcPsiForm::SingleQr, AbcPsiForm::QrThenSvd] {
        let mut p = problem(50, 35, 5, &mut StdRng::seed_from_u64(21));
        let (U0, V0, W0) = (p.layer.u().clone(), p.layer.v().clone(), p.layer.to_dense());
        let G = W0.clone() - a.clone();
        // ϑ far below round-off of ‖W1‖: the truncation keeps all of W1 = Û L1ᵀ.
        let mut integ = abc_psi(AbcPsi::new(TruncationConfig::relative(1e-15)).unwrap().with_form(form));
        ls_pass(&mut p, &mut integ, &opt, 0, &a);
        let U_hat = p.layer.u().clone();
        assert!(orthonormality_error(&U_hat) < ROUND_OFF);
        // T3: span(Û) ⊇ span(U0) + span(G V0).
        let outside = |X: T2| X.clone() - U_hat.clone().matmul(U_hat.clone().transpose().matmul(X));
        assert!(fro(outside(U0.clone())) < ROUND_OFF);
        let GV0 = G.clone().matmul(V0.clone());
        assert!(fro(outside(GV0.clone())) < ROUND_OFF * fro(GV0));
        ls_pass(&mut p, &mut integ, &opt, 1, &a);
        // T2: W1 = W0 − λ Û Ûᵀ G.
        let expected = W0.clone() - U_hat.clone().matmul(U_hat.transpose().matmul(G)).mul_scalar(lr);
        let err = fro(p.layer.to_dense() - expected.clone()) / fro(expected);
        assert!(err < ROUND_OFF, "{form:?}: ‖W1 − (W0 − λÛÛᵀG)‖/‖W1‖ = {err:e}");
        assert!(
            orthonormality_error(p.layer.u()) < ROUND_OFF && orthonormality_error(p.layer.v()) < ROUND_OFF
        );
        results.push(p.layer.to_dense());
    }
    assert!(fro(results[0].clone() - results[1].clone()) < ROUND_OFF * fro(results[0].clone()));
}

#[test]
fn t5_truncation_error_is_the_dropped_tail_and_below_tau() {
    let mut rng = StdRng::seed_from_u64(30);
    let a = gaussian(60, 40, &mut rng);
    let opt = Optimizer::sgd(0.5);
    for tau in [0.4, 0.2, 0.1, 0.05] {
        let mut p = problem(60, 40, 8, &mut StdRng::seed_from_u64(31));
        let mut integ = build(IntegratorKind::AbcPsi, TruncationConfig::relative(tau));
        let W0 = p.layer.to_dense();
        ls_pass(&mut p, &mut integ, &opt, 0, &a);
        let U_hat = p.layer.u().clone();
        ls_pass(&mut p, &mut integ, &opt, 1, &a);
        let W1 = W0.clone()
            - U_hat.clone().matmul(U_hat.transpose().matmul(W0.clone() - a.clone())).mul_scalar(0.5);
        let dropped = fro(W1.clone() - p.layer.to_dense());
        assert!(dropped < tau * fro(W1.clone()), "τ = {tau}: dropped {dropped} ≥ τ‖W1‖");
        if tau >= 0.1 {
            assert!(p.layer.rank() < 16, "τ = {tau} truncated nothing");
        }
        // Minimality: keeping one fewer would exceed τ‖W1‖.
        let sigma = dlrt::linalg::thin_svd(dlrt::linalg::to_faer(&W1).as_ref(), "W1").unwrap().sigma;
        let r1 = p.layer.rank();
        let tail = |k: usize| sigma[k..].iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!((dropped - tail(r1)).abs() < 1e-10 * fro(W1.clone()), "‖W1 − W1_trunc‖ = ‖σ_tail‖");
        assert!(tail(r1 - 1) >= tau * fro(W1));
    }
}

#[test]
fn t4_descent_inequality_and_monotone_loss_for_adaptive_integrators() {
    let mut rng = StdRng::seed_from_u64(40);
    let a = gaussian(30, 25, &mut rng);
    for kind in [IntegratorKind::AbcPsi, IntegratorKind::Bug, IntegratorKind::ParallelBug] {
        for lr in [0.3, 1.0, 1.9] {
            let opt = Optimizer::sgd(lr);
            let mut p = problem(30, 25, 2, &mut StdRng::seed_from_u64(41));
            let mut integ = build(kind, TruncationConfig::relative(1e-14));
            let mut previous = f64::INFINITY;
            let scale = loss(&p.layer.to_dense(), &a);
            for step in 0..12 {
                let (U0, V0, W0) = (p.layer.u().clone(), p.layer.v().clone(), p.layer.to_dense());
                let PG = fro(tangent_projection(&U0, &V0, &(W0.clone() - a.clone()))).powi(2);
                let l0 = ls_step(&mut p, &mut integ, &opt, &a);
                assert!((l0 - loss(&W0, &a)).abs() < 1e-9 * l0);
                let l1 = loss(&p.layer.to_dense(), &a);
                // T4 (L = 1): ℒ(W1) ≤ ℒ(W0) − λ(1 − λ/2)‖P(W0)G‖².
                let bound = l0 - lr * (1.0 - lr / 2.0) * PG;
                // Round-off allowance relative to the starting loss (the loss can reach 0).
                assert!(l1 <= bound + 1e-12 * scale, "{kind} λ={lr} step {step}: {l1} > {bound}");
                assert!(l1 <= previous + 1e-12 * scale, "{kind} λ={lr}: loss went up at step {step}");
                previous = l1;
            }
        }
    }
}

#[test]
fn t6_converges_to_best_rank_r_approximation_with_vanishing_projected_gradient() {
    let mut rng = StdRng::seed_from_u64(50);
    // Spectral gap at r = 4: σ = 10, 8, 6, 5 | 0.5, 0.2, 0.1.
    let a = with_spectrum(40, 30, &[10.0, 8.0, 6.0, 5.0, 0.5, 0.2, 0.1], &mut rng);
    let a_r = best_rank(&a, 4);
    let bounds = TruncationConfig::relative(1e-12).with_bounds(4, Some(4));
    for kind in
        [IntegratorKind::AbcPsi, IntegratorKind::Bug, IntegratorKind::ParallelBug, IntegratorKind::Psi]
    {
        let opt = Optimizer::sgd(0.8);
        let mut p = problem(40, 30, 4, &mut StdRng::seed_from_u64(51));
        let mut integ = build(kind, bounds.clone());
        for _ in 0..80 {
            ls_step(&mut p, &mut integ, &opt, &a);
        }
        let W = p.layer.to_dense();
        let PG = fro(tangent_projection(p.layer.u(), p.layer.v(), &(W.clone() - a.clone())));
        let dist = fro(W - a_r.clone()) / fro(a_r.clone());
        assert!(dist < 1e-8, "{kind}: ‖W − A_r‖/‖A_r‖ = {dist:e}");
        assert!(PG < 1e-8, "{kind}: ‖P(W)∇ℒ‖ = {PG:e}");
        // At the stationary point P(W)G = 0 a further step does not increase the loss.
        let before = loss(&p.layer.to_dense(), &a);
        ls_step(&mut p, &mut integ, &opt, &a);
        assert!(loss(&p.layer.to_dense(), &a) <= before + 1e-12 * before);
    }
}

#[test]
fn rank_adaptivity_finds_the_target_rank_from_below_and_above() {
    let mut rng = StdRng::seed_from_u64(60);
    let a = gaussian(50, 7, &mut rng).matmul(gaussian(40, 7, &mut rng).transpose());
    for kind in [IntegratorKind::AbcPsi, IntegratorKind::Bug, IntegratorKind::ParallelBug] {
        for r0 in [3, 20] {
            let opt = Optimizer::sgd(0.5);
            let mut p = problem(50, 40, r0, &mut StdRng::seed_from_u64(61));
            let mut integ = build(kind, TruncationConfig::relative(1e-6));
            for _ in 0..60 {
                ls_step(&mut p, &mut integ, &opt, &a);
            }
            assert_eq!(p.layer.rank(), 7, "{kind} from rank {r0}");
            assert!(fro(p.layer.to_dense() - a.clone()) < 1e-6 * fro(a.clone()));
        }
    }
}

/// Explicit Euler on the factor ODEs of dynamical low-rank approximation with F = −∇ℒ:
/// U̇ = (I − UUᵀ) F V S⁻¹, Ṡ = Uᵀ F V, V̇ = (I − VVᵀ) Fᵀ U S⁻ᵀ. Returns W after the step.
fn naive_euler_step(U: &mut T2, S: &mut T2, V: &mut T2, F: &T2, h: f64) {
    let svd = dlrt::linalg::thin_svd(dlrt::linalg::to_faer(S).as_ref(), "S").unwrap();
    let inv =
        faer::Mat::from_fn(
            svd.sigma.len(),
            svd.sigma.len(),
            |i, j| if i == j { 1.0 / svd.sigma[i] } else { 0.0 },
        );
    let S_inv: T2 = dlrt::linalg::from_faer(
        (svd.V.as_ref() * inv * svd.U.as_ref().transpose()).as_ref(),
        &Default::default(),
    );
    let (n, m) = (U.dims()[0], V.dims()[0]);
    let pu = eye(n) - U.clone().matmul(U.clone().transpose());
    let pv = eye(m) - V.clone().matmul(V.clone().transpose());
    let dU = pu.matmul(F.clone()).matmul(V.clone()).matmul(S_inv.clone());
    let dS = U.clone().transpose().matmul(F.clone()).matmul(V.clone());
    let dV = pv.matmul(F.clone().transpose()).matmul(U.clone()).matmul(S_inv.transpose());
    *U = U.clone() + dU.mul_scalar(h);
    *S = S.clone() + dS.mul_scalar(h);
    *V = V.clone() + dV.mul_scalar(h);
}

#[test]
fn t7_abc_psi_is_stable_with_tiny_singular_values_where_naive_euler_blows_up() {
    let mut rng = StdRng::seed_from_u64(70);
    // Singular values 1, 1e-1, …, 1e-8 plus a perturbation outside the rank-9 manifold.
    let sigma: Vec<f64> = (0..9).map(|j| 10f64.powi(-j)).collect();
    let a = with_spectrum(40, 30, &sigma, &mut rng) + gaussian(40, 30, &mut rng).mul_scalar(1e-6);
    let start = best_rank(&a, 9) + gaussian(40, 30, &mut rng).mul_scalar(1e-4);
    let r = 9;
    let init = LowRankLinear::<B>::from_dense(&start, Some(r), &TruncationConfig::default(), None).unwrap();
    let err0 = fro(init.to_dense() - a.clone());
    let lr = 1.0; // λ = 1/L for ½‖W − A‖².

    let mut p = MatrixProblem::new(init.clone());
    let mut integ = build(IntegratorKind::AbcPsi, TruncationConfig::relative(1e-12).with_bounds(r, Some(r)));
    for _ in 0..20 {
        ls_step(&mut p, &mut integ, &Optimizer::sgd(lr), &a);
    }
    let abc_err = fro(p.layer.to_dense() - a.clone());
    assert!(abc_err.is_finite() && abc_err < err0, "abc-PSI: {abc_err:e} vs start {err0:e}");
    assert!(abc_err < 2.0 * fro(best_rank(&a, r) - a.clone()));

    let (mut U, mut S, mut V) = (init.u().clone(), init.s().clone(), init.v().clone());
    let mut naive_err = err0;
    for _ in 0..20 {
        let W = U.clone().matmul(S.clone()).matmul(V.clone().transpose());
        naive_euler_step(&mut U, &mut S, &mut V, &(a.clone() - W), lr);
        naive_err = fro(U.clone().matmul(S.clone()).matmul(V.clone().transpose()) - a.clone());
        if !naive_err.is_finite() || naive_err > 1e6 * err0 {
            break;
        }
    }
    assert!(!naive_err.is_finite() || naive_err > 1e6 * err0, "naive Euler did not blow up: {naive_err:e}");
}

/// A(t) = e^{tW1} e^t D e^{tW2} with D = diag(2^{-j}) for j < r and 0 beyond: rank r.
struct LubichOseledets {
    W1: faer::Mat<f64>,
    W2: faer::Mat<f64>,
    d: Vec<f64>,
}

impl LubichOseledets {
    fn at(&self, t: f64) -> T2 {
        let n = self.d.len();
        let D = faer::Mat::from_fn(n, n, |i, j| if i == j { t.exp() * self.d[i] } else { 0.0 });
        let a = expm(&(&self.W1 * faer::Scale(t))) * D * expm(&(&self.W2 * faer::Scale(t)));
        dlrt::linalg::from_faer(a.as_ref(), &Default::default())
    }
}

#[test]
fn psi_is_exact_on_the_lubich_oseledets_test_when_a_has_rank_r() {
    let mut rng = StdRng::seed_from_u64(80);
    let (n, r) = (30, 5);
    let lo = LubichOseledets {
        W1: skew(n, &mut rng),
        W2: skew(n, &mut rng),
        d: (0..n).map(|j| if j < r { 2f64.powi(-(j as i32) - 1) } else { 0.0 }).collect(),
    };
    // Y0 = A(0) = D: U0 = V0 = first r unit vectors, S0 = D_r.
    let eye_r = eye(n).slice([0..n, 0..r]);
    let layer = LowRankLinear::from_factors(eye_r.clone(), diag(&lo.d[..r]), eye_r, None).unwrap();
    let mut p = MatrixProblem::new(layer);
    let mut integ = build(IntegratorKind::Psi, TruncationConfig::default());
    let (h, lr) = (0.1, 0.5);
    let opt = Optimizer::sgd(lr);
    for k in 0..5 {
        let (t0, t1) = (k as f64 * h, (k + 1) as f64 * h);
        let increment = lo.at(t1) - lo.at(t0);
        integ.opt = opt.clone();
        integ.step(&mut p, |p| p.linear(&increment, lr)).unwrap();
        let err = fro(p.layer.to_dense() - lo.at(t1)) / fro(lo.at(t1));
        assert!(err < 1e-12, "step {k}: ‖Y − A(t)‖/‖A(t)‖ = {err:e}");
    }
    // The contrast: the same test with A of full rank is not reproduced exactly.
    let full = LubichOseledets { d: (0..n).map(|j| 2f64.powi(-(j as i32) - 1)).collect(), ..lo };
    let layer =
        LowRankLinear::from_dense(&full.at(0.0), Some(r), &TruncationConfig::default(), None).unwrap();
    let mut p = MatrixProblem::new(layer);
    let increment = full.at(h) - full.at(0.0);
    integ.opt = opt.clone();
    integ.step(&mut p, |p| p.linear(&increment, lr)).unwrap();
    assert!(fro(p.layer.to_dense() - full.at(h)) > 1e-6);
}

#[test]
fn counters_match_the_cost_table() {
    // (passes, QR, SVD) per step for one layer, as in the integrators' module docs.
    let expected = [
        (IntegratorKind::AbcPsi, 2, 1, 1),
        (IntegratorKind::AbcPsiOnePass, 1, 1, 1),
        (IntegratorKind::BcPsi, 2, 2, 0),
        (IntegratorKind::Psi, 3, 2, 0),
        (IntegratorKind::Bug, 3, 2, 1),
        (IntegratorKind::ParallelBug, 1, 2, 1),
        (IntegratorKind::Lora, 1, 0, 0),
    ];
    let mut rng = StdRng::seed_from_u64(90);
    let a = gaussian(20, 15, &mut rng);
    for (kind, passes, qr, svd) in expected {
        let mut p = problem(20, 15, 3, &mut StdRng::seed_from_u64(91));
        let mut integ = build(kind, TruncationConfig::relative(0.1));
        integ.prepare(&mut p).unwrap();
        let opt = Optimizer::sgd(0.1);
        for _ in 0..3 {
            ls_step(&mut p, &mut integ, &opt, &a);
        }
        let c = integ.counters();
        assert_eq!((c.passes, c.qr, c.svd), (3 * passes, 3 * qr, 3 * svd), "{kind}");
    }
    let mut two_step =
        abc_psi(AbcPsi::new(TruncationConfig::relative(0.1)).unwrap().with_form(AbcPsiForm::QrThenSvd));
    let mut p = problem(20, 15, 3, &mut rng);
    ls_step(&mut p, &mut two_step, &Optimizer::sgd(0.1), &a);
    let c = two_step.counters();
    assert_eq!((c.qr, c.svd), (2, 1));
}

#[test]
fn step_times_are_disjoint_parts_of_the_step() {
    let mut rng = StdRng::seed_from_u64(92);
    let a = gaussian(20, 15, &mut rng);
    for kind in [IntegratorKind::AbcPsi, IntegratorKind::Psi] {
        let mut p = problem(20, 15, 3, &mut StdRng::seed_from_u64(93));
        let mut integ = build(kind, TruncationConfig::relative(0.1));
        integ.prepare(&mut p).unwrap();
        let started = std::time::Instant::now();
        integ.opt = Optimizer::sgd(0.1);
        let report = integ.step(&mut p, |p: &MatrixProblem<B>| p.least_squares(&a)).unwrap();
        let wall = started.elapsed().as_secs_f64();
        let t = report.times;
        assert!(t.forward > 0.0 && t.backward > 0.0 && t.update > 0.0, "{kind}: {t:?}");
        assert!(t.forward + t.backward + t.update <= wall, "{kind}: {t:?} within {wall} s");
    }
}

#[test]
fn every_low_rank_integrator_decreases_a_least_squares_loss_with_every_optimizer() {
    use dlrt::optim::OptimizerConfig;
    let mut rng = StdRng::seed_from_u64(100);
    let a = gaussian(30, 6, &mut rng).matmul(gaussian(20, 6, &mut rng).transpose());
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        // Plain factorization is not robust: its stable step shrinks with ‖A‖, ‖B‖ (about 1/25 here).
        let euler = if kind == IntegratorKind::Lora { 0.02 } else { 0.5 };
        // (optimizer, required loss reduction after 60 steps): SGD and momentum converge
        // linearly; Adam's per-entry steps of size ~λ make it slow on this problem.
        let optimizers = [
            (Optimizer::sgd(euler), 1e-6),
            (Optimizer::new(OptimizerConfig::Momentum { beta: 0.5 }, euler / 2.0).unwrap(), 1e-6),
            (Optimizer::new(OptimizerConfig::adamw(0.0), 0.1).unwrap(), 0.5),
        ];
        for (opt, reduction) in &optimizers {
            let mut p = problem(30, 20, 6, &mut StdRng::seed_from_u64(101));
            let mut integ = build(kind, TruncationConfig::relative(1e-3));
            integ.prepare(&mut p).unwrap();
            let first = ls_step(&mut p, &mut integ, opt, &a);
            for _ in 0..60 {
                ls_step(&mut p, &mut integ, opt, &a);
            }
            let last = loss(&p.layer.to_dense(), &a);
            assert!(last < reduction * first, "{kind} with {:?}: {first} → {last}", opt.config);
        }
    }
}

/// A rank-4 adapter (S = 0) on a frozen Gaussian 30×20 base, and the target base + rank 3.
fn adapter_problem(seed: u64) -> (MatrixProblem<B>, T2, T2) {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = gaussian(30, 20, &mut rng);
    let a = base.clone() + gaussian(30, 3, &mut rng).matmul(gaussian(20, 3, &mut rng).transpose());
    let layer = LowRankLinear::adapter(base.clone(), 4, None, &mut rng).unwrap();
    (MatrixProblem::new(layer), base, a)
}

#[test]
fn adapters_start_at_the_base_and_abc_psi_steps_satisfy_t1_t2_on_a_frozen_base() {
    let (mut p, base, a) = adapter_problem(110);
    assert!(fro(p.layer.to_dense() - base.clone()) == 0.0);
    let lr = 0.4;
    let opt = Optimizer::sgd(lr);
    let mut integ = build(IntegratorKind::AbcPsi, TruncationConfig::relative(1e-15));
    let W0 = p.layer.to_dense();
    ls_pass(&mut p, &mut integ, &opt, 0, &a);
    assert!(fro(p.layer.to_dense() - W0.clone()) < ROUND_OFF * fro(W0.clone()), "T1 on a frozen base");
    let U_hat = p.layer.u().clone();
    ls_pass(&mut p, &mut integ, &opt, 1, &a);
    let G = W0.clone() - a.clone();
    let expected = W0 - U_hat.clone().matmul(U_hat.transpose().matmul(G)).mul_scalar(lr);
    assert!(fro(p.layer.to_dense() - expected.clone()) < ROUND_OFF * fro(expected), "T2 on a frozen base");
    assert!(fro(p.layer.base().unwrap().clone() - base) == 0.0, "the base stays frozen");
    let _: Tensor<B, 2> = p.layer.delta_weight();
}

#[test]
fn abc_psi_one_pass_equals_two_passes_when_every_layer_is_low_rank() {
    use dlrt::layers::Init;
    use dlrt::models::Mlp;
    use dlrt::optim::OptimizerConfig;
    use dlrt::train::loss::cross_entropy;
    let mut rng = StdRng::seed_from_u64(120);
    let device = Default::default();
    let x = gaussian(16, 12, &mut rng);
    let labels = Tensor::<B, 1, burn::tensor::Int>::from_ints(
        [0, 1, 2, 3, 0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 1, 1],
        &device,
    );
    let ce = |net: &Mlp<B>| cross_entropy(net.forward(x.clone()), labels.clone());
    let truncation = TruncationConfig::relative(0.05);
    let optimizers = [Optimizer::sgd(0.5), Optimizer::new(OptimizerConfig::adamw(0.0), 0.05).unwrap()];
    // All three layers low-rank (biases included): the L-pass sees exactly the K-pass's network.
    // With a dense output layer the two-pass form's L-gradient sees that layer's step.
    for (low_rank, equal) in [([true, true, true], true), ([true, true, false], false)] {
        for opt in &optimizers {
            let net = Mlp::<B>::new(&[12, 10, 8, 4], &low_rank, 3, Init::He, 2f64.sqrt(), &mut rng, &device)
                .unwrap();
            let (mut two, mut one) = (net.clone(), net);
            let (mut integ_two, mut integ_one) = (
                abc_psi(AbcPsi::new(truncation.clone()).unwrap()),
                abc_psi(AbcPsi::new(truncation.clone()).unwrap().one_pass()),
            );
            (integ_two.opt, integ_one.opt) = (opt.clone(), opt.clone());
            for _ in 0..4 {
                let l2 = integ_two.step(&mut two, ce).unwrap().loss;
                let l1 = integ_one.step(&mut one, ce).unwrap().loss;
                assert!(!equal || (l1 - l2).abs() < ROUND_OFF * l2.abs(), "losses {l1} vs {l2}");
            }
            assert_eq!(integ_one.counters().passes, 4);
            let (lr_two, lr_one) = (two.low_rank_layers(), one.low_rank_layers());
            let mut worst = 0.0f64;
            for (a, b) in lr_two.iter().zip(&lr_one) {
                if equal {
                    assert_eq!(a.rank(), b.rank());
                }
                worst = worst.max(fro(a.to_dense() - b.to_dense()) / fro(a.to_dense()));
                let (ba, bb) = (a.bias().unwrap().clone(), b.bias().unwrap().clone());
                worst = worst.max((ba.clone() - bb).abs().max().into_scalar() / ba.abs().max().into_scalar());
            }
            if equal {
                assert!(worst < 1e-10, "{:?}: one pass differs from two by {worst:e}", opt.config);
            } else {
                assert!(worst > 1e-6, "{:?}: a dense layer's step should show in the L-gradient", opt.config);
            }
        }
    }
}

#[test]
fn abc_psi_one_pass_step_satisfies_t2_on_a_frozen_base() {
    let (mut p, _, a) = adapter_problem(130);
    let lr = 0.4;
    let W0 = p.layer.to_dense();
    let (U0, V0) = (p.layer.u().clone(), p.layer.v().clone());
    let G = W0.clone() - a.clone();
    let mut integ = build(IntegratorKind::AbcPsiOnePass, TruncationConfig::relative(1e-15));
    ls_pass(&mut p, &mut integ, &Optimizer::sgd(lr), 0, &a);
    // Û = orth([K0 − λ G V0 | U0]) spans U0 and G V0 (T3), and W1 = W0 − λ Û Ûᵀ G (T2).
    let W1 = p.layer.to_dense();
    let step = W0.clone() - W1.clone();
    let outside = |X: T2| X.clone() - U0.clone().matmul(U0.clone().transpose().matmul(X));
    let GV0 = G.clone().matmul(V0);
    // Û Ûᵀ G is the orthogonal projection of G onto span(U0, G V0).
    let basis = dlrt::linalg::orth(&Tensor::cat(vec![U0.clone(), outside(GV0)], 1));
    let expected = basis.clone().matmul(basis.transpose().matmul(G)).mul_scalar(lr);
    assert!(fro(step.clone() - expected.clone()) < ROUND_OFF * fro(expected), "T2 in one pass");
    assert!(orthonormality_error(p.layer.u()) < ROUND_OFF && orthonormality_error(p.layer.v()) < ROUND_OFF);
}

#[test]
fn optimizer_state_carried_across_basis_changes_beats_resetting_it() {
    use dlrt::optim::OptimizerConfig;
    let mut rng = StdRng::seed_from_u64(120);
    let a = gaussian(30, 6, &mut rng).matmul(gaussian(20, 6, &mut rng).transpose());
    // Measured at 100 steps (final loss, carried vs reset): momentum helps only when its
    // velocity survives the basis changes. Adam at λ = 0.03 gains a few percent; at λ = 0.1
    // resetting happens to do better for BUG and parallel BUG, so Adam is not asserted there.
    let optimizers = [
        Optimizer::new(OptimizerConfig::Momentum { beta: 0.9 }, 0.05).unwrap(),
        Optimizer::new(OptimizerConfig::adamw(0.0), 0.03).unwrap(),
    ];
    for opt in &optimizers {
        for kind in [IntegratorKind::AbcPsi, IntegratorKind::Bug, IntegratorKind::ParallelBug] {
            let mut losses = Vec::new();
            for reset in [false, true] {
                let mut p = problem(30, 20, 6, &mut StdRng::seed_from_u64(121));
                let mut integ = build(kind, TruncationConfig::relative(1e-3));
                for _ in 0..100 {
                    ls_step(&mut p, &mut integ, opt, &a);
                    if reset {
                        integ.state = Default::default();
                    }
                }
                losses.push(loss(&p.layer.to_dense(), &a));
            }
            eprintln!("{kind} {:?}: carried {:.3e}, reset {:.3e}", opt.config, losses[0], losses[1]);
            assert!(
                losses[0] < losses[1],
                "{kind} {:?}: carried {} vs reset {}",
                opt.config,
                losses[0],
                losses[1]
            );
        }
    }
}

#[test]
fn adamw_weight_decay_acts_once_per_step_in_every_integrator() {
    // A loss without a gradient (ℒ = −⟨W, 0⟩/λ): AdamW's update is 0 and only the decoupled
    // decay acts, W1 = (1 − λ wd) W0 as in dense AdamW. Each integrator decays the factor of
    // the pass that updates W (abc-PSI and bc-PSI L, BUG and parallel BUG S) once; PSI splits
    // the decay like the rest of the flow (K and L forward, S backward), (1 − λwd)²(1 + λwd),
    // which is 1 − λwd to first order; LoRA decays both of its factors, (1 − λwd)².
    use dlrt::optim::OptimizerConfig;
    let (lr, wd) = (0.1, 0.5);
    let opt = Optimizer::new(OptimizerConfig::adamw(wd), lr).unwrap();
    let h = lr * wd;
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        let mut p = problem(20, 15, 4, &mut StdRng::seed_from_u64(1));
        let mut integ = build(kind, TruncationConfig::relative(1e-6));
        integ.opt = opt.clone();
        integ.prepare(&mut p).unwrap();
        let W0 = p.layer.to_dense();
        let zero = W0.zeros_like();
        integ.step(&mut p, |p| p.linear(&zero, lr)).unwrap();
        let want = match kind {
            IntegratorKind::Psi => (1.0 - h) * (1.0 - h) * (1.0 + h),
            IntegratorKind::Lora => (1.0 - h) * (1.0 - h),
            _ => 1.0 - h,
        };
        let err = fro(p.layer.to_dense() - W0.clone().mul_scalar(want)) / fro(W0);
        assert!(err < ROUND_OFF, "{kind}: W1 is not {want} W0 (relative error {err:.1e})");
    }
}

/// The FLOP model's pass count (`StepCost`, stated in each integrator's file) is the number of
/// passes the integrator runs, and its name is the one configs and the command line use.
#[test]
fn each_methods_cost_model_counts_its_own_passes() {
    for kind in IntegratorKind::ALL {
        let passes = match kind.build::<B>(&TruncationConfig::relative(0.1), BatchedUpdate::Auto).unwrap() {
            Some(integrator) => integrator.spec().passes.len(),
            None => 1,
        };
        assert_eq!(kind.cost().passes, passes, "{kind}");
        // The registry's name is the config's and the command line's.
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
        let clap_name = clap::ValueEnum::to_possible_value(&kind).unwrap();
        assert_eq!(clap_name.get_name(), kind.name());
    }
}
