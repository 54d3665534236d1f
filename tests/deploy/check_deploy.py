#!/usr/bin/env python3
"""Checks the deployment files (docs/deploy.md) against the code and the real binaries.

  * deploy/grafana/trm-dashboard.json: every metric a panel or variable queries is one the
    code registers (coordinator/src/metrics.cpp, worker/agent/src/agent_metrics.cpp) or, with
    --metrics, one a live /metrics scrape exposes; every label a selector, a `by (...)` clause,
    a legend or label_values() names is one those metrics carry; every registered metric is
    shown by some panel; the panels are well formed and use the ${DS_PROMETHEUS} variable.
  * docker/compose.yaml and deploy/k8s/*.yaml: every flag given to a TRM binary is one that
    binary's --help lists (the real binary with --bin-dir, else its usage text in the source),
    with a value where it takes one; the coordinator's startup rules (plaintext only on
    loopback unless --insecure, --tls-cert with --tls-key) hold; the worker names a coordinator.
  * deploy/prometheus/prometheus.yml scrapes the ports compose.yaml gives --metrics-listen.
  * docker/Dockerfile installs scripts/setup.sh's build packages and copies real binaries.
  * With --prometheus-url: every dashboard query runs on that Prometheus and returns data.

Python 3 standard library only (PyYAML is used when installed; a small parser for the YAML
subset these files keep to is used otherwise, and compared with PyYAML when both exist).
Exit status 0 when every check passes, 1 with one line per problem otherwise.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

COORD_METRICS_SRC = "coordinator/src/metrics.cpp"
AGENT_METRICS_SRC = "worker/agent/src/agent_metrics.cpp"
USAGE_SRC = {
    "trm-coordinator": "coordinator/src/service_main.cpp",
    "trm-worker": "worker/agent/src/options.cpp",
    "trmctl": "cli/src/cli.cpp",
}
# Labels Prometheus itself puts on every scraped series (the `job` label of the TRM metrics
# is kept by honor_labels: deploy/prometheus/prometheus.yml).
TARGET_LABELS = {"job", "instance"}
# Setup packages the Docker build stage does not need: the Python reference and the tests.
SETUP_PACKAGES_NOT_IN_IMAGE = {"python3", "python3-torch", "python3-numpy", "libgtest-dev", "libgmock-dev",
                               "prometheus", "python3-yaml", "iproute2",
                               # the dashboard's browser test (tests/e2e/dashboard.sh)
                               "chromium",
                               # the Slurm test's daemons (tests/deploy/slurm.sh)
                               "slurmctld", "slurmd", "slurm-client", "munge",
                               # the Python client's runtime, tests and venv install: users' machines, not the images
                               "python3-grpcio", "python3-protobuf", "python3-pytest", "python3-matplotlib",
                               "python3-pandas", "python3-venv", "python3-pip", "python3-setuptools"}

problems = []


def problem(msg):
    problems.append(msg)


# ---------------------------------------------------------------------------------------------
# YAML: PyYAML when installed, else a parser for the subset the deploy files use.

class MiniYamlError(Exception):
    pass


def _strip_comment(line):
    out, quote = [], None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def _scalar(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return bytes(s[1:-1], "utf-8").decode("unicode_escape")
    if len(s) >= 2 and s[0] == s[-1] == "'":
        return s[1:-1].replace("''", "'")
    if s in ("", "~", "null"):
        return None
    if s in ("true", "false"):
        return s == "true"
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    return s


def _split_flow(body):
    items, cur, quote, depth = [], [], None, 0
    for c in body:
        if quote:
            cur.append(c)
            if c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    if "".join(cur).strip():
        items.append("".join(cur))
    return items


def _value(s):
    s = s.strip()
    if s.startswith("[") and s.endswith("]"):
        return [_value(x) for x in _split_flow(s[1:-1])]
    if s.startswith("{") and s.endswith("}"):
        out = {}
        for item in _split_flow(s[1:-1]):
            k, _, v = item.partition(":")
            out[_scalar(k)] = _value(v)
        return out
    if s[:1] in "[{&*!|>" and s not in ("|", ">"):
        raise MiniYamlError("unsupported value: " + s)
    return _scalar(s)


def _key_split(text):
    """'key: value' -> (key, value) or None, outside quotes."""
    m = re.match(r'^("[^"]*"|\'[^\']*\'|[^\s"\'#][^:]*?)\s*:(?:\s+(.*))?$', text)
    if not m:
        return None
    return _scalar(m.group(1)), (m.group(2) or "")


def mini_yaml_load_all(text):
    docs, cur = [], []
    for raw in text.split("\n"):
        if raw.rstrip() == "---" or raw.startswith("--- "):
            docs.append(cur)
            cur = []
        else:
            cur.append(raw)
    docs.append(cur)
    out = []
    for lines in docs:
        parser = _MiniParser(lines)
        if parser.lines:
            out.append(parser.parse())
    return out


class _MiniParser:
    def __init__(self, raw_lines):
        self.raw = raw_lines
        self.lines = []  # (indent, text, raw index)
        for idx, raw in enumerate(raw_lines):
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise MiniYamlError("tab indentation")
            text = _strip_comment(raw)
            if text.strip():
                self.lines.append((len(text) - len(text.lstrip()), text.strip(), idx))
        self.i = 0

    def parse(self):
        v = self.block(self.lines[0][0])
        if self.i != len(self.lines):
            raise MiniYamlError("unexpected indentation at: " + self.lines[self.i][1])
        return v

    def block(self, indent):
        if self.lines[self.i][1].startswith("- ") or self.lines[self.i][1] == "-":
            return self.seq(indent)
        return self.mapping(indent)

    def block_scalar(self, style, parent_indent, raw_idx):
        # Literal / folded block: every raw line indented deeper than the parent (or blank).
        body, j = [], raw_idx + 1
        while j < len(self.raw):
            r = self.raw[j]
            if r.strip() and len(r) - len(r.lstrip()) <= parent_indent:
                break
            body.append(r)
            j += 1
        while self.i < len(self.lines) and self.lines[self.i][2] < j:
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        ind = min((len(r) - len(r.lstrip()) for r in body if r.strip()), default=0)
        lines = [r[ind:] for r in body]
        text = "\n".join(lines) + "\n" if lines else ""
        if style[0] == ">":
            text = re.sub(r"(?<=\S)\n(?=\S)", " ", text)
        if style.endswith("-"):
            text = text.rstrip("\n")
        return text

    def item_value(self, rest, indent, raw_idx):
        if rest in ("|", "|-", ">", ">-"):
            return self.block_scalar(rest, indent, raw_idx)
        if rest:
            return _value(rest)
        if self.i < len(self.lines) and (self.lines[self.i][0] > indent or
                                         (self.lines[self.i][0] == indent and self.lines[self.i][1].startswith("- "))):
            return self.block(self.lines[self.i][0])
        return None

    def mapping(self, indent):
        out = {}
        while self.i < len(self.lines) and self.lines[self.i][0] == indent:
            ind, text, idx = self.lines[self.i]
            if text.startswith("- "):
                break
            kv = _key_split(text)
            if kv is None:
                raise MiniYamlError("expected 'key: value': " + text)
            self.i += 1
            out[kv[0]] = self.item_value(kv[1], indent, idx)
        return out

    def seq(self, indent):
        out = []
        while self.i < len(self.lines) and self.lines[self.i][0] == indent and \
                (self.lines[self.i][1].startswith("- ") or self.lines[self.i][1] == "-"):
            ind, text, idx = self.lines[self.i]
            rest = text[1:].strip()
            kv = _key_split(rest) if rest and rest[0] not in "[{\"'" else None
            if kv is not None:
                # A mapping that starts on the dash line: re-read it at its own indentation.
                inner = indent + (len(text) - len(rest))
                self.lines[self.i] = (inner, rest, idx)
                out.append(self.mapping(inner))
            else:
                self.i += 1
                out.append(self.item_value(rest, indent, idx))
        return out


def _normalise(v):
    """Scalars as strings, so the two parsers' typing differences do not count."""
    if isinstance(v, dict):
        return {str(k): _normalise(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_normalise(x) for x in v]
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def load_yaml_all(path):
    text = open(path, encoding="utf-8").read()
    try:
        import yaml  # noqa: PLC0415
    except ImportError:
        yaml = None
    mini, mini_err = None, None
    try:
        mini = mini_yaml_load_all(text)
    except MiniYamlError as e:
        mini_err = str(e)
    if yaml is None:
        if mini_err:
            problem(f"{path}: cannot parse ({mini_err}); keep to block maps and lists, one-line flow lists, "
                    "plain or quoted scalars and | blocks")
            return []
        return mini
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        problem(f"{path}: invalid YAML: {e}")
        return []
    if mini_err or _normalise(mini) != _normalise(docs):
        problem(f"{path}: the fallback YAML parser of tests/deploy/check_deploy.py reads it differently from "
                f"PyYAML ({mini_err or 'different tree'}); keep to block maps and lists, one-line flow lists, "
                "plain or quoted scalars and | blocks (machines without PyYAML use the fallback)")
    return docs


# ---------------------------------------------------------------------------------------------
# Metrics: what the code registers, what a live scrape exposes.

def source_metrics(root):
    """{family: {"type": t, "labels": set, "where": file}} from the registering sources."""
    fams, labels_in = {}, {}
    for rel in (COORD_METRICS_SRC, AGENT_METRICS_SRC):
        path = os.path.join(root, rel)
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r'Build(Gauge|Counter|Histogram|Summary)\(\)\s*\.Name\("([a-z_:][a-z0-9_:]*)"\)', text):
            fams.setdefault(m.group(2), {"type": m.group(1).lower(), "labels": set(), "where": rel})
        for m in re.finditer(r'\.name\s*=\s*"([a-z_:][a-z0-9_:]*)"', text):
            t = re.search(r"MetricType::(\w+)", text[m.end():m.end() + 300])
            fams.setdefault(m.group(1), {"type": (t.group(1).lower() if t else "gauge"), "labels": set(), "where": rel})
        labels_in[rel] = set(re.findall(r'\{"([a-z_][a-z0-9_]*)",', text))
    if not fams:
        problem(f"no metric registrations found in {COORD_METRICS_SRC} / {AGENT_METRICS_SRC}: the checker's "
                "patterns no longer match the code")
    # The sources do not tie labels to families in a parseable way: each family may carry any
    # label its file uses (the live scrape, with --metrics, gives the exact sets).
    for f in fams.values():
        f["labels"] = set(labels_in[f["where"]])
    return fams


