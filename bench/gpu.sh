#!/usr/bin/env bash
# One device call (see README, "GPU"): our MNIST benchmark on CUDA, PyTorch's dense MLP of the
# same shape on the same card, the ViT-B/16 adapter fine-tuning step (dlrt bench-vit: abc-PSI in
# two passes and in one, LoRA) in every variant of issue 16's changes, each on and off
# (precision f32 / bf16 × attention; abc-PSI's batched update, the default on a GPU, and
# DLRT_BATCHED_UPDATE=off; rank buckets, --rank-bucket 1 and 8), against peft LoRA at the same
# rank and batch (bf16 autocast and fp32), one table of ratios each, and a short
# `dlrt train --device cuda` run on real MNIST.
#
# What a new rank costs: `dlrt bench` and `bench-vit` class every step by whether its ranks, and
# the widths its passes multiplied with (the rank bucket's), are new in the run, and give the
# median step time at new and at seen ones ("What a new shape costs"; the first step left out).
# The MNIST and ViT runs with --rank-bucket 1 and 8 are collected in $OUT/new_shapes.md: where
# kernels are compiled or tuned per shape, steps at new widths are slow and buckets make them
# rare. With --log-steps every step's line (time, parts, ranks, new/seen) is in the .log files.
#
# Cargo features: this script does not change the binary's. `--features cuda` builds Burn's
# CUDA backend with fusion and autotune off (`burn` with default-features = false turns off
# burn-cuda's defaults). To measure a new rank's cost with them on, build a second binary with
# `cuda = ["burn/cuda", "burn/fusion", "burn/autotune"]` in Cargo.toml and run this script again
# with DLRT_BIN pointing at it (and another OUT).
#
# Expects, relative to the repository root:
#   $DLRT_BIN (default target/release/dlrt) built with `--features cuda`,
#   MNIST in ./data/mnist (or $DLRT_DATA), and PyTorch, transformers and peft on the machine.
# VIT_BATCHES (default "256"), VIT_STEPS (default 3), VIT_PRECISIONS (default "f32 bf16") and
# VIT_ATTENTIONS (default "explicit"; "explicit fused" adds two 55 s variants, past the 570 s
# below, while the bench-ops part times both attentions' forward and backward at ViT-B shapes
# anyway) size the ViT part; VIT_RANK_BATCH (32) and VIT_RANK_STEPS (12) the ViT rank-bucket pair.
# Every part runs under `timeout`: T_MNIST (60 s), T_MNIST_B8 (35 s), T_TORCH (30 s), T_PEFT
# (35 s per dtype), T_VIT (55 s per variant), T_VIT_RANKS (40 s per bucket), T_OFF (30 s MNIST,
# 40 s ViT), T_OPS (15 s per side and precision, OPS_BATCH 64 images), T_TRAIN (30 s); with the
# defaults the whole call stays under 570 s. A part that
# times out or fails is reported and the script goes on to the next one.
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

# new_shapes LABEL FILE: appends FILE's "What a new shape costs" rows to new_shapes.md, labelled.
: > "$OUT/new_shapes.md"
new_shapes() {
    awk -v label="$1" '/^What a new shape costs/ {on = 1} on && /^\| [a-z_]+ \| [0-9]/ {print "| " label " " $0}' \
        "$2" >> "$OUT/new_shapes.md"
}

echo "== dlrt bench --device cuda (rank bucket 1: no padding)"
part mnist "${T_MNIST:-60}" "$BIN" bench --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" --log-steps \
    2> "$OUT/dlrt_cuda.log" | tee "$OUT/dlrt_cuda.md"
new_shapes "MNIST | 1" "$OUT/dlrt_cuda.md"

echo "== dlrt bench --device cuda --rank-bucket 8 (the rank-adaptive methods)"
part mnist_b8 "${T_MNIST_B8:-35}" "$BIN" bench --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
    --methods abc_psi,abc_psi_one_pass,bug,parallel_bug --rank-bucket 8 --log-steps \
    2> "$OUT/dlrt_cuda_b8.log" | tee "$OUT/dlrt_cuda_b8.md"
new_shapes "MNIST | 8" "$OUT/dlrt_cuda_b8.md"

echo "== PyTorch dense MLP (same shape, batch, optimizer)"
part torch_mlp "${T_TORCH:-30}" python3 bench/torch_mlp.py --device cuda --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
    | tee "$OUT/torch_cuda.md"

echo "== ratios (dlrt µs/step ÷ PyTorch dense µs/step)"
torch_us=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' "$OUT/torch_cuda.md")
[ -n "$torch_us" ] && awk -F'|' -v t="$torch_us" '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3); printf "| %s | %s | %.2f |\n", $2, $3, $3 / t} /^$/ {exit}' \
    "$OUT/dlrt_cuda.md" | tee "$OUT/ratios.md"

echo "== ViT-B/16 adapter step, r = 32 on query/key/value: dlrt bench-vit (each variant) vs peft LoRA"
: > "$OUT/vit_ratios.md"
for batch in ${VIT_BATCHES:-256}; do
    for dtype in bf16 fp32; do
        part "peft_b${batch}_$dtype" "${T_PEFT:-35}" python3 bench/torch_vit_lora.py --batch "$batch" --rank 32 --dtype "$dtype" \
            | tee "$OUT/peft_vit_b${batch}_$dtype.md"
    done
    bf16=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_bf16.md")
    fp32=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_b${batch}_fp32.md")
    for precision in ${VIT_PRECISIONS:-f32 bf16}; do
        for attention in ${VIT_ATTENTIONS:-explicit}; do
            variant="b${batch}_${precision}_${attention}"
            part "vit_$variant" "${T_VIT:-55}" "$BIN" bench-vit --model vit-b16 --image 224 --batch "$batch" --rank 32 \
                --device cuda --precision "$precision" --attention "$attention" --steps "${VIT_STEPS:-3}" --log-steps \
                2> "$OUT/dlrt_vit_$variant.log" | tee "$OUT/dlrt_vit_$variant.md"
            # The main table only: its rows end before the first blank line.
            awk -F'|' -v b="$batch" -v p="$precision" -v a="$attention" -v h="${bf16:-nan}" -v f="${fp32:-nan}" \
                '/^$/ {exit} /^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3);
                printf "| %s | %s | %s | %s | %s ms | %.2f | %s ms | %.2f |\n", b, p, a, $2, $3, $3 / h, h, $3 / f}' \
                "$OUT/dlrt_vit_$variant.md" | tee -a "$OUT/vit_ratios.md"
        done
    done
