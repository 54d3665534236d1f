"""The Python client against a live `trm-coordinator --standalone` (a real coordinator and its
local CPU worker on loopback), part of it through a fault-injecting gRPC proxy (proxy.py):
the example trains a job while its watch streams are dropped; replays, metrics, checkpoints,
evaluation, pulls that break, resume and carry a corrupted chunk, submission in each config
form, cancellation and the errors a user sees."""
import hashlib
import json
import os
import subprocess

import grpc
import pytest

from proxy import Proxy, corrupt_chunk, drop_after
from service import BIN_DIR, PYTHON, SHARED_DIR, SOURCE_DIR, Coordinator, build_dataset, wait_for_workers
from trm_client import (CheckpointEvent, Client, LogEvent, MetricsEvent, StateEvent, TrmError)
from trm_client._proto import trm_pb2 as pb

EXAMPLES = os.path.join(SOURCE_DIR, "examples", "python")
JOB_OVERRIDES = ["max_steps=40", "checkpoint_interval_steps=20", "eval_interval=5", "threads=1", "log_interval=10"]


class Svc:
    pass


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Svc()
    s.root = str(tmp_path_factory.mktemp("svc"))
    s.dataset = build_dataset(os.path.join(s.root, "example-chat"))
    s.coord = Coordinator(os.path.join(s.root, "coord"), standalone=True, cpu_slots=1)
    s.client = Client(s.coord.address, token="", tls_ca="")
    try:
        wait_for_workers(s.client, 1)
        s.proxy = Proxy(s.coord.address)
        s.via_proxy = Client(s.proxy.address, token="", tls_ca="")
        yield s
    finally:
        if hasattr(s, "proxy"):
            s.via_proxy.close()
            s.proxy.stop()
        s.client.close()
        s.coord.stop()


@pytest.fixture(scope="module")
def trained(svc):
    """examples/python/submit_and_watch.py through the proxy, which drops the first two watch
    streams after their 6th event while the job trains."""
    svc.proxy.set_hook("WatchJob", drop_after(5, times=2))
    out = os.path.join(svc.root, "final")
    env = dict(os.environ, TRM_COORDINATOR=svc.proxy.address)
    env.pop("PYTHONPATH", None)  # the example finds the package in the checkout itself
    r = subprocess.run([PYTHON, os.path.join(EXAMPLES, "submit_and_watch.py"), "--dataset", svc.dataset,
                        "--config-name", "cfg_tiny", "--out", out, *JOB_OVERRIDES],
                       capture_output=True, text=True, env=env, timeout=400)
    svc.proxy.set_hook("WatchJob", None)
    t = Svc()
    t.rc, t.stdout, t.stderr, t.out = r.returncode, r.stdout, r.stderr, out
    t.watch_drops = svc.proxy.drops
    t.watch_requests = [pb.WatchJobRequest.FromString(b) for b in svc.proxy.requests("WatchJob")]
    assert r.returncode == 0, f"example failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n{svc.coord.process.log_tail()}"
    t.result = json.loads(r.stdout.strip().splitlines()[-1])
    t.job = t.result["job"]
    return t


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree(directory):
    """{relative path: SHA-256} of every file under directory."""
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, directory)] = sha256(p)
    return out


# ---------------------------------------------------------------- the example

def test_example_trains_and_pulls_through_dropped_watch_streams(trained):
    assert trained.result["state"] == "SUCCEEDED"
    assert trained.result["checkpoint"] == os.path.abspath(trained.out)
    assert os.path.isfile(os.path.join(trained.out, "model.safetensors"))
    lines = trained.stdout.splitlines()
    assert any(line.startswith("step 10/") for line in lines), trained.stdout
    assert any(line.startswith("checkpoint step_40") for line in lines), trained.stdout
    # Progress is one line per log_interval (10) steps, not one per step.
    assert len([line for line in lines if line.startswith("step ")]) <= 6, trained.stdout
    # Both drops happened, and each re-attach asked for the events after the last one it had.
    assert trained.watch_drops == 2
    assert len(trained.watch_requests) >= 3
    assert trained.watch_requests[0].after_seq == 0
    assert all(r.after_seq > 0 for r in trained.watch_requests[1:3])


