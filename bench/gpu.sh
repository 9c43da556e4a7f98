#!/usr/bin/env bash
# One device call (see README, "GPU"): our MNIST benchmark on CUDA, PyTorch's dense MLP of the
# same shape on the same card, the ViT-B/16 adapter fine-tuning step (dlrt bench-vit: abc-PSI in
# two passes and in one, LoRA; against
# peft LoRA at the same rank and batch, bf16 and fp32), one table of ratios each, and a short
# `dlrt train --device cuda` run on real MNIST. abc-PSI's rows are timed with its batched update
# (the default on a GPU) and again with DLRT_BATCHED_UPDATE=off.
#
# Expects, relative to the repository root:
#   $DLRT_BIN (default target/release/dlrt) built with `--features cuda`,
#   MNIST in ./data/mnist (or $DLRT_DATA), and PyTorch, transformers and peft on the machine.
# VIT_BATCHES (default "32 256") and VIT_STEPS (default 3) size the ViT part.
# Writes its tables to $OUT (default ./runs/gpu-bench).
set -euo pipefail
BIN=${DLRT_BIN:-target/release/dlrt}
OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
# The first run compiles and tunes kernels for every shape; rank-adaptive methods visit many
# shapes, so keep autotuning short (the tuning cache in ~/.cache/cubecl makes reruns fast).
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
date -u +%Y-%m-%d | tee -a "$OUT/card.txt"

echo "== dlrt bench --device cuda"
"$BIN" bench --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" | tee "$OUT/dlrt_cuda.md"

echo "== PyTorch dense MLP (same shape, batch, optimizer)"
python3 bench/torch_mlp.py --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" | tee "$OUT/torch_cuda.md"

echo "== ratios (dlrt µs/step ÷ PyTorch dense µs/step)"
torch_us=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' "$OUT/torch_cuda.md")
awk -F'|' -v t="$torch_us" '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3); printf "| %s | %s | %.2f |\n", $2, $3, $3 / t}' \
    "$OUT/dlrt_cuda.md" | tee "$OUT/ratios.md"

echo "== ViT-B/16 adapter step, r = 32 on query/key/value: dlrt bench-vit vs peft LoRA"
: > "$OUT/vit_ratios.md"
for batch in ${VIT_BATCHES:-32 256}; do
    "$BIN" bench-vit --model vit-b16 --image 224 --batch "$batch" --rank 32 --device cuda \
        --steps "${VIT_STEPS:-3}" | tee "$OUT/dlrt_vit_b$batch.md"
    for dtype in bf16 fp32; do
        python3 bench/torch_vit_lora.py --batch "$batch" --rank 32 --dtype "$dtype" | tee "$OUT/peft_vit_b${batch}_$dtype.md"
    done
    bf16=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_bf16.md")
    fp32=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_fp32.md")
    awk -F'|' -v b="$batch" -v h="$bf16" -v f="$fp32" '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3);
        printf "| %s | %s | %s ms | %.2f | %s ms | %.2f |\n", b, $2, $3, $3 / h, h, $3 / f}' \
        "$OUT/dlrt_vit_b$batch.md" | tee -a "$OUT/vit_ratios.md"
done
echo "| batch | method | dlrt | ÷ peft bf16 | peft bf16 | ÷ peft fp32 |"
cat "$OUT/vit_ratios.md"

# abc-PSI batches each phase of its update across layers on the GPU (two reads of the Gram
# matrices per phase, whatever the number of adapters); DLRT_BATCHED_UPDATE=off gives the
# per-layer host decompositions of earlier runs, for the same table with the switch off.
echo "== the same with the batched update off (per-layer host decompositions)"
DLRT_BATCHED_UPDATE=off "$BIN" bench --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
    --methods abc_psi,abc_psi_one_pass | tee "$OUT/dlrt_cuda_batched_off.md"
for batch in ${VIT_BATCHES:-32 256}; do
    DLRT_BATCHED_UPDATE=off "$BIN" bench-vit --model vit-b16 --image 224 --batch "$batch" --rank 32 --device cuda \
        --steps "${VIT_STEPS:-3}" --methods abc_psi,abc_psi_one_pass | tee "$OUT/dlrt_vit_b${batch}_batched_off.md"
done

echo "== dlrt train --device cuda (abc-PSI, paper setting, 300 batches)"
"$BIN" train configs/mnist_abc_psi.toml --device cuda --epochs 1 --max-batches 300 --out runs/gpu-train --quiet
tail -n 1 runs/gpu-train/metrics.csv | tee "$OUT/train_cuda.csv"