done
echo "| batch | precision | attention | method | dlrt | ÷ peft bf16 | peft bf16 | ÷ peft fp32 |"
cat "$OUT/vit_ratios.md"

# A new rank on the ViT: abc-PSI in one pass, every step timed from the first, without and with
# rank buckets, at a batch small enough for a dozen steps.
echo "== ViT-B/16 rank buckets: bench-vit --rank-bucket 1 and 8"
for bucket in 1 8; do
    variant="b${VIT_RANK_BATCH:-32}_bucket$bucket"
    part "vit_$variant" "${T_VIT_RANKS:-40}" "$BIN" bench-vit --model vit-b16 --image 224 --batch "${VIT_RANK_BATCH:-32}" \
        --rank 32 --device cuda --methods abc_psi_one_pass --warmup 0 --steps "${VIT_RANK_STEPS:-12}" \
        --rank-bucket "$bucket" --log-steps 2> "$OUT/dlrt_vit_$variant.log" | tee "$OUT/dlrt_vit_$variant.md"
    new_shapes "ViT-B/16 batch ${VIT_RANK_BATCH:-32} | $bucket" "$OUT/dlrt_vit_$variant.md"
done
echo "| run | bucket | method | steps | new ranks | at new ranks | at seen ranks | new widths | at new widths | at seen widths |"
cat "$OUT/new_shapes.md"

# abc-PSI batches each phase of its update across layers on the GPU (two reads of the Gram
# matrices per phase, whatever the number of adapters); DLRT_BATCHED_UPDATE=off gives the
# per-layer host decompositions of earlier runs, for the same table with the switch off.
echo "== the same with the batched update off (per-layer host decompositions)"
part mnist_batched_off "${T_OFF:-30}" env DLRT_BATCHED_UPDATE=off "$BIN" bench --device cuda --warmup "${WARMUP:-100}" \
    --steps "${STEPS:-200}" --methods abc_psi,abc_psi_one_pass,parallel_bug | tee "$OUT/dlrt_cuda_batched_off.md"
part vit_batched_off "$(( ${T_OFF:-30} + 10 ))" env DLRT_BATCHED_UPDATE=off "$BIN" bench-vit --model vit-b16 --image 224 \
    --batch "${VIT_RANK_BATCH:-32}" --rank 32 --device cuda --steps "${VIT_STEPS:-3}" --methods abc_psi,abc_psi_one_pass \
    | tee "$OUT/dlrt_vit_b${VIT_RANK_BATCH:-32}_batched_off.md"

# Where the time goes when Burn's kernels are slower than PyTorch's (issue 16, item 6): one
# ViT-B/16 block's operations one by one, forward and forward + backward, dlrt against PyTorch
# at the same shapes and types, joined by operation: | op | dlrt | PyTorch | ratio | for both.
echo "== one ViT-B/16 block's operations: dlrt bench-ops vs bench/torch_ops.py"
: > "$OUT/ops_ratios.md"
for precision in f32 bf16; do
    part "ops_dlrt_$precision" "${T_OPS:-15}" "$BIN" bench-ops --device cuda --batch "${OPS_BATCH:-64}" \
        --precision "$precision" | tee "$OUT/ops_dlrt_$precision.md"
    part "ops_torch_$precision" "${T_OPS:-15}" python3 bench/torch_ops.py --device cuda --batch "${OPS_BATCH:-64}" \
        --precision "$precision" | tee "$OUT/ops_torch_$precision.md"
    awk -F'|' -v p="$precision" 'function t(s) { gsub(/^ +| +$/, "", s); return s }
        NR == FNR { if ($2 ~ /[a-z]/ && $4 ~ /[0-9]/) { fwd[t($2)] = t($4); fb[t($2)] = t($5) }; next }
        $2 ~ /[a-z]/ && $4 ~ /[0-9]/ { op = t($2); f = t($4); b = t($5);
            rf = (op in fwd && fwd[op] > 0) ? sprintf("%.2f", f / fwd[op]) : "-";
            rb = (op in fb && fb[op] + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", b / fb[op]) : "-";
            printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", p, op, f, fwd[op], rf, b, fb[op], rb }' \
        "$OUT/ops_torch_$precision.md" "$OUT/ops_dlrt_$precision.md" | tee -a "$OUT/ops_ratios.md"
done
echo "| precision | op | dlrt fwd ms | torch fwd ms | ratio | dlrt fwd+bwd ms | torch fwd+bwd ms | ratio |"
cat "$OUT/ops_ratios.md"

echo "== dlrt train --device cuda (abc-PSI, paper setting, 300 batches)"
part train "${T_TRAIN:-30}" "$BIN" train configs/mnist_abc_psi.toml --device cuda --epochs 1 --max-batches 300 \
    --out runs/gpu-train --quiet
tail -n 1 runs/gpu-train/metrics.csv | tee "$OUT/train_cuda.csv"
echo "== parts"
cat "$OUT/parts.txt"
