#!/usr/bin/env bash
# Builds and tests the project against LibTorch 2.x with CUDA on a machine without a GPU: a Debian
# trixie chroot with trixie's libtorch-cuda-dev (2.6, CUDA 12.4, NCCL), so the NCCL path and
# every 2.x API difference are compiled and linked, and the whole suite runs on 2.x (the CUDA
# tests skip: no device). Needs root and about 14 GB of disk; the first run downloads about
# 2.7 GB. Not part of CI (which runs Debian bookworm's LibTorch 1.13).
#
#   sudo bash scripts/gpu/check_libtorch2.sh [CHROOT_DIR] [ctest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CH="${1:-/var/tmp/trm-trixie}"
shift || true
[ "$(id -u)" -eq 0 ] || { echo "check_libtorch2: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap rsync >/dev/null
command -v rsync >/dev/null || apt-get install -y -qq rsync >/dev/null

if [ ! -x "$CH/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase --components=main,contrib,non-free,non-free-firmware trixie "$CH" \
    http://deb.debian.org/debian
fi
for d in proc sys dev dev/pts; do mountpoint -q "$CH/$d" || mount --bind "/$d" "$CH/$d"; done
trap 'for d in dev/pts dev sys proc; do umount -l "$CH/$d" 2>/dev/null || true; done' EXIT

in_chroot() { chroot "$CH" env DEBIAN_FRONTEND=noninteractive bash -c "$1"; }
if ! in_chroot 'dpkg-query -W -f="\${Status}" libtorch-cuda-dev 2>/dev/null | grep -q "install ok installed"'; then
  in_chroot 'apt-get update -qq'
  # nvidia-cudnn only downloads cuDNN from NVIDIA at install time, which this machine cannot
  # reach; unpack everything, then let that one step pass and point LibTorch at a local cuDNN 9
  # when there is one (nothing here calls cuDNN: no convolutions).
  in_chroot 'apt-get install -y -q --no-install-recommends build-essential cmake ninja-build ccache pkg-config git \
    curl openssl procps python3 python3-numpy nodejs npm libopenblas0-pthread libtorch-cuda-dev nvidia-cuda-toolkit \
    libnccl-dev libgloo-cuda-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
    libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libsqlite3-dev libssl-dev \
    libgtest-dev libgmock-dev prometheus >/tmp/install.log 2>&1' || true
  printf '#!/bin/sh\nexit 0\n' >"$CH/var/lib/dpkg/info/nvidia-cudnn.postinst"
  if ls /usr/local/cuda/lib64/libcudnn*.so.9* >/dev/null 2>&1; then
    cp -a /usr/local/cuda/lib64/libcudnn*.so.9* "$CH/usr/lib/x86_64-linux-gnu/"
  fi
  in_chroot 'dpkg --configure -a >/dev/null && ldconfig'
  in_chroot 'dpkg-query -W -f="\${Version}\n" libtorch-cuda-dev'
fi

mkdir -p "$CH/src"
rsync -a --delete --exclude '/build*' --exclude '/.gpu' --exclude '/.git' "$ROOT/" "$CH/src/main/"
rsync -a --delete "$ROOT/../shared/" "$CH/src/shared/"
in_chroot 'cd /src/main && bash scripts/fetch_gpt2_tokenizer.sh >/dev/null &&
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/tmp/configure.log 2>&1 ||
    { tail -30 /tmp/configure.log; exit 1; }
  grep -E "LibTorch|NCCL" /tmp/configure.log
  cmake --build build -j"$(nproc)"'
in_chroot "cd /src/main/build && ctest --output-on-failure $(printf '%q ' "$@")"
