"""A session token and a named profile reach the S3 client of every module, on every S3 side it has.

Each module is pointed at a recording S3 endpoint on 127.0.0.1 that answers every request with 403
AccessDenied and keeps the request's headers: the token must arrive as ``X-Amz-Security-Token`` and a
profile's access key in the SigV4 ``Authorization`` header. Nothing is mocked: the modules run through
ansible-playbook, with boto3, over HTTP.
"""
from __future__ import annotations

import http.server
import json
import re
import threading

import pytest
from testlib import run_playbook

DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>recorded</Message>'
          b"<RequestId>1</RequestId></Error>")


class Recorder(http.server.ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.seen.append({"method": self.command, "path": self.path,  # type: ignore[attr-defined]
                                     "token": self.headers.get("X-Amz-Security-Token") or "",
                                     "authorization": self.headers.get("Authorization") or ""})
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(DENIED)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(DENIED)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def s3(prefix: str, endpoint: str, case: str, how: str) -> dict:
    """The S3 options of one side: explicit keys with a session token, or only a named profile."""
    if how == "token":
        return {f"{prefix}endpoint": endpoint, f"{prefix}access_key": f"AKIDTOKEN{case.upper()}",
                f"{prefix}secret_key": "secret-of-the-test", f"{prefix}session_token": f"token-{case}",
                f"{prefix}region": "us-east-1"}
    return {f"{prefix}endpoint": endpoint, f"{prefix}profile": f"profile-{case}", f"{prefix}region": "us-east-1"}


def cases(endpoint: str, pg: dict, tmp) -> list[tuple[str, str, dict]]:
    """(case id, module, args without the S3 options' values) for every module and S3 side."""
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    (src / "f.txt").write_text("x")
    pg_conn = {"host": pg["host"], "port": pg["port"], "user": pg["backup_user"], "password": pg["backup_password"]}
    out = []
    for how in ("token", "profile"):
        def add(case, module, args, prefix="s3_", how=how):
            cid = f"{module.removeprefix('lifeboat_')}_{prefix.rstrip('_')}_{how}"
            out.append((cid, module, {**args, **s3(prefix, endpoint, cid, how)}))
        add("backup", "lifeboat_pg_backup", {"database": pg["app_database"], "destination": "s3://rec/db", **pg_conn})
        add("restore", "lifeboat_pg_restore", {"database": "lbrec", "confirm": "lbrec", "destination": "s3://rec/db",
                                               "safety_snapshot": False})
        add("verify", "lifeboat_backup_verify", {"destination": "s3://rec/db", "level": "integrity"})
        add("archive", "lifeboat_archive", {"name": "t", "path": str(src), "destination": "s3://rec/a",
                                            "encryption": "none"})
        add("replication", "lifeboat_s3_replication", {"bucket": "rec", "lifecycle": "absent"})
        add("retention", "lifeboat_retention", {"destination": "s3://rec/db", "keep_last": 1})
        add("sync", "lifeboat_s3_sync", {"source": "s3://rec/src", "destination": str(tmp / f"sync-{how}")},
            "source_")
        add("sync", "lifeboat_s3_sync", {"source": str(src), "destination": "s3://rec/dst"}, "destination_")
        add("s3restore", "lifeboat_s3_restore", {"backup": "s3://rec/b", "destination": str(tmp / f"r-{how}"),
                                                 "mode": "missing", "keys": ["a"]}, "backup_")
    return out


def profile_files(tmp, ids: list[str]) -> dict[str, str]:
    config = tmp / "aws-config"
    creds = tmp / "aws-credentials"
    config.write_text("".join(f"[profile profile-{i}]\nregion = us-east-1\n" for i in ids))
    creds.write_text("".join(f"[profile-{i}]\naws_access_key_id = AKIDPROFILE{i.upper()}\n"
                             f"aws_secret_access_key = secret-of-the-test\n" for i in ids))
    return {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(creds)}


def test_session_token_and_profile_reach_the_s3_client_of_every_module(recorder, pg, tmp_path):
    todo = cases(recorder.url, pg, tmp_path)
    # the catalog modules take their S3 options per target (unprefixed suboptions)
    for how in ("token", "profile"):
        for module in ("lifeboat_catalog", "lifeboat_backup_status"):
            cid = f"{module.removeprefix('lifeboat_')}_target_{how}"
            todo.append((cid, module, {"targets": [{"name": "t", "destination": "s3://rec/db",
                                                    **s3("", recorder.url, cid, how)}]}))
    tasks = [{"name": cid, module: args, "ignore_errors": True} for cid, module, args in todo]
    book = tmp_path / "pb.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = profile_files(tmp_path, [cid for cid, _m, _a in todo if cid.endswith("_profile")])
    proc = run_playbook(str(book), env=env, timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:]

    missing = []
    for cid, module, _args in todo:
        if cid.endswith("_token"):
            hit = [r for r in recorder.seen if r["token"] == f"token-{cid}"]
            signed = all(f"Credential=AKIDTOKEN{cid.upper()}/" in r["authorization"] for r in hit)
        else:
            hit = [r for r in recorder.seen if f"Credential=AKIDPROFILE{cid.upper()}/" in r["authorization"]]
            signed = all(not r["token"] for r in hit)
        if not hit or not signed:
            missing.append(f"{cid} ({module})")
    seen = sorted({re.sub(r"Signature=.*", "", r["authorization"]) + " " + r["token"] for r in recorder.seen})
    assert not missing, f"these modules' S3 clients did not get the token/profile: {missing}; recorded: {seen}"


def test_a_bad_octal_mode_names_the_option(tmp_path):
    """file_mode/dir_mode are parsed by one parser (options.parse_mode) with one message, in every module."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    book = tmp_path / "pb.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "sync", "lifeboat_s3_sync": {"source": str(src), "destination": str(tmp_path / "d"),
                                              "file_mode": "rw-r--r--"}}]}]))
    proc = run_playbook(str(book))
    assert proc.returncode != 0
    assert "file_mode: 'rw-r--r--' is not an octal mode such as \"0600\"" in proc.stdout, proc.stdout[-2000:]
