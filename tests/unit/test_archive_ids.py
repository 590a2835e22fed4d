"""Archive ids: two archives made in the same second never share an id, and "latest" is the newer.

CI found it (stop 16): a changed tree archived again within the second the first archive was made
reused its id, and the exclusive manifest write refused the second archive."""
from __future__ import annotations

import datetime as _dt

import pytest
from ansible.module_utils.lifeboat.archive import (
    ArchiveSpec,
    _id_order,
    create_archive,
    latest_manifest,
    restore_archive,
)
from ansible.module_utils.lifeboat.errors import AlreadyExists
from ansible.module_utils.lifeboat.storage import open_storage

NOW = _dt.datetime(2026, 12, 2, 21, 30, 4, tzinfo=_dt.UTC)


def test_same_second_archives_get_distinct_ids_and_latest_is_the_newest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one")
    dest = str(tmp_path / "dest")
    spec = ArchiveSpec(name="site", path=str(src), compression="none")
    first = create_archive(spec, dest, now=NOW)
    (src / "b.txt").write_bytes(b"two")
    second = create_archive(spec, dest, now=NOW)
    (src / "c.txt").write_bytes(b"three")
    third = create_archive(spec, dest, now=NOW)
    assert [first.archive_id, second.archive_id, third.archive_id] == [
        "site-20261202T213004Z", "site-20261202T213004Z-2", "site-20261202T213004Z-3"]
    assert latest_manifest(open_storage(dest), "site").archive_id == third.archive_id
    # the newest extracts with all three files; the first still holds its one
    out = tmp_path / "out"
    assert restore_archive("site", dest, str(out)).extracted == 3
    old = tmp_path / "old"
    assert restore_archive("site", dest, str(old), archive_id=first.archive_id).extracted == 1


def test_id_order_puts_the_suffix_after_the_plain_id_and_numbers_numerically():
    keys = [f"site/site-20261202T213004Z{s}/manifest.json" for s in ("-10", "-2", "", "-3")]
    keys.append("site/site-20261202T213003Z-5/manifest.json")
    assert [k.split("/")[1] for k in sorted(keys, key=_id_order)] == [
        "site-20261202T213003Z-5", "site-20261202T213004Z", "site-20261202T213004Z-2",
        "site-20261202T213004Z-3", "site-20261202T213004Z-10"]


def test_the_artifact_is_written_exclusively(tmp_path, monkeypatch):
    """A run that lost the race between the look for a free id and the upload replaces nothing."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one")
    dest = str(tmp_path / "dest")
    spec = ArchiveSpec(name="site", path=str(src), compression="none")
    first = create_archive(spec, dest, now=NOW)
    before = (tmp_path / "dest" / first.manifest["artifact"]["key"]).read_bytes()
    import ansible.module_utils.lifeboat.archive as archive
    monkeypatch.setattr(archive, "_free_id", lambda storage, name, when, artifact: (
        first.archive_id, f"site/{first.archive_id}/{artifact}", f"site/{first.archive_id}/manifest.json"))
    (src / "b.txt").write_bytes(b"two")
    with pytest.raises(AlreadyExists):
        create_archive(spec, dest, now=NOW)
    assert (tmp_path / "dest" / first.manifest["artifact"]["key"]).read_bytes() == before
