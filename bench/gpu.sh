#!/usr/bin/env bash
# One device call (see README, "GPU"): our MNIST benchmark on CUDA, PyTorch's dense MLP of the
# same shape on the same card, the ViT-B/16 adapter fine-tuning step (dlrt bench-vit: abc-PSI in
# one pass, LoRA) in every variant of issue 16's changes, each on and off (precision f32 / bf16,
# attention explicit / fused, abc-PSI's batched update and --batched-update off, rank buckets
# 1 and 8, Burn's fusion + autotune off and on), against peft LoRA at the same rank and batch
# (bf16 autocast and fp32), with each part's peak device memory; one table of ratios each; one
# ViT block's operations against PyTorch's; and a short `dlrt train --device "$DEVICE"` run.
#
# What a new rank costs: `dlrt bench` and `bench-vit` class every step by whether its ranks, and
# the widths its passes multiplied with (the rank bucket's), are new in the run, and give the
# median step time at new and at seen ones ("What a new shape costs"; the first step left out).
# The runs with --rank-bucket 1 and 8 are collected in $OUT/new_shapes.md: where kernels are
# compiled or tuned per shape, steps at new widths are slow and buckets make them rare. With
# --log-steps every step's line (time, parts, ranks, new/seen) is in the .log files.
#
# Peak device memory: every part runs beside `nvidia-smi --query-gpu=memory.used` sampled every
# 100 ms; the part's peak less the idle card's is in parts.txt and the ViT table (MiB; both
# sides' caching allocators and CUDA contexts included, so dlrt and PyTorch are measured alike).
# peft's row also gives torch.cuda.max_memory_allocated and max_memory_reserved.
#
# Expects, relative to the repository root, what bench/gpu-pack.sh leaves in carry/ (the
# binaries built with `--features cuda` and `--features cuda-fusion`, and MNIST, gzipped; pass
# carry=["carry"] to the device call), or $DLRT_BIN / $DLRT_BIN_FUSION and MNIST in ./data/mnist
# (or $DLRT_DATA); and PyTorch, transformers and peft on the machine.
# PARTS (default "mnist vit fusion ranks off ops train") picks the parts, most important first;
# "cache" (what CubeCL's persistent tuning and kernel caches save) runs only when named.
# VIT_BATCH (256), VIT_STEPS (3) and VIT_VARIANTS (precision:attention[:methods], default
# "f32:explicit bf16:explicit bf16:fused:abc_psi_one_pass bf16:fused:lora", methods
# abc_psi_one_pass,lora where not named: the last two give each method's own peak memory) size
# the ViT part; VIT_RANK_BATCH (32) and
# VIT_RANK_STEPS (12) the ViT rank-bucket pair; PEFT_WARMUP (3) and PEFT_STEPS (10) peft's steps.
# Every part runs under `timeout`: T_MNIST (45 s), T_MNIST_B8 (30 s), T_TORCH (20 s), T_PEFT
# (25 s per dtype), T_VIT (45 s per variant), T_FUSION (25 s MNIST, 45 s ViT), T_VIT_RANKS
# (30 s per bucket), T_OFF (25 s), T_OPS (10 s per side and precision, OPS_BATCH 64 images),
# T_TRAIN (15 s); with the defaults the whole call stays under 570 s (560 s of timeouts); the
# part "cache", when named, adds T_CACHE (40 s) twice. A part that times out or
# fails is reported and the script goes on to the next one.
# Writes its tables to $OUT (default ./runs/gpu-bench).
# A rehearsal on the CPU (every part's commands and tables, at small sizes, before a card's
# scarce minutes are spent): DEVICE=cpu VIT_MODEL=vit-s14 VIT_IMAGE=56 VIT_BATCH=4 VIT_RANK_BATCH=4
# VIT_RANK_STEPS=3 OPS_BATCH=4 WARMUP=5 STEPS=10 T_PEFT=60 DLRT_BIN=target/release/dlrt
# DLRT_BIN_FUSION=target/release/dlrt bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
PARTS=" ${PARTS:-mnist vit fusion ranks off ops train} "
DEVICE=${DEVICE:-cuda} VIT_MODEL=${VIT_MODEL:-vit-b16} VIT_IMAGE=${VIT_IMAGE:-224}
want() { [[ "$PARTS" == *" $1 "* ]]; }

