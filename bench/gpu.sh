#!/usr/bin/env bash
# One device call (see README, "GPU"): our MNIST benchmark on CUDA, PyTorch's dense MLP of the
# same shape on the same card, the ViT-B/16 adapter fine-tuning step (dlrt bench-vit: abc-PSI in
# two passes and in one, LoRA) in every variant of issue 16's changes, each on and off
# (precision f32 / bf16 × attention fused / explicit; abc-PSI's batched update, the default on a
# GPU, and DLRT_BATCHED_UPDATE=off), against peft LoRA at the same rank and batch (bf16 autocast
# and fp32), one table of ratios each, and a short `dlrt train --device cuda` run on real MNIST.
#
# Expects, relative to the repository root:
#   $DLRT_BIN (default target/release/dlrt) built with `--features cuda`,
#   MNIST in ./data/mnist (or $DLRT_DATA), and PyTorch, transformers and peft on the machine.
# VIT_BATCHES (default "256"), VIT_STEPS (default 3), VIT_PRECISIONS (default "f32 bf16") and
# VIT_ATTENTIONS (default "fused explicit") size the ViT part.
# Every part runs under `timeout`: T_MNIST (90 s), T_TORCH (60 s), T_VIT (70 s per variant),
# T_PEFT (45 s per dtype), T_TRAIN (60 s); with the defaults the whole call stays under 600 s.
# A part that times out or fails is reported and the script goes on to the next one.
# bench-vit logs every step's time (total, forward, backward, update) to
# $OUT/dlrt_vit_b<batch>_<precision>_<attention>.log as it goes, so a part that times out still
# shows how far it got.
# Writes its tables to $OUT (default ./runs/gpu-bench).
set -uo pipefail
BIN=${DLRT_BIN:-target/release/dlrt}
OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
# The first run compiles and tunes kernels for every shape; rank-adaptive methods visit many
# shapes, so keep autotuning short (the tuning cache in ~/.cache/cubecl makes reruns fast).
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
date -u +%Y-%m-%d | tee -a "$OUT/card.txt"

# part NAME SECONDS CMD...: runs CMD under `timeout`, says how it ended and how long it took.
part() {
    local name=$1 limit=$2 start rc note=""
    shift 2
    start=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note=" (timed out at $limit s)"; fi
    echo "$name: rc $rc after $(( ($(date +%s%N) - start) / 1000000 )) ms$note" | tee -a "$OUT/parts.txt" >&2
    return $rc
}
: > "$OUT/parts.txt"

echo "== dlrt bench --device cuda"
part mnist "${T_MNIST:-90}" "$BIN" bench --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
    | tee "$OUT/dlrt_cuda.md"

echo "== PyTorch dense MLP (same shape, batch, optimizer)"
part torch_mlp "${T_TORCH:-60}" python3 bench/torch_mlp.py --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
    | tee "$OUT/torch_cuda.md"

echo "== ratios (dlrt µs/step ÷ PyTorch dense µs/step)"
torch_us=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' "$OUT/torch_cuda.md")
[ -n "$torch_us" ] && awk -F'|' -v t="$torch_us" '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3); printf "| %s | %s | %.2f |\n", $2, $3, $3 / t}' \
    "$OUT/dlrt_cuda.md" | tee "$OUT/ratios.md"

echo "== ViT-B/16 adapter step, r = 32 on query/key/value: dlrt bench-vit (each variant) vs peft LoRA"
: > "$OUT/vit_ratios.md"
for batch in ${VIT_BATCHES:-256}; do
    for dtype in bf16 fp32; do
        part "peft_b${batch}_$dtype" "${T_PEFT:-45}" python3 bench/torch_vit_lora.py --batch "$batch" --rank 32 --dtype "$dtype" \
            | tee "$OUT/peft_vit_b${batch}_$dtype.md"
    done
    bf16=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_bf16.md")
    fp32=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_fp32.md")
    for precision in ${VIT_PRECISIONS:-f32 bf16}; do
        for attention in ${VIT_ATTENTIONS:-fused explicit}; do
            variant="b${batch}_${precision}_${attention}"
            part "vit_$variant" "${T_VIT:-70}" "$BIN" bench-vit --model vit-b16 --image 224 --batch "$batch" --rank 32 \
                --device cuda --precision "$precision" --attention "$attention" --steps "${VIT_STEPS:-3}" --log-steps \
                2> "$OUT/dlrt_vit_$variant.log" | tee "$OUT/dlrt_vit_$variant.md"
            awk -F'|' -v b="$batch" -v p="$precision" -v a="$attention" -v h="${bf16:-nan}" -v f="${fp32:-nan}" \
                '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3);
                printf "| %s | %s | %s | %s | %s ms | %.2f | %s ms | %.2f |\n", b, p, a, $2, $3, $3 / h, h, $3 / f}' \
                "$OUT/dlrt_vit_$variant.md" | tee -a "$OUT/vit_ratios.md"
        done
    done
done
echo "| batch | precision | attention | method | dlrt | ÷ peft bf16 | peft bf16 | ÷ peft fp32 |"
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
part train "${T_TRAIN:-60}" "$BIN" train configs/mnist_abc_psi.toml --device cuda --epochs 1 --max-batches 300 \
    --out runs/gpu-train --quiet
tail -n 1 runs/gpu-train/metrics.csv | tee "$OUT/train_cuda.csv"
echo "== parts"
cat "$OUT/parts.txt"
