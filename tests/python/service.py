"""The real binaries on loopback for the client's tests: a coordinator (standalone with its local
worker, or alone), separate workers, and the example dataset built with trm-data."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import List, Optional

import grpc

SOURCE_DIR = os.environ.get("TRM_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN_DIR = os.environ.get("TRM_BIN_DIR", os.path.join(SOURCE_DIR, "build", "bin"))
SHARED_DIR = os.environ.get("TRM_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared"))
PYTHON = "/usr/bin/python3"  # Debian's: grpcio, protobuf, torch, matplotlib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_dataset(out: str, train_split: float = 0.9) -> str:
    subprocess.run([os.path.join(BIN_DIR, "trm-data"), "build", "--input",
                    os.path.join(SOURCE_DIR, "examples", "chat_example.json"), "--format", "sharegpt",
                    "--tokenizer", "byte", "--max-length", "64", "--train-split", str(train_split),
                    "--output-dir", out], check=True, stdout=subprocess.DEVNULL)
    return out


def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Process:
    """One binary, its output in a log file; killed (SIGKILL) by stop() if still running."""

    def __init__(self, args: List[str], log_path: str, env: Optional[dict] = None):
        self.args, self.log_path = args, log_path
        self._log = open(log_path, "ab")
        # Its own process group: the standalone coordinator's worker and ranks go with it.
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the process alone (its children, e.g. a worker's ranks, live on)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")


class Coordinator:
    """trm-coordinator on a free loopback port with its state in `data_dir`; restartable on the
    same port and state."""

    def __init__(self, data_dir: str, extra: Optional[List[str]] = None, standalone: bool = False,
                 cpu_slots: int = 1):
        self.data_dir = data_dir
        self.base = [os.path.join(BIN_DIR, "trm-coordinator"), "--data-dir", data_dir,
                     "--config-dir", os.path.join(SOURCE_DIR, "configs"), "--heartbeat-interval-ms", "300"]
        if standalone:
            self.base += ["--standalone", "--cpu-slots", str(cpu_slots)]
        self.base += list(extra or [])
        self.process: Optional[Process] = None
        os.makedirs(data_dir, exist_ok=True)
        # The first start takes a port the kernel picks (no race with parallel tests); restarts
        # reuse it, as clients know the address.
        port_file = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.process = Process(self.base + ["--listen", "127.0.0.1:0", "--port-file", port_file], self._log())
        self.port = int(wait_until(lambda: _read_port(port_file), "the coordinator's port file", 60))
        self.address = f"127.0.0.1:{self.port}"

    def _log(self) -> str:
        return os.path.join(self.data_dir, "..", os.path.basename(self.data_dir) + ".log")

    def start(self) -> None:
        self.process = Process(self.base + ["--listen", self.address], self._log())

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.kill()
        self.process.stop()
        self.start()

    def stop(self) -> None:
        self.process.stop()


def _read_port(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            text = f.read().strip()
        return text if text.isdigit() else None
    except OSError:
        return None


class Worker:
    def __init__(self, coordinator: str, worker_id: str, work_dir: str, slots: int = 1):
        self.process = Process([os.path.join(BIN_DIR, "trm-worker"), "--coordinator", coordinator, "--id", worker_id,
                                "--cpu-slots", str(slots), "--work-dir", work_dir],
                               work_dir.rstrip("/") + ".log")

    def stop(self) -> None:
        self.process.stop()


def wait_for_workers(client, n: int, timeout: float = 60.0) -> None:
    def ready():
        try:
            return len([w for w in client.workers() if w.alive]) >= n
        except Exception:  # not up yet
            return False
    wait_until(ready, f"{n} live worker(s)", timeout)


def wait_serving(address: str, timeout: float = 30.0, creds=None) -> None:
    """Until the coordinator's port accepts gRPC (the health service answers)."""
    def up():
        ch = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
        try:
            grpc.channel_ready_future(ch).result(timeout=0.5)
            return True
        except grpc.FutureTimeoutError:
            return False
        finally:
            ch.close()
    wait_until(up, f"the coordinator on {address}", timeout)