# What bench/gpu-pack.sh carried: the binaries and MNIST, unpacked once.
if [ -f carry/dlrt-cuda.gz ]; then
    mkdir -p /tmp/dlrt-carry
    gunzip -c carry/dlrt-cuda.gz > /tmp/dlrt-carry/dlrt && chmod +x /tmp/dlrt-carry/dlrt
    [ -f carry/dlrt-cuda-fusion.gz ] && gunzip -c carry/dlrt-cuda-fusion.gz > /tmp/dlrt-carry/dlrt-fusion \
        && chmod +x /tmp/dlrt-carry/dlrt-fusion
fi
if [ -f carry/mnist.tar.gz ] && [ ! -f "${DLRT_DATA:-data}/mnist/train-images-idx3-ubyte" ]; then
    mkdir -p "${DLRT_DATA:-data}" && tar xzf carry/mnist.tar.gz -C "${DLRT_DATA:-data}"
fi
default_bin=target/release/dlrt
[ -x /tmp/dlrt-carry/dlrt ] && default_bin=/tmp/dlrt-carry/dlrt
BIN=${DLRT_BIN:-$default_bin}
BIN_FUSION=${DLRT_BIN_FUSION:-/tmp/dlrt-carry/dlrt-fusion}

# The first run compiles and tunes kernels for every shape; rank-adaptive methods visit many
# shapes, so keep autotuning short. CubeCL keeps its tuning results in target/autotune/ (the
# `target` folder of the Cargo.toml above the working directory), so later parts reuse them;
# compiled kernels are kept (target/cuda/) only with a cubecl.toml that says so (the part
# `cache`). carry/cubecl-cache.tar.gz, the $OUT file of an earlier call's `cache` part, starts
# this call with that call's caches (the driver's in target/nv, where CUDA_CACHE_PATH then points).
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
if [ -f carry/cubecl-cache.tar.gz ]; then
    mkdir -p target && tar xzf carry/cubecl-cache.tar.gz -C target && echo "caches: carried (carry/cubecl-cache.tar.gz)"
    [ -d target/nv ] && export CUDA_CACHE_PATH="$PWD/target/nv"
fi
# A rehearsal on the CPU has no nvidia-smi: its parts then report a peak of 0 MiB.
smi() { command -v nvidia-smi > /dev/null && nvidia-smi "$@"; }
{ smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi (device $DEVICE)"; } \
    | tee "$OUT/card.txt"
date -u +%Y-%m-%d | tee -a "$OUT/card.txt"
idle_mib=$(smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)

# part NAME SECONDS CMD...: runs CMD under `timeout` with the card's memory sampled beside it,
# says how it ended, how long it took and its peak memory (also in $OUT/NAME.mem).
part() {
    local name=$1 limit=$2 start rc note="" sampler peak
    shift 2
    smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.samples" 2> /dev/null &
    sampler=$!
    start=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    kill "$sampler" 2> /dev/null; wait "$sampler" 2> /dev/null
    peak=$(awk -v idle="${idle_mib:-0}" '$1 + 0 > m {m = $1 + 0} END {print (m > idle ? m - idle : 0)}' "$OUT/$name.samples")
    echo "$peak" > "$OUT/$name.mem"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note=" (timed out at $limit s)"; fi
    echo "$name: rc $rc after $(( ($(date +%s%N) - start) / 1000000 )) ms, peak $peak MiB$note" | tee -a "$OUT/parts.txt" >&2
    return $rc
}
: > "$OUT/parts.txt"
mem() { cat "$OUT/$1.mem" 2> /dev/null || echo "-"; }

# new_shapes LABEL FILE: appends FILE's "What a new shape costs" rows to new_shapes.md, labelled.
: > "$OUT/new_shapes.md"
new_shapes() {
    awk -v label="$1" '/^What a new shape costs/ {on = 1} on && /^\| [a-z_]+ \| [0-9]/ {print "| " label " " $0}' \
        "$2" >> "$OUT/new_shapes.md"
}

if want mnist; then
    echo "== dlrt bench --device $DEVICE (rank bucket 1: no padding)"
    part mnist "${T_MNIST:-45}" "$BIN" bench --device "$DEVICE" --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" --log-steps \
        2> "$OUT/dlrt_cuda.log" | tee "$OUT/dlrt_cuda.md"
    new_shapes "MNIST | 1" "$OUT/dlrt_cuda.md"

    echo "== dlrt bench --device $DEVICE --rank-bucket 8 (the rank-adaptive methods)"
    part mnist_b8 "${T_MNIST_B8:-30}" "$BIN" bench --device "$DEVICE" --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" \
        --methods abc_psi,abc_psi_one_pass,bug,parallel_bug --rank-bucket 8 --log-steps \
        2> "$OUT/dlrt_cuda_b8.log" | tee "$OUT/dlrt_cuda_b8.md"
    new_shapes "MNIST | 8" "$OUT/dlrt_cuda_b8.md"

    echo "== PyTorch dense MLP (same shape, batch, optimizer)"
    part torch_mlp "${T_TORCH:-20}" python3 bench/torch_mlp.py --device "$DEVICE" --warmup "${WARMUP:-100}" \
        --steps "${STEPS:-200}" | tee "$OUT/torch_cuda.md"

    echo "== ratios (dlrt µs/step ÷ PyTorch dense µs/step)"
    torch_us=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' "$OUT/torch_cuda.md")
    [ -n "$torch_us" ] && awk -F'|' -v t="$torch_us" '/^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3);
        printf "| %s | %s | %.2f |\n", $2, $3, $3 / t} /^$/ {exit}' "$OUT/dlrt_cuda.md" | tee "$OUT/ratios.md"
