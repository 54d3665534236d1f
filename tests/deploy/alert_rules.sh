#!/usr/bin/env bash
# The alert rules (deploy/prometheus/rules/): promtool's syntax check, its unit tests
# (trm.rules.test.yml: which alerts fire on which series), every trm_* metric they read is one
# the code exports, and both Prometheus configs load them. Usage: alert_rules.sh SOURCE_DIR
set -euo pipefail
SRC="$(cd "$1" && pwd)"
RULES="$SRC/deploy/prometheus/rules"
command -v promtool >/dev/null || { echo "FAIL: no promtool (scripts/setup.sh installs Debian's prometheus)"; exit 1; }
promtool check rules "$RULES/trm.rules.yml"
(cd "$RULES" && promtool test rules trm.rules.test.yml)
python3 - "$SRC" <<'PY'
import pathlib, re, sys
src = pathlib.Path(sys.argv[1])
rules = (src / "deploy/prometheus/rules/trm.rules.yml").read_text()
code = "".join(p.read_text() for d in ("coordinator/src", "worker/agent/src") for p in (src / d).glob("*.cpp"))
exported = set(re.findall(r'"(trm_[a-z_]+)"', code))
used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\b(trm_[a-z_]+)", rules)}
missing = sorted(m for m in used if m not in exported)
assert not missing, f"the rules read metrics the code does not export: {missing}"
for alert in re.findall(r"alert: (\w+)", rules):
    assert f"#{alert.lower()}" in rules, f"{alert}: no runbook_url"
    assert f"### {alert}" in (src / "docs/operations.md").read_text(), f"{alert}: no runbook section in docs/operations.md"
print(f"alert rules: {len(used)} metrics, all exported; every alert has its runbook")
PY
promtool check config "$SRC/deploy/prometheus/prometheus.yml"  # loads the rules as compose mounts them
for cfg in prometheus.yml prometheus-k8s.yml; do
  grep -q "rules/trm.rules.yml" "$SRC/deploy/prometheus/$cfg" || { echo "FAIL: $cfg does not load the rules"; exit 1; }
done
echo "alert rules: ok"
