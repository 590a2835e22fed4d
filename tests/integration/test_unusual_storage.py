"""Buckets, trees and archives nobody here wrote: odd keys, other tools' multipart objects, version
histories with edge cases, messy SQL key lists, hostile archives (lab SeaweedFS and PostgreSQL, no mocks)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive, restore_archive
from ansible.module_utils.lifeboat.errors import RestoreError, StorageError

ROOT = os.geteuid() == 0


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
            "import conftest;"
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
