"""search_space.io: the one atomic-write helper. A failed build leaves nothing behind."""
from __future__ import annotations

import pytest

import os

from search_space.errors import UsageError
from search_space.io import (atomic_directory, check_writable_dir, check_writable_file, read_json,
                             write_json_atomic)


def test_atomic_directory_renames_into_place(tmp_path):
    final = tmp_path / "a" / "b" / "cache"
    with atomic_directory(final) as tmp:
        (tmp / "x.txt").write_text("1")
    assert (final / "x.txt").read_text() == "1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["cache"]  # no temporary left


def test_a_failed_build_removes_its_temporary_and_the_parents_it_created(tmp_path):
    (tmp_path / "runs").mkdir()
    final = tmp_path / "runs" / "cache" / "deep" / "ds"
    with pytest.raises(ZeroDivisionError):
        with atomic_directory(final) as tmp:
            (tmp / "half.npy").write_bytes(b"x")
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # pre-existing parent kept
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_failed_build_keeps_a_parent_someone_else_filled(tmp_path):
    final = tmp_path / "cache" / "ds"
    with pytest.raises(ZeroDivisionError):
        with atomic_directory(final) as tmp:
            (tmp_path / "cache" / "other-ds").mkdir()  # another builder's result
            1 / 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["other-ds"]


def test_write_json_atomic_round_trip(tmp_path):
    write_json_atomic(tmp_path / "d" / "x.json", {"a": 1})
    assert read_json(tmp_path / "d" / "x.json") == {"a": 1}
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.json"]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_a_place_where_nothing_can_be_created_is_not_writable(tmp_path):
    """os.access says yes to root even where creating a file fails (/proc, a read-only mount):
    the check creates and removes a file instead, and leaves nothing behind where it can."""
    with pytest.raises(UsageError) as e:
        check_writable_file("/proc/sfn-report.html", "--out")
    assert str(e.value).startswith("--out /proc/sfn-report.html: not writable")
    with pytest.raises(UsageError) as e:
        check_writable_dir("/proc/sfn/deeper", "--out")
    assert str(e.value).startswith("--out /proc/sfn/deeper: not writable (/proc: nothing can")
    check_writable_dir(tmp_path / "new" / "dir", "--out")
    assert list(tmp_path.iterdir()) == []


def test_an_input_that_is_not_a_file_says_what_it_is(tmp_path):
    from search_space.errors import NotFoundError, UsageError
    from search_space.io import check_input_file

    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert check_input_file(f, "--checkpoint") == f
    with pytest.raises(NotFoundError) as e:
        check_input_file(tmp_path / "none.pth", "--checkpoint")
    assert str(e.value) == f"--checkpoint {tmp_path / 'none.pth'}: no such file"
    with pytest.raises(UsageError) as e:
        check_input_file(tmp_path, "--resume")
    assert str(e.value) == f"--resume {tmp_path}: is a directory; expected a file"
    assert not isinstance(e.value, NotFoundError)
    with pytest.raises(UsageError) as e:
        check_input_file("/dev/null", "--teacher-checkpoint")
    assert str(e.value) == ("--teacher-checkpoint /dev/null: is not a regular file (a device, a "
                            "socket ...); expected a file")


def test_read_json_drops_a_byte_order_mark_and_names_bad_text(tmp_path):
    bom = tmp_path / "spec.json"
    bom.write_bytes(b'\xef\xbb\xbf{"depths": [1, 2]}')   # as Notepad saves UTF-8
    assert read_json(bom, "spec file") == {"depths": [1, 2]}
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "t\xe9l\xe9phone"}'.encode("latin-1"))
    with pytest.raises(UsageError) as e:
        read_json(latin, "spec file")
    assert str(e.value) == f"spec file {latin}: not UTF-8 text (byte 11); save it as UTF-8"
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": 1,\n "b": }')
    with pytest.raises(UsageError) as e:
        read_json(broken, "spec file")
    assert str(e.value) == (f"spec file {broken}: not valid JSON (line 2 column 7: Expecting "
                            "value)")
