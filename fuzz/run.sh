#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan, standalone CMake project fuzz/, no
# LibTorch) in build-fuzz/ and runs them. Usage: fuzz/run.sh [TARGET|all] [RUNS]
#   TARGET: safetensors | dataset_json | config | tokenizer | all (default)
#   RUNS:   executions per target (default 1000000)
# New inputs go to build-fuzz/corpus/<target>/ (the committed seeds in fuzz/corpus/<target>/ are
# only read); crashes to build-fuzz/artifacts/<target>/. A finding stops that target with a
# non-zero exit. Needs: apt-get install -y clang-14 libclang-rt-14-dev (not in scripts/setup.sh:
# CI only replays the corpus, tests/fuzz/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build-fuzz"
TARGET="${1:-all}"
RUNS="${2:-1000000}"
CXX_BIN="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}"

cmake -S "$ROOT/fuzz" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_BIN" -DTRM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

max_len() {
  case "$1" in
    safetensors) echo 16384 ;;
    dataset_json) echo 16384 ;;
    config) echo 4096 ;;
    tokenizer) echo 4096 ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

if [[ "$TARGET" == all ]]; then targets=(safetensors dataset_json config tokenizer); else targets=("$TARGET"); fi
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done
ninja -C "$BUILD" $(printf '%s_fuzz ' "${targets[@]}")

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
for t in "${targets[@]}"; do
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  echo "== $t: $RUNS runs" >&2
  start=$(date +%s)
  dict=()
  if [[ -f "$ROOT/fuzz/$t.dict" ]]; then dict=(-dict="$ROOT/fuzz/$t.dict"); fi
  "$BUILD/bin/${t}_fuzz" "${dict[@]}" -runs="$RUNS" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t/" \
    "$BUILD/corpus/$t" "$ROOT/fuzz/corpus/$t"
  echo "== $t: done in $(( $(date +%s) - start )) s" >&2
done
