"""A gRPC proxy between the client and a real coordinator that injects the faults a network and
a server can produce: a stream dropped after N messages (UNAVAILABLE) and a corrupted chunk in a
download. It forwards raw bytes for every method of trm.v1's services (the cardinalities come
from the generated descriptor), so the client under test talks real gRPC to a real coordinator.
"""
from __future__ import annotations

import threading
from concurrent import futures
from typing import Callable, Dict, List, Optional

import grpc

from trm_client._proto import trm_pb2 as pb


def _methods() -> Dict[str, tuple]:
    out = {}
    for svc in pb.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            out[f"/{svc.full_name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return out


class Drop(Exception):
    """Raised by a fault hook: end this stream with UNAVAILABLE, as a broken connection would."""


# A hook sees (method, index of the response message in this stream, the raw bytes, the request
# bytes for server streams) and returns the bytes to send, or raises Drop.
Hook = Callable[[str, int, bytes, Optional[bytes]], bytes]


class Proxy(grpc.GenericRpcHandler):
    def __init__(self, target: str):
        self._channel = grpc.insecure_channel(target)
        self._methods = _methods()
        self._lock = threading.Lock()
        self._hooks: Dict[str, Hook] = {}
        self.calls: List[tuple] = []       # (method, request bytes or None)
        self.drops = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[self],
                                   options=[("grpc.max_receive_message_length", 8 << 20),
                                            ("grpc.max_send_message_length", 8 << 20)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def set_hook(self, method_name: str, hook: Optional[Hook]) -> None:
        """Installs (None: removes) the fault hook of one method, e.g. 'WatchJob'."""
        with self._lock:
            if hook is None:
                self._hooks.pop(method_name, None)
            else:
                self._hooks[method_name] = hook

    def requests(self, method_name: str) -> List[bytes]:
        with self._lock:
            return [r for m, r in self.calls if m.endswith("/" + method_name)]

    def _hook(self, method: str) -> Optional[Hook]:
        with self._lock:
            return self._hooks.get(method.rsplit("/", 1)[-1])

    def _record(self, method: str, request: Optional[bytes]) -> None:
        with self._lock:
            self.calls.append((method, request))

    @staticmethod
    def _metadata(context) -> tuple:
        return tuple((k, v) for k, v in context.invocation_metadata() if not k.startswith(":") and k != "user-agent")

    # grpc.GenericRpcHandler
    def service(self, details):
        kind = self._methods.get(details.method)
        if kind is None:
            return None
        method = details.method
        client_streaming, server_streaming = kind

        def forward_error(e: grpc.RpcError, context):
            context.abort(e.code(), e.details() or "")

        if not client_streaming and not server_streaming:
            def unary(request: bytes, context):
                self._record(method, request)
                try:
                    return self._channel.unary_unary(method)(request, metadata=self._metadata(context),
                                                             timeout=context.time_remaining())
                except grpc.RpcError as e:
                    forward_error(e, context)
            return grpc.unary_unary_rpc_method_handler(unary)

        if not client_streaming and server_streaming:
            def stream(request: bytes, context):
                self._record(method, request)
                call = self._channel.unary_stream(method)(request, metadata=self._metadata(context),
                                                          timeout=context.time_remaining())
                try:
                    for i, msg in enumerate(call):
                        hook = self._hook(method)
                        if hook is not None:
                            try:
                                msg = hook(method, i, msg, request)
                            except Drop:
                                with self._lock:
                                    self.drops += 1
                                call.cancel()
                                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: connection dropped")
                        yield msg
                except grpc.RpcError as e:
                    forward_error(e, context)
            return grpc.unary_stream_rpc_method_handler(stream)

        if client_streaming and not server_streaming:
            def upload(request_iterator, context):
                self._record(method, None)
                try:
                    return self._channel.stream_unary(method)(request_iterator, metadata=self._metadata(context),
                                                              timeout=context.time_remaining())
                except grpc.RpcError as e:
                    forward_error(e, context)
            return grpc.stream_unary_rpc_method_handler(upload)
        return None


def drop_after(n: int, times: int = 1) -> Hook:
    """Drops a stream after its n-th message, on the first `times` streams that get that far."""
    state = {"left": times}
    lock = threading.Lock()

    def hook(method, index, msg, request):
        if index == n:
            with lock:
                if state["left"] > 0:
                    state["left"] -= 1
                    raise Drop()
        return msg
    return hook


def corrupt_chunk(which: int = 1) -> Hook:
    """Flips one byte in the `which`-th chunk (1 = the first) of every download stream."""
    def hook(method, index, msg, request):
        m = pb.TransferMessage.FromString(msg)
        if m.WhichOneof("kind") == "chunk" and index == which and m.chunk.data:
            data = bytearray(m.chunk.data)
            data[len(data) // 2] ^= 0xFF
            m.chunk.data = bytes(data)
            return m.SerializeToString()
        return msg
    return hook