fi

# vit_row LABEL PRECISION ATTENTION FILE PART: appends FILE's main-table rows (they end before the
# first blank line) to vit_ratios.md with the ratios to peft's times and the part's peak memory.
: > "$OUT/vit_ratios.md"
vit_row() {
    awk -F'|' -v l="$1" -v p="$2" -v a="$3" -v h="${peft_bf16:-nan}" -v f="${peft_fp32:-nan}" -v m="$(mem "$5")" \
        '/^$/ {exit} /^\| [a-z_]+ \| [0-9]/ {gsub(/ /, "", $2); gsub(/ /, "", $3);
        printf "| %s | %s | %s | %s | %s ms | %.2f | %.2f | %s |\n", l, p, a, $2, $3, $3 / h, $3 / f, m}' \
        "$4" | tee -a "$OUT/vit_ratios.md"
}
VIT_BATCH=${VIT_BATCH:-256}
if want vit; then
    echo "== $VIT_MODEL adapter step, r = 32 on query/key/value, batch $VIT_BATCH: peft LoRA, then dlrt bench-vit"
    for dtype in bf16 fp32; do
        part "peft_$dtype" "${T_PEFT:-25}" python3 bench/torch_vit_lora.py --device "$DEVICE" --model "$VIT_MODEL" \
            --image "$VIT_IMAGE" --batch "$VIT_BATCH" --rank 32 --dtype "$dtype" --warmup "${PEFT_WARMUP:-3}" \
            --steps "${PEFT_STEPS:-10}" \
            | tee "$OUT/peft_vit_$dtype.md"
    done
    peft_bf16=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_bf16.md")
    peft_fp32=$(awk -F'|' '{gsub(/ ms| /, "", $3); print $3}' "$OUT/peft_vit_fp32.md")
    # precision:attention[:methods]; a part's peak memory is that of all its methods.
    default_variants="f32:explicit bf16:explicit bf16:fused:abc_psi_one_pass bf16:fused:lora"
    for variant in ${VIT_VARIANTS:-$default_variants}; do
        IFS=: read -r precision attention methods <<< "$variant"
        methods=${methods:-abc_psi_one_pass,lora}
        name="vit_${precision}_${attention}_${methods//,/_}"
        part "$name" "${T_VIT:-45}" "$BIN" bench-vit --model "$VIT_MODEL" --image "$VIT_IMAGE" --batch "$VIT_BATCH" --rank 32 \
            --device "$DEVICE" --precision "$precision" --attention "$attention" --methods "$methods" \
            --steps "${VIT_STEPS:-3}" --log-steps 2> "$OUT/dlrt_$name.log" | tee "$OUT/dlrt_$name.md"
        vit_row "$DEVICE" "$precision" "$attention" "$OUT/dlrt_$name.md" "$name"
    done
fi

