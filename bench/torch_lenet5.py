"""PyTorch reference for `dlrt bench --model lenet5`: the dense LeNet-5 of DLRT-Net's benchmark
(conv 1→20 and 20→50, 5×5, max-pool 2, fc 800→500→10, ReLU), one training step (zero_grad,
forward, cross-entropy, backward, AdamW λ = 4e-3) on a batch of MNIST-shaped Gaussian images.
Prints the median step time, on the CPU by default, with torch's threads as they are.

Usage: python3 bench/torch_lenet5.py [--batch 64] [--warmup 5] [--steps 25] [--device cpu|cuda]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = LeNet5().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    x = torch.randn(a.batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    times = []
    for k in range(a.warmup + a.steps):
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
        if k >= a.warmup:
            times.append((time.perf_counter() - t) * 1e6)
    threads = torch.get_num_threads()
    print(f"| PyTorch LeNet-5, batch {a.batch}, AdamW ({a.device}, {threads} threads, torch {torch.__version__}) "
          f"| {statistics.median(times):.0f} µs |")


if __name__ == "__main__":
    main()
