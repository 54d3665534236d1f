"""The package itself, without a coordinator: generated stubs that match proto/ and are not
checked in, a pip install into a virtual environment, the override and transfer logic."""
import hashlib
import os
import re
import shutil
import subprocess

import grpc
import pytest

from service import PYTHON, SOURCE_DIR
from trm_client import TrmError
from trm_client._proto import trm_pb2 as pb
from trm_client.client import _overrides
from trm_client.transfer import Receiver, build_manifest, content_hash, upload_messages

PACKAGE_DIR = os.path.join(SOURCE_DIR, "clients", "python")


def test_stubs_have_every_rpc_of_the_proto():
    with open(os.path.join(SOURCE_DIR, "proto", "trm", "v1", "trm.proto")) as f:
        text = f.read()
    for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
        want = re.findall(r"rpc (\w+)\(", body)
        got = [m.name for m in pb.DESCRIPTOR.services_by_name[service].methods]
        assert got == want, service
    messages = set(re.findall(r"^message (\w+) \{", text, re.M))
    assert messages == set(pb.DESCRIPTOR.message_types_by_name)


def test_stubs_are_generated_not_checked_in():
    if not os.path.isdir(os.path.join(SOURCE_DIR, ".git")):
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "-C", SOURCE_DIR, "ls-files", "clients/python/trm_client/_proto"],
                             capture_output=True, text=True, check=True).stdout
    assert tracked == ""
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "trm_client", "_proto", "trm_pb2_grpc.py"))


def test_pip_installs_it_into_a_virtual_environment(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PACKAGE_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    # Debian's grpcio and protobuf come from the system; nothing is downloaded.
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--no-build-isolation", str(src)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import trm_client, trm_client._proto.trm_pb2_grpc as g; "
                        "print(trm_client.__file__); print(trm_client.__version__); print(hasattr(g, 'JobServiceStub'))"],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    where, version, ok = r.stdout.split()
    assert where.startswith(str(venv)) and version == "0.1.0" and ok == "True"
    meta = subprocess.run([str(venv / "bin" / "pip"), "show", "trm-client"], capture_output=True, text=True)
    assert "Requires: grpcio, protobuf" in meta.stdout


def test_overrides_become_trm_train_key_values():
    assert _overrides({"max_steps": 40, "ema": True, "lr": 1e-3, "data_paths": ["a", "b"], "run_name": None}) == [
        "max_steps=40", "ema=true", "lr=0.001", 'data_paths=["a", "b"]', "~run_name"]
    assert _overrides(["lr=0.1", "~ema"]) == ["lr=0.1", "~ema"]
    for bad in (["lr"], "lr=0.1"):
        with pytest.raises(TrmError) as e:
            _overrides(bad)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def make_tree(root):
    os.makedirs(os.path.join(root, "tokenizer"))
    files = {"model.safetensors": os.urandom(3_000_000), "state.json": b'{"step": 3}', "empty": b"",
             "tokenizer/vocab.json": os.urandom(1_500_000)}
    for rel, data in files.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return files


def test_manifest_and_messages(tmp_path):
    make_tree(str(tmp_path / "t"))
    m = build_manifest(str(tmp_path / "t"), "step_3")
    assert [f.path for f in m.files] == ["empty", "model.safetensors", "state.json", "tokenizer/vocab.json"]
    listing = "".join(f"{f.path}\t{f.size}\t{f.sha256}\n" for f in m.files)
    assert m.content_sha256 == content_hash(m) == hashlib.sha256(listing.encode()).hexdigest()
    msgs = list(upload_messages(str(tmp_path / "t"), m))
    assert msgs[0].manifest == m
    chunks = [x.chunk for x in msgs[1:]]
    assert all(len(c.data) <= 1 << 20 for c in chunks)
    assert [c.offset for c in chunks] == [sum(len(c.data) for c in chunks[:i]) for i in range(len(chunks))]
    assert sum(len(c.data) for c in chunks) == m.total_bytes


def test_receiver_continues_a_partial_download_from_any_cut(tmp_path):
    files = make_tree(str(tmp_path / "src"))
    with open(tmp_path / "src" / "tokenizer" / "zz_empty", "wb"):
        pass  # an empty file after the big ones, in manifest order
    files["tokenizer/zz_empty"] = b""
    m = build_manifest(str(tmp_path / "src"), "step_3")
    msgs = list(upload_messages(str(tmp_path / "src"), m))
    # Every cut: after the manifest, at each chunk (file boundaries included), after the last one.
    for cut in range(1, len(msgs) + 1):
        out = str(tmp_path / f"out{cut}")
        first = Receiver(out, "job-1", False, 1 << 30)
        for msg in msgs[:cut]:
            first.on_message(msg)
        got = first.received
        first._close()  # the process "dies" here
        with open(os.path.join(out + ".partial", "stray"), "wb") as f:
            f.write(b"left by another tool")

        assert Receiver(out, "job-2", False, 1 << 30).resume_selector() is None  # another job's partial
        assert Receiver(out, "job-1", True, 1 << 30).resume_selector() is None   # weights only: other files
        second = Receiver(out, "job-1", False, 1 << 30)
        assert second.resume_selector() == "step_3" and second.received == got, cut
        for msg in msgs:  # the server starts again at `got`: the manifest, then chunks from there
            if msg.WhichOneof("kind") == "manifest" or msg.chunk.offset >= got:
                second.on_message(msg)
        assert second.complete, cut
        second.commit(replace=False)
        assert tree_bytes(out) == files, cut
        assert not os.path.exists(out + ".partial") and not os.path.exists(out + ".partial.json")


def tree_bytes(directory):
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                out[os.path.relpath(os.path.join(root, n), directory)] = f.read()
    return out


def test_receiver_catches_bytes_damaged_on_disk_between_pulls(tmp_path):
    make_tree(str(tmp_path / "src"))
    m = build_manifest(str(tmp_path / "src"), "step_3")
    msgs = list(upload_messages(str(tmp_path / "src"), m))
    out = str(tmp_path / "out")
    first = Receiver(out, "job-1", False, 1 << 30)
    for msg in msgs[:3]:
        first.on_message(msg)
    first._close()
    with open(os.path.join(out + ".partial", "model.safetensors"), "r+b") as f:
        f.seek(10)
        f.write(b"\0\0\0\0")
    second = Receiver(out, "job-1", False, 1 << 30)
    assert second.resume_selector() == "step_3" and second.received > 0
    for msg in msgs:
        if msg.WhichOneof("kind") == "manifest" or msg.chunk.offset >= second.received:
            second.on_message(msg)
    with pytest.raises(TrmError) as e:
        second.commit(replace=False)
    assert e.value.code == grpc.StatusCode.DATA_LOSS and "step_3/model.safetensors" in e.value.message
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_receiver_refuses_paths_that_escape(tmp_path):
    m = pb.Manifest(name="evil")
    m.files.add(path="../outside", size=1, sha256="0" * 64)
    m.total_bytes = 1
    m.content_sha256 = content_hash(m)
    r = Receiver(str(tmp_path / "out"), "job-1", False, 1 << 30)
    with pytest.raises(TrmError) as e:
        r.on_message(pb.TransferMessage(manifest=m))
    assert e.value.code == grpc.StatusCode.DATA_LOSS and "../outside" in e.value.message
    assert not os.path.exists(tmp_path / "outside")
