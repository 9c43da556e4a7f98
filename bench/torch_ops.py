"""PyTorch's side of `dlrt bench-ops`: the same operations of one ViT block, at the same shapes
and float types, timed the same way (forward; forward + backward from sum(output), inputs
requiring gradients, frozen weights not, the adapter's S trained). Prints the same markdown
table, so `bench/gpu.sh` can join the two by operation.

Usage: python3 bench/torch_ops.py [--model vit-b16|vit-s14] [--image 224] [--batch 32]
       [--rank 32] [--precision f32|bf16] [--warmup 2] [--steps 5] [--device cuda|cpu]
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {"vit-b16": (768, 3072, 12, 16), "vit-s14": (384, 1536, 6, 14)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=SHAPES, default="vit-b16")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    d, f, h, patch = SHAPES[a.model]
    tokens = (a.image // patch) ** 2 + 1
    b, t, r, dh = a.batch, a.batch * tokens, a.rank, d // h
    frozen = torch.bfloat16 if a.precision == "bf16" else torch.float32
    fz, f32 = a.precision, "f32"
    torch.manual_seed(0)

    def normal(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, device=dev).to(dtype).requires_grad_(grad)

    x_d, x_f = normal(t, d, dtype=frozen, grad=True), normal(t, f, dtype=frozen, grad=True)
    x32, y32 = normal(t, d, grad=True), normal(t, d, grad=True)
    wd, wf, wb = normal(d, d, dtype=frozen), normal(d, f, dtype=frozen), normal(f, d, dtype=frozen)
    u, s, v = normal(d, r), normal(r, r, grad=True), normal(d, r)
    gamma, beta = normal(d), normal(d)
    q, k, val = (normal(t, d, dtype=frozen, grad=True) for _ in range(3))

    def heads(x):
        return x.reshape(b, tokens, h, dh).transpose(1, 2)

    def merge(x):
        return x.transpose(1, 2).reshape(t, d)

    def explicit():
        scores = heads(q) @ heads(k).transpose(2, 3) * (1.0 / math.sqrt(dh))
        return merge(torch.softmax(scores.float(), dim=3).to(frozen) @ heads(val))

    def fused():
        return merge(F.scaled_dot_product_attention(heads(q), heads(k), heads(val)))

    att = f"[{b}, {h}, {tokens}, {dh}] {fz}"
    ops = [
        ("linear D→D (query, key, value, output)", f"[{t}, {d}]×[{d}, {d}] {fz}", lambda: x_d @ wd, True),
        ("linear D→4D (MLP up)", f"[{t}, {d}]×[{d}, {f}] {fz}", lambda: x_d @ wf, True),
        ("linear 4D→D (MLP down)", f"[{t}, {f}]×[{f}, {d}] {fz}", lambda: x_f @ wb, True),
        ("adapter x U S Vᵀ (S trained)", f"[{t}, {d}], r = {r}, {f32}", lambda: x_d.float() @ u @ s @ v.T, True),
        ("attention, explicit", att, explicit, True),
        ("attention, fused op", att, fused, True),
        ("attention, fused op without autodiff", att, fused, False),
        ("layer norm", f"[{t}, {d}] {f32}", lambda: F.layer_norm(x32, (d,), gamma, beta, 1e-12), True),
        ("GELU (exact)", f"[{t}, {f}] {fz}", lambda: F.gelu(x_f), True),
        ("residual add", f"[{t}, {d}] {f32}", lambda: x32 + y32, True),
    ]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(f"PyTorch {torch.__version__} {a.model} block operations, {a.image} px, batch {b}, r = {r}, "
          f"{a.precision} backbone; device {a.device}; median of {a.steps} runs")
    print("| op | input | forward ms | forward + backward ms |")
    print("|---|---|---|---|")
    for name, shape, run, autodiff in ops:
        fwd, bwd = [], []
        for i in range(a.warmup + a.steps):
            sync()
            start = time.perf_counter()
            if autodiff:
                run()
            else:
                with torch.no_grad():
                    run()
            sync()
            mid = time.perf_counter()
            if autodiff:
                run().float().sum().backward()
                sync()
            end = time.perf_counter()
            if i >= a.warmup:
                fwd.append((mid - start) * 1e3)
                bwd.append((end - mid) * 1e3)
        backward = f"{statistics.median(bwd):.3f}" if autodiff else "—"
        print(f"| {name} | {shape} | {statistics.median(fwd):.3f} | {backward} |")


if __name__ == "__main__":
    main()
