//! The loss the training loop minimises, and the accuracy it reports.

use burn::tensor::{activation::log_softmax, backend::Backend, ElementConversion, Int, Tensor};

/// Mean cross-entropy of `logits` (`[batch, classes]`) against integer `labels` (`[batch]`).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    let picked = log_softmax(logits, 1).gather(1, labels.reshape([batch, 1]));
    picked.mean().neg()
}

/// Number of rows whose largest logit is at the label.
pub fn correct<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> usize {
    let [batch, _] = logits.dims();
    let predicted = logits.argmax(1).reshape([batch]);
    let count: i64 = predicted.equal(labels).int().sum().into_scalar().elem();
    count as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f64>;

    #[test]
    fn cross_entropy_and_accuracy_on_known_logits() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_data([[0.0, 0.0], [10.0, -10.0]], &device);
        let labels = Tensor::<B, 1, Int>::from_data([1, 0], &device);
        let ce: f64 = cross_entropy(logits.clone(), labels.clone()).into_scalar();
        // (ln 2 + ~0) / 2
        assert!((ce - 0.5 * 2f64.ln()).abs() < 1e-8, "{ce}");
        assert_eq!(correct(logits, labels), 1, "argmax of a tie is the first index");
    }
}
