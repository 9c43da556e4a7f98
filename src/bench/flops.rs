//! Matrix-product FLOPs of one training step, per method, from its passes and factor sizes.
//!
//! A product of a b×k and a k×w matrix costs 2bkw. One pass evaluates the network forward and
//! backward; the backward is counted as twice the forward (the input gradient and the weight
//! gradient each repeat the forward's products), so a pass costs 3 forwards. A dense n×m layer
//! costs 2bnm per forward in every pass. A low-rank layer of rank r (n×m) costs what its
//! parametrization in that pass multiplies, with the bases as wide as the method has them
//! there (Û = orth([K1 | U0]) is min(2r, n) wide, V̂ min(2r, m)):
//!
//! | method | passes: forward products of one low-rank layer |
//! |---|---|
//! | abc-PSI | K: x K V0ᵀ (r); L: x Û Lᵀ (Û 2r wide) |
//! | abc-PSI, one pass | x U S Vᵀ forward and input gradient, then xᵀ(δ V0) and δᵀ(x Û): not 3 forwards |
//! | bc-PSI | K: x K V0ᵀ (r); L: x U1 Lᵀ (U1 = qr(K1).Q, r wide) |
//! | PSI | K (r); S: x U1 S V0ᵀ (r); L (r) |
//! | BUG | K and L at W0 (r); S: x Û Ŝ V̂ᵀ (2r) |
//! | parallel BUG | tangent: x U, x K (n×r each), (x K − x U S) V0ᵀ, (x U) Lᵀ |
//! | plain factorization | x U S Vᵀ (r) |
//!
//! Each integrator's file states its part of this model ([`crate::integrators::StepCost`]).
//! Integrator work outside the passes (QR, SVD, the small products that change bases) is not
//! counted: it is the host decompositions' part of the step.

use crate::integrators::{IntegratorKind, Products};

/// One layer of a network for the FLOP count: n×m, dense or of rank `rank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// Rows each input image contributes: 1 for a linear layer, the H'·W' output positions of
    /// a convolution, whose products run on the patch matrix (`layers::conv2d`).
    pub positions: usize,
    /// Fan-in.
    pub n: usize,
    /// Fan-out.
    pub m: usize,
    /// The rank of a low-rank layer (at the end of the step); `None` for a dense layer.
    pub rank: Option<usize>,
}

/// Matrix-product FLOPs of one step of `method` on a network of `layers` at batch size `b`
/// (module docs).
pub fn step_flops(method: IntegratorKind, layers: &[LayerShape], b: usize) -> f64 {
    let cost = method.cost();
    layers
        .iter()
        .map(|l| {
            let b = (b * l.positions) as f64;
            match l.rank {
                None => cost.passes as f64 * Products::PASS * 2.0 * b * (l.n * l.m) as f64,
                Some(r) => (cost.low_rank)(&Products::new(b, l.n, l.m, r)),
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: LayerShape = LayerShape { positions: 1, n: 4, m: 3, rank: Some(1) };
    const DENSE: LayerShape = LayerShape { positions: 1, n: 3, m: 2, rank: None };

    #[test]
    fn each_method_counts_its_own_passes_and_widths() {
        // b = 2, n = 4, m = 3, r = 1, Û and V̂ 2 wide:
        // x K Vᵀ at r:     2·2·(4·1 + 1·3)         = 28
        // x Û Lᵀ at 2r:    2·2·(4·2 + 2·3)         = 56
        // x U S Vᵀ at r:   2·2·(4·1 + 1·1 + 1·3)   = 32
        // x Û Ŝ V̂ᵀ at 2r:  2·2·(4·2 + 2·2 + 2·3)   = 72
        // tangent:         2·2·(2·4·1 + 1 + 2·1·3) = 60
        let expected = [
            (IntegratorKind::AbcPsi, 3.0 * (28.0 + 56.0)),
            (IntegratorKind::AbcPsiOnePass, 2.0 * 32.0 + 28.0 + 56.0),
            (IntegratorKind::BcPsi, 3.0 * (28.0 + 28.0)),
            (IntegratorKind::Psi, 3.0 * (28.0 + 32.0 + 28.0)),
            (IntegratorKind::Bug, 3.0 * (28.0 + 28.0 + 72.0)),
            (IntegratorKind::ParallelBug, 3.0 * 60.0),
            (IntegratorKind::Lora, 3.0 * 32.0),
        ];
        for (method, flops) in expected {
            assert_eq!(step_flops(method, &[LOW], 2), flops, "{method}");
        }
    }

    #[test]
    fn dense_layers_cost_the_same_in_every_pass() {
        // 3·2·2·3·2 = 72 per pass.
        assert_eq!(step_flops(IntegratorKind::Dense, &[DENSE], 2), 72.0);
        assert_eq!(step_flops(IntegratorKind::Bug, &[DENSE], 2), 3.0 * 72.0);
        assert_eq!(step_flops(IntegratorKind::AbcPsi, &[LOW, DENSE], 2), 252.0 + 2.0 * 72.0);
        // A convolution with 5 output positions per image multiplies 5 times the rows.
        let conv = LayerShape { positions: 5, ..DENSE };
        assert_eq!(step_flops(IntegratorKind::Dense, &[conv], 2), 5.0 * 72.0);
    }

    #[test]
    fn augmented_bases_are_no_wider_than_the_layer() {
        // r = 2 on a 3×3 layer: Û and V̂ are 3 wide, not 4.
        let l = LayerShape { positions: 1, n: 3, m: 3, rank: Some(2) };
        let two = |w: f64| 2.0 * (3.0 * w + w * 3.0);
        assert_eq!(step_flops(IntegratorKind::AbcPsi, &[l], 1), 3.0 * (two(2.0) + two(3.0)));
    }
}
