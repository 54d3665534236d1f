"""The service's transfer format (docs/control-plane.md, "Transfers"), as trm/rpc/transfer.h has it:
a Manifest (files in order, each with size and SHA-256; the content hash is the SHA-256 of the
listing "path\\tsize\\tsha256\\n") then Chunks whose offsets run over the concatenated files.

:class:`Receiver` writes a download into ``OUT.partial/`` and only ever leaves a verified
directory at ``OUT``. Unlike trmctl's it survives its own process: ``OUT.partial.json`` records
the manifest, so a later pull of the same checkpoint continues from the bytes already on disk
(every file is still verified whole at the end).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Iterator, List, Optional

import grpc
from google.protobuf import json_format

from ._proto import trm_pb2 as pb
from .errors import TrmError, invalid

CHUNK_BYTES = 1 << 20          # the server's chunk limit (trm/rpc/client.h kChunkBytes)
MAX_MESSAGE_BYTES = 8 << 20    # kMaxMessageBytes
_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_name(name: str, what: str) -> None:
    """A name used as a path component on the coordinator (trm::rpc::CheckName)."""
    if not _NAME.match(name) or name.startswith("."):
        raise invalid(f"{what} '{name}': expected 1 to 128 of letters, digits and . _ - : (not starting with '.')")


def check_relative_path(path: str, what: str) -> None:
    """Refuses what could escape the destination (trm::rpc::CheckRelativePath)."""
    if not path or len(path.encode()) > 512 or path.startswith("/") or "\\" in path or "\0" in path or any(
            part in ("", ".", "..") for part in path.split("/")):
        raise TrmError(grpc.StatusCode.DATA_LOSS, f"{what} '{path}': not a safe relative path")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(manifest: "pb.Manifest") -> str:
    h = hashlib.sha256()
    for f in manifest.files:
        h.update(f"{f.path}\t{f.size}\t{f.sha256}\n".encode())
    return h.hexdigest()


def build_manifest(directory: str, name: str) -> "pb.Manifest":
    """Every regular file under ``directory`` (sorted relative paths, as BuildManifest sorts them)."""
    if not os.path.isdir(directory):
        raise TrmError(grpc.StatusCode.NOT_FOUND, f"{directory}: not a directory")
    files: List[str] = []

    def unreadable(err: OSError):
        raise TrmError(grpc.StatusCode.INVALID_ARGUMENT, f"{err.filename}: cannot list ({err.strerror})")

    # Regular files, following links to files (as BuildManifest's is_regular_file does).
    for root, dirs, names in os.walk(directory, onerror=unreadable):
        dirs.sort()
        for n in names:
            full = os.path.join(root, n)
            if os.path.isfile(full):
                files.append(os.path.relpath(full, directory).replace(os.sep, "/"))
    files.sort(key=lambda p: p.encode())  # byte order, as std::sort on std::string
    m = pb.Manifest(name=name)
    for rel in files:
        full = os.path.join(directory, rel)
        m.files.add(path=rel, size=os.path.getsize(full), sha256=_sha256_file(full))
    m.total_bytes = sum(f.size for f in m.files)
    m.content_sha256 = content_hash(m)
    return m


class Upload:
    """The request stream of a push. gRPC turns an exception raised inside a request iterator
    into UNKNOWN "Exception iterating requests!"; this keeps the real one in ``error``."""

    def __init__(self, directory: str, manifest: "pb.Manifest"):
        self._messages = upload_messages(directory, manifest)
        self.error: Optional[BaseException] = None

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._messages)
        except OSError as e:
            self.error = TrmError(grpc.StatusCode.INVALID_ARGUMENT, f"{e.filename}: cannot read ({e.strerror})")
            raise
        except TrmError as e:
            self.error = e
            raise


def upload_messages(directory: str, manifest: "pb.Manifest") -> Iterator["pb.TransferMessage"]:
    """The manifest, then the files' bytes in chunks of at most CHUNK_BYTES."""
    yield pb.TransferMessage(manifest=manifest)
    offset = 0
    for f in manifest.files:
        with open(os.path.join(directory, f.path), "rb") as src:
            remaining = f.size
            while remaining > 0:
                data = src.read(min(CHUNK_BYTES, remaining))
                if not data:
                    raise TrmError(grpc.StatusCode.DATA_LOSS, f"{f.path}: shrank while being pushed")
                yield pb.TransferMessage(chunk=pb.Chunk(offset=offset, data=data))
                offset += len(data)
                remaining -= len(data)


