"""The TRM training service from Python: :class:`Client`, one object per coordinator."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import grpc

from ._proto import trm_pb2 as pb
from ._proto import trm_pb2_grpc as pb_grpc
from .errors import RETRYABLE, TrmError, from_rpc_error, invalid
from .transfer import MAX_MESSAGE_BYTES, Receiver, Upload, build_manifest, check_name
from .types import (AnyEvent, Checkpoint, Dataset, Job, JobState, PulledCheckpoint, StateEvent, Worker,
                    event_from_proto)

log = logging.getLogger("trm_client")

PathLike = Union[str, "os.PathLike[str]"]
Overrides = Union[Mapping[str, Any], Sequence[str], None]


def _env(name: str) -> str:
    return os.environ.get(name, "")


def _read(path: PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise invalid(f"{path}: cannot read ({e.strerror})", what) from None


def _override_text(key: str, value: Any) -> str:
    """{key: value} as trm-train's key=value: YAML scalars; None deletes the key (~key)."""
    if value is None:
        return "~" + key
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (list, tuple, dict)):
        return f"{key}={json.dumps(value)}"  # JSON is YAML flow syntax
    return f"{key}={value}"


def _overrides(overrides: Overrides) -> List[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [_override_text(str(k), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise invalid("overrides: expected a mapping or a list of 'key=value' strings, got one string", "submit")
    out = []
    for ov in overrides:
        if "=" not in ov and not ov.startswith("~"):
            raise invalid(f"overrides: '{ov}': expected key=value (or ~key)", "submit")
        out.append(ov)
    return out


class Client:
    """A connection to one coordinator. Thread-safe (gRPC channels are); close it, or use ``with``.

    Defaults come from the environment as trmctl's do: ``address`` from ``TRM_COORDINATOR``
    (else ``localhost:50051``), ``token`` from ``TRM_TOKEN`` or the file ``TRM_TOKEN_FILE``,
    ``tls_ca`` (a PEM file; set = TLS) from ``TRM_TLS_CA``; an explicit ``""`` means none,
    whatever the environment says. Every call has a deadline:
    ``timeout`` seconds for one-shot calls; streams reconnect when theirs runs out.
    Every failure raises :class:`TrmError` carrying the gRPC code and the server's message.
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls_ca: Optional[PathLike] = None, *, timeout: float = 30.0,
                 tls_cert: Optional[PathLike] = None, tls_key: Optional[PathLike] = None):
        self.address = address or _env("TRM_COORDINATOR") or "localhost:50051"
        if not re.match(r"^.+:[0-9]+$", self.address):
            raise invalid(f"coordinator address '{self.address}': expected HOST:PORT", "Client")
        if token is None:
            token = _env("TRM_TOKEN")
            if not token and _env("TRM_TOKEN_FILE"):
                token = _read(_env("TRM_TOKEN_FILE"), "TRM_TOKEN_FILE").decode().strip()
        if tls_ca is None:
            tls_ca = _env("TRM_TLS_CA") or None
        self.timeout = timeout
        self.stream_timeout = 600.0    # one WatchJob stream; the watch then reconnects
        self.transfer_timeout = 3600.0  # one DownloadCheckpoint stream; the pull then resumes
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly after a coordinator restart instead of backing off for minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca, "tls_ca"),
                private_key=_read(tls_key, "tls_key") if tls_key else None,
                certificate_chain=_read(tls_cert, "tls_cert") if tls_cert else None)
            self._channel = grpc.secure_channel(self.address, creds, options)
        else:
            if tls_cert:
                raise invalid("a client certificate needs TLS: give tls_ca (TRM_TLS_CA) too", "Client")
            self._channel = grpc.insecure_channel(self.address, options)
        self._jobs = pb_grpc.JobServiceStub(self._channel)
        self._datasets = pb_grpc.DatasetServiceStub(self._channel)

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e, what) from None

    # ------------------------------------------------------------ datasets

    def push_dataset(self, directory: PathLike, name: Optional[str] = None, *, prompts: bool = False,
                     retries: int = 3) -> Dataset:
        """Uploads a built dataset (``trm-data build``'s layout) or, with ``prompts``, a directory
        holding one .jsonl/.json prompts file. Content-addressed: pushing the same files again is
        cheap and returns the same hash. ``name`` defaults to the directory's name."""
        directory = os.fspath(directory).rstrip("/") or "/"
        what = f"push dataset {directory}"
        if not os.path.isdir(directory):
            raise invalid(f"{directory}: not a directory", what)
        if prompts:
            found = [n for _, _, names in os.walk(directory) for n in names if n.endswith((".jsonl", ".json"))]
            if len(found) != 1:
                raise invalid(f"{directory}: a prompts set holds exactly one .jsonl or .json file, this one "
                              f"{len(found)}", what)
        elif not os.path.isfile(os.path.join(directory, "train", "dataset.json")):
            raise invalid(f"{directory}: not a built dataset (no train/dataset.json; make one with trm-data "
                          "build, or push a prompts file's directory with prompts=True)", what)
        name = name or os.path.basename(os.path.abspath(directory))
        # NAME (yours) or OWNER/NAME (another user's namespace: its owner or an admin only).
        for part in name.split("/", 1):  # a second '/' fails the check
            check_name(part, "dataset name")
        manifest = build_manifest(directory, name)
        for attempt in range(retries + 1):
            upload = Upload(directory, manifest)
            try:
                info = self._datasets.PushDataset(upload, timeout=6 * 3600.0, metadata=self._metadata)
                return Dataset.from_proto(info)
            except grpc.RpcError as e:
                if upload.error is not None:  # our side failed (a file vanished, shrank): no retry
                    raise TrmError(upload.error.code, upload.error.message, what) from None
                err = from_rpc_error(e, what)
                # Pushing is idempotent (content-addressed), so an outage is worth a fresh try.
                if not err.retryable or attempt == retries:
                    raise err from None
                log.warning("%s; pushing again (%d/%d)", err, attempt + 1, retries)
                time.sleep(min(0.5 * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")

    def datasets(self) -> List[Dataset]:
        resp = self._call(self._datasets.ListDatasets, pb.ListDatasetsRequest(), "list datasets")
        return [Dataset.from_proto(d) for d in resp.datasets]

    # ------------------------------------------------------------ jobs

    def submit(self, config_name: Optional[str] = None, *, config: Union[Mapping[str, Any], PathLike, None] = None,
               dataset: Optional[str] = None, data_path: Optional[str] = None, overrides: Overrides = None,
               world_size: int = 1, priority: int = 0, max_restarts: int = 0, name: Optional[str] = None,
               eval_dataset: Optional[str] = None, min_world_size: int = 0) -> Job:
        """Submits a training job and returns it (QUEUED, or already RUNNING).

        The config is one of: ``config_name`` (``configs/NAME.yaml`` composed by the coordinator
        from its own ``--config-dir``: no local copy needed), ``config`` as a dict (a whole,
        composed config), or ``config`` as the path of a YAML file without a ``defaults:`` list.
        ``overrides`` are trm-train's ``key=value`` (a mapping, or a list of strings); the
        coordinator checks them and refuses a bad key or value with INVALID_ARGUMENT naming it.
        ``dataset`` names a pushed dataset (name or hash); ``data_path`` is a path every worker
        can read instead. ``eval_dataset``: every checkpoint gets an evaluation run on it.
        ``min_world_size`` makes the job elastic: with fewer slots free it runs on the largest size
        down to it that divides ``global_batch_size`` (the same run), and grows back later.
        """
        what = "submit"
        if (config_name is None) == (config is None):
            raise invalid("give exactly one of config_name and config", what)
        if dataset and data_path:
            raise invalid("give at most one of dataset and data_path", what)
        if world_size < 1:
            raise invalid("world_size must be at least 1", what)
        if max_restarts < 0:
            raise invalid("max_restarts must not be negative", what)
        if min_world_size < 0 or min_world_size > world_size:
            raise invalid(f"min_world_size must be between 1 and world_size ({world_size}), or 0", what)
        spec = pb.JobSpec(dataset=dataset or "", data_path=data_path or "", world_size=world_size,
                          min_world_size=min_world_size, priority=priority, max_restarts=max_restarts, eval_dataset=eval_dataset or "")
        spec.overrides.extend(_overrides(overrides))
        if config_name is not None:
            spec.config_name = config_name  # no YAML: the coordinator composes it
        elif isinstance(config, Mapping):
            spec.config_name = name or "config"
            spec.config_yaml = json.dumps(config)  # JSON is YAML
        else:
            path = os.fspath(config)
            text = _read(path, what).decode()
            if re.search(r"^defaults\s*:", text, re.MULTILINE):
                stem = os.path.splitext(os.path.basename(path))[0]
                raise invalid(f"{path}: has a defaults: list, which only composes where its files are; use "
                              f"config_name='{stem}' (composed by the coordinator from its --config-dir)", what)
            spec.config_name = os.path.splitext(os.path.basename(path))[0]
            spec.config_yaml = text
        spec.name = name or spec.config_name
        resp = self._call(self._jobs.SubmitJob, pb.SubmitJobRequest(spec=spec), what)
        return self.job(resp.job_id)

    def evaluate(self, source_job: str, *, dataset: Optional[str] = None, prompts: Optional[str] = None,
                 checkpoint: str = "latest", split: str = "test", priority: int = 0,
                 max_restarts: int = 2) -> Job:
        """Submits an evaluation run (trm-eval on a worker) of one of ``source_job``'s checkpoints:
        on a pushed ``dataset``'s ``split``, or generation on a pushed ``prompts`` set. Its result
        lands on the checkpoint (:meth:`checkpoints`, ``evals``)."""
        if (dataset is None) == (prompts is None):
            raise invalid("give exactly one of dataset and prompts", "evaluate")
        e = pb.EvalSpec(source_job=source_job, checkpoint=checkpoint)
        if prompts is not None:
            e.prompts = prompts
        else:
            e.dataset, e.split = dataset, split
        spec = pb.JobSpec(priority=priority, max_restarts=max_restarts, eval=e)
        resp = self._call(self._jobs.SubmitJob, pb.SubmitJobRequest(spec=spec), f"evaluate {source_job}")
        return self.job(resp.job_id)

    def job(self, job_id: str) -> Job:
        return Job.from_proto(self._call(self._jobs.GetJob, pb.GetJobRequest(job_id=job_id), f"job {job_id}"))

    def jobs(self, states: Optional[Iterable[Union[JobState, str]]] = None, limit: int = 0, *,
             owner: str = "", mine: bool = False) -> List[Job]:
        """Jobs, newest first; ``states`` filters (e.g. ``["RUNNING", "QUEUED"]``); ``limit`` 0 = 100;
        ``owner`` only that user's, ``mine`` only the caller's."""
        req = pb.ListJobsRequest(limit=limit, owner=owner, mine=mine)
        for s in states or ():
            try:
                req.states.append(JobState(str(s).upper()).to_proto())
            except ValueError:
                raise invalid(f"states: unknown state '{s}' (expected one of "
                              f"{', '.join(x.value for x in JobState if x is not JobState.UNSPECIFIED)})",
                              "jobs") from None
        return [Job.from_proto(j) for j in self._call(self._jobs.ListJobs, req, "list jobs").jobs]

    def cancel(self, job_id: str) -> Job:
        return Job.from_proto(self._call(self._jobs.CancelJob, pb.CancelJobRequest(job_id=job_id),
                                         f"cancel {job_id}"))

    def workers(self) -> List[Worker]:
        resp = self._call(self._jobs.ListWorkers, pb.ListWorkersRequest(), "list workers")
        return [Worker.from_proto(w) for w in resp.workers]

    # ------------------------------------------------------------ events

    def watch(self, job_id: str, after_seq: int = 0, *, follow: bool = True, include_logs: bool = False,
              reconnect_s: float = 120.0) -> Iterator[AnyEvent]:
        """The job's events after ``after_seq``, in order, then (``follow``) the new ones until the
        job ends: the iterator stops after the final state's event.

        A broken stream (a dropped connection, a coordinator restart) is re-attached with the
        last sequence number seen, so nothing is skipped or repeated; TrmError(UNAVAILABLE) only
        when the coordinator has been unreachable for ``reconnect_s`` seconds. Without
        ``include_logs`` log events are skipped (their numbers look like gaps).
        """
        last = after_seq
        give_up_at = time.monotonic() + reconnect_s
        backoff = 0.1
        while True:
            req = pb.WatchJobRequest(job_id=job_id, after_seq=last, follow=follow, include_logs=include_logs)
            call = self._jobs.WatchJob(req, timeout=self.stream_timeout, metadata=self._metadata)
            progressed, why, code = False, "the stream ended before the job did", None
            try:
                for raw in call:
                    if raw.seq <= last:  # a server resending what we have must not show it twice
                        continue
                    last, progressed = raw.seq, True
                    event = event_from_proto(raw)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, StateEvent) and event.state.final:
                        return
                if not follow:
                    return
                # A follow stream ends cleanly only once the job has ended (or the coordinator is
                # stopping): with after_seq at or past the final event there is nothing to yield.
                try:
                    if self.job(job_id).state.final:
                        return
                except TrmError as err:
                    if not err.retryable:
                        raise
                    why, code = err.message, err.code
            except grpc.RpcError as e:
                err = from_rpc_error(e, f"watch {job_id}")
                if not err.retryable:
                    raise err from None
                why, code = err.message, err.code
            finally:
                call.cancel()
            # Our own deadline running out on a quiet job is not an outage.
            now = time.monotonic()
            if progressed or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                give_up_at, backoff = now + reconnect_s, 0.1
            if now >= give_up_at:
                raise TrmError(grpc.StatusCode.UNAVAILABLE,
                               f"lost the coordinator for {reconnect_s:g} s: {why}", f"watch {job_id}")
            log.warning("watch %s: %s; reconnecting after event %d", job_id, why, last)
            time.sleep(min(backoff, give_up_at - now))
            backoff = min(backoff * 2, 2.0)

    def wait(self, job_id: str, reconnect_s: float = 120.0) -> Job:
        """Blocks until the job reaches a final state (following its events) and returns it."""
        for _ in self.watch(job_id, reconnect_s=reconnect_s):
            pass
        return self.job(job_id)

    def metrics(self, job_id: str, *, from_step: int = 0, keys: Optional[Sequence[str]] = None,
                as_frame: Optional[bool] = None):
        """The job's metric series: one record per logged step, ``{"step", "total_steps", "eval",
        <metric>: value, ...}`` (evaluations have ``eval`` True and ``eval_*`` keys). A pandas
        DataFrame where pandas is installed (``as_frame=None``), else a list of dicts;
        ``as_frame`` True/False forces one. ``keys`` keeps only those metrics."""
        resp = self._call(self._jobs.GetMetrics, pb.GetMetricsRequest(job_id=job_id, from_step=from_step),
                          f"metrics of {job_id}")
        records = []
        for p in resp.points:
            record = {"step": p.step, "total_steps": p.total_steps, "eval": p.eval}
            for k in (sorted(p.values) if keys is None else keys):
                if k in p.values and k not in record:  # the point's own step wins over a "step" value
                    record[k] = p.values[k]
            records.append(record)
        if as_frame is False:
            return records
        try:
            import pandas
        except ImportError:
            if as_frame:
                raise invalid("as_frame=True needs pandas, which is not installed", "metrics") from None
            return records
        return pandas.DataFrame.from_records(records, columns=_columns(records))

    def checkpoints(self, job_id: str) -> List[Checkpoint]:
        resp = self._call(self._jobs.ListCheckpoints, pb.ListCheckpointsRequest(job_id=job_id),
                          f"checkpoints of {job_id}")
        return [Checkpoint.from_proto(c) for c in resp.checkpoints]

    # ------------------------------------------------------------ download

    def pull(self, job_id: str, select: str = "latest", out: Optional[PathLike] = None, *,
             weights_only: bool = False, force: bool = False, retries: int = 5,
             max_bytes: int = 64 << 30) -> PulledCheckpoint:
        """Downloads a checkpoint (``select``: latest | best:<metric> | step:N | step_N) into the
        directory ``out``, verifying every file's SHA-256; only a verified directory is ever left
        at ``out`` (a mismatch is TrmError(DATA_LOSS) naming the file). A broken stream resumes
        from the bytes received, up to ``retries`` times in a row without progress; a pull that
        still fails (or whose process died) leaves ``OUT.partial`` behind, and the next pull of
        the same job into ``out`` continues it. ``weights_only``: only model.safetensors,
        state.json and tokenizer/ (what evaluation and generation need)."""
        try:
            return self._pull(job_id, select, out, weights_only, force, retries, max_bytes)
        except OSError as e:  # the local disk: full, permissions, a vanished directory
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if e.errno == errno.ENOSPC else grpc.StatusCode.INTERNAL
            raise TrmError(code, f"{e.filename or out}: {e.strerror}", f"pull {job_id}") from None

    def _pull(self, job_id: str, select: str, out: Optional[PathLike], weights_only: bool, force: bool,
              retries: int, max_bytes: int) -> PulledCheckpoint:
        what = f"pull {job_id}"
        if out is None:
            raise invalid("out: the destination directory is required", what)
        out = os.fspath(out).rstrip("/") or "/"
        exists = os.path.exists(out)
        if exists and not os.path.isdir(out):
            raise invalid(f"{out}: exists and is not a directory", what)
        if exists and os.listdir(out) and not force:
            raise invalid(f"{out}: exists and is not empty (force=True replaces it)", what)
        start = time.monotonic()
        receiver = Receiver(out, job_id, weights_only, max_bytes)
        pinned = receiver.resume_selector()
        if pinned is not None and select not in (pinned, "step:" + pinned.split("_", 1)[-1]):
            # "latest" still names what we have when the job has made nothing newer since.
            if select != "latest" or self.job(job_id).latest_checkpoint != pinned:
                receiver.discard()
                pinned = None
        if pinned:
            log.info("%s: continuing %s at byte %d", what, pinned, receiver.received)
        selector = pinned or select
        reconnects, failures, backoff = 0, 0, 0.2
        while True:
            before = receiver.received
            req = pb.DownloadCheckpointRequest(job_id=job_id, selector=selector, offset=receiver.received,
                                               weights_only=weights_only)
            call = self._jobs.DownloadCheckpoint(req, timeout=self.transfer_timeout, metadata=self._metadata)
            why = "the stream ended early"
            try:
                for msg in call:
                    if msg.WhichOneof("kind") == "manifest" and receiver.manifest is None:
                        # "latest" may move while we resume; pin the checkpoint we started with.
                        if msg.manifest.name.startswith("step_"):
                            selector = msg.manifest.name
                    receiver.on_message(msg)
                if receiver.complete:
                    break
            except grpc.RpcError as e:
                err = from_rpc_error(e, what)
                if err.code == grpc.StatusCode.NOT_FOUND and pinned and receiver.resumed_from:
                    # The checkpoint we were continuing is gone (retention): start over.
                    log.warning("%s: %s is gone; starting over with '%s'", what, pinned, select)
                    receiver.discard()
                    pinned, selector = None, select
                    continue
                if not err.retryable:
                    raise err from None
                why = err.message
            except TrmError as err:
                if err.code in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.ABORTED):
                    receiver.discard()
                raise
            finally:
                call.cancel()
            if receiver.received > before:
                failures, backoff = 0, 0.2
            failures += 1
            if failures > retries:
                raise TrmError(grpc.StatusCode.UNAVAILABLE,
                               f"giving up after {retries} retries at byte {receiver.received} "
                               f"(kept in {receiver.tmp}; pulling again continues there): {why}", what)
            reconnects += 1
            log.warning("%s: %s; resuming at byte %d", what, why, receiver.received)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        receiver.commit(replace=exists)
        return PulledCheckpoint(path=out, name=receiver.manifest.name, bytes=receiver.manifest.total_bytes,
                                weights_only=weights_only, resumed_from=receiver.resumed_from,
                                reconnects=reconnects, seconds=time.monotonic() - start)


def _columns(records: List[Dict[str, Any]]) -> List[str]:
    """step, total_steps, eval, then every metric key in order of first appearance."""
    cols = ["step", "total_steps", "eval"]
    seen = set(cols)
    for r in records:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols
