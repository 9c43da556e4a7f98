#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on the device machine, which has no network and takes at most
# 64 MiB of ignored files with a call (the `carry` paths): both CUDA binaries and MNIST, gzipped,
# in carry/. Builds `--features cuda` into target/ and `--features cuda-fusion` (Burn's fusion and
# autotune on) into $FUSION_TARGET (default target-fusion/); SKIP_BUILD=1 packs what is built.
# Then: run(command="bash bench/gpu.sh", carry=["carry"], timeout_s=590).
set -euo pipefail
cd "$(dirname "$0")/.."
FUSION_TARGET=${FUSION_TARGET:-target-fusion}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --locked --features cuda
    CARGO_TARGET_DIR=$FUSION_TARGET cargo build --release --locked --features cuda-fusion
fi
data=${DLRT_DATA:-data}
[ -f "$data/mnist/train-images-idx3-ubyte" ] || target/release/dlrt fetch mnist --data-dir "$data"
mkdir -p carry
gzip -9 -c target/release/dlrt > carry/dlrt-cuda.gz
gzip -9 -c "$FUSION_TARGET/release/dlrt" > carry/dlrt-cuda-fusion.gz
tar czf carry/mnist.tar.gz -C "$data" mnist
ls -l carry
total=$(du -cb carry/* | tail -n 1 | cut -f1)
if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then
    echo "carry/ holds $total bytes, more than the 64 MiB a device call takes" >&2
    exit 1
fi
