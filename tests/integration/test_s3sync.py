"""lifeboat s3sync engine against the lab's two SeaweedFS endpoints (no mocks)."""
from __future__ import annotations

import os

import pytest
from storage_helpers import ODD_KEYS, bucket, contents, settings

from ansible.module_utils.lifeboat.errors import AuthError, NotFound, SafetyError
from ansible.module_utils.lifeboat.s3sync import SyncError, SyncOptions, sync

MIB = 1024 * 1024


def seed(client, name, keys, prefix=""):
    for i, key in enumerate(keys):
        client.put_object(Bucket=name, Key=prefix + key, Body=f"body {i} {key}".encode(),
                          ContentType="text/x-lifeboat", Metadata={"origin": f"n{i}"})


@pytest.fixture
def primary(lab):
    with bucket(lab["s3"]["primary"]) as b:
        yield b


@pytest.fixture
def backup(lab):
    with bucket(lab["s3"]["backup"], versioned=True) as b:
        yield b


@pytest.fixture
def ps(lab):
    return settings(lab["s3"]["primary"])


@pytest.fixture
def bs(lab):
    return settings(lab["s3"]["backup"])


def test_cross_endpoint_check_full_incremental_noop(primary, backup, ps, bs):
    src, sc = primary
    dst, dc = backup
    keys = ODD_KEYS + [f"bulk/{i:03d}.txt" for i in range(40)]
    seed(sc, src, keys)

    plan = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(check_mode=True))
    assert plan.copied == len(keys) and plan.copied_bytes > 0
    assert contents(dc, dst) == {}, "check mode must not touch the destination"

    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(concurrency=4))
    assert res.copied == len(keys) and res.changed and res.method == "stream"
    assert contents(dc, dst) == contents(sc, src)
    head = dc.head_object(Bucket=dst, Key="unicode/é ü 日本.txt")
    assert head["ContentType"] == "text/x-lifeboat" and head["Metadata"] == {"origin": "n1"}

    again = sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    assert not again.changed and again.copied == 0 and again.unchanged == len(keys)

    sc.put_object(Bucket=src, Key="plus+sign/a+b=c.txt", Body=b"changed")
    sc.put_object(Bucket=src, Key="bulk/new.txt", Body=b"new")
    inc = sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    assert inc.copied == 2 and inc.unchanged == len(keys) - 1
    assert dc.get_object(Bucket=dst, Key="plus+sign/a+b=c.txt")["Body"].read() == b"changed"


def test_prefixes_and_patterns(primary, backup, ps, bs):
    src, sc = primary
    dst, dc = backup
    seed(sc, src, ["keep/a.jpg", "keep/b.tmp", "keep/sub/c.jpg", "other/d.jpg"], prefix="app/")
    res = sync(f"s3://{src}/app/keep", f"s3://{dst}/mirror", ps, bs,
               SyncOptions(include=["*.jpg"], exclude=["sub/*"]))
    assert res.copied == 1 and res.excluded == 2
    assert set(contents(dc, dst)) == {"mirror/a.jpg"}


def test_multipart_cross_endpoint_and_server_side(primary, backup, ps, bs, lab):
    src, sc = primary
    dst, dc = backup
    big = os.urandom(11 * MIB + 7)
    up = sc.create_multipart_upload(Bucket=src, Key="big/video.mp4", ContentType="video/mp4")
    parts = []
    for n, start in enumerate(range(0, len(big), 5 * MIB), start=1):
        r = sc.upload_part(Bucket=src, Key="big/video.mp4", UploadId=up["UploadId"], PartNumber=n,
                           Body=big[start:start + 5 * MIB])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    sc.complete_multipart_upload(Bucket=src, Key="big/video.mp4", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    assert res.copied == 1
    assert dc.get_object(Bucket=dst, Key="big/video.mp4")["Body"].read() == big
    assert dc.head_object(Bucket=dst, Key="big/video.mp4")["ContentType"] == "video/mp4"
    assert not sync(f"s3://{src}", f"s3://{dst}", ps, bs).changed

    # same endpoint and credentials: server-side copy, also for the multipart object
    with bucket(lab["s3"]["backup"]) as (third, tc):
        res = sync(f"s3://{dst}", f"s3://{third}", bs, bs)
        assert res.method == "server-side copy" and res.copied == 1
        assert tc.get_object(Bucket=third, Key="big/video.mp4")["Body"].read() == big
        assert not sync(f"s3://{dst}", f"s3://{third}", bs, bs).changed


def test_delete_refused_into_unversioned_bucket(primary, ps, bs, lab):
    src, sc = primary
    seed(sc, src, ["x.txt"])
    with bucket(lab["s3"]["backup"], versioned=False) as (dst, dc):
        dc.put_object(Bucket=dst, Key="only-in-destination.txt", Body=b"precious")
        with pytest.raises(SafetyError, match=r"delete: refusing .*versioning is not enabled"):
            sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(delete=True))
        assert contents(dc, dst) == {"only-in-destination.txt": b"precious"}, "nothing may be touched"


