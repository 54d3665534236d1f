"""The one exception type the client raises, and the conversion from gRPC's."""
from __future__ import annotations

import grpc

# Codes a restarting or unreachable coordinator produces; anything else (NOT_FOUND, ...) is an
# answer, not an outage. The same set as trmctl's (cli/src/follow.cpp).
RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
})


class TrmError(Exception):
    """A call to the service failed, or a local precondition of one did.

    ``code`` is a :class:`grpc.StatusCode`: the server's for answers from the coordinator,
    ``INVALID_ARGUMENT`` for bad arguments found before sending, ``DATA_LOSS`` for a transfer
    whose SHA-256 does not match. ``message`` is the server's text (or ours), which names the
    field or file and what was expected; ``what`` says which call it was.
    """

    def __init__(self, code: grpc.StatusCode, message: str, what: str = ""):
        self.code = code
        self.message = message
        self.what = what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{code.name}: {message}")

    @property
    def retryable(self) -> bool:
        """True for the codes of an outage (the coordinator restarting, the network)."""
        return self.code in RETRYABLE


def from_rpc_error(err: grpc.RpcError, what: str) -> TrmError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return TrmError(code or grpc.StatusCode.UNKNOWN, details or "", what)


def invalid(message: str, what: str = "") -> TrmError:
    return TrmError(grpc.StatusCode.INVALID_ARGUMENT, message, what)
