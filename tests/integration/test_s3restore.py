"""Point-in-time and missing-files restores against the lab's SeaweedFS and PostgreSQL (no mocks)."""
from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from storage_helpers import ODD_KEYS, bucket, contents, settings

from ansible.module_utils.lifeboat.errors import AlreadyExists, ConditionFailed, ConfigError, NotFound
from ansible.module_utils.lifeboat.s3restore import parse_time, restore_missing, restore_point_in_time
from ansible.module_utils.lifeboat.s3sync import SyncOptions, sync
from ansible.module_utils.lifeboat.sides import S3Side
from ansible.module_utils.lifeboat.storage_local import LocalStorage


@pytest.fixture
def ps(lab):
    return settings(lab["s3"]["primary"])


@pytest.fixture
def bs(lab):
    return settings(lab["s3"]["backup"])


def tick():
    """SeaweedFS keeps LastModified to the second: step over a second boundary."""
    time.sleep(1.2)
    at = dt.datetime.now(dt.UTC)
    time.sleep(1.2)
    return at


def test_primary_brought_back_to_time_t_exactly(lab, ps, bs, tmp_path):
    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        keys = ODD_KEYS + [f"videos/{i}/v.mp4" for i in range(10)]
        for i, k in enumerate(keys):
            pc.put_object(Bucket=prim, Key=k, Body=f"original {i}".encode(), ContentType="video/mp4")
        sync(f"s3://{prim}", f"s3://{bk}/app", ps, bs, SyncOptions(delete=True))
        original = contents(pc, prim)
        at = tick()

        # the incident: deletions, overwrites, a new file; the nightly sync records them
        pc.delete_object(Bucket=prim, Key="videos/3/v.mp4")
        pc.delete_object(Bucket=prim, Key="unicode/é ü 日本.txt")
        pc.put_object(Bucket=prim, Key="videos/4/v.mp4", Body=b"corrupted")
        pc.put_object(Bucket=prim, Key="plus+sign/a+b=c.txt", Body=b"overwritten")
        pc.put_object(Bucket=prim, Key="videos/new/after-t.mp4", Body=b"created after T")
        sync(f"s3://{prim}", f"s3://{bk}/app", ps, bs, SyncOptions(delete=True))
        # and a file written after the last sync: in no backup at all
        pc.put_object(Bucket=prim, Key="videos/unbacked.mp4", Body=b"only here")
        after_incident = contents(pc, prim)

        # check mode: the plan, nothing touched
        plan = restore_point_in_time(f"s3://{bk}/app", f"s3://{prim}", at, bs, ps, delete_newer=True,
                                     check_mode=True)
        assert plan.restored == 4 and plan.deleted == 1 and plan.skipped_unbacked == ["videos/unbacked.mp4"]
        assert contents(pc, prim) == after_incident

        # default: newer files are left alone
        res = restore_point_in_time(f"s3://{bk}/app", f"s3://{prim}", at, bs, ps)
        assert res.restored == 4 and res.deleted == 0 and res.left_newer == 2
        assert contents(pc, prim) == {**original, "videos/new/after-t.mp4": b"created after T",
                                      "videos/unbacked.mp4": b"only here"}
        assert pc.head_object(Bucket=prim, Key="videos/3/v.mp4")["ContentType"] == "video/mp4"

        # delete_newer: removes what did not exist at T, but only if a backup holds it
        res = restore_point_in_time(f"s3://{bk}/app", f"s3://{prim}", at, bs, ps, delete_newer=True)
        assert res.deleted_keys == ["videos/new/after-t.mp4"] and res.skipped_unbacked == ["videos/unbacked.mp4"]
        assert contents(pc, prim) == {**original, "videos/unbacked.mp4": b"only here"}

        # force: exactly as at T
        res = restore_point_in_time(f"s3://{bk}/app", f"s3://{prim}", at, bs, ps, delete_newer=True, force=True)
        assert contents(pc, prim) == original
        again = restore_point_in_time(f"s3://{bk}/app", f"s3://{prim}", at, bs, ps, delete_newer=True)
        assert not again.changed and again.unchanged == len(original)

        # into a directory
        out = tmp_path / "at-t"
        res = restore_point_in_time(f"s3://{bk}/app/videos", str(out), at, bs, None)
        got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert got == {k[len("videos/"):]: v for k, v in original.items() if k.startswith("videos/")}
        assert not restore_point_in_time(f"s3://{bk}/app/videos", str(out), at, bs, None).changed


