"""Receivers for the monitor's alerts, all on 127.0.0.1 and stopped after use: a real SMTP server (aiosmtpd)
and an HTTP server that records every request (a Slack-compatible webhook, a healthchecks.io-style ping
service); headless Chromium for the HTML report; backups made through the engine's clock."""
from __future__ import annotations

import contextlib
import email
import email.policy
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import zlib

from ansible.module_utils.lifeboat import manifest as mf

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """What the SMTP server received: parsed messages (text bodies decoded)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "subject": str(msg["subject"]), "body": body.get_content() if body else ""})
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_server():
    """A real SMTP server on 127.0.0.1 (aiosmtpd): yields (port, Mailbox)."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    ctrl = Controller(box, hostname="127.0.0.1", port=port, ready_timeout=10)
    ctrl.start()
    try:
        yield port, box
    finally:
        ctrl.stop()


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path, "body": body})  # type: ignore
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_HEAD = _record  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


@contextlib.contextmanager
def http_receiver(status: int = 200):
    """An HTTP server on 127.0.0.1 recording every request: yields (base_url, requests)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.requests = []  # type: ignore[attr-defined]
    srv.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, name="lifeboat-test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv.requests  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def engine_clock(when):
    """Make the engine's clock (manifest.utcnow) read ``when``: backups dated in the past, no sleeping."""
    real = mf.utcnow
    mf.utcnow = lambda: when  # type: ignore[assignment]
    try:
        yield
    finally:
        mf.utcnow = real  # type: ignore[assignment]


def vars_file(tmp_path, values: dict) -> list[str]:
    """Extra vars (with the lab's throwaway secrets) through a 0600 file in ``tmp_path/vars``, never argv.

    The test modules remove ``tmp_path/vars`` after each test (forget_secrets): nothing outlives the run."""
    folder = tmp_path / "vars"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"vars-{len(list(folder.iterdir()))}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return ["-e", f"@{path}"]


@contextlib.contextmanager
def forgetting(tmp_path):
    try:
        yield
    finally:
        shutil.rmtree(tmp_path / "vars", ignore_errors=True)


def chromium(page: str, workdir: str) -> tuple[str, str, bytes]:
    """Load ``page`` in headless Chromium with a fresh profile: (dumped DOM, console log, screenshot PNG)."""
    shot = os.path.join(workdir, "shot.png")
    with tempfile.TemporaryDirectory(prefix="lifeboat-chromium-") as profile:
        base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                "--window-size=1280,1600"]
        dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", f"file://{page}"],
                             capture_output=True, text=True, timeout=120, check=False)
        pic = subprocess.run([*base, f"--screenshot={shot}", f"file://{page}"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert pic.returncode == 0 and os.path.exists(shot), pic.stderr[-2000:]
    with open(shot, "rb") as fh:
        return dom.stdout, dom.stderr + pic.stderr, fh.read()


def png_colours(data: bytes) -> int:
    """Distinct byte values in the decoded image rows of a PNG (1 = one flat colour: a blank page)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return len(set(raw))