def parse_exposition(path):
    fams, samples = {}, {}
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                fams.setdefault(parts[2], {"type": parts[3], "labels": set(), "where": path})
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+", line)
        if not m:
            continue
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)
    for name, labels in samples.items():
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in fams:
                fam = name[: -len(suffix)]
        fams.setdefault(fam, {"type": "untyped", "labels": set(), "where": path})
        fams[fam]["labels"] |= labels - {"le", "quantile"}
        fams[fam].setdefault("has_samples", True)
    for f in fams.values():
        f.setdefault("has_samples", False)
    return fams


def merge_families(dicts):
    out = {}
    for d in dicts:
        for name, f in d.items():
            if name in out:
                out[name]["labels"] |= f["labels"]
                out[name]["has_samples"] = out[name].get("has_samples") or f.get("has_samples")
                out[name]["where"] += ", " + f["where"]
            else:
                out[name] = dict(f, labels=set(f["labels"]))
    return out


# ---------------------------------------------------------------------------------------------
# The dashboard.

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "${__rate_interval}": "1m"}


def substitute_vars(expr):
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?", ".*", expr)


def resolve_metric(name, fams):
    """Family of a series name, or None."""
    if name in fams:
        return name
    for suffix, types in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                          ("_count", {"histogram", "summary"})):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in fams and fams[base]["type"] in types:
            return base
    return None


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def check_expr(expr, where, fams, fam_source, used, legend=None):
    e = substitute_vars(expr)
    names = set(re.findall(r"(?<![A-Za-z0-9_:\"'.-])(trm_[a-z0-9_]+)", e))
    if not names:
        problem(f"{where}: query '{expr}' uses no trm_ metric")
    expr_labels, has_bucket = set(TARGET_LABELS), False
    for n in sorted(names):
        fam = resolve_metric(n, fams)
        if fam is None:
            problem(f"{where}: metric '{n}' is not {fam_source}")
            continue
        used.add(fam)
        expr_labels |= fams[fam]["labels"]
        if n.endswith("_bucket"):
            has_bucket = True
            expr_labels.add("le")
        for sel in re.finditer(re.escape(n) + r"\s*\{([^}]*)\}", e):
            for lab in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"', sel.group(1)):
                allowed = fams[fam]["labels"] | TARGET_LABELS | ({"le"} if n.endswith("_bucket") else set())
                if lab not in allowed:
                    problem(f"{where}: label '{lab}' in the selector of '{n}' is not a label of {fam} "
                            f"(it has {sorted(fams[fam]['labels']) or 'none'}; Prometheus adds job, instance)")
    for grp in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        for lab in [x.strip() for x in grp.group(1).split(",") if x.strip()]:
            if lab not in expr_labels:
                problem(f"{where}: grouping label '{lab}' in '{expr}' is on none of its metrics")
    if "histogram_quantile" in e:
        if not has_bucket:
            problem(f"{where}: histogram_quantile without a _bucket series in '{expr}'")
        elif not re.search(r"\bby\s*\([^)]*\ble\b", e):
            problem(f"{where}: histogram_quantile needs 'le' kept (sum by (le, ...)) in '{expr}'")
    for lab in re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend or ""):
        if lab not in expr_labels:
            problem(f"{where}: legend '{legend}' names label '{lab}' that '{expr}' does not have")
    return substitute_vars(expr)


