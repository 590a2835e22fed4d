"""lifeboat_s3_sync through ansible-playbook: check mode, real run, idempotent rerun, failures, no secret leaks."""
from __future__ import annotations

import json
import os

from testlib import run_playbook
from storage_helpers import bucket, contents

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: sync
      lifeboat_s3_sync:
        source: "s3://{{ src }}"
        source_endpoint: "{{ p.endpoint }}"
        source_region: "{{ p.region }}"
        source_access_key: "{{ p.access_key }}"
        source_secret_key: "{{ p.secret_key }}"
        destination: "s3://{{ dst }}/copy"
        destination_endpoint: "{{ b.endpoint }}"
        destination_region: "{{ b.region }}"
        destination_access_key: "{{ b.access_key }}"
        destination_secret_key: "{{ b.secret_key }}"
        delete: "{{ delete | default(false) }}"
      register: r
    - name: show
      ansible.builtin.copy:
        content: "{{ r | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
"""


def run(tmp_path, lab, src, dst, check=False, **extra):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    vars_file = tmp_path / "vars.json"
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"p": lab["s3"]["primary"], "b": lab["s3"]["backup"], "src": src, "dst": dst,
                   "out": str(tmp_path / "out.json"), **extra}, fh)
    proc = run_playbook(str(play), "-e", f"@{vars_file}", "-v", check=check)
    for secret in (lab["s3"]["primary"]["secret_key"], lab["s3"]["backup"]["secret_key"]):
        assert secret not in proc.stdout + proc.stderr, "a secret leaked into the output"
    out = json.loads((tmp_path / "out.json").read_text()) if (tmp_path / "out.json").exists() else None
    return proc, out


def test_module_check_run_rerun(tmp_path, lab):
    with bucket(lab["s3"]["primary"]) as (src, sc), bucket(lab["s3"]["backup"], versioned=True) as (dst, dc):
        for i in range(5):
            sc.put_object(Bucket=src, Key=f"v/{i} é+.txt", Body=f"x{i}".encode())
        proc, out = run(tmp_path, lab, src, dst, check=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert out["changed"] is True and out["copied"] == 5 and contents(dc, dst) == {}

        proc, out = run(tmp_path, lab, src, dst)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert out["changed"] is True and out["copied"] == 5 and len(contents(dc, dst)) == 5

        proc, out = run(tmp_path, lab, src, dst)
        assert proc.returncode == 0 and out["changed"] is False and out["copied"] == 0 and out["unchanged"] == 5


def test_module_refuses_delete_into_unversioned(tmp_path, lab):
    with bucket(lab["s3"]["primary"]) as (src, sc), bucket(lab["s3"]["backup"]) as (dst, dc):
        dc.put_object(Bucket=dst, Key="copy/keep.txt", Body=b"keep")
        proc, _ = run(tmp_path, lab, src, dst, delete=True)
        assert proc.returncode != 0
        assert "delete: refusing to propagate deletions" in proc.stdout
        assert contents(dc, dst) == {"copy/keep.txt": b"keep"}


def test_module_missing_bucket(tmp_path, lab):
    with bucket(lab["s3"]["backup"]) as (dst, _):
        proc, _ = run(tmp_path, lab, "lbtest-no-such-bucket-1", dst)
        assert proc.returncode != 0
        assert "source: " in proc.stdout and "does not exist" in proc.stdout
