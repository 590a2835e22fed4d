"""s3lean: the per-object GET/PUT path of a transfer, against the lab's SeaweedFS and against endpoints that
fail (an endpoint that never answers, one that answers 503 SlowDown before it answers)."""
from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import threading
import time

import pytest
from storage_helpers import ODD_KEYS, bucket, settings

from ansible.module_utils.lifeboat.errors import AuthError, NotFound, StorageError
from ansible.module_utils.lifeboat.s3 import S3Settings, make_client, translate
from ansible.module_utils.lifeboat.s3lean import LeanS3, carried_headers
from ansible.module_utils.lifeboat.sides import S3Side
from ansible.module_utils.lifeboat.storage_s3 import is_precondition_failed


def test_round_trip_of_odd_keys_with_metadata_and_conditions(lab):
    ep = lab["s3"]["primary"]
    st = settings(ep, concurrency=4)
    with bucket(ep) as (name, client):
        lean = LeanS3.for_client(st, make_client(st))
        assert lean is not None
        for i, key in enumerate(ODD_KEYS):
            body = f"body {i} {key}".encode()
            h = lean.put(name, key, body, {"Content-Type": "text/x-lifeboat", "x-amz-meta-origin": f"n{i}"})
            assert h["ETag"].strip('"') == hashlib.md5(body).hexdigest()
            data, got = lean.get(name, key, if_match=h["ETag"].strip('"'))
            assert data == body
            assert {k.lower(): v for k, v in carried_headers(got).items()} == {
                "content-type": "text/x-lifeboat", "x-amz-meta-origin": f"n{i}"}
            head = client.head_object(Bucket=name, Key=key)  # boto3 sees what the lean path wrote
            assert head["ContentType"] == "text/x-lifeboat" and head["Metadata"] == {"origin": f"n{i}"}
        # a changed object (If-Match) is a precondition failure, as boto3 raises it
        with pytest.raises(Exception) as exc:
            lean.get(name, ODD_KEYS[0], if_match="0" * 32)
        assert is_precondition_failed(exc.value)
        with pytest.raises(Exception) as exc:
            lean.get(name, "no/such/key")
        assert isinstance(translate(exc.value, "read x", st, name), NotFound)
        # the store checks the bytes it received against the Content-MD5 we send
        with pytest.raises(Exception) as exc:
            lean._request("PutObject", "PUT", name, "torn", b"abc",
                          {"Content-MD5": base64.b64encode(hashlib.md5(b"abd").digest()).decode(),
                           "Content-Length": "3"})
        assert "BadDigest" in str(exc.value)
        assert "torn" not in {o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])}
        # wrong credentials: the same typed error as boto3's
        bad = LeanS3.for_client(S3Settings(
            endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"], secret_key="wrong" * 8),
            make_client(st))
        with pytest.raises(Exception) as exc:
            bad.get(name, ODD_KEYS[0])
        err = translate(exc.value, "read x", st, name)
        assert isinstance(err, AuthError) and "wrong" not in str(err)


def test_a_transfer_side_uses_the_lean_path_on_the_lab(lab):
    side = S3Side("s3://lifeboat-backups/x", settings(lab["s3"]["backup"]), "destination")
    assert side.lean is not None and side.lean_for("a/b.txt") is side.lean
    assert side.lean_for("a/../b") is None  # dot segments: boto3 sends them


def _listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


def test_an_endpoint_that_never_answers_ends_with_a_clear_error():
    sock, port = _listener()  # accepts connections (the kernel's backlog) and never replies
    try:
        st = S3Settings(endpoint=f"http://127.0.0.1:{port}", region="us-east-1", access_key="AK", secret_key="SK",
                        read_timeout=0.5, connect_timeout=0.5, max_attempts=2)
        lean = LeanS3.for_client(st, make_client(st))
        t0 = time.monotonic()
        with pytest.raises(Exception) as exc:
            lean.get("bucket", "key")
        assert time.monotonic() - t0 < 10
        err = translate(exc.value, "read s3://bucket/key", st, "bucket")
        assert isinstance(err, StorageError) and f"127.0.0.1:{port}" in str(err)
    finally:
        sock.close()


def test_slow_down_is_retried_and_a_refusal_is_not():
    calls: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            calls.append(self.path)
            if self.path.endswith("/denied"):
                self._answer(403, b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>")
            elif len([c for c in calls if c.endswith("/slow")]) < 3:
                self._answer(503, b"<Error><Code>SlowDown</Code><Message>later</Message></Error>")
            else:
                self._answer(200, b"payload")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        st = S3Settings(endpoint=f"http://127.0.0.1:{server.server_address[1]}", region="us-east-1",
                        access_key="AK", secret_key="SK", max_attempts=5)
        lean = LeanS3.for_client(st, make_client(st))
        assert lean.get("bucket", "slow")[0] == b"payload"
        assert calls.count("/bucket/slow") == 3
        with pytest.raises(Exception) as exc:
            lean.get("bucket", "denied")
        assert calls.count("/bucket/denied") == 1
        assert isinstance(translate(exc.value, "read s3://bucket/denied", st, "bucket"), AuthError)
    finally:
        server.shutdown()
