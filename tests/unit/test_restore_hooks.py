"""module_utils/lifeboat/restore/hooks.py: command and HTTP hooks."""
from __future__ import annotations



from ansible.module_utils.lifeboat import restore as rs


def test_command_hook_gets_context_and_reports_failure(tmp_path):
    out = tmp_path / "out"
    argv = ["/bin/sh", "-c", f'echo "$LIFEBOAT_DATABASE $LIFEBOAT_MODE" > {out}']
    res = rs.run_hook({"type": "command", "argv": argv}, "maintenance_on", {"database": "appdb", "mode": "swap"})
    assert res.ok and out.read_text().strip() == "appdb swap"
    res = rs.run_hook({"type": "command", "argv": ["/bin/sh", "-c", "echo boom >&2; exit 3"]}, "x", {})
    assert not res.ok and "exit 3" in res.detail and "boom" in res.detail
    res = rs.run_hook({"type": "command", "argv": ["/nonexistent/cmd"]}, "x", {})
    assert not res.ok and "FileNotFoundError" in res.detail
    assert rs.run_hook(None, "x", {}).ok and rs.run_hook({"type": "none"}, "x", {}).detail == "none"

def test_http_hook_unreachable_is_a_failure_not_an_exception():
    res = rs.run_hook({"type": "http", "url": "http://127.0.0.1:9/off", "timeout": 2}, "maintenance_off", {})
    assert not res.ok and "127.0.0.1:9" in res.detail
