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
# Both Prometheus configs load the rules where each deployment puts them, checked in a temporary
# directory laid out as it mounts them: compose as docker/compose.yaml's volumes say (the rules/
# folder beside prometheus.yml); Kubernetes as one ConfigMap holding both files side by side (its
# keys cannot hold '/'; docs/deploy.md). promtool must find every rule through rule_files.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
count_rules() { sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' | awk '{n += $1} END {print n + 0}'; }
want="$(promtool check rules "$RULES/trm.rules.yml" | count_rules)"
[ "$want" -gt 0 ] || { echo "FAIL: no rules counted in trm.rules.yml"; exit 1; }
python3 - "$SRC" "$TMP" <<'PY'
import os, pathlib, shutil, sys, yaml
src, tmp = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
compose = src / "docker"
svc = yaml.safe_load((compose / "compose.yaml").read_text())["services"]["prometheus"]
config = next(a.split("=", 1)[1] for a in svc["command"] if a.startswith("--config.file="))
root = tmp / "compose"
for v in svc["volumes"]:
    host, _, rest = v.partition(":")
    if not host.startswith((".", "/")):
        continue  # a named volume (the TSDB)
    dst = root / rest.split(":")[0].lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if (compose / host).is_dir() else shutil.copy)(compose / host, dst)
(tmp / "compose.config").write_text(str(root / config.lstrip("/")))
k8s = tmp / "k8s/etc/prometheus"
k8s.mkdir(parents=True)
for f in ("deploy/prometheus/prometheus-k8s.yml", "deploy/prometheus/rules/trm.rules.yml"):
    shutil.copy(src / f, k8s / os.path.basename(f))  # a ConfigMap from files: keyed by basename
(tmp / "k8s.config").write_text(str(k8s / "prometheus-k8s.yml"))
PY
for deployment in compose k8s; do
  cfg="$(cat "$TMP/$deployment.config")"
  if ! out="$(promtool check config "$cfg" 2>&1)"; then
    grep -q "kubernetes_sd_configs not found" <<<"$out" || { echo "$out"; echo "FAIL: $deployment: promtool check config"; exit 1; }
    # Debian's promtool is built without Kubernetes discovery: check the rest with the discovery
    # swapped for a static target (rule_files untouched).
    python3 - "$cfg" <<'PY'
import pathlib, sys, yaml
p = pathlib.Path(sys.argv[1])
c = yaml.safe_load(p.read_text())
for sc in c.get("scrape_configs") or []:
    if sc.pop("kubernetes_sd_configs", None) is not None:
        sc["static_configs"] = [{"targets": ["localhost:9465"]}]
p.write_text(yaml.safe_dump(c, sort_keys=False))
PY
    out="$(promtool check config "$cfg" 2>&1)" || { echo "$out"; echo "FAIL: $deployment: promtool check config"; exit 1; }
  fi
  echo "$out"
  got="$(count_rules <<<"$out")"
  [ "$got" = "$want" ] || { echo "FAIL: $deployment: its Prometheus config loads $got rules, not the $want in trm.rules.yml"; exit 1; }
done
echo "alert rules: ok"
