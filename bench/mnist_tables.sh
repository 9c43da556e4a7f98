#!/usr/bin/env bash
# The MNIST accuracy tables of docs/benchmarks.md (and the README): seeds of the paper setting, the ϑ sweep, all
# integrators at equal epochs, and the Adam recipe. About 5 minutes on 2 cores.
# Usage: bash bench/mnist_tables.sh [DLRT_BIN]   (tables go to runs/tables/*.md)
set -euo pipefail
BIN=${1:-target/release/dlrt}
R=runs/tables
mkdir -p "$R"
train() { "$BIN" train "$@" --quiet; }

for s in 0 1 2 3 4; do train configs/mnist_abc_psi.toml --seed "$s" --out "$R/seed/seed_$s"; done
"$BIN" report "$R"/seed/seed_* | tee "$R/seeds.md"

for t in 0.4 0.2 0.1 0.05 0.02 0.01; do train configs/mnist_abc_psi.toml --tau "$t" --out "$R/tau/tau_$t"; done
"$BIN" report "$R"/tau/tau_* | tee "$R/tau.md"

for m in abc_psi abc_psi_one_pass bc_psi psi bug parallel_bug lora dense; do train "configs/mnist_$m.toml" --out "$R/method/$m"; done
"$BIN" report "$R"/method/* | tee "$R/methods.md"

train configs/mnist_abc_psi_adam.toml --out "$R/recipe/abc_psi_adam"
"$BIN" report "$R"/recipe/* | tee "$R/recipe.md"
