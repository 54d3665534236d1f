#!/usr/bin/env bash
# The GPU recipe: run on the GPU machine (through the device tool), in the repository root, with
# .gpu/ carried (scripts/gpu/fetch_deps.sh made it here):
#
#   bash scripts/gpu/build_and_test.sh [STAGE...]      STAGE: build gpu-tests suite bench (default: build gpu-tests)
#
# It builds against that machine's LibTorch 2.x with CUDA (the one its python3 imports), with
# gRPC and the other libraries unpacked from .gpu/debs into a private prefix (never into /),
# then runs the stages asked for. Reports and logs go to $OUT (the device tool brings them back)
# or to build-gpu/out.
#   gpu-tests  the CUDA/NCCL tests (tests/worker/gpu_test.cpp)
#   suite      the whole CTest suite on the GPU machine (device=auto trains on the GPU there)
#   bench      trm-bench train on the GPU against the PyTorch reference on the GPU
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(build gpu-tests)
BUILD="$ROOT/build-gpu"
DEPS="${TRM_GPU_DEPS:-/opt/trm-deps}"
REPORT="${OUT:-$BUILD/out}"
mkdir -p "$REPORT"
JOBS="$(nproc)"
log() { echo "[gpu $(date +%H:%M:%S)] $*"; }
has_stage() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

[ -d .gpu/debs ] || { echo "build_and_test: .gpu/debs missing: run scripts/gpu/fetch_deps.sh here and carry .gpu" >&2; exit 2; }

# --- LibTorch: the one the machine's python3 imports ---
# (TRM_TORCH_CMAKE overrides it, for a python whose torch ships no CMake files, as Debian's.)
TORCH_CMAKE="${TRM_TORCH_CMAKE:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}"
TORCH_DIR="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
log "torch $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())')"

