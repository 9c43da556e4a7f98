"""PyTorch reference for `dlrt bench`: the paper's dense MLP 784-500-500-10, ReLU, plain SGD
lr 0.01, batch 64, data already on the device. Prints the median time per training step.

Usage: python3 bench/torch_mlp.py [--device cuda] [--warmup 100] [--steps 200]
"""
import argparse
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--steps", type=int, default=200)
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 500), torch.nn.ReLU(),
        torch.nn.Linear(500, 500), torch.nn.ReLU(),
        torch.nn.Linear(500, 10),
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = a.warmup + a.steps
    xs = torch.randn(n, 64, 784, device=dev)
    ys = torch.randint(0, 10, (n, 64), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for k in range(n):
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[k]), ys[k])
        loss.backward()
        opt.step()
        sync()
        if k >= a.warmup:
            times.append((time.perf_counter() - t) * 1e6)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"| pytorch {torch.__version__} dense MLP, SGD ({name}) | {statistics.median(times):.0f} |")


if __name__ == "__main__":
    main()