def test_delete_into_versioned_keeps_old_versions(primary, backup, ps, bs):
    src, sc = primary
    dst, dc = backup
    seed(sc, src, ["a.txt", "b.txt", "c d.txt"])
    sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    sc.delete_object(Bucket=src, Key="c d.txt")
    plan = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(delete=True, check_mode=True))
    assert plan.deleted == 1 and plan.to_delete == ["c d.txt"]
    # without delete the extra object is left alone
    assert not sync(f"s3://{src}", f"s3://{dst}", ps, bs).changed
    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(delete=True))
    assert res.deleted == 1 and set(contents(dc, dst)) == {"a.txt", "b.txt"}
    versions = dc.list_object_versions(Bucket=dst, Prefix="c d.txt").get("Versions", [])
    body = dc.get_object(Bucket=dst, Key="c d.txt", VersionId=versions[0]["VersionId"])["Body"].read()
    assert body == b"body 2 c d.txt", "the deleted file stays recoverable"


def test_nonexistent_bucket(ps, bs, backup):
    dst, _ = backup
    with pytest.raises(NotFound, match=r"source: .*'lbtest-does-not-exist-0' does not exist at http://127.0.0.1:40006"):
        sync("s3://lbtest-does-not-exist-0", f"s3://{dst}", ps, bs)


def test_wrong_credentials(primary, backup, ps, lab):
    src, sc = primary
    dst, dc = backup
    seed(sc, src, ["a.txt"])
    wrong = settings({**lab["s3"]["backup"], "secret_key": "not-the-secret"})
    with pytest.raises(AuthError) as info:
        sync(f"s3://{src}", f"s3://{dst}", ps, wrong)
    assert "destination:" in str(info.value) and "access denied" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    assert contents(dc, dst) == {}


def test_object_changing_during_copy(primary, backup, ps, bs):
    src, sc = primary
    dst, dc = backup
    seed(sc, src, ["stable.txt", "moving.txt"])
    state = {"n": 0}

    def overwrite_once(key):
        if key == "moving.txt" and state["n"] == 0:
            state["n"] += 1
            sc.put_object(Bucket=src, Key="moving.txt", Body=b"newer content, longer than before")

    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(before_copy=overwrite_once))
    assert res.changed_during_copy == ["moving.txt"] and res.copied == 2
    assert dc.get_object(Bucket=dst, Key="moving.txt")["Body"].read() == b"newer content, longer than before"

    def overwrite_always(key):
        if key == "moving.txt":
            state["n"] += 1
            sc.put_object(Bucket=src, Key="moving.txt", Body=f"version {state['n']}".encode())

    sc.put_object(Bucket=src, Key="stable2.txt", Body=b"s2")
    sc.put_object(Bucket=src, Key="moving.txt", Body=b"version 0")
    with pytest.raises(SyncError, match=r"'moving.txt': source object changed during copy 4 times") as info:
        sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(before_copy=overwrite_always, retries=3))
    assert info.value.result.copied == 1, "the other objects are still copied"
    assert dc.get_object(Bucket=dst, Key="stable2.txt")["Body"].read() == b"s2"
    # nothing lost: the destination still has the last good copy, and a quiet rerun finishes the job
    assert dc.get_object(Bucket=dst, Key="moving.txt")["Body"].read() == b"newer content, longer than before"
    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    assert res.copied == 1 and contents(dc, dst) == contents(sc, src)


def test_interrupted_sync_rerun_copies_each_object_once(primary, backup, ps, bs):
    src, sc = primary
    dst, dc = backup
    keys = [f"k/{i:03d} é+.txt" for i in range(30)]
    seed(sc, src, keys)
    calls = {"n": 0}

    class Interrupted(Exception):
        pass

    def interrupt(key):
        calls["n"] += 1
        if calls["n"] > 12:
            raise Interrupted("simulated crash")

    with pytest.raises(Interrupted):
        sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(concurrency=1, before_copy=interrupt))
    already = len(contents(dc, dst))
    assert already == 12
    res = sync(f"s3://{src}", f"s3://{dst}", ps, bs)
    assert res.copied == len(keys) - already and res.unchanged == already
    assert contents(dc, dst) == contents(sc, src)


def test_directory_to_bucket_and_back(tmp_path, backup, bs):
    dst, dc = backup
    src_dir = tmp_path / "uploads"
    # a filesystem cannot hold both "a" and "a/b" as files
    files = {k: f"local {k}".encode() for k in ODD_KEYS if not any(o.startswith(k + "/") for o in ODD_KEYS)}
    files["large/movie.bin"] = os.urandom(11 * MIB)
    for key, data in files.items():
        p = src_dir / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    opts = dict(multipart_threshold=5 * MIB, part_size=5 * MIB)
    res = sync(str(src_dir), f"s3://{dst}/uploads", None, bs, SyncOptions(**opts))
    assert res.copied == len(files)
    assert contents(dc, dst, "uploads/") == files
    assert not sync(str(src_dir), f"s3://{dst}/uploads", None, bs, SyncOptions(**opts)).changed

    out = tmp_path / "restored"
    res = sync(f"s3://{dst}/uploads", str(out), bs, None)
    assert res.copied == len(files)
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files
    assert oct((out / "a/b/c").stat().st_mode & 0o777) == "0o600"
    assert not sync(f"s3://{dst}/uploads", str(out), bs, None).changed

    with pytest.raises(SafetyError, match="local directory"):
        sync(f"s3://{dst}/uploads", str(out), bs, None, SyncOptions(delete=True))
