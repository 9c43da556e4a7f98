#!/usr/bin/env python3
"""dlrt <-> peft: LoRA adapters across the two, checked on logits.

Needs torch, transformers (>= 4.40) and peft (>= 0.14, for lora_bias); checked with torch 2.15 and
both transformers 5.24 + peft 0.21 and transformers 4.57 + peft 0.17. DLRT names the dlrt binary
(default target/release/dlrt).

  python3 bench/peft_roundtrip.py fixtures [OUT]
      Writes the golden fixtures of tests/peft.rs to OUT (default
      tests/fixtures/peft/transformers5, or transformers4 when transformers 4 is installed):
      base/ a tiny DINOv2 (random, seed 0) as transformers saves it; lora/ a LoRA adapter made by
      peft itself (its own ranks per module through rank_pattern, alpha_pattern, lora_bias and
      the head as a module to save); expected.safetensors: input pixels and PeftModel's logits.
      Then fine-tunes the tiny base from that adapter with dlrt (--init-adapters), and a tiny
      random ViT with adapters on all six projections, and checks `dlrt export --format peft` of
      both with `check` below. Needs MNIST in ./data.

  python3 bench/peft_roundtrip.py check CHECKPOINT IMAGE [IMAGE ...]
      `dlrt export CHECKPOINT --format peft`, loads the folder with PeftModel.from_pretrained on
      transformers' classification model of the checkpoint's backbone, and compares its logits
      on the images with `dlrt predict`'s (same pixels: dlrt writes the model's input). Then the
      same for the merged export (`dlrt export CHECKPOINT`, a folder) loaded by
      AutoModelForImageClassification.from_pretrained alone.

DTYPE=bf16 makes every export `--dtype bf16` and the logits are then compared to bf16 precision.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from PIL import Image
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForImageClassification, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

DLRT = os.environ.get("DLRT", "target/release/dlrt")
DTYPE = os.environ.get("DTYPE", "f32")
# max |logit difference| of two f32 implementations of the same network; of an adapter rounded to bf16
TOL = 1e-4 if DTYPE == "f32" else 2e-2
# transformers 5 renamed the modules (attention.attention.query -> attention.q_proj), and peft
# names adapter tensors after them.
V5 = int(transformers.__version__.split(".")[0]) >= 5
FORMAT = "peft" if V5 else "peft-transformers4"


def dlrt(*args):
    out = subprocess.run([DLRT, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{DLRT} {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out.stdout


def classifier_base(backbone_dir, labels):
    """transformers' classification model of the backbone, as PeftModel.from_pretrained's base."""
    id2label = {i: name for i, name in enumerate(labels)}
    return AutoModelForImageClassification.from_pretrained(
        backbone_dir, num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    ).eval()


def check(checkpoint, images):
    """Exports CHECKPOINT as a peft adapter and compares peft's logits with dlrt's on IMAGES."""
    with tempfile.TemporaryDirectory() as tmp:
        peft_dir, pred = Path(tmp) / "peft", Path(tmp) / "pred.safetensors"
        dlrt("export", checkpoint, "--format", FORMAT, "--dtype", DTYPE, "--out", peft_dir)
        dlrt("predict", checkpoint, *images, "--out", pred, "--top", "1")
        config = json.loads((peft_dir / "adapter_config.json").read_text())
        with safe_open(peft_dir / "adapter_model.safetensors", "pt") as f:
            labels = json.loads(f.metadata()["labels"])
        with safe_open(pred, "pt") as f:
            pixels, ours = f.get_tensor("pixel_values"), f.get_tensor("logits")
        base = classifier_base(config["base_model_name_or_path"], labels)
        model = PeftModel.from_pretrained(base, peft_dir).eval()
        with torch.no_grad():
            theirs = model(pixel_values=pixels).logits
        diff = (theirs - ours).abs().max().item()
        agree = (theirs.argmax(1) == ours.argmax(1)).float().mean().item()
        modules = len(config["target_modules"])
        ranks = sorted(set(config["rank_pattern"].values()))
        print(f"transformers {transformers.__version__}, --format {FORMAT} --dtype {DTYPE}: {checkpoint}: {modules} LoRA modules (ranks {ranks}), {len(images)} images, "
              f"max |logit diff| {diff:.2e}, top-1 agreement {100 * agree:.1f} %")
        assert diff < TOL * max(1.0, ours.abs().max().item()), f"peft's logits differ from dlrt's by {diff}"
        merged_dir = Path(tmp) / "merged"
        dlrt("export", checkpoint, "--dtype", DTYPE, "--out", merged_dir)
        merged = AutoModelForImageClassification.from_pretrained(merged_dir).eval()
        with torch.no_grad():
            theirs = merged(pixel_values=pixels.to(merged.dtype)).logits.float()
        merged_diff = (theirs - ours).abs().max().item()
        print(f"transformers {transformers.__version__}, merged export --dtype {DTYPE}: max |logit diff| "
              f"{merged_diff:.2e}, top-1 agreement {100 * (theirs.argmax(1) == ours.argmax(1)).float().mean().item():.1f} %")
        assert merged_diff < TOL * max(1.0, ours.abs().max().item()), f"the merged model's logits differ by {merged_diff}"
        return diff


def fixtures(out):
    out = Path(out)
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                       image_size=28, patch_size=7, layerscale_value=0.5)
    Dinov2Model(cfg).save_pretrained(out / "base")
    labels = [str(i) for i in range(10)]
    base = classifier_base(out / "base", labels)
    with torch.no_grad():
        # dlrt's head reads the CLS token only: no weight on the mean patch token.
        base.classifier.weight[:, cfg.hidden_size:] = 0.0
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"] if V5 else ["query", "key", "value"],
        lora_bias=True,
        rank_pattern={f"encoder.layer.1.attention.{'v_proj' if V5 else 'attention.value'}": 2},
        alpha_pattern={f"encoder.layer.1.attention.{'v_proj' if V5 else 'attention.value'}": 3.0},
        init_lora_weights=False, modules_to_save=["classifier"],
    )
    model = get_peft_model(base, lora).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # random B (peft's default is zero) and a visible bias change
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(out / "lora")
    pixels = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    save_file({"pixel_values": pixels.contiguous(), "logits": logits.contiguous()}, out / "expected.safetensors")
    print(f"wrote {out}: base, lora ({sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n)} "
          f"LoRA parameters), expected.safetensors; logits {tuple(logits.shape)}")

    # dlrt starts from peft's adapter, trains two batches, and its peft export must load in peft;
    # and the same from zero adapters on every projection of a tiny ViT.
    vit = ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                    image_size=28, patch_size=7)
    with tempfile.TemporaryDirectory() as tmp:
        ViTModel(vit, add_pooling_layer=False).save_pretrained(Path(tmp) / "vit")
        dlrt_round_trip(out / "base", ["query", "key", "value"], Path(tmp) / "dinov2", out / "lora")
        every = ["query", "key", "value", "attention_output", "mlp_fc1", "mlp_fc2"]
        dlrt_round_trip(Path(tmp) / "vit", every, Path(tmp) / "vit_run")


def dlrt_round_trip(base_dir, targets, tmp, init_adapters=None):
    """Fine-tunes BASE_DIR for two batches of MNIST with dlrt, then `check`s its peft export."""
    tmp.mkdir(parents=True)
    config = tmp / "tiny.toml"
    config.write_text(f"""
[backbone]
weights = "{(base_dir / 'model.safetensors').resolve()}"
targets = {json.dumps(targets)}
rank = 4
image = 28

[integrator]
method = "abc_psi"
tol = 0.05

[optimizer]
kind = "adam"
lr = 0.01

[train]
dataset = "mnist"
batch_size = 16
epochs = 1
seed = 0
train_subset = 64
test_subset = 32
max_batches = 2
""")
    init = ["--init-adapters", init_adapters] if init_adapters else []
    dlrt("finetune", config, *init, "--out", tmp / "run", "--quiet")
    files = []
    for i in range(6):  # noise images, grey and colour, of another size than the model's
        mode = "RGB" if i % 2 else "L"
        pixels = torch.randint(0, 256, (40, 40, 3) if i % 2 else (40, 40), dtype=torch.uint8)
        files.append(tmp / f"{i}.png")
        Image.fromarray(pixels.numpy(), mode).save(files[-1])
    check(tmp / "run" / "checkpoint.safetensors", files)

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        fixtures(sys.argv[2] if len(sys.argv) > 2 else f"tests/fixtures/peft/transformers{5 if V5 else 4}")
    elif len(sys.argv) >= 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