def check_dashboard(path, fams, fam_source, src_fams):
    try:
        d = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        problem(f"{path}: not valid JSON: {e}")
        return []
    queries = []
    used = set()
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        problem(f"{path}: schemaVersion {d.get('schemaVersion')!r}: expected 36 or newer")
    for key in ("uid", "title"):
        if not d.get(key):
            problem(f"{path}: no '{key}'")
    tvars = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = tvars.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem(f"{path}: needs a templating variable DS_PROMETHEUS of type datasource (query prometheus)")
    ds_ref = "${DS_PROMETHEUS}"
    for name, v in tvars.items():
        if v.get("type") != "query":
            continue
        where = f"{path}: variable '{name}'"
        if (v.get("datasource") or {}).get("uid") != ds_ref:
            problem(f"{where}: datasource must be {{'uid': '{ds_ref}'}}")
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\(\s*([a-z_:][a-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q)
        if not m:
            problem(f"{where}: expected label_values(METRIC, LABEL), got '{q}'")
            continue
        fam = resolve_metric(m.group(1), fams)
        if fam is None:
            problem(f"{where}: metric '{m.group(1)}' is not {fam_source}")
        elif m.group(2) not in fams[fam]["labels"] | TARGET_LABELS:
            problem(f"{where}: '{m.group(1)}' has no label '{m.group(2)}' (it has {sorted(fams[fam]['labels'])})")
        else:
            used.add(fam)
    if "job" not in tvars:
        problem(f"{path}: no 'job' variable (label_values(trm_job_step, job))")
    ids, titles = set(), set()
    panels = list(walk_panels(d.get("panels")))
    if not panels:
        problem(f"{path}: no panels")
    for p in panels:
        title = p.get("title") or "(untitled)"
        where = f"{path}: panel '{title}'"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            problem(f"{where}: missing or duplicate id {p.get('id')!r}")
        ids.add(p.get("id"))
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp.get("x", 0) + gp.get("w", 0) > 24:
            problem(f"{where}: gridPos needs integer h, w, x, y within 24 columns, got {gp}")
        if p.get("type") in ("row", "text"):
            continue
        if title in titles:
            problem(f"{where}: duplicate title")
        titles.add(title)
        if (p.get("datasource") or {}).get("uid") != ds_ref:
            problem(f"{where}: datasource must be {{'type': 'prometheus', 'uid': '{ds_ref}'}}")
        targets = p.get("targets") or []
        if not targets:
            problem(f"{where}: no targets")
        refs = set()
        for t in targets:
            if not t.get("refId") or t["refId"] in refs:
                problem(f"{where}: missing or duplicate refId {t.get('refId')!r}")
            refs.add(t.get("refId"))
            if (t.get("datasource") or {}).get("uid") != ds_ref:
                problem(f"{where}: target {t.get('refId')} datasource must use uid '{ds_ref}'")
            if not (t.get("expr") or "").strip():
                problem(f"{where}: target {t.get('refId')} has no expr")
                continue
            q = check_expr(t["expr"], f"{where} target {t.get('refId')}", fams, fam_source, used, t.get("legendFormat"))
            queries.append((f"{where} target {t.get('refId')}", q))
    for name, f in sorted(src_fams.items()):
        if name not in used:
            problem(f"{path}: metric '{name}' registered in {f['where']} is shown by no panel")
    return queries


def check_live_coverage(src_fams, live_fams, files):
    for name, f in sorted(src_fams.items()):
        if name not in live_fams or not live_fams[name].get("has_samples"):
            problem(f"metric '{name}' registered in {f['where']} has no sample in the live metrics "
                    f"({', '.join(files)}): the scrape does not exercise it")


# ---------------------------------------------------------------------------------------------
# Command lines in compose.yaml and the Kubernetes manifests.

def help_flags(binary, bin_dir, root):
    """{flag: takes_value} from the binary's --help (or its usage text in the source)."""
    text, origin = None, None
    if bin_dir:
        exe = os.path.join(bin_dir, binary)
        if os.access(exe, os.X_OK):
            r = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            text, origin = r.stdout.decode("utf-8", "replace"), f"{exe} --help"
    if text is None and binary in USAGE_SRC:
        src = open(os.path.join(root, USAGE_SRC[binary]), encoding="utf-8").read()
        # C++ string literals, adjacent ones (only whitespace between) joined: the usage text is
        # the joined literal that starts with "usage: BINARY".
        joined, last_end = [], None
        for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', src):
            if last_end is not None and not src[last_end:m.start()].strip():
                joined[-1] += m.group(1)
            else:
                joined.append(m.group(1))
            last_end = m.end()
        found = [j for j in joined if j.startswith("usage: " + binary)]
        text = bytes(found[0], "utf-8").decode("unicode_escape") if found else None
        origin = USAGE_SRC[binary]
    if not text or "usage" not in text:
        return None, origin
    flags = {}
    for m in re.finditer(r"(?<![A-Za-z0-9-])(--[a-z0-9][a-z0-9-]*)((?:\s|=)([A-Z0-9'][^\s\]\[|]*))?", text):
        value = m.group(3) is not None and not m.group(3).startswith("'")
        flags[m.group(1)] = flags.get(m.group(1), False) or value
    flags.setdefault("--help", False)
    return flags, origin


def check_command(argv, where, bin_dir, root, cache):
    argv = [str(a) for a in argv]
    while argv and os.path.basename(argv[0]) in ("tini", "--"):
        argv = argv[1:]
    if not argv:
        return None, {}  # the image's own command (Prometheus, Grafana)
    binary = os.path.basename(argv[0])
    if not binary.startswith("trm"):
        return binary, {}
    if binary not in cache:
        cache[binary] = help_flags(binary, bin_dir, root)
    flags, origin = cache[binary]
    if flags is None:
        problem(f"{where}: no usage text for '{binary}' (give --bin-dir with the built binaries)")
        return binary, {}
    given, i = {}, 1
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-"):
            name, eq, val = tok.partition("=")
            if name not in flags:
                problem(f"{where}: {binary} has no flag '{name}' (not in {origin})")
                i += 1
                continue
            if flags[name]:
                if not eq:
                    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                        problem(f"{where}: {binary} {name} needs a value")
                        i += 1
                        continue
                    val = argv[i + 1]
                    i += 1
            elif eq:
                problem(f"{where}: {binary} {name} takes no value ('{tok}')")
            given[name] = val
        i += 1
    if binary == "trm-coordinator":
        listen = given.get("--listen", "127.0.0.1:50051")
        host = listen.rsplit(":", 1)[0]
        loopback = host in ("localhost", "[::1]") or host.startswith("127.")
        if ("--tls-cert" in given) != ("--tls-key" in given):
            problem(f"{where}: trm-coordinator --tls-cert and --tls-key go together")
        if not loopback and "--tls-cert" not in given and "--insecure" not in given:
            problem(f"{where}: trm-coordinator --listen {listen} is plaintext outside loopback: the coordinator "
                    "refuses it without --tls-cert/--tls-key or --insecure")
    if binary == "trm-worker":
        if "--coordinator" not in given:
            problem(f"{where}: trm-worker needs --coordinator")
        if "--cpu-slots" in given and "--gpus" in given:
            problem(f"{where}: trm-worker takes --cpu-slots or --gpus, not both")
    return binary, given


def compose_commands(path):
    out = []
    for doc in load_yaml_all(path):
        for name, svc in (doc.get("services") or {}).items():
            argv = []
            for key in ("entrypoint", "command"):
                v = svc.get(key)
                if isinstance(v, str):
                    problem(f"{path}: service '{name}' {key}: use a list (exec form), not a string")
                    v = v.split()
                argv += v or []
            out.append((f"{path}: service '{name}'", name, argv, svc))
    return out


def k8s_containers(path):
    out = []
    for doc in load_yaml_all(path):
        if not isinstance(doc, dict):
            problem(f"{path}: a document that is not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if key not in doc:
                problem(f"{path}: a document without '{key}'")
        spec = doc.get("spec") or {}
        pod = spec if doc.get("kind") == "Pod" else ((spec.get("template") or {}).get("spec") or {})
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            argv = list(c.get("command") or []) + list(c.get("args") or [])
            out.append((f"{path}: {doc.get('kind')} {(doc.get('metadata') or {}).get('name')} container "
                        f"'{c.get('name')}'", c.get("name"), argv, c))
    return out


def check_prometheus_targets(prom_path, compose_services):
    docs = load_yaml_all(prom_path)
    if not docs:
        return
    ports = {}  # service name / hostname -> metrics port
    for name, svc, given in compose_services:
        port = given.get("--metrics-listen", "").rsplit(":", 1)[-1]
        if port:
            ports[name] = port
            if svc.get("hostname"):
                ports[svc["hostname"]] = port
    jobs = docs[0].get("scrape_configs") or []
    if not jobs:
        problem(f"{prom_path}: no scrape_configs")
    for job in jobs:
        if not job.get("honor_labels"):
            problem(f"{prom_path}: scrape job '{job.get('job_name')}' needs honor_labels: true (the TRM metrics "
                    "have their own 'job' label, which Prometheus would rename to exported_job)")
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                if host not in ports:
                    problem(f"{prom_path}: target '{target}' is no compose service with --metrics-listen "
                            f"({sorted(ports)})")
                elif ports[host] != port:
                    problem(f"{prom_path}: target '{target}': service '{host}' serves metrics on port {ports[host]}")


def check_dockerfile(path, root, bin_dir, used_binaries):
    text = re.sub(r"(?m)^\s*#.*\n", "", open(path, encoding="utf-8").read())
    setup = open(os.path.join(root, "scripts/setup.sh"), encoding="utf-8").read()
    m = re.search(r"PACKAGES=\((.*?)\n\)", setup, re.S)
    pkgs = re.findall(r"^\s*([a-z0-9][a-z0-9.+-]+(?:\s+[a-z0-9][a-z0-9.+-]+)*)", re.sub(r"#.*", "", m.group(1)), re.M) if m else []
    pkgs = {p for line in pkgs for p in line.split()}
    stages = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    build_stage = next((st for st in stages if re.match(r"\S+\s+AS\s+build\b", st, re.I)), None)
    if build_stage is None:
        problem(f"{path}: no stage named 'build' (FROM ... AS build)")
        build_stage = ""
    for p in sorted(pkgs - SETUP_PACKAGES_NOT_IN_IMAGE):
        if not re.search(r"(?<![A-Za-z0-9.+-])" + re.escape(p) + r"(?![A-Za-z0-9.+-])", build_stage):
            problem(f"{path}: the build stage does not install '{p}' (scripts/setup.sh needs it)")
    copied = set(re.findall(r"/bin/(trm[a-z-]*|trmctl)\b", text))
    for st in stages:
        in_stage = set(re.findall(r"/bin/(trm[a-z-]*|trmctl)\b", st))
        if "trm-worker" in in_stage and "trm-train" not in in_stage:
            problem(f"{path}: stage '{st.split(chr(10))[0].strip()}' has trm-worker without trm-train "
                    "(the worker starts its ranks with the trm-train beside it)")
    targets = set(re.findall(r"cmake --build\s+\S+\s+--target\s+([^\n&\\]+)", text))
    targets = {t for line in targets for t in line.split()}
    known = set()
    for dp, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith((".", "build")) and x != "tests"]
        if "CMakeLists.txt" in files:
            cm = open(os.path.join(dp, "CMakeLists.txt"), encoding="utf-8").read()
            known |= set(re.findall(r"add_executable\((trm[a-z-]*|trmctl)\b", cm))
    for b in sorted(copied | targets):
        if b not in known:
            problem(f"{path}: '{b}' is not an executable the CMake project builds ({sorted(known)})")
        elif bin_dir and not os.path.exists(os.path.join(bin_dir, b)):
            problem(f"{path}: '{b}' is not in {bin_dir}")
    for b in sorted(used_binaries):
        if b not in copied:
            problem(f"{path}: no image carries '{b}', which compose.yaml / deploy/k8s run")
        if b not in targets:
            problem(f"{path}: the build stage does not build '{b}' (cmake --build ... --target)")


# ---------------------------------------------------------------------------------------------
# Queries on a running Prometheus.

def check_on_prometheus(url, queries):
    for where, q in queries:
        full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(full, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read().decode() or "{}")
        except (OSError, ValueError) as e:
            problem(f"{where}: Prometheus at {url} did not answer: {e}")
            return
        if body.get("status") != "success":
            problem(f"{where}: Prometheus rejects '{q}': {body.get('error')}")
        elif not body["data"]["result"]:
            problem(f"{where}: '{q}' returns no data on {url}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")), help="source checkout")
    ap.add_argument("--bin-dir", help="built binaries (build/bin): flags are checked against their --help")
    ap.add_argument("--metrics", action="append", default=[], help="a saved /metrics scrape (repeatable)")
    ap.add_argument("--dashboard", help="default ROOT/deploy/grafana/trm-dashboard.json")
    ap.add_argument("--compose", help="default ROOT/docker/compose.yaml")
    ap.add_argument("--k8s-dir", help="default ROOT/deploy/k8s")
    ap.add_argument("--prometheus-config", help="default ROOT/deploy/prometheus/prometheus.yml")
    ap.add_argument("--dockerfile", help="default ROOT/docker/Dockerfile")
    ap.add_argument("--prometheus-url", help="a Prometheus scraping the service: every query must return data")
    a = ap.parse_args()
    root = a.root
    dashboard = a.dashboard or os.path.join(root, "deploy/grafana/trm-dashboard.json")
    compose = a.compose or os.path.join(root, "docker/compose.yaml")
    k8s_dir = a.k8s_dir or os.path.join(root, "deploy/k8s")
    prom = a.prometheus_config or os.path.join(root, "deploy/prometheus/prometheus.yml")
    dockerfile = a.dockerfile or os.path.join(root, "docker/Dockerfile")

    src_fams = source_metrics(root)
    if a.metrics:
        live = merge_families(parse_exposition(p) for p in a.metrics)
        check_live_coverage(src_fams, live, a.metrics)
        fams, fam_source = live, "exposed by the live metrics (" + ", ".join(a.metrics) + ")"
    else:
        fams, fam_source = src_fams, f"registered in {COORD_METRICS_SRC} or {AGENT_METRICS_SRC}"
    queries = check_dashboard(dashboard, fams, fam_source, src_fams)

    cache, used_binaries, compose_svcs = {}, set(), []
    for where, name, argv, svc in compose_commands(compose):
        binary, given = check_command(argv, where, a.bin_dir, root, cache)
        if binary and binary.startswith("trm"):
            used_binaries.add(binary)
            compose_svcs.append((name, svc, given))
    k8s_files = sorted(os.path.join(k8s_dir, f) for f in os.listdir(k8s_dir) if f.endswith((".yaml", ".yml")))
    if not k8s_files:
        problem(f"{k8s_dir}: no manifests")
    for f in k8s_files:
        for where, _, argv, _ in k8s_containers(f):
            binary, _ = check_command(argv, where, a.bin_dir, root, cache)
            if binary and binary.startswith("trm"):
                used_binaries.add(binary)
    for rel in ("deploy/grafana/provisioning/datasources/prometheus.yaml",
                "deploy/grafana/provisioning/dashboards/trm.yaml", "deploy/prometheus/prometheus-k8s.yml"):
        load_yaml_all(os.path.join(root, rel))
    check_prometheus_targets(prom, compose_svcs)
    check_dockerfile(dockerfile, root, a.bin_dir, used_binaries)
    if a.prometheus_url:
        check_on_prometheus(a.prometheus_url, queries)

    for p in problems:
        print("FAIL: " + p)
    checked = (f"{len(queries)} dashboard queries, {len(src_fams)} registered metrics"
               + (f" against {len(a.metrics)} live scrape(s)" if a.metrics else " against the source")
               + f", flags of {sorted(cache)} "
               + (f"against {a.bin_dir}" if a.bin_dir else "against their usage text in the source")
               + (f", queries run on {a.prometheus_url}" if a.prometheus_url else ""))
    if problems:
        print(f"check_deploy: {len(problems)} problem(s) ({checked})")
        return 1
    print(f"check_deploy: ok ({checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