# Burn's kernel fusion and autotuning (`--features cuda-fusion`): MNIST at rank buckets 1 and 8
# (a build with them on did not finish MNIST in 150 s before buckets existed) and the ViT step.
if want fusion; then
    if [ -x "$BIN_FUSION" ]; then
        for bucket in 1 8; do
            echo "== fusion + autotune: dlrt bench --rank-bucket $bucket"
            part "fusion_mnist_b$bucket" "${T_FUSION:-25}" "$BIN_FUSION" bench --device "$DEVICE" --warmup "${WARMUP:-100}" \
                --steps "${STEPS:-200}" --methods abc_psi_one_pass,lora,dense --rank-bucket "$bucket" --log-steps \
                2> "$OUT/fusion_mnist_b$bucket.log" | tee "$OUT/fusion_mnist_b$bucket.md"
            new_shapes "MNIST fusion | $bucket" "$OUT/fusion_mnist_b$bucket.md"
        done
        variant=${VIT_FUSION_VARIANT:-bf16:fused}
        precision=${variant%%:*} attention=${variant##*:}
        echo "== fusion + autotune: $VIT_MODEL $precision $attention, rank bucket 8"
        part fusion_vit "$(( ${T_FUSION:-25} + 20 ))" "$BIN_FUSION" bench-vit --model "$VIT_MODEL" --image "$VIT_IMAGE" --batch "$VIT_BATCH" \
            --rank 32 --device "$DEVICE" --precision "$precision" --attention "$attention" --methods abc_psi_one_pass,lora \
            --rank-bucket 8 --steps "${VIT_STEPS:-3}" --log-steps 2> "$OUT/fusion_vit.log" | tee "$OUT/fusion_vit.md"
        vit_row "cuda-fusion, bucket 8" "$precision" "$attention" "$OUT/fusion_vit.md" fusion_vit
    else
        echo "== no fusion binary at $BIN_FUSION (bench/gpu-pack.sh builds it): fusion part skipped"
    fi
fi
if want vit || want fusion; then
    echo "| binary | precision | attention | method | dlrt | ÷ peft bf16 | ÷ peft fp32 | peak MiB |"
    cat "$OUT/vit_ratios.md"
    for dtype in bf16 fp32; do echo "peft $dtype: $(cat "$OUT/peft_vit_$dtype.md" 2> /dev/null), peak $(mem "peft_$dtype") MiB"; done
fi

# A new rank on the ViT: abc-PSI in one pass, every step timed from the first, without and with
# rank buckets, at a batch small enough for a dozen steps.
if want ranks; then
    echo "== $VIT_MODEL rank buckets: bench-vit --rank-bucket 1 and 8"
    for bucket in 1 8; do
        name="vit_b${VIT_RANK_BATCH:-32}_bucket$bucket"
        part "$name" "${T_VIT_RANKS:-30}" "$BIN" bench-vit --model "$VIT_MODEL" --image "$VIT_IMAGE" --batch "${VIT_RANK_BATCH:-32}" \
            --rank 32 --device "$DEVICE" --methods abc_psi_one_pass --warmup 0 --steps "${VIT_RANK_STEPS:-12}" \
            --rank-bucket "$bucket" --log-steps 2> "$OUT/dlrt_$name.log" | tee "$OUT/dlrt_$name.md"
        new_shapes "ViT-B/16 batch ${VIT_RANK_BATCH:-32} | $bucket" "$OUT/dlrt_$name.md"
    done
fi
echo "| run | bucket | method | steps | new ranks | at new ranks | at seen ranks | new widths | at new widths | at seen widths |"
cat "$OUT/new_shapes.md"

# The integrators batch each phase of their updates across layers on the GPU (two reads of the
# Gram matrices per phase, whatever the number of adapters); --batched-update off gives the
# per-layer host decompositions of earlier runs, for the same table with the switch off (the ViT
# with it off is the part `off_vit`, not run by default).
if want off; then
    echo "== the same with the batched update off (per-layer host decompositions)"
    part mnist_batched_off "${T_OFF:-25}" "$BIN" bench --device "$DEVICE" --batched-update off --warmup "${WARMUP:-100}" \
        --steps "${STEPS:-200}" --methods abc_psi,abc_psi_one_pass,bc_psi,psi,bug,parallel_bug | tee "$OUT/dlrt_cuda_batched_off.md"
fi
if want off_vit; then
    part vit_batched_off "$(( ${T_OFF:-25} + 15 ))" "$BIN" bench-vit --batched-update off --model "$VIT_MODEL" \
        --image "$VIT_IMAGE" --batch "${VIT_RANK_BATCH:-32}" --rank 32 --device "$DEVICE" --steps "${VIT_STEPS:-3}" \
        --methods abc_psi,abc_psi_one_pass | tee "$OUT/dlrt_vit_b${VIT_RANK_BATCH:-32}_batched_off.md"
fi

# Where the time goes when Burn's kernels are slower than PyTorch's (issue 16, item 6): one
# ViT-B/16 block's operations one by one, forward and forward + backward, dlrt against PyTorch
# at the same shapes and types, joined by operation: | op | dlrt | PyTorch | ratio | for both.
if want ops; then
    echo "== one $VIT_MODEL block's operations: dlrt bench-ops vs bench/torch_ops.py"
    : > "$OUT/ops_ratios.md"
    for precision in f32 bf16; do
        part "ops_dlrt_$precision" "${T_OPS:-10}" "$BIN" bench-ops --device "$DEVICE" --model "$VIT_MODEL" \
            --image "$VIT_IMAGE" --batch "${OPS_BATCH:-64}" \
            --precision "$precision" | tee "$OUT/ops_dlrt_$precision.md"
        part "ops_torch_$precision" "${T_OPS:-10}" python3 bench/torch_ops.py --device "$DEVICE" --model "$VIT_MODEL" \
            --image "$VIT_IMAGE" --batch "${OPS_BATCH:-64}" \
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
fi

if want train; then
    echo "== dlrt train --device $DEVICE (abc-PSI, paper setting, 200 batches)"
    part train "${T_TRAIN:-15}" "$BIN" train configs/mnist_abc_psi.toml --device "$DEVICE" --epochs 1 --max-batches 200 \
        --out runs/gpu-train --quiet
    tail -n 1 runs/gpu-train/metrics.csv | tee "$OUT/train_cuda.csv"
fi
# What the persistent caches save (item 4; not in the default PARTS, about 2 × T_CACHE s): the
# same MNIST bench twice in two processes, first with every kernel cache empty, then with what
# the first run left: CubeCL's tuning results (target/autotune), its compiled kernels
# (target/cuda, on for this part only through a cubecl.toml) and the driver's own cache of the
# kernels it built from them (CUDA_CACHE_PATH, a fresh folder here). The fusion binary where
# there is one, whose kernels are compiled per fused graph. All three go to
# $OUT/cubecl-cache.tar.gz, which a later call can carry.
if want cache; then
    cache_bin=$BIN
    [ -x "$BIN_FUSION" ] && cache_bin=$BIN_FUSION
    echo "== persistent caches: $cache_bin bench, cold then warm"
    if [ -e cubecl.toml ]; then
        grep -q '^cache' cubecl.toml || echo "note: the existing cubecl.toml keeps no compiled kernels"
    else
        printf '[compilation]\ncache = "target"\n' > cubecl.toml
        trap 'rm -f cubecl.toml' EXIT
    fi
    rm -rf target/autotune target/cuda target/nv
    mkdir -p target/nv
    for run in cold warm; do
        part "cache_$run" "${T_CACHE:-40}" env CUDA_CACHE_PATH="$PWD/target/nv" "$cache_bin" bench --device "$DEVICE" \
            --warmup "${WARMUP:-100}" --steps "${STEPS:-200}" --methods abc_psi_one_pass,lora,dense --rank-bucket 8 \
            --log-steps 2> "$OUT/cache_$run.log" | tee "$OUT/cache_$run.md"
        new_shapes "MNIST cache $run | 8" "$OUT/cache_$run.md"
    done
    grep "^cache_" "$OUT/parts.txt"
    echo "| run | bucket | method | steps | new ranks | at new ranks | at seen ranks | new widths | at new widths | at seen widths |"
    grep "MNIST cache" "$OUT/new_shapes.md"
    caches=$(cd target && for d in autotune cuda nv; do [ -n "$(ls -A "$d" 2> /dev/null)" ] && echo "$d"; done)
    if [ -n "$caches" ]; then
        tar czf "$OUT/cubecl-cache.tar.gz" -C target $caches && ls -l "$OUT/cubecl-cache.tar.gz"
    else
        echo "no kernel caches to pack (none was written)"
    fi
fi
echo "== parts"
cat "$OUT/parts.txt"