def test_example_checkpoint_loads_in_the_reference_model(trained, svc):
    """The pulled checkpoint in the reference PyTorch TRM (shared/reference/trm_ref.py, through
    tests/tools/ref_eval.py) gives trm-eval's numbers on the test split."""
    ref = subprocess.run([PYTHON, os.path.join(SOURCE_DIR, "tests", "tools", "ref_eval.py"), trained.out,
                          svc.dataset, "--split", "test"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TRM_REFERENCE_DIR=os.path.join(SHARED_DIR, "reference")))
    assert ref.returncode == 0, ref.stderr
    cpp = subprocess.run([os.path.join(BIN_DIR, "trm-eval"), "--checkpoint", trained.out, "--data", svc.dataset,
                          "--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert cpp.returncode == 0, cpp.stderr
    want = json.loads(ref.stdout.strip().splitlines()[-1])["metrics"]
    got = json.loads(cpp.stdout.strip().splitlines()[-1])["metrics"]
    assert got["count"] == want["count"] > 0
    for key in ("lm_loss", "accuracy", "token_loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


# ---------------------------------------------------------------- events

def test_watch_replays_every_event_once_across_dropped_streams(svc, trained):
    direct = list(svc.client.watch(trained.job, include_logs=True))
    seqs = [e.seq for e in direct]
    assert seqs == list(range(1, len(seqs) + 1))
    assert isinstance(direct[-1], StateEvent) and direct[-1].state.value == "SUCCEEDED"
    assert any(isinstance(e, LogEvent) for e in direct)
    assert any(isinstance(e, CheckpointEvent) and e.checkpoint.name == "step_40" for e in direct)
    assert any(isinstance(e, MetricsEvent) and e.eval and "eval_lm_loss" in e.values for e in direct)

    drops, before = svc.proxy.drops, len(svc.proxy.requests("WatchJob"))
    svc.proxy.set_hook("WatchJob", drop_after(3, times=4))
    try:
        proxied = list(svc.via_proxy.watch(trained.job, include_logs=True))
    finally:
        svc.proxy.set_hook("WatchJob", None)
    assert svc.proxy.drops == drops + 4
    assert proxied == direct  # same events, same times, nothing twice, nothing skipped
    # Each re-attach asked for exactly the events after the last one delivered (3 per stream).
    asked = [pb.WatchJobRequest.FromString(b).after_seq for b in svc.proxy.requests("WatchJob")[before:]]
    assert asked == [0, 3, 6, 9, 12]


def test_watch_from_a_sequence_number(svc, trained):
    tail = list(svc.client.watch(trained.job, after_seq=10, include_logs=True))
    assert tail[0].seq == 11
    # After the final event of an ended job: nothing to yield, and no waiting for more.
    assert list(svc.client.watch(trained.job, after_seq=tail[-1].seq, reconnect_s=5)) == []
    without_logs = list(svc.client.watch(trained.job, follow=False))
    assert not any(isinstance(e, LogEvent) for e in without_logs)
    assert without_logs[-1].state.value == "SUCCEEDED"


def test_metrics_series(svc, trained):
    records = svc.client.metrics(trained.job, as_frame=False)
    train = [r for r in records if not r["eval"]]
    evals = [r for r in records if r["eval"]]
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    assert train[-1]["step"] == 40 and isinstance(train[-1]["step"], int)
    assert all("lm_loss" in r for r in train)
    assert evals and all("eval_lm_loss" in r for r in evals)
    only = svc.client.metrics(trained.job, keys=["lm_loss"], as_frame=False)
    assert all(set(r) <= {"step", "total_steps", "eval", "lm_loss"} for r in only)
    later = svc.client.metrics(trained.job, from_step=30, as_frame=False)
    assert later and min(r["step"] for r in later) >= 30


def test_metrics_as_a_dataframe(svc, trained):
    pandas = pytest.importorskip("pandas")
    frame = svc.client.metrics(trained.job)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns[:3]) == ["step", "total_steps", "eval"]
    assert frame[~frame["eval"]]["lm_loss"].notna().all()


def test_plot_metrics_example(svc, trained, tmp_path):
    png = str(tmp_path / "loss.png")
    r = subprocess.run([PYTHON, os.path.join(EXAMPLES, "plot_metrics.py"), trained.job, "-o", png],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TRM_COORDINATOR=svc.coord.address, MPLCONFIGDIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    assert matplotlib.image.imread(png).shape[:2] == (450, 800)
    assert " 0 evaluation points" not in r.stdout


# ---------------------------------------------------------------- checkpoints and pulls

def test_checkpoints(svc, trained):
    cps = svc.client.checkpoints(trained.job)
    assert cps[-1].name == "step_40" and cps[-1].step == 40
    assert svc.client.job(trained.job).latest_checkpoint == "step_40"
    for c in cps:
        assert len(c.content_sha256) == 64 and c.size_bytes > 0 and "lm_loss" in c.metrics


def test_pull_resumes_a_broken_stream(svc, trained, tmp_path):
    svc.proxy.set_hook("DownloadCheckpoint", drop_after(3, times=2))
    try:
        r = svc.via_proxy.pull(trained.job, out=str(tmp_path / "ck"))
    finally:
        svc.proxy.set_hook("DownloadCheckpoint", None)
    assert r.reconnects == 2 and r.name == "step_40"
    reqs = [pb.DownloadCheckpointRequest.FromString(b) for b in svc.proxy.requests("DownloadCheckpoint")][-3:]
    assert reqs[0].offset == 0 and reqs[0].selector == "latest"
    assert 0 < reqs[1].offset < reqs[2].offset and reqs[1].selector == reqs[2].selector == "step_40"
    assert tree(r.path) == tree(trained.out)


def test_pull_continues_where_an_earlier_pull_gave_up(svc, trained, tmp_path):
    out = str(tmp_path / "ck")
    svc.proxy.set_hook("DownloadCheckpoint", drop_after(4, times=1))
    try:
        with pytest.raises(TrmError) as e:
            svc.via_proxy.pull(trained.job, out=out, retries=0)
    finally:
        svc.proxy.set_hook("DownloadCheckpoint", None)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert not os.path.exists(out) and os.path.isdir(out + ".partial")
    r = svc.via_proxy.pull(trained.job, out=out)
    assert r.resumed_from >= 1 << 20  # the drop came after several chunks (at most 1 MiB each)
    assert pb.DownloadCheckpointRequest.FromString(svc.proxy.requests("DownloadCheckpoint")[-1]).offset == r.resumed_from
    assert tree(out) == tree(trained.out)
    assert not os.path.exists(out + ".partial") and not os.path.exists(out + ".partial.json")


def test_pull_with_a_corrupted_chunk_is_data_loss(svc, trained, tmp_path):
    out = str(tmp_path / "ck")
    svc.proxy.set_hook("DownloadCheckpoint", corrupt_chunk(2))
    try:
        with pytest.raises(TrmError) as e:
            svc.via_proxy.pull(trained.job, out=out)
    finally:
        svc.proxy.set_hook("DownloadCheckpoint", None)
    assert e.value.code == grpc.StatusCode.DATA_LOSS
    assert "SHA-256" in e.value.message and "step_40/" in e.value.message
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")
    assert tree(svc.via_proxy.pull(trained.job, out=out).path) == tree(trained.out)


def test_pull_weights_only(svc, trained, tmp_path):
    r = svc.client.pull(trained.job, select="step:40", out=str(tmp_path / "w"), weights_only=True)
    files = set(tree(r.path))
    assert {"model.safetensors", "state.json", "manifest.json"} <= files
    assert all(f in ("model.safetensors", "state.json", "manifest.json") or f.startswith("tokenizer")
               for f in files), files
    assert r.bytes < os.path.getsize(os.path.join(trained.out, "model.safetensors")) * 1.5


def test_pull_refuses_a_non_empty_destination(svc, trained, tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(TrmError) as e:
        svc.client.pull(trained.job, out=str(tmp_path))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "not empty" in e.value.message
    assert (tmp_path / "x").read_text() == "keep me"


# ---------------------------------------------------------------- evaluation

def test_evaluate_puts_the_result_on_the_checkpoint(svc, trained):
    ds = svc.client.push_dataset(svc.dataset)
    run = svc.client.evaluate(trained.job, dataset=ds.content_sha256, checkpoint="step_40")
    assert run.kind == "eval"
    assert svc.client.wait(run.id).state.value == "SUCCEEDED"
    cp = [c for c in svc.client.checkpoints(trained.job) if c.name == "step_40"][0]
    results = [e for e in cp.evals if e.dataset_hash == ds.content_sha256 and e.split == "test"]
    assert results and results[0].eval_job_id == run.id
    local = subprocess.run([os.path.join(BIN_DIR, "trm-eval"), "--checkpoint", trained.out, "--data", svc.dataset,
                            "--no-progress"], capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    want = json.loads(local.stdout.strip().splitlines()[-1])["metrics"]
    assert results[0].metrics["lm_loss"] == pytest.approx(want["lm_loss"], rel=1e-5)


# ---------------------------------------------------------------- submission

def test_submit_a_config_dict_then_cancel(svc, trained):
    config = svc.client.job(trained.job).config
    assert config["arch"]["hidden_size"] == 128
    job = svc.client.submit(config=config, dataset="example-chat", name="from-dict", overrides={"threads": 1})
    assert job.name == "from-dict" and job.config["arch"]["hidden_size"] == 128
    cancelled = svc.client.cancel(job.id)
    assert cancelled.state.value == "CANCELLED"
    events = list(svc.client.watch(job.id))
    assert events[-1].state.value == "CANCELLED"


def test_submit_a_yaml_file(svc, trained, tmp_path):
    config = dict(svc.client.job(trained.job).config)
    path = tmp_path / "my_run.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    job = svc.client.submit(config=str(path), dataset="example-chat", overrides=["max_steps=1", "threads=1"])
    assert job.config_name == "my_run" and job.config["max_steps"] == 1
    assert svc.client.wait(job.id).state.value == "SUCCEEDED"

    (tmp_path / "composed.yaml").write_text("defaults:\n  - arch: trm_tiny\n  - _self_\nlr: 0.001\n")
    with pytest.raises(TrmError) as e:
        svc.client.submit(config=str(tmp_path / "composed.yaml"), dataset="example-chat")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "config_name='composed'" in e.value.message


def test_submit_an_elastic_job(svc, trained):
    # 8 ranks do not fit the service's slots; elastic down to 1 the job is taken.
    job = svc.client.submit("cfg_tiny", dataset="example-chat", world_size=8, min_world_size=1,
                            overrides={"global_batch_size": 8, "max_steps": 1, "threads": 1})
    assert job.world_size == 8 and job.min_world_size == 1
    assert list(job.raw.world_sizes) == [8, 4, 2, 1]
    done = svc.client.wait(job.id)
    assert done.state.value == "SUCCEEDED", done.message
    assert 1 <= done.current_world_size < 8


def test_submit_refusals_name_the_problem(svc, trained):
    cases = [
        (dict(config_name="cfg_tiny", dataset="example-chat", overrides={"arch.hidden_size": 655360}),
         "hidden_size"),
        (dict(config_name="cfg_tiny", dataset="example-chat", overrides={"no_such_key": 1}), "no_such_key"),
        (dict(config_name="no_such_config", dataset="example-chat"), "no_such_config"),
        (dict(config_name="cfg_tiny", dataset="no-such-dataset"), "no-such-dataset"),
        (dict(config_name="cfg_tiny", dataset="example-chat", world_size=8), "slot"),
        (dict(config_name="cfg_tiny", dataset="example-chat", world_size=4, min_world_size=3,
              overrides={"global_batch_size": 4}), "min_world_size: global_batch_size 4 is not divisible by 3"),
    ]
    for kwargs, named in cases:
        with pytest.raises(TrmError) as e:
            svc.client.submit(**kwargs)
        assert e.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                grpc.StatusCode.FAILED_PRECONDITION), (kwargs, e.value)
        assert named in e.value.message, (kwargs, e.value.message)
    with pytest.raises(TrmError) as e:
        svc.client.submit("cfg_tiny", config={"lr": 1})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_not_found(svc):
    for call in (lambda: svc.client.job("job-999999"), lambda: svc.client.checkpoints("job-999999"),
                 lambda: list(svc.client.watch("job-999999"))):
        with pytest.raises(TrmError) as e:
            call()
        assert e.value.code == grpc.StatusCode.NOT_FOUND and "job-999999" in str(e.value)


# ---------------------------------------------------------------- lists and datasets

def test_lists(svc, trained):
    workers = svc.client.workers()
    assert [w.id for w in workers if w.alive] == ["local"] and workers[0].device_kind == "cpu"
    assert trained.job in [j.id for j in svc.client.jobs(states=["SUCCEEDED"])]
    assert trained.job not in [j.id for j in svc.client.jobs(states=["RUNNING", "QUEUED"])]
    with pytest.raises(TrmError) as e:
        svc.client.jobs(states=["DONE"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "DONE" in e.value.message


def test_push_dataset_is_content_addressed(svc, tmp_path):
    a = svc.client.push_dataset(svc.dataset, name="again")
    b = svc.client.push_dataset(svc.dataset, name="again")
    assert a.content_sha256 == b.content_sha256 and a.files == b.files > 0
    assert "again" in [d.name for d in svc.client.datasets()]
    with pytest.raises(TrmError) as e:
        svc.client.push_dataset(str(tmp_path))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "train/dataset.json" in e.value.message
    with pytest.raises(TrmError) as e:
        svc.client.push_dataset(svc.dataset, name="bad name")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_push_names_a_file_that_vanished_mid_push(svc, tmp_path, monkeypatch):
    import shutil
    import trm_client.client as client_module
    copy = str(tmp_path / "ds")
    shutil.copytree(svc.dataset, copy)
    real = client_module.build_manifest

    def manifest_then_delete(directory, name):
        m = real(directory, name)
        os.remove(os.path.join(directory, "train", "dataset.json"))
        return m
    monkeypatch.setattr(client_module, "build_manifest", manifest_then_delete)
    with pytest.raises(TrmError) as e:
        svc.client.push_dataset(copy, name="vanishing")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "dataset.json" in e.value.message, e.value
    assert "vanishing" not in [d.name for d in svc.client.datasets()]
