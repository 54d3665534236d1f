"""The client against a coordinator with user tokens (read / submit / admin) and TLS: the right
CA and token work, from arguments or from TRM_COORDINATOR / TRM_TOKEN_FILE / TRM_TLS_CA; a
missing or unknown token is UNAUTHENTICATED, a role too low PERMISSION_DENIED naming the role,
a wrong CA or plaintext against TLS UNAVAILABLE."""
import os
import subprocess

import grpc
import pytest

from service import Coordinator, build_dataset, wait_serving
from trm_client import Client, TrmError

TOKENS = {"read": "read-token-0123456789", "submit": "submit-token-0123456789", "admin": "admin-token-0123456789"}


def make_cert(directory, name):
    key, crt = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    return key, crt


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("secure"))
    key, crt = make_cert(root, "coordinator")
    _, other_ca = make_cert(root, "someone-else")
    tokens = os.path.join(root, "tokens")
    with open(tokens, "w") as f:
        for role, token in TOKENS.items():
            f.write(f"{token} {role} {role}-user\n")
    coord = Coordinator(os.path.join(root, "coord"), ["--auth-tokens", tokens, "--tls-cert", crt, "--tls-key", key])
    try:
        with open(crt, "rb") as f:
            wait_serving(coord.address, creds=grpc.ssl_channel_credentials(f.read()))
        yield {"address": coord.address, "ca": crt, "other_ca": other_ca, "root": root,
               "dataset": build_dataset(os.path.join(root, "example-chat"))}
    finally:
        coord.stop()


def client(secure, role=None, ca="ca", token=None):
    return Client(secure["address"], token=token if token is not None else TOKENS.get(role, ""),
                  tls_ca=secure[ca] if ca else "", timeout=10)  # "": plaintext, whatever TRM_TLS_CA says


def code_of(call):
    with pytest.raises(TrmError) as e:
        call()
    return e.value


def test_the_right_token_and_ca_work(secure):
    with client(secure, "admin") as c:
        assert c.jobs() == [] and c.workers() == []
    with client(secure, "submit") as c:
        ds = c.push_dataset(secure["dataset"])
        assert len(ds.content_sha256) == 64
        assert [d.name for d in c.datasets()] == ["example-chat"]


def test_defaults_come_from_the_environment(secure, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["read"] + "\n")
    monkeypatch.setenv("TRM_COORDINATOR", secure["address"])
    monkeypatch.setenv("TRM_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("TRM_TOKEN", raising=False)
    monkeypatch.setenv("TRM_TLS_CA", secure["ca"])
    with Client(timeout=10) as c:
        assert c.address == secure["address"]
        assert c.jobs() == []
        e = code_of(lambda: c.cancel("job-000001"))
        assert e.code == grpc.StatusCode.PERMISSION_DENIED
    monkeypatch.setenv("TRM_TOKEN", TOKENS["admin"])  # TRM_TOKEN wins over the file
    with Client(timeout=10) as c:
        assert code_of(lambda: c.cancel("job-000001")).code == grpc.StatusCode.NOT_FOUND


def test_no_or_unknown_token_is_unauthenticated(secure):
    for token in ("", "not-a-token-of-this-coordinator"):
        with client(secure, token=token) as c:
            e = code_of(c.jobs)
            assert e.code == grpc.StatusCode.UNAUTHENTICATED, e
            assert code_of(lambda: list(c.watch("job-000001"))).code == grpc.StatusCode.UNAUTHENTICATED


def test_a_role_too_low_is_permission_denied_naming_the_role(secure):
    with client(secure, "read") as c:
        assert c.jobs() == []
        for call in (lambda: c.submit("cfg_tiny", dataset="example-chat"),
                     lambda: c.push_dataset(secure["dataset"]),
                     lambda: c.cancel("job-000001")):
            e = code_of(call)
            assert e.code == grpc.StatusCode.PERMISSION_DENIED, e
            assert "submit role" in e.message and "read-user" in e.message, e.message


def test_a_wrong_ca_or_plaintext_is_refused(secure):
    for ca in ("other_ca", None):
        with client(secure, "admin", ca=ca) as c:
            assert code_of(c.jobs).code == grpc.StatusCode.UNAVAILABLE


def test_a_client_certificate_needs_tls(secure, tmp_path):
    key, crt = make_cert(str(tmp_path), "me")
    e = code_of(lambda: Client(secure["address"], tls_cert=crt, tls_key=key))
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "tls_ca" in e.message
