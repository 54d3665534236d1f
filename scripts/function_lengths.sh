#!/usr/bin/env bash
# The longest functions of the library code (not tests, benches or fuzzers), by universal-ctags'
# start/end lines: "LINES FILE:LINE NAME", longest first. The team's bar is about 100 lines.
# Usage: scripts/function_lengths.sh [N=20] [DIR...]   (default: the library folders)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"; shift || true
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=(common data model worker launch coordinator cli proto/src)
command -v ctags >/dev/null || { echo "needs universal-ctags (apt-get install universal-ctags)" >&2; exit 2; }
find "${dirs[@]}" -name '*.cpp' -o -name '*.h' | grep -v '/tools/' | sort |
  xargs ctags -x --_xformat='%{line} %{end} %{input} %{name}' --kinds-C++=f --fields=+e -o - 2>/dev/null |
  awk '$2 != "" { print $2 - $1 + 1, $3 ":" $1, $4 }' | sort -rn | head -n "$n"