class Receiver:
    """Receives one checkpoint into ``out``. Not thread-safe; one Receiver per pull."""

    def __init__(self, out: str, job_id: str, weights_only: bool, max_bytes: int):
        self.out = out
        self.tmp = out + ".partial"
        self.state_file = out + ".partial.json"
        self.job_id = job_id
        self.weights_only = weights_only
        self.max_bytes = max_bytes
        self.manifest: Optional[pb.Manifest] = None
        self.received = 0
        self.resumed_from = 0
        self._file = None          # the open file being written, and its index
        self._index = -1
        self._cursor = (0, 0)      # _locate's last answer: (file index, its start offset)

    # ------------------------------------------------------------ resume

    def resume_selector(self) -> Optional[str]:
        """The checkpoint a previous pull into ``out`` left half done (and the bytes it has), or None.

        Only a prefix that lines up with the manifest is kept: complete files in order, then part
        of the next; anything after that is removed. Verification at commit covers all of it.
        """
        try:
            with open(self.state_file) as f:
                state = json.load(f)
            if state.get("job") != self.job_id or bool(state.get("weights_only")) != self.weights_only:
                return None
            manifest = json_format.ParseDict(state["manifest"], pb.Manifest())
        except (OSError, ValueError, KeyError, json_format.ParseError):
            return None
        if manifest.content_sha256 != content_hash(manifest) or not os.path.isdir(self.tmp):
            return None
        try:
            for f in manifest.files:
                check_relative_path(f.path, "manifest")
        except TrmError:
            self.discard()
            return None
        listed = {os.path.normpath(os.path.join(self.tmp, f.path)) for f in manifest.files}
        for root, _, names in os.walk(self.tmp):  # anything else (another tool's leftovers) goes
            for n in names:
                if os.path.normpath(os.path.join(root, n)) not in listed:
                    os.remove(os.path.join(root, n))
        offset, complete = 0, True
        for f in manifest.files:
            path = os.path.join(self.tmp, f.path)
            have = os.path.getsize(path) if os.path.isfile(path) else 0
            if not complete:  # after the first incomplete file: nothing counts yet
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").close()
                continue
            if not os.path.isfile(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").close()
            if have > f.size:
                os.truncate(path, f.size)
                have = f.size
            offset += have
            complete = have == f.size
        self.manifest = manifest
        self.received = self.resumed_from = offset
        return manifest.name

    def discard(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            os.remove(self.state_file)
        except FileNotFoundError:
            pass
        self.manifest = None
        self.received = self.resumed_from = 0
        self._cursor = (0, 0)

    # ------------------------------------------------------------ stream

    def on_message(self, msg: "pb.TransferMessage") -> None:
        kind = msg.WhichOneof("kind")
        if kind == "manifest":
            self._on_manifest(msg.manifest)
        elif kind == "chunk":
            self._on_chunk(msg.chunk)

    def _on_manifest(self, m: "pb.Manifest") -> None:
        if self.manifest is not None:
            if (m.content_sha256 != self.manifest.content_sha256 or content_hash(m) != m.content_sha256 or
                    m.total_bytes != self.manifest.total_bytes):
                raise TrmError(grpc.StatusCode.ABORTED,
                               f"checkpoint '{m.name}' changed while it was being downloaded")
            return
        if m.content_sha256 != content_hash(m):
            raise TrmError(grpc.StatusCode.DATA_LOSS,
                           f"checkpoint '{m.name}': the manifest's content hash does not match its file list")
        total = 0
        for f in m.files:
            check_relative_path(f.path, f"checkpoint '{m.name}' manifest path")
            total += f.size
        if total != m.total_bytes:
            raise TrmError(grpc.StatusCode.DATA_LOSS, f"checkpoint '{m.name}': manifest total_bytes "
                           f"{m.total_bytes} but its files add up to {total}")
        if total > self.max_bytes:
            raise TrmError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"checkpoint '{m.name}': {total} bytes exceeds the limit of {self.max_bytes}")
        # The old state goes first: a crash in between must not pair it with new files.
        try:
            os.remove(self.state_file)
        except FileNotFoundError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        for f in m.files:
            path = os.path.join(self.tmp, f.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()  # empty files need no chunk
        self.manifest = m
        self.received = 0
        self._cursor = (0, 0)
        tmp_state = self.state_file + ".tmp"
        with open(tmp_state, "w") as f:
            json.dump({"job": self.job_id, "weights_only": self.weights_only,
                       "manifest": json_format.MessageToDict(m, preserving_proto_field_name=True)}, f)
        os.replace(tmp_state, self.state_file)

    def _on_chunk(self, c: "pb.Chunk") -> None:
        if self.manifest is None:
            raise TrmError(grpc.StatusCode.DATA_LOSS, "a chunk arrived before the manifest")
        if c.offset != self.received:
            raise TrmError(grpc.StatusCode.DATA_LOSS, f"chunk at offset {c.offset}, expected {self.received}")
        data = memoryview(c.data)
        if self.received + len(data) > self.manifest.total_bytes:
            raise TrmError(grpc.StatusCode.DATA_LOSS, "more bytes than the manifest lists")
        while len(data) > 0:
            index, start = self._locate(self.received)
            f = self.manifest.files[index]
            if self._index != index:
                self._close()
                self._file = open(os.path.join(self.tmp, f.path), "r+b")
                self._index = index
            self._file.seek(self.received - start)
            n = min(len(data), start + f.size - self.received)
            self._file.write(data[:n])
            data = data[n:]
            self.received += n

    def _locate(self, offset: int):
        """(index, start offset) of the file holding byte `offset`. Offsets only grow within a
        receiver, so the search resumes from the last answer (linear in files overall, not per chunk)."""
        i, start = self._cursor if self._cursor[1] <= offset else (0, 0)
        files = self.manifest.files
        while i < len(files):
            if offset < start + files[i].size:
                self._cursor = (i, start)
                return i, start
            start += files[i].size
            i += 1
        raise TrmError(grpc.StatusCode.DATA_LOSS, f"offset {offset} is past the manifest's files")

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._index = -1

    @property
    def complete(self) -> bool:
        return self.manifest is not None and self.received == self.manifest.total_bytes

    # ------------------------------------------------------------ commit

    def commit(self, replace: bool) -> None:
        """Checks every file's size and SHA-256 (DATA_LOSS naming the file, and the partial
        download is removed), then renames the directory into place."""
        self._close()
        for f in self.manifest.files:
            path = os.path.join(self.tmp, f.path)
            size = os.path.getsize(path)
            digest = _sha256_file(path)
            if size != f.size or digest != f.sha256:
                name = self.manifest.name
                self.discard()
                raise TrmError(grpc.StatusCode.DATA_LOSS,
                               f"{name}/{f.path}: SHA-256 {digest} ({size} bytes) but the manifest says "
                               f"{f.sha256} ({f.size} bytes); the download was discarded")
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace and os.path.exists(self.out):
            shutil.rmtree(self.out)
        os.rename(self.tmp, self.out)
        os.remove(self.state_file)
