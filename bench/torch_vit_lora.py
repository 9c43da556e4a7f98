"""PyTorch + peft reference for the adapter fine-tuning step on the GPU: a ViT-B/16-shaped model
(random weights, image 224), LoRA r = 32 on query/key/value, classifier head trained, AdamW 1e-3.
Prints one markdown row per setting with the median time per training step and the peak memory
of PyTorch's allocator (allocated and reserved).

Usage: python3 bench/torch_vit_lora.py [--batch 256] [--rank 32] [--dtype bf16|fp32] [--steps 20]
"""
import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import ViTConfig, ViTForImageClassification


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=a.image, patch_size=16, num_labels=10)  # ViT-B/16 sizes by default
    model = ViTForImageClassification(cfg)
    # The projections are called query/key/value in older transformers and q/k/v_proj in newer.
    lora = LoraConfig(r=a.rank, lora_alpha=a.rank,
                      target_modules=r".*attention\.(query|key|value|q_proj|k_proj|v_proj)$",
                      modules_to_save=["classifier"])
    model = get_peft_model(model, lora).to(dev)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(a.batch, 3, a.image, a.image, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    times = []
    for k in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if k >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    mib = 2**20
    print(f"| peft LoRA ViT-B/16 r={a.rank} q,k,v, batch {a.batch}, {a.dtype}, {a.image} px "
          f"({torch.cuda.get_device_name(dev)}, torch {torch.__version__}) | {statistics.median(times):.1f} ms "
          f"| {trainable} trainable | max allocated {torch.cuda.max_memory_allocated(dev) / mib:.0f} MiB "
          f"| max reserved {torch.cuda.max_memory_reserved(dev) / mib:.0f} MiB |")


if __name__ == "__main__":
    main()
