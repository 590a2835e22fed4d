"""archive._extract on every Python Lifeboat runs on: with PEP 706's tarfile filters (3.11.4+) and without them
(Debian 12's python3 is 3.11.2: archive restores failed there with "module 'tarfile' has no attribute
'FilterError'", found by molecule/default's disaster drill). Each case runs both ways."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible.module_utils.lifeboat import archive


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes, mode: int = 0o640) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    return info, data


def _link(name: str, target: str, kind: bytes, mode: int = 0o777) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info, None


def _dir(name: str, mode: int = 0o750) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_700_000_000
    return info, None


@pytest.fixture(params=[True, False], ids=["filters", "python-3.11.2"])
def filters(request, monkeypatch):
    if request.param and not archive._HAS_FILTERS:
        pytest.skip("this Python has no PEP 706 filters")
    monkeypatch.setattr(archive, "_HAS_FILTERS", request.param)
    if not request.param:  # what 3.11.2's tarfile lacks (fully_trusted_filter: tarfile itself needs it here)
        for name in ("tar_filter", "data_filter", "FilterError", "OutsideDestinationError",
                     "LinkOutsideDestinationError"):
            monkeypatch.delattr(tarfile, name, raising=False)
        monkeypatch.delattr(tarfile.TarInfo, "replace", raising=False)
    return request.param


def extract(stream: io.BytesIO, dest: str) -> tuple[int, list]:
    dirs: list = []
    extracted, _ = archive._extract(stream, dest, None, None, None, None, None, False, [], dirs, {})
    return extracted, dirs


def test_files_links_and_modes_come_back(filters, tmp_path):
    dest = str(tmp_path / "out")
    os.mkdir(dest, 0o700)
    stream = _tar([_dir("app"), _file("app/.env", b"SECRET=1\n", 0o600), _file("app/run.sh", b"#!/bin/sh\n", 0o4775),
                   _link("app/hard", "app/.env", tarfile.LNKTYPE, 0o600),
                   _link("app/sym", "/etc/hostname", tarfile.SYMTYPE),
                   _file("/abs/leading-slash.txt", b"x")])
    extracted, dirs = extract(stream, dest)
    assert extracted == 4  # three regular files and the hard link
    assert open(os.path.join(dest, "app/.env"), "rb").read() == b"SECRET=1\n"
    assert os.stat(os.path.join(dest, "app/.env")).st_mode & 0o7777 == 0o600
    # setuid dropped, group/other write kept
    assert os.stat(os.path.join(dest, "app/run.sh")).st_mode & 0o7777 == 0o775
    assert os.path.samefile(os.path.join(dest, "app/hard"), os.path.join(dest, "app/.env"))
    assert os.readlink(os.path.join(dest, "app/sym")) == "/etc/hostname"
    assert os.path.isfile(os.path.join(dest, "abs/leading-slash.txt"))  # leading '/' stripped, inside dest
    assert [d[1].mode for d in dirs] == [0o750]


@pytest.mark.parametrize("member", [
    _file("../escape.txt", b"x"),
    _file("app/../../escape.txt", b"x"),
    _link("app/hard", "../../etc/passwd", tarfile.LNKTYPE),
    _link("app/hard", "/etc/passwd", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "hardlink-out", "hardlink-absolute"])
def test_members_leading_out_are_refused_before_anything_is_created(filters, tmp_path, member):
    dest = str(tmp_path / "out")
    os.mkdir(dest, 0o700)
    with pytest.raises(archive.UnsafeMember, match="outside the destination"):
        extract(_tar([member]), dest)
    assert os.listdir(dest) == [] and not os.path.exists(tmp_path / "escape.txt")


def test_nothing_is_written_through_a_symbolic_link(filters, tmp_path):
    dest = str(tmp_path / "out")
    os.mkdir(dest, 0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(archive.UnsafeMember):
        extract(_tar([_link("app", str(outside), tarfile.SYMTYPE), _file("app/planted.txt", b"x")]), dest)
    assert list(outside.iterdir()) == []