def test_point_in_time_refuses_unversioned_backup_and_naive_time(lab, ps, bs):
    with bucket(lab["s3"]["backup"]) as (bk, _):
        with pytest.raises(ConfigError, match="has no versioning"):
            restore_point_in_time(f"s3://{bk}", "/tmp/lifeboat-never-created", dt.datetime.now(dt.UTC), bs)
    with pytest.raises(ConfigError, match="restore_time: .* no timezone"):
        parse_time("2026-11-22T02:00:00")
    with pytest.raises(NotFound, match="backup: .*does not exist"):
        restore_point_in_time("s3://lbtest-no-such-backup", "/tmp/x", dt.datetime.now(dt.UTC), bs)


def test_missing_files_from_database_query(lab, ps, bs, app_dsn):
    app = lab["s3"]["primary"]["buckets"][0]
    with psycopg.connect(app_dsn) as conn:
        referenced = [r[0] for r in conn.execute("select storage_path from videos")]
    assert len(referenced) > 100
    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        # a private copy of the lab's application bucket, and its backup
        sync(f"s3://{app}", f"s3://{prim}", ps, ps)
        sync(f"s3://{prim}", f"s3://{bk}", ps, bs)
        lost = referenced[:5]
        for k in lost:
            pc.delete_object(Bucket=prim, Key=k)
        gone_everywhere = "videos/never-uploaded/0.mp4"

        plan = restore_missing(f"s3://{bk}", f"s3://{prim}", referenced + [gone_everywhere], bs, ps,
                               check_mode=True)
        assert plan.missing == 6 and plan.restored == 5 and plan.not_found == [gone_everywhere]
        assert all(pc.list_objects_v2(Bucket=prim, Prefix=k)["KeyCount"] == 0 for k in lost)

        res = restore_missing(f"s3://{bk}", f"s3://{prim}", referenced + [gone_everywhere], bs, ps)
        assert sorted(res.restored_keys) == sorted(lost) and res.not_found == [gone_everywhere]
        for k in lost:
            assert pc.get_object(Bucket=prim, Key=k)["Body"].read() == bc.get_object(Bucket=bk, Key=k)["Body"].read()
        again = restore_missing(f"s3://{bk}", f"s3://{prim}", referenced, bs, ps)
        assert not again.changed and again.missing == 0


def test_the_conditional_copy_never_overwrites_what_changed_after_the_comparison(lab, ps, bs, tmp_path):
    """A restore copies a version only while the target still holds what it compared (Storage.copy_version):
    If-Match / If-None-Match on the committing call in a bucket, a size-and-time check before the rename in a
    directory. A file the application rewrote, or created, between the comparison and the copy stays, and the
    error says so. Server-side (same endpoint), streamed (another endpoint) and into a directory. On the old code
    the copy was unconditional and replaced the application's newer file."""
    with bucket(lab["s3"]["backup"], versioned=True) as (bk, bc), bucket(lab["s3"]["backup"]) as (tgt, _tc), \
            bucket(lab["s3"]["primary"]) as (prim, _pc):
        bc.put_object(Bucket=bk, Key="f.txt", Body=b"backed up")
        backup = S3Side(f"s3://{bk}", bs, "backup")
        v = backup.newest_version("f.txt")
        assert v is not None and v.size == len(b"backed up")
        for target in (S3Side(f"s3://{tgt}", bs, "destination"),        # same endpoint: CopyObject
                       S3Side(f"s3://{prim}/app", ps, "destination"),   # another endpoint: streamed
                       LocalStorage(str(tmp_path / "dir"), "destination")):
            target.check(write=True)
            target.put_bytes("f.txt", b"as compared")
            (seen,) = target.list("f.txt")
            target.put_bytes("f.txt", b"the application's newer file")
            with pytest.raises(ConditionFailed, match=r"^destination: .*changed since it was compared"):
                target.copy_version(backup, v, seen)
            assert target.get_bytes("f.txt") == b"the application's newer file"
            with pytest.raises(AlreadyExists, match="already exists"):
                target.copy_version(backup, v, None)        # absent when compared, there now
            assert target.get_bytes("f.txt") == b"the application's newer file"
            (now,) = target.list("f.txt")
            target.copy_version(backup, v, now)
            assert target.get_bytes("f.txt") == b"backed up"
            target.put_bytes("f.txt", b"x")
            target.copy_version(backup, v, None, conditional=False)   # force: no condition
            assert target.get_bytes("f.txt") == b"backed up"
            assert not [u for u in target.open_uploads()]
