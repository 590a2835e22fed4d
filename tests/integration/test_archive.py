"""Directory and configuration archives: round trips with owners and modes, stock-tool restore, patterns."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from storage_helpers import bucket, settings

from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive, restore_archive
from ansible.module_utils.lifeboat.crypto import DecryptionSpec, EncryptionSpec
from ansible.module_utils.lifeboat.errors import ConfigError, EncryptionError

ROOT = os.geteuid() == 0


def make_tree(base):
    """storage/ with owners, modes, a symlink, unicode and nested face-sources."""
    tree = {
        "storage/uploads/a b.jpg": (b"jpeg bytes", 0o640, 1234, 2345),
        "storage/uploads/é+日本.png": (os.urandom(300_000), 0o600, 1234, 2345),
        "storage/app/face-sources/u1/face.png": (b"face 1", 0o644, 0, 0),
        "storage/app/face-sources/u2/face.png": (b"face 2", 0o644, 65534, 65534),
        "storage/app/generated/out.mp4": (os.urandom(1_200_000), 0o664, 33, 33),
        "storage/run.sh": (b"#!/bin/sh\necho hi\n", 0o755, 0, 0),
    }
    for rel, (data, mode, uid, gid) in tree.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(mode)
        if ROOT:
            os.chown(p, uid, gid)
    (base / "storage/app").chmod(0o750)
    if ROOT:
        os.chown(base / "storage/app", 33, 33)
    (base / "storage/latest").symlink_to("uploads/a b.jpg")
    return tree


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    content = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        int(st.st_mtime) if not stat.S_ISLNK(st.st_mode) else 0, content)
    return out


@pytest.fixture
def gpg_keys(lab):
    return lab["gpg"]


def test_directory_archive_round_trip_with_owners_and_modes(tmp_path, lab, gpg_keys):
    src = tmp_path / "app"
    make_tree(src)
    bs = settings(lab["s3"]["backup"])
    spec = ArchiveSpec(name="storage", path=str(src / "storage"),
                       encryption=EncryptionSpec(method="gpg", recipients=[gpg_keys["public_key_file"]]))
    with bucket(lab["s3"]["backup"]) as (bk, bc):
        url = f"s3://{bk}/files"
        plan = create_archive(spec, url, bs, check_mode=True)
        assert plan.changed and plan.files == 6 and bc.list_objects_v2(Bucket=bk)["KeyCount"] == 0

        res = create_archive(spec, url, bs)
        assert res.changed and res.files == 6
        man = res.manifest
        assert man["encryption"]["recipients"] == [gpg_keys["fingerprint"]]
        ep = lab["s3"]["backup"]  # runs as pasted on an S3-compatible store: endpoint and region included
        assert man["restore_command"].startswith(
            f"aws --endpoint-url {ep['endpoint']} --region {ep['region']} s3 cp s3://{bk}/files/storage/")
        assert "gpg --decrypt | zstd -d | tar -x --numeric-owner -p" in man["restore_command"]
        stored = json.loads(bc.get_object(Bucket=bk, Key=f"files/{res.manifest['artifact']['key']}".replace(
            "storage.tar", "storage.tar").rsplit("/", 1)[0] + "/manifest.json")["Body"].read())
        assert stored["artifact"]["sha256"] == man["artifact"]["sha256"] and stored["files"] == 6

        # idempotent: same tree -> no new archive
        again = create_archive(spec, url, bs)
        assert not again.changed and again.archive_id == res.archive_id

        out = tmp_path / "restored"
        ext = restore_archive("storage", url, str(out), bs,
                              DecryptionSpec(method="gpg", secret_key_file=gpg_keys["secret_key_file"]))
        assert ext.extracted == 6
        assert snapshot(out / "storage") == snapshot(src / "storage")

        # stock tools only: fetch | gpg -d | zstd -d | tar -x (the fetch is `aws s3 cp URL -` in the docs)
        body = bc.get_object(Bucket=bk, Key="files/" + man["artifact"]["key"])["Body"].read()
        home = tmp_path / "gnupg"
        home.mkdir(mode=0o700)
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", gpg_keys["secret_key_file"]],
                       check=True, capture_output=True)
        stock = tmp_path / "stock"
        stock.mkdir()
        subprocess.run(f"gpg --homedir '{home}' --batch -d | zstd -d | tar -x --numeric-owner -p -C '{stock}'",
                       shell=True, input=body, check=True, capture_output=True)
        assert snapshot(stock / "storage") == snapshot(src / "storage")

        # a changed tree makes a new archive
        (src / "storage/uploads/new.txt").write_bytes(b"new")
        assert create_archive(spec, url, bs).changed


def test_restore_only_matching_paths_with_fixed_modes(tmp_path, lab, gpg_keys):
    src = tmp_path / "app"
    make_tree(src)
    spec = ArchiveSpec(name="storage", path=str(src / "storage"), exclude=["*.sh"],
                       encryption=EncryptionSpec(method="age", recipients=[lab["age"]["recipient"]]))
    dest = str(tmp_path / "store")
    res = create_archive(spec, dest)
    assert res.files == 5, "the excluded file is not archived"
    out = tmp_path / "faces"
    ext = restore_archive("storage", dest, str(out), None,
                          DecryptionSpec(method="age", identity_file=lab["age"]["identity_file"]),
                          patterns=["*/face-sources/*"], file_mode=0o600, dir_mode=0o750)
    assert ext.extracted == 2 and ext.skipped >= 3
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["storage/app/face-sources/u1/face.png", "storage/app/face-sources/u2/face.png"]
    assert stat.S_IMODE((out / "storage/app/face-sources/u1/face.png").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "storage/app/face-sources").stat().st_mode) == 0o750
    if ROOT:
        assert (out / "storage/app/face-sources/u2/face.png").stat().st_uid == 65534


def test_config_files_always_encrypted(tmp_path, lab):
    etc = tmp_path / "etc"
    etc.mkdir()
    env = etc / "app.env"
    env.write_text("DATABASE_URL=postgresql://app:very-secret-value@db/app\n")
    env.chmod(0o600)
    conf = etc / "nginx.conf"
    conf.write_text("server { listen 80; }\n")
    dest = str(tmp_path / "store")
    with pytest.raises(ConfigError, match="configuration files are always encrypted"):
        create_archive(ArchiveSpec(name="config", kind="files", files=[str(env)]), dest)
    spec = ArchiveSpec(name="config", kind="files", files=[str(env), str(conf)],
                       encryption=EncryptionSpec(method="gpg", passphrase="correct horse battery"))
    res = create_archive(spec, dest)
    assert res.files == 2 and res.manifest["encryption"] == {"method": "gpg", "mode": "passphrase",
                                                             "recipients": []}
    stored = (tmp_path / "store" / res.manifest["artifact"]["key"]).read_bytes()
    assert b"very-secret-value" not in stored and b"DATABASE_URL" not in stored
    assert "correct horse" not in json.dumps(res.manifest)

    with pytest.raises(EncryptionError):
        restore_archive("config", dest, str(tmp_path / "bad"), None,
                        DecryptionSpec(method="gpg", passphrase="wrong passphrase"))
    out = tmp_path / "out"
    restore_archive("config", dest, str(out), None, DecryptionSpec(method="gpg", passphrase="correct horse battery"))
    restored = out / str(env).lstrip("/")
    assert restored.read_text() == env.read_text()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