# --- the dependencies, unpacked (idempotent: a marker per .deb) ---
unpack_deb() {  # dpkg-deb where the machine has it, else Python's ar + tar reader
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb -x "$1" "$DEPS"
  else
    python3 - "$1" "$DEPS" <<'PY'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", deb + ": not an ar archive"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(dest)
    pos += 60 + size + (size & 1)
PY
  fi
}
mkdir -p "$DEPS/.unpacked"
for f in .gpu/debs/*.deb; do
  m="$DEPS/.unpacked/$(basename "$f")"
  [ -e "$m" ] && continue
  # Gloo's headers only for a LibTorch that lacks them: its own Gloo is built in, and headers of
  # another Gloo version must not shadow the ones it ships.
  case "$(basename "$f")" in libgloo-dev_*) [ -d "$TORCH_DIR/include/gloo" ] || [ -d /usr/include/gloo ] && continue ;; esac
  unpack_deb "$f"
  touch "$m"
done
# Debian's absolute symlinks (libz.so -> /lib/...) point into the prefix instead, or at the
# machine's own copy of the library when the prefix does not carry it.
find "$DEPS" -type l | while read -r l; do
  t="$(readlink "$l")"
  case "$t" in
    /*) if [ -e "$DEPS$t" ]; then ln -sfn "$DEPS$t" "$l"; fi ;;
  esac
done
for l in "$DEPS"/usr/lib/x86_64-linux-gnu/*.so; do
  [ -e "$l" ] && continue
  base="$(basename "$l")"
  sys="$(ls /usr/lib/x86_64-linux-gnu/"$base".* /lib/x86_64-linux-gnu/"$base".* 2>/dev/null | head -1 || true)"
  [ -n "$sys" ] && ln -sfn "$sys" "$l"
done
# The prefix's programs (protoc, grpc_cpp_plugin, pkg-config, curl) run through wrappers that
# give them the prefix's libraries; nothing else gets them: LD_LIBRARY_PATH set for the whole
# script would hand the machine's own programs (openssl, python) older copies of their libraries.
# Our binaries find the prefix (and LibTorch) through their RPATH instead (below).
DEPS_LIBS="$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/lib/x86_64-linux-gnu"
WRAP="$DEPS/wrapped-bin"
mkdir -p "$WRAP"
for p in "$DEPS"/usr/bin/*; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' "$DEPS_LIBS" "$p" \
    >"$WRAP/$(basename "$p")"
  chmod +x "$WRAP/$(basename "$p")"
done
# pkg-config (gRPC's CMake files find re2 with it) reads the prefix's .pc files, whose /usr paths
# the sysroot maps into the prefix.
export PKG_CONFIG_PATH="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig:$DEPS/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$DEPS"
# Debian's multiarch headers (openssl/opensslconf.h), which the compiler looks for only under /usr.
export CPATH="$DEPS/usr/include/x86_64-linux-gnu${CPATH:+:$CPATH}"

# LibTorch's CMake files look for the CUDA toolkit (nvcc) that its CUDA build needs.
CUDA_ROOT="${CUDA_HOME:-/usr/local/cuda}"
CUDA_FLAGS=()
if [ -x "$CUDA_ROOT/bin/nvcc" ]; then
  export PATH="$PATH:$CUDA_ROOT/bin"
  CUDA_FLAGS=(-DCUDAToolkit_ROOT="$CUDA_ROOT" -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT")
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/[gpu] /'

if has_stage build; then
  log "configure"
  # The build uses the prefix's protoc, matching its Protobuf headers, whatever the machine has.
  # DT_RPATH (--disable-new-dtags), unlike RUNPATH, also serves the libraries' own dependencies
  # (gRPC's Abseil, re2, c-ares), so the binaries run with no LD_LIBRARY_PATH.
  PATH="$WRAP:$PATH" cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags" -DCMAKE_SHARED_LINKER_FLAGS="-Wl,--disable-new-dtags" \
    -DProtobuf_PROTOC_EXECUTABLE="$WRAP/protoc" -DTRM_GRPC_CPP_PLUGIN="$WRAP/grpc_cpp_plugin" \
    -DPKG_CONFIG_EXECUTABLE="$WRAP/pkg-config" "${CUDA_FLAGS[@]}" \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$DEPS/usr" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 \
    -DTRM_SHARED_DIR="$ROOT/.gpu/shared" >"$REPORT/configure.log" 2>&1 ||
    { tail -40 "$REPORT/configure.log"; exit 1; }
  grep -E "LibTorch|NCCL" "$REPORT/configure.log" || true
  log "build (-j$JOBS)"
  PATH="$WRAP:$PATH" cmake --build "$BUILD" -j"$JOBS" >"$REPORT/build.log" 2>&1 || { grep -E "error|Error" "$REPORT/build.log" | head -40; exit 1; }
  log "built"
fi

# The tests' tools (curl, openssl): the machine's own where it has them, else the prefix's.
export PATH="$PATH:$WRAP"

# GPT-2's tokenizer files, where the tests look for them.
if [ -d .gpu/tokenizers ] && [ ! -d .cache/tokenizers ]; then mkdir -p .cache && cp -r .gpu/tokenizers .cache/tokenizers; fi

if has_stage gpu-tests; then
  log "GPU tests"
  "$BUILD/bin/trm_worker_tests" --gtest_filter='GpuTest.*' 2>&1 | tee "$REPORT/gpu_tests.log" | grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |Failure|error" || true
  grep -q "^\[  PASSED  \]" "$REPORT/gpu_tests.log" && ! grep -q "SKIPPED \]" "$REPORT/gpu_tests.log" || { log "GPU tests failed or skipped"; exit 1; }
fi

if has_stage suite; then
  log "the suite (ctest ${TRM_CTEST_ARGS:-})"
  # shellcheck disable=SC2086  # TRM_CTEST_ARGS: extra ctest arguments, e.g. "-R Gpu" or "-I 133,237"
  (cd "$BUILD" && ctest -j"$(( JOBS > 3 ? JOBS / 2 : 2 ))" --timeout 900 --output-on-failure ${TRM_CTEST_ARGS:-} \
    >"$REPORT/ctest.log" 2>&1) || true
  tail -30 "$REPORT/ctest.log"
fi

if has_stage bench; then
  for p in ${TRM_GPU_PRESETS:-chat}; do
    for dt in float32 bfloat16; do
      log "trm-bench train --preset $p --device cuda --forward-dtype $dt"
      "$BUILD/bin/trm-bench" train --preset "$p" --device cuda --forward-dtype "$dt" --steps 20 2>&1 | tail -1 |
        tee -a "$REPORT/bench.jsonl"
    done
    log "the PyTorch reference, $p, on the GPU (float32)"
    python3 bench/ref_bench.py "$p" --steps 20 --device cuda --reference .gpu/shared/reference 2>&1 | tail -1 |
      tee -a "$REPORT/bench.jsonl" || true
  done
fi
log "done"
