"""S3Storage against the lab's SeaweedFS: multipart streaming, abort, clear errors."""
from __future__ import annotations

import hashlib
import http.server
import os
import threading
import urllib.parse

import pytest
from ansible.module_utils.lifeboat.errors import AuthError, ConnectionFailed, NotFound
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.sides import S3Side
from ansible.module_utils.lifeboat.storage import MIB, S3Storage


def settings(ep: dict, **kw) -> S3Settings:
    base = dict(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                secret_key=ep["secret_key"], concurrency=2, max_attempts=2, connect_timeout=3)
    base.update(kw)
    return S3Settings(**base)


def test_multipart_stream_round_trip_and_listing(scratch_bucket, s3_backup):
    bucket, ep = scratch_bucket
    store = S3Storage(f"s3://{bucket}/db", settings(ep), part_size=5 * MIB)
    data = os.urandom(12 * MIB + 123)  # three parts, the last one short
    with store.open_writer("appdb/b1/appdb.dump.zst") as w:
        for i in range(0, len(data), 700_000):
            w.write(data[i:i + 700_000])
    assert w.parts == 3
    got = store.get_bytes("appdb/b1/appdb.dump.zst")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    store.put_bytes("appdb/b1/manifest.json", b"{}", content_type="application/json")
    listed = {o.key: o.size for o in store.list("appdb/")}
    assert listed == {"appdb/b1/appdb.dump.zst": len(data), "appdb/b1/manifest.json": 2}
    assert store.stat("appdb/b1/manifest.json").size == 2
    assert s3_backup.list_multipart_uploads(Bucket=bucket).get("Uploads") in (None, [])


def test_abort_leaves_no_object_and_no_pending_upload(scratch_bucket, s3_backup):
    bucket, ep = scratch_bucket
    store = S3Storage(f"s3://{bucket}", settings(ep), part_size=5 * MIB)
    w = store.open_writer("half.dump")
    w.write(os.urandom(11 * MIB))  # two parts already uploaded
    w.abort()
    assert not store.exists("half.dump")
    assert s3_backup.list_multipart_uploads(Bucket=bucket).get("Uploads") in (None, [])


def test_missing_bucket_wrong_credentials_and_unreachable_endpoint(lab, scratch_bucket):
    bucket, ep = scratch_bucket
    with pytest.raises(NotFound, match="does not exist"):
        S3Storage("s3://no-such-bucket-lifeboat", settings(ep)).check()
    wrong = settings(ep, secret_key="not-the-secret")
    with pytest.raises(AuthError, match="access denied") as err:
        S3Storage(f"s3://{bucket}", wrong).check()
    assert "not-the-secret" not in str(err.value)
    with pytest.raises((ConnectionFailed, AuthError)) as err:
        S3Storage(f"s3://{bucket}", wrong).put_bytes("x", b"y")
    assert "not-the-secret" not in str(err.value)
    dead = settings(ep, endpoint="http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ConnectionFailed, match="cannot reach http://127.0.0.1:9"):
        S3Storage(f"s3://{bucket}", dead).check()


def test_open_uploads_are_listed_under_the_root_and_aborted(scratch_bucket, s3_backup):
    """What retention and the catalog read through the storage layer: open multipart uploads under the root
    (keys relative to it, another prefix's not listed), aborted once (again: no error); get_json."""
    bucket, ep = scratch_bucket
    store = S3Storage(f"s3://{bucket}/root", settings(ep), part_size=5 * MIB)
    other = S3Storage(f"s3://{bucket}/elsewhere", settings(ep), part_size=5 * MIB)
    w, w2 = store.open_writer("appdb/b1/appdb.dump"), other.open_writer("x.dump")
    try:
        w.write(os.urandom(6 * MIB))      # one part uploaded: the multipart upload is open
        w2.write(os.urandom(6 * MIB))
        ups = store.open_uploads()
        assert [u.key for u in ups] == ["appdb/b1/appdb.dump"] and ups[0].upload_id and ups[0].initiated
        store.abort_upload(ups[0])
        store.abort_upload(ups[0])        # already gone: not an error
        assert store.open_uploads() == [] and [u.key for u in other.open_uploads()] == ["x.dump"]
    finally:
        w.abort()
        w2.abort()
    store.put_bytes("appdb/b1/manifest.json", b'{"schema": "x"}')
    store.put_bytes("appdb/b1/list.json", b"[1]")
    assert store.get_json("appdb/b1/manifest.json") == {"schema": "x"}
    assert store.get_json("appdb/b1/list.json") is None and store.get_json("appdb/missing.json") is None


class _PrefixOnlyHandler(http.server.BaseHTTPRequestHandler):
    """A store whose credentials may only list the prefix ``db/`` (s3:ListBucket with an s3:prefix condition, the
    least-privilege policy of docs/deploy.md): HeadBucket and every other request are denied."""

    def _answer(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == "GET" and query.get("list-type") == ["2"] and query.get("prefix") == ["db/"]:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bkt</Name><Prefix>db/</Prefix>'
                    b"<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>")
            self.send_response(200)
        else:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>denied'
                    b"</Message></Error>")
            self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


def test_one_bucket_check_that_a_least_privilege_policy_passes():
    """Backups (S3Storage) and sync / point-in-time restore (S3Side) check a bucket the same way, by a one-key
    listing of their prefix, so credentials limited to that prefix pass (HeadBucket, which the sides used,
    is denied by such a policy); another prefix is refused naming the bucket."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PrefixOnlyHandler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ep = {"endpoint": f"http://127.0.0.1:{server.server_address[1]}", "region": "us-east-1",
              "access_key": "AKIDPREFIXONLY", "secret_key": "secret-of-the-test"}
        S3Storage("s3://bkt/db", settings(ep)).check()
        S3Side("s3://bkt/db", settings(ep), "destination").check()
        assert not [r for r in server.seen if r.startswith("HEAD")], server.seen
        with pytest.raises(AuthError, match="s3://bkt"):
            S3Storage("s3://bkt/other", settings(ep)).check()
        with pytest.raises(AuthError, match="destination: .*s3://bkt"):
            S3Side("s3://bkt/other", settings(ep), "destination").check()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
