#!/usr/bin/env bash
# Run here (a Debian machine with the registry), before a GPU session: gathers what the GPU
# machine lacks into .gpu/ (git-ignored; name it in the device tool's `carry`):
#   .gpu/debs/    Debian's .deb files for gRPC, Protobuf, yaml-cpp, prometheus-cpp, spdlog, fmt,
#                 SQLite, GoogleTest and their libraries (the machine reaches no registry; the
#                 recipe unpacks them into a private prefix, never into /)
#   .gpu/shared/  a copy of ../shared (fixtures and datasets; only the checkout travels)
# About 40 MiB, under the device's 64 MiB limit for what travels.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/.gpu"

# pkgconf: gRPC's CMake files find re2 through pkg-config; curl: the end-to-end tests read
# /metrics with it.
PACKAGES=(pkgconf curl libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libyaml-cpp-dev
          prometheus-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libsqlite3-dev libssl-dev
          libgtest-dev libgmock-dev zlib1g-dev)
# What every Linux machine with a compiler has, and what must never be replaced by another
# distribution's copy (the C library, the compiler's runtime).
BASE='^(gcc-[0-9]+-base|libc-dev-bin|libc6|libc6-dev|libcrypt-dev|libcrypt1|libgcc-s1|libstdc\+\+6|linux-libc-dev|libnsl-dev|libnsl2|libtirpc-common|libtirpc-dev|libtirpc3|rpcsvc-proto|catch2|libdb5\.3|libffi8|libgmp10|libcom-err2|libgomp1|zlib1g|tar|passwd|adduser|debconf|dpkg|install-info|readline-common|libtinfo6|libtextwrap1|libreadline8|liblzma5|libbz2-1\.0|libmd0|libacl1|libselinux1|libpcre2-8-0)$'

mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${PACKAGES[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -v -E "$BASE")
rm -rf "$OUT/debs.new" && mkdir -p "$OUT/debs.new"
(cd "$OUT/debs.new" && apt-get download "${closure[@]}" >/dev/null 2>&1)
# Gloo's headers alone, for a LibTorch that ships ProcessGroupGloo.hpp without them (its Gloo is
# built in); the recipe uses them only then.
(cd "$OUT/debs.new" && apt-get download libgloo-dev >/dev/null 2>&1)
rm -rf "$OUT/debs" && mv "$OUT/debs.new" "$OUT/debs"

if [ ! -d "$ROOT/../shared/fixtures" ]; then
  echo "fetch_deps: $ROOT/../shared/fixtures not found: the tests need the shared fixtures" >&2
  exit 1
fi
rm -rf "$OUT/shared" && cp -r "$ROOT/../shared" "$OUT/shared"
# GPT-2's tokenizer files, fetched by scripts/setup.sh (npm), travel too.
if [ -d "$ROOT/.cache/tokenizers" ]; then
  rm -rf "$OUT/tokenizers" && cp -r "$ROOT/.cache/tokenizers" "$OUT/tokenizers"
fi
echo "fetch_deps: $(ls "$OUT/debs" | wc -l) packages, $(du -sh "$OUT" | cut -f1) in $OUT"
