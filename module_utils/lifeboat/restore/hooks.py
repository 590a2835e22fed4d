"""Restore hooks: maintenance on/off and post-restore (a command argv or an HTTP call).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    ConfigError,
)
from ansible.module_utils.lifeboat.s3 import mask_url


@dataclass
class HookResult:
    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


def describe_hook(hook: dict[str, Any] | None) -> str:
    if not hook or (hook.get("type") or "none") == "none":
        return "none"
    if hook["type"] == "command":
        argv = hook.get("argv") or []
        return "command " + " ".join(argv[:1]) + (" ..." if len(argv) > 1 else "")
    return f"http {hook.get('method') or 'POST'} {mask_url(hook.get('url') or '')}"


def validate_hook(hook: dict[str, Any] | None, option: str) -> None:
    if not hook:
        return
    kind = hook.get("type") or "none"
    if kind not in ("none", "command", "http"):
        raise ConfigError(f"{option}: type must be none, command or http, not '{kind}'", option)
    if kind == "command" and not (isinstance(hook.get("argv"), list) and hook["argv"]):
        raise ConfigError(f"{option}: a command hook needs argv, a non-empty list (no shell)", option)
    if kind == "http" and not str(hook.get("url") or "").startswith(("http://", "https://")):
        raise ConfigError(f"{option}: an http hook needs url, an http:// or https:// URL", option)


def run_hook(hook: dict[str, Any] | None, name: str, context: dict[str, str],
             secret_headers: dict[str, str] | None = None) -> HookResult:
    """Run one hook. Never raises: the caller decides what a failure means.

    ``secret_headers`` (e.g. an Authorization token, the module's no_log ``hook_headers``) are added to
    every HTTP hook and never appear in a detail or a message.
    """
    started = time.monotonic()
    if not hook or (hook.get("type") or "none") == "none":
        return HookResult(name, True, 0.0, "none")
    try:
        if hook["type"] == "command":
            env = dict(os.environ)
            env.update({f"LIFEBOAT_{k.upper()}": str(v) for k, v in context.items()})
            env.update({str(k): str(v) for k, v in (hook.get("env") or {}).items()})
            proc = subprocess.run([str(a) for a in hook["argv"]], env=env, capture_output=True, text=True,
                                  timeout=float(hook.get("timeout") or 300), check=False)
            out = (proc.stdout + proc.stderr).strip().splitlines()
            detail = f"{describe_hook(hook)}: exit {proc.returncode}" + (f": {out[-1][:200]}" if out else "")
            return HookResult(name, proc.returncode == 0, time.monotonic() - started, detail)
        body = json.dumps({"event": name, **context}).encode() if hook.get("body") is None \
            else str(hook["body"]).encode()
        method = hook.get("method") or "POST"
        req = urllib.request.Request(  # noqa: S310 - validate_hook allows http(s) only
            hook["url"], data=body if method != "GET" else None, method=method)
        req.add_header("Content-Type", "application/json")
        for key, value in {**(hook.get("headers") or {}), **(secret_headers or {})}.items():
            req.add_header(str(key), str(value))
        with urllib.request.urlopen(req, timeout=float(hook.get("timeout") or 30)) as resp:  # noqa: S310 - operator URL
            status = resp.status
        return HookResult(name, 200 <= status < 300, time.monotonic() - started,
                          f"{describe_hook(hook)}: HTTP {status}")
    except urllib.error.HTTPError as exc:
        return HookResult(name, False, time.monotonic() - started, f"{describe_hook(hook)}: HTTP {exc.code}")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return HookResult(name, False, time.monotonic() - started,
                          f"{describe_hook(hook)}: {exc.__class__.__name__}: {str(exc)[:200]}")
