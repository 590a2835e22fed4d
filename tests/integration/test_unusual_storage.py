"""Buckets, trees and archives nobody here wrote: odd keys, other tools' multipart objects, version
histories with edge cases, messy SQL key lists, hostile archives (lab SeaweedFS and PostgreSQL, no mocks)."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
import unicodedata

import psycopg
import pytest
from storage_helpers import bucket, settings

from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive, restore_archive
from ansible.module_utils.lifeboat.errors import ConfigError, RestoreError, StorageError
from ansible.module_utils.lifeboat.s3restore import keys_from_query, parse_time, restore_missing, restore_point_in_time
from ansible.module_utils.lifeboat.s3sync import SyncError, SyncOptions, sync

ROOT = os.geteuid() == 0
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------------ archives

def tree_snapshot(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    content = hashlib.sha256(fh.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            else:
                content = None
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content)
    return out


def test_archive_odd_tree_round_trip(tmp_path):
    """Newlines, unicode (NFC and NFD), undecodable bytes in names; links kept as links (also ones
    pointing outside the tree, never followed); hard links; empty directories; a sparse file."""
    src = tmp_path / "app"
    top = src / "storage"
    (top / "empty" / "deeper-empty").mkdir(parents=True)
    (top / "line\nbreak.txt").write_bytes(b"newline in the name")
    (top / "caf\u00e9.txt").write_bytes(b"NFC")
    (top / "cafe\u0301.txt").write_bytes(b"NFD")
    os.mkdir(os.fsencode(top) + b"/latin1-\xe9")
    with open(os.fsencode(top) + b"/latin1-\xe9/f\xff.bin", "wb") as fh:
        fh.write(b"undecodable name")
    outside = tmp_path / "outside-secret.txt"
    outside.write_bytes(b"must not be archived")
    (top / "to-outside").symlink_to(outside)                 # absolute, outside the tree
    (top / "rel-outside").symlink_to("../../outside-secret.txt")
    (top / "inside").symlink_to("caf\u00e9.txt")
    (top / "dangling").symlink_to("no/such/file")
    (top / "hard-a.bin").write_bytes(b"hard linked content")
    os.link(top / "hard-a.bin", top / "hard-b.bin")
    with open(top / "sparse.img", "wb") as fh:              # 48 MiB apparent, a few KiB of data
        fh.seek(24 * 1024 * 1024)
        fh.write(b"middle")
        fh.truncate(48 * 1024 * 1024)
    store = str(tmp_path / "store")
    res = create_archive(ArchiveSpec(name="odd", path=str(top), compression="zstd"), store)
    assert res.changed
    assert not create_archive(ArchiveSpec(name="odd", path=str(top), compression="zstd"), store).changed

    out = tmp_path / "out"
    restore_archive("odd", store, str(out))
    assert tree_snapshot(out / "storage") == tree_snapshot(top)
    assert os.readlink(out / "storage" / "to-outside") == str(outside), "links are kept as links"
    a, b = os.stat(out / "storage" / "hard-a.bin"), os.stat(out / "storage" / "hard-b.bin")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2), "hard links stay hard links"
    assert outside.read_bytes() == b"must not be archived"

    # only the second name of a hard link matches the pattern: still its content, not an error
    only = tmp_path / "only-b"
    ext = restore_archive("odd", store, str(only), patterns=["*/hard-b.bin"])
    assert (only / "storage" / "hard-b.bin").read_bytes() == b"hard linked content"
    assert ext.extracted == 1


def write_raw_archive(store, name: str, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    """A hand-made (hostile) archive with a valid manifest, as if the storage had been tampered with."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    aid = f"{name}-20260101T000000Z"
    d = os.path.join(store, name, aid)
    os.makedirs(d)
    with open(os.path.join(d, f"{name}.tar"), "wb") as fh:
        fh.write(raw)
    manifest = {"schema": "lifeboat.archive/1", "archive_id": aid, "name": name, "files": 1,
                "artifact": {"key": f"{name}/{aid}/{name}.tar", "size": len(raw),
                             "sha256": hashlib.sha256(raw).hexdigest()},
                "compression": {"algorithm": "none"}, "encryption": {"method": "none"}}
    with open(os.path.join(d, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = "",
            mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if data is not None else 0
    return info, data


HOSTILE = {
    # a link out of the tree, then a directory through it
    "dir-through-link": [("t", "d", ""), ("t/escape", "l", "VICTIM"), ("t/escape/made-by-dir", "d", "")],
    # ... a file through it
    "file-through-link": [("t/escape", "l", "VICTIM"), ("t/escape/file.txt", "f", "")],
    "dotdot-dir": [("t", "d", ""), ("../up-dir", "d", "")],
    "dotdot-file": [("t/../../up-file", "f", "")],
    # a hard link to a file outside: extraction would chmod/chown (or write) the outside file
    "hardlink-outside": [("t/hl", "h", "VICTIM/../outside.txt")],
    "hardlink-dotdot": [("t/hl", "h", "../outside.txt")],
    "symlink-parent-later": [("t/sub", "d", ""), ("t", "l", "VICTIM")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("patterns", [None, ["*"]])
def test_archive_restore_never_writes_outside_the_destination(tmp_path, patterns, case):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    store = str(tmp_path / "store")
    (tmp_path / "outside.txt").write_bytes(b"outside")
    os.chmod(tmp_path / "outside.txt", 0o600)
    kinds = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "f": tarfile.REGTYPE, "h": tarfile.LNKTYPE}
    members = []
    for name, kind, link in HOSTILE[case]:
        name, link = name.replace("VICTIM", str(victim)), link.replace("VICTIM", str(victim))
        members.append(_member(name, kinds[kind], data=b"payload" if kind == "f" else None, link=link,
                               mode=0o777 if kind == "d" else 0o644))
    write_raw_archive(store, "evil", members)
    out = tmp_path / "out"
    with pytest.raises(RestoreError, match=r"archive evil-20260101T000000Z: refused an unsafe member"):
        restore_archive("evil", store, str(out), patterns=patterns)
    assert sorted(os.listdir(victim)) == [], "nothing may be written through a link"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755, "no chmod outside the destination"
    assert sorted(os.listdir(tmp_path)) == ["out", "outside.txt", "store", "victim"]
    assert stat.S_IMODE(os.stat(tmp_path / "outside.txt").st_mode) == 0o600
    assert os.stat(tmp_path / "outside.txt").st_nlink == 1


def test_archive_absolute_member_names_land_inside(tmp_path):
    """Like GNU tar: a leading '/' is stripped, the member lands under the destination."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    store = str(tmp_path / "store")
    write_raw_archive(store, "abs", [_member(str(victim), tarfile.DIRTYPE, mode=0o777),
                                     _member(str(victim / "f.txt"), data=b"payload")])
    out = tmp_path / "out"
    restore_archive("abs", store, str(out))
    assert (out / str(victim / "f.txt").lstrip("/")).read_bytes() == b"payload"
    assert os.listdir(victim) == [] and stat.S_IMODE(victim.stat().st_mode) == 0o755


def test_archive_unreadable_file_is_named(tmp_path):
    """A file the backup cannot read (permission denied) fails the archive with its name. Root reads
    everything, so the archive runs in a child without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    top = tmp_path / "tree"
    top.mkdir()
    (top / "ok.txt").write_bytes(b"fine")
    secret = top / "no read.txt"
    secret.write_bytes(b"locked")
    secret.chmod(0)
    store = tmp_path / "store"
    code = ("import sys; sys.path.insert(0, sys.argv[3]);"
            "import testlib;"
            "from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive;"
            "from ansible.module_utils.lifeboat.errors import LifeboatError\n"
            "try:\n create_archive(ArchiveSpec(name='t', path=sys.argv[1]), sys.argv[2])\n"
            "except LifeboatError as e:\n print('ERROR', e); sys.exit(3)\n")
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-c", code, str(top), str(store), tests]
    if ROOT:
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"cannot read {secret}: Permission denied" in p.stdout
    assert not list(store.rglob("manifest.json")), "no manifest: the archive is incomplete"


def test_archive_file_shrinking_while_read_is_named(tmp_path, monkeypatch):
    """A file truncated between the stat and the read (a live directory): the error names it."""
    top = tmp_path / "tree"
    top.mkdir()
    victim = top / "growing.log"
    victim.write_bytes(b"x" * 100_000)
    real = tarfile.TarFile.gettarinfo

    def stat_then_truncate(self, name=None, arcname=None, fileobj=None):  # fault injection: the race
        info = real(self, name, arcname, fileobj)
        if name == str(victim):
            victim.write_bytes(b"short")
        return info

    monkeypatch.setattr(tarfile.TarFile, "gettarinfo", stat_then_truncate)
    with pytest.raises(StorageError, match=rf"cannot read {victim}: .*(changed|shrank|unexpected end)"):
        create_archive(ArchiveSpec(name="t", path=str(top)), str(tmp_path / "store"))


# ------------------------------------------------------------------------------------------------ buckets

NFC, NFD = unicodedata.normalize("NFC", "uni/café.txt"), unicodedata.normalize("NFD", "uni/café.txt")
LONG = "long/" + "/".join(["y" * 199] * 5)          # 1003 bytes (SeaweedFS: at most 255 per segment)
WEIRD = {
    "with space/a b.txt": b"space",
    NFC: b"nfc form",
    NFD: b"nfd form, same name to a human",
    "sym/p+lus=1.txt": b"plus",
    "sym/pct%20x.txt": b"percent",
    "sym/q?x.txt": b"question",
    "sym/h#x.txt": b"hash",
    "sym/amp&x.txt": b"ampersand",
    "sym/semi;colon'quote\"x.txt": b"quotes",
    LONG: b"long key",
    "folder/file.txt": b"inside a folder that also has a marker",
    "zero.bin": b"",
    "zero-dir/empty.bin": b"",
}
MARKERS = ["folder/", "lonely-folder/"]              # 0-byte "folder" placeholders (console, other tools)
META = {"ContentType": "video/x-odd", "CacheControl": "public, max-age=31536000, immutable",
        "ContentDisposition": 'attachment; filename="ü.mp4"'.encode("ascii", "backslashreplace").decode(),
        "ContentLanguage": "fr", "Metadata": {"owner": "user-42", "orig-name": "clip.mp4"}}


def seed_weird(client, name):
    for key, body in WEIRD.items():
        client.put_object(Bucket=name, Key=key, Body=body, **(META if key.startswith("sym/p+") else {}))
    for key in MARKERS:
        client.put_object(Bucket=name, Key=key, Body=b"")


def listing(client, name, prefix="") -> dict[str, tuple[int, str]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
        for o in page.get("Contents", []) or []:
            out[o["Key"][len(prefix):]] = (o["Size"], o["ETag"])
    return out


def local_files(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_weird_keys_bucket_to_bucket_to_directory_and_back(lab, tmp_path):
    ps, bs = settings(lab["s3"]["primary"]), settings(lab["s3"]["backup"])
    with bucket(lab["s3"]["primary"]) as (src, sc), bucket(lab["s3"]["backup"], versioned=True) as (dst, dc), \
            bucket(lab["s3"]["backup"]) as (back, kc):
        seed_weird(sc, src)
        res = sync(f"s3://{src}", f"s3://{dst}/mirror", ps, bs)
        assert res.copied == len(WEIRD) + len(MARKERS) and not res.failed
        assert listing(dc, dst, "mirror/") == listing(sc, src), "every key, folder markers too, same ETags"
        h = dc.head_object(Bucket=dst, Key="mirror/sym/p+lus=1.txt")
        for k in ("ContentType", "CacheControl", "ContentDisposition", "ContentLanguage", "Metadata"):
            assert h[k] == META[k], k
        again = sync(f"s3://{src}", f"s3://{dst}/mirror", ps, bs)
        assert not again.changed and again.unchanged == len(WEIRD) + len(MARKERS)

        # the mirror into a directory: one file per key, NFC and NFD side by side, markers as directories
        out = tmp_path / "dir"
        res = sync(f"s3://{dst}/mirror", str(out), bs, None)
        assert local_files(out) == WEIRD
        assert (out / "lonely-folder").is_dir() and os.listdir(out / "lonely-folder") == []
        modes = {stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for d, _, fs in os.walk(out) for n in fs}
        assert modes == {0o600}
        assert {stat.S_IMODE(os.stat(d).st_mode) for d, _, _ in os.walk(out)} == {0o700}
        assert not sync(f"s3://{dst}/mirror", str(out), bs, None).changed

        # and from the directory into a bucket: the same keys and bodies
        res = sync(str(out), f"s3://{back}", None, bs)
        assert {k: kc.get_object(Bucket=back, Key=k)["Body"].read() for k in listing(kc, back)} == WEIRD
        assert not sync(str(out), f"s3://{back}", None, bs).changed

        # point in time, from the versioned mirror: into a directory and into a bucket, twice each
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        pit = tmp_path / "pit"
        res = restore_point_in_time(f"s3://{dst}/mirror", str(pit), at, bs, None)
        assert res.restored == len(WEIRD) + len(MARKERS) and local_files(pit) == WEIRD
        assert (pit / "lonely-folder").is_dir()
        again = restore_point_in_time(f"s3://{dst}/mirror", str(pit), at, bs, None)
        assert not again.changed and again.unchanged == len(WEIRD) + len(MARKERS)
        with bucket(lab["s3"]["primary"]) as (fresh, fc):
            res = restore_point_in_time(f"s3://{dst}/mirror", f"s3://{fresh}/r", at, bs, ps)
            assert listing(fc, fresh, "r/") == listing(sc, src)
            assert fc.head_object(Bucket=fresh, Key="r/sym/p+lus=1.txt")["CacheControl"] == META["CacheControl"]
            again = restore_point_in_time(f"s3://{dst}/mirror", f"s3://{fresh}/r", at, bs, ps)
            assert not again.changed and again.unchanged == len(WEIRD) + len(MARKERS)


def put_multipart(client, name, key, data: bytes, part: int, **kw) -> str:
    """Upload like another tool would: its own part size (not whole MiB), its own headers."""
    up = client.create_multipart_upload(Bucket=name, Key=key, **kw)
    parts = []
    for n, start in enumerate(range(0, len(data), part), start=1):
        r = client.upload_part(Bucket=name, Key=key, UploadId=up["UploadId"], PartNumber=n,
                               Body=data[start:start + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    r = client.complete_multipart_upload(Bucket=name, Key=key, UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": parts})
    return r["ETag"].strip('"')


def test_other_tools_multipart_objects_everywhere_and_idempotent(lab, tmp_path):
    ps, bs = settings(lab["s3"]["primary"]), settings(lab["s3"]["backup"])
    data = os.urandom(15_000_000)
    with bucket(lab["s3"]["primary"]) as (src, sc), bucket(lab["s3"]["backup"], versioned=True) as (dst, dc), \
            bucket(lab["s3"]["backup"]) as (third, tc):
        etag = put_multipart(sc, src, "v/big clip.mp4", data, 6_000_000, ContentType="video/mp4",
                             CacheControl="max-age=60", Metadata={"origin": "other-tool"})
        assert etag.endswith("-3")
        sc.put_object(Bucket=src, Key="v/zero", Body=b"")
        single = os.urandom(9_000_000)                       # one PUT, above the threshold below
        sc.put_object(Bucket=src, Key="v/single.bin", Body=single)
        res = sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(multipart_threshold=8 * MIB))
        assert res.copied == 3
        assert dc.head_object(Bucket=dst, Key="v/single.bin")["ETag"].strip('"').endswith("-1")
        assert not sync(f"s3://{src}", f"s3://{dst}", ps, bs, SyncOptions(multipart_threshold=8 * MIB)).changed
        # the copy (a 1-part multipart ETag) into a directory, twice
        assert sync(f"s3://{dst}", str(tmp_path / "from-copy"), bs, None).copied == 3
        assert (tmp_path / "from-copy" / "v" / "single.bin").read_bytes() == single
        assert not sync(f"s3://{dst}", str(tmp_path / "from-copy"), bs, None).changed
        dc.delete_object(Bucket=dst, Key="v/single.bin")
        sc.delete_object(Bucket=src, Key="v/single.bin")
        h = dc.head_object(Bucket=dst, Key="v/big clip.mp4")
        assert h["ETag"].strip('"') == etag, "same part boundaries as the source"
        assert (h["ContentType"], h["CacheControl"], h["Metadata"]["origin"]) == ("video/mp4", "max-age=60",
                                                                                 "other-tool")
        assert not sync(f"s3://{src}", f"s3://{dst}", ps, bs).changed
        # server-side, same endpoint
        assert sync(f"s3://{dst}", f"s3://{third}", bs, bs).copied == 2
        assert tc.get_object(Bucket=third, Key="v/big clip.mp4")["Body"].read() == data
        h = tc.head_object(Bucket=third, Key="v/big clip.mp4")
        assert (h["ContentType"], h["CacheControl"], h["Metadata"]["origin"]) == ("video/mp4", "max-age=60",
                                                                                 "other-tool")
        assert not sync(f"s3://{dst}", f"s3://{third}", bs, bs).changed

        # into a directory and compared again: the part size (6,000,000 bytes) must be found
        out = tmp_path / "dir"
        assert sync(f"s3://{src}", str(out), ps, None).copied == 2
        assert (out / "v" / "big clip.mp4").read_bytes() == data
        again = sync(f"s3://{src}", str(out), ps, None)
        assert not again.changed and again.unchanged == 2
        # the directory against the bucket the other tool wrote: nothing to upload
        back = sync(str(out), f"s3://{src}", None, ps)
        assert not back.changed and back.unchanged == 2

        # a point-in-time restore into a directory recognises the file it restored
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        pit = tmp_path / "pit"
        assert restore_point_in_time(f"s3://{dst}", str(pit), at, bs, None).restored == 2
        again = restore_point_in_time(f"s3://{dst}", str(pit), at, bs, None)
        assert not again.changed and again.unchanged == 2 and again.skipped_unbacked == []


def test_file_and_folder_of_the_same_name_into_a_directory(lab, tmp_path):
    """'a' and 'a/b' both exist in a bucket: a directory cannot hold both. The sync writes everything
    else, then fails naming the clash; a rerun does not make it worse; a point-in-time restore says the same."""
    bs = settings(lab["s3"]["backup"])
    with bucket(lab["s3"]["backup"], versioned=True) as (name, c):
        for k in ("a", "a/b", "a/b/c", "ok/x.txt"):
            c.put_object(Bucket=name, Key=k, Body=k.encode())
        out = tmp_path / "dir"
        for _ in range(2):
            with pytest.raises(SyncError, match=r"both a file and a folder prefix in the bucket, such as 'a' "
                                                r"and 'a/b'") as info:
                sync(f"s3://{name}", str(out), bs, None, SyncOptions(concurrency=1))
            assert info.value.result.failed and info.value.result.copied <= 2
            assert (out / "ok" / "x.txt").read_bytes() == b"ok/x.txt"
        assert sorted(os.listdir(tmp_path)) == ["dir"]
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        with pytest.raises(RestoreError, match=r"point-in-time restore: .* both a file and a folder prefix"):
            restore_point_in_time(f"s3://{name}", str(tmp_path / "pit"), at, bs, None, concurrency=1)
        assert (tmp_path / "pit" / "ok" / "x.txt").read_bytes() == b"ok/x.txt"


# ------------------------------------------------------------------------------------------ point in time

def tick() -> dt.datetime:
    """SeaweedFS keeps LastModified to the second: step over a second boundary on both sides of T."""
    time.sleep(1.1)
    at = dt.datetime.now(dt.UTC)
    time.sleep(1.1)
    return at


def test_point_in_time_edge_cases(lab, tmp_path):
    bs = settings(lab["s3"]["backup"])
    with bucket(lab["s3"]["backup"], versioned=True) as (name, c):
        before_anything = tick()
        c.put_object(Bucket=name, Key="stay.txt", Body=b"stay")
        c.put_object(Bucket=name, Key="reborn.txt", Body=b"first life")
        for n in range(3):                                   # several versions within one second
            c.put_object(Bucket=name, Key="burst.txt", Body=f"burst {n}".encode())
        c.put_object(Bucket=name, Key="flash.txt", Body=b"created and deleted within a second")
        c.delete_object(Bucket=name, Key="flash.txt")
        c.put_object(Bucket=name, Key="flash2.txt", Body=b"v1")
        c.delete_object(Bucket=name, Key="flash2.txt")
        c.put_object(Bucket=name, Key="flash2.txt", Body=b"v2, within the same second")
        time.sleep(1.1)
        c.delete_object(Bucket=name, Key="reborn.txt")       # deleted before T ...
        at = tick()
        c.put_object(Bucket=name, Key="reborn.txt", Body=b"second life")  # ... re-created after T
        c.put_object(Bucket=name, Key="new.txt", Body=b"did not exist at T")
        c.put_object(Bucket=name, Key="burst.txt", Body=b"after T")
        c.put_object(Bucket=name, Key="flash.txt", Body=b"after T")
        c.put_object(Bucket=name, Key="flash2.txt", Body=b"after T")
        url = f"s3://{name}"

        # LastModified ties (same second) are broken by the server's listing order, newest first
        res = restore_point_in_time(url, str(tmp_path / "ties"), at, bs, None)
        assert local_files(tmp_path / "ties") == {"stay.txt": b"stay", "burst.txt": b"burst 2",
                                                  "flash2.txt": b"v2, within the same second"}
        listed = c.list_object_versions(Bucket=name, Prefix="flash")  # out of the history for what follows
        for v in (listed.get("Versions") or []) + (listed.get("DeleteMarkers") or []):
            c.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])

        now = tmp_path / "now"                               # a directory holding today's state
        sync(url, str(now), bs, None)
        assert local_files(now) == {"stay.txt": b"stay", "reborn.txt": b"second life",
                                    "new.txt": b"did not exist at T", "burst.txt": b"after T"}

        res = restore_point_in_time(url, str(now), at, bs, None)
        assert res.restored_keys == ["burst.txt"] and res.left_newer == 2 and res.deleted == 0
        assert local_files(now) == {"stay.txt": b"stay", "reborn.txt": b"second life",
                                    "new.txt": b"did not exist at T", "burst.txt": b"burst 2"}

        # the same instant written in another timezone, asked to remove what did not exist at T
        other_tz = at.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
        res = restore_point_in_time(url, str(now), other_tz, bs, None, delete_newer=True)
        assert sorted(res.deleted_keys) == ["new.txt", "reborn.txt"] and res.unchanged == 2
        assert local_files(now) == {"stay.txt": b"stay", "burst.txt": b"burst 2"}
        again = restore_point_in_time(url, str(now), parse_time(other_tz.isoformat()), bs, None, delete_newer=True)
        assert not again.changed

        # T before the bucket had any object: nothing to restore; with delete_newer, everything goes
        empty = restore_point_in_time(url, str(tmp_path / "empty"), before_anything, bs, None)
        assert not empty.changed and os.listdir(tmp_path / "empty") == []
        res = restore_point_in_time(url, str(now), before_anything, bs, None)
        assert not res.changed and res.left_newer == 2
        res = restore_point_in_time(url, str(now), before_anything, bs, None, delete_newer=True)
        assert res.deleted == 2 and local_files(now) == {}

        # T without a timezone: refused, naming the option, before anything is touched
        naive = at.replace(tzinfo=None)
        with pytest.raises(ConfigError, match=r"restore_time: .*no timezone"):
            parse_time(naive.isoformat())
        with pytest.raises(ConfigError, match=r"restore_time: give a timezone"):
            restore_point_in_time(url, str(tmp_path / "never"), naive, bs, None)
        assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------- missing files

def test_missing_files_from_a_messy_query(lab, scratch_db):
    ps, bs = settings(lab["s3"]["primary"]), settings(lab["s3"]["backup"])
    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        nfd_lost, nfd_here = unicodedata.normalize("NFD", "lost/café.txt"), unicodedata.normalize("NFD", "ok/né.txt")
        for k in ("ok/1.txt", "lost/2.txt", "lost/3 é+.txt", "lost/4.txt", nfd_lost, nfd_here):
            pc.put_object(Bucket=prim, Key=k, Body=k.encode(), ContentType="text/x-kept")
        sync(f"s3://{prim}", f"s3://{bk}/app", ps, bs)
        for k in ("lost/2.txt", "lost/3 é+.txt", "lost/4.txt", nfd_lost):
            pc.delete_object(Bucket=prim, Key=k)
        rows = ["ok/1.txt", "lost/2.txt", None, "lost/2.txt",   # present, missing, NULL, duplicate
                "/lost/3 é+.txt",                                # leading '/'
                f"{prim}/lost/4.txt", "lost/4.txt",              # "bucket/key" style, and plain
                unicodedata.normalize("NFC", nfd_lost),          # NFC in the database, NFD in the bucket
                unicodedata.normalize("NFC", nfd_here),          # ... and still there: not missing
                "never/5.txt", "never/5.txt"]                    # nowhere (twice)
        with psycopg.connect(scratch_db["dsn"], autocommit=True) as conn:
            conn.execute("create table files (path text)")
            with conn.cursor() as cur:
                cur.executemany("insert into files values (%s)", [(r,) for r in rows])
        keys = list(keys_from_query(scratch_db["dsn"], "select path from files"))
        assert None not in keys and len(keys) == len(rows) - 1

        plan = restore_missing(f"s3://{bk}/app", f"s3://{prim}", keys, bs, ps, check_mode=True)
        assert plan.missing == 5 and plan.not_found == ["never/5.txt"]
        res = restore_missing(f"s3://{bk}/app", f"s3://{prim}", keys, bs, ps)
        assert sorted(res.restored_keys) == sorted(["lost/2.txt", "lost/3 é+.txt", "lost/4.txt", nfd_lost])
        assert res.not_found == ["never/5.txt"], "reported once, not fatal"
        for k in ("lost/2.txt", "lost/3 é+.txt", "lost/4.txt", nfd_lost):
            got = pc.get_object(Bucket=prim, Key=k)
            assert got["Body"].read() == k.encode() and got["ContentType"] == "text/x-kept"
        again = restore_missing(f"s3://{bk}/app", f"s3://{prim}", keys, bs, ps)
        assert not again.changed and again.not_found == ["never/5.txt"]
        assert set(listing(pc, prim)) == {"ok/1.txt", "lost/2.txt", "lost/3 é+.txt", "lost/4.txt", nfd_lost,
                                          nfd_here}

        # a query that fails: a clear message naming the option and the server's reason, no secret
        for query, reason in [("select path from no_such_table", 'relation "no_such_table" does not exist'),
                              ("select path frm files", "syntax error"),
                              # never executed: a server-side cursor only takes a query
                              ("delete from files returning path", 'syntax error at or near "delete"')]:
            with pytest.raises(ConfigError, match=r"keys_query: failed on .*" + reason) as info:
                restore_missing(f"s3://{bk}/app", f"s3://{prim}", keys_from_query(scratch_db["dsn"], query),
                                bs, ps)
            assert "password" not in str(info.value)
        with psycopg.connect(scratch_db["dsn"]) as conn:
            assert conn.execute("select count(*) from files").fetchone()[0] == len(rows)


def test_missing_files_into_a_directory_never_escape(lab, tmp_path):
    """Keys from a database are data: '..' in them is never a way out of the destination."""
    bs = settings(lab["s3"]["backup"])
    with bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        bc.put_object(Bucket=bk, Key="app/ok/1.txt", Body=b"one")
        bc.put_object(Bucket=bk, Key="app/escape.txt", Body=b"must stay in the bucket")
        out = tmp_path / "out"
        keys = ["ok/1.txt", "../escape.txt", "ok/../../escape.txt", "./ok/1.txt", "ok//1.txt"]
        res = restore_missing(f"s3://{bk}/app", str(out), keys, bs, None)
        # SeaweedFS holds no key with '.'/'..'/'' segments (on AWS they would be refused by name when written)
        assert res.restored_keys == ["ok/1.txt"] and sorted(res.not_found) == sorted(keys[1:])
        assert (out / "ok" / "1.txt").read_bytes() == b"one"
        assert sorted(os.listdir(tmp_path)) == ["out"]
        assert local_files(out) == {"ok/1.txt": b"one"}


def test_directory_to_bucket_skips_links_and_names_undecodable_files(lab, tmp_path):
    bs = settings(lab["s3"]["backup"])
    top = tmp_path / "uploads"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "good é.txt").write_bytes(b"good")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the tree")
    (top / "link-out.txt").symlink_to(secret)             # never followed
    (top / "link-dir").symlink_to(tmp_path)
    os.mkfifo(top / "fifo")                                # would block a reader forever
    with open(os.fsencode(top) + b"/latin1-\xe9.txt", "wb") as fh:
        fh.write(b"name is not UTF-8")
    with bucket(lab["s3"]["backup"]) as (bk, bc):
        with pytest.raises(SyncError, match=r"first: 'latin1-.*\.txt': .*utf-8") as info:
            sync(str(top), f"s3://{bk}", None, bs)
        assert info.value.result.copied == 1
        assert {k: bc.get_object(Bucket=bk, Key=k)["Body"].read() for k in listing(bc, bk)} == \
            {"sub/good é.txt": b"good"}


def test_links_planted_in_a_destination_directory_lead_nowhere(lab, tmp_path):
    """A restore into an application's directory (often writable by the application, the restore runs as
    root): a symbolic link planted there must not redirect a write outside it."""
    bs = settings(lab["s3"]["backup"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "uploads").symlink_to(elsewhere)
    (out / "p.txt.lifeboat-partial").symlink_to(victim)
    with bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        for k in ("uploads/x.txt", "p.txt", "ok/q.txt"):
            bc.put_object(Bucket=bk, Key=k, Body=b"from the bucket " + k.encode())
        with pytest.raises(SyncError, match=r"key 'uploads/x.txt' leads through a symbolic link out of the "
                                            r"directory"):
            sync(f"s3://{bk}", str(out), bs, None)
        assert os.listdir(elsewhere) == [] and victim.read_bytes() == b"precious"
        assert (out / "p.txt").read_bytes() == b"from the bucket p.txt" and not (out / "p.txt").is_symlink()
        assert (out / "ok" / "q.txt").read_bytes() == b"from the bucket ok/q.txt"
        (out / "p.txt").unlink()
        # each writer's partial file has a name of its own, created exclusively: the planted link is never opened
        assert (out / "p.txt.lifeboat-partial").is_symlink()
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        with pytest.raises(RestoreError, match=r"key 'uploads/x.txt' leads through a symbolic link"):
            restore_point_in_time(f"s3://{bk}", str(out), at, bs, None)
        assert os.listdir(elsewhere) == [] and victim.read_bytes() == b"precious"
        assert (out / "p.txt").read_bytes() == b"from the bucket p.txt"
    # directory -> directory too
    src = tmp_path / "src"
    (src / "uploads").mkdir(parents=True)
    (src / "uploads" / "y.txt").write_bytes(b"y")
    (src / "z.txt").write_bytes(b"z")
    (out / "z.txt.lifeboat-partial").symlink_to(victim)
    with pytest.raises(SyncError, match=r"key 'uploads/y.txt' leads through a symbolic link"):
        sync(str(src), str(out))
    assert os.listdir(elsewhere) == [] and victim.read_bytes() == b"precious"
    assert (out / "z.txt").read_bytes() == b"z"


def test_archive_of_a_live_directory_skips_files_removed_meanwhile(tmp_path, monkeypatch):
    """Uploads come and go while the archive runs: a file removed between the walk and its read is
    skipped (it was deleted, nothing is lost), the rest is archived. Every directory restored is 0700
    when the archive has no mode for it."""
    top = tmp_path / "tree"
    (top / "d").mkdir(parents=True)
    for n in ("a.txt", "b.txt", "c.txt"):
        (top / "d" / n).write_bytes(n.encode())
    real = tarfile.TarFile.gettarinfo

    def meanwhile(self, name=None, arcname=None, fileobj=None):  # fault injection: the race
        if name == str(top / "d" / "a.txt"):
            (top / "d" / "b.txt").unlink()                   # before the walk reaches it
            (top / "d" / "a.txt").unlink()                   # after the walk, before the read
        return real(self, name, arcname, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "gettarinfo", meanwhile)
    res = create_archive(ArchiveSpec(name="live", path=str(top)), str(tmp_path / "store"))
    assert res.files == 1
    monkeypatch.undo()
    out = tmp_path / "deep" / "er" / "out"
    restore_archive("live", str(tmp_path / "store"), str(out), patterns=["*/c.txt"])
    assert local_files(out) == {"tree/d/c.txt": b"c.txt"}
    for p in (tmp_path / "deep", tmp_path / "deep" / "er", out):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
