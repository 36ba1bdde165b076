"""deltatune.atomic: files and folders appear whole or not at all."""

from __future__ import annotations

import json

import pytest

from deltatune.atomic import atomic_dir, write_json_atomic, write_text_atomic


def test_write_text_and_json_replace_the_file_and_leave_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "old\n")
    assert write_text_atomic(path, "new\r\nline ü\n") == path
    assert path.read_bytes() == "new\r\nline ü\n".encode()  # written as is, no newline translation
    write_json_atomic(tmp_path / "sub" / "b.json", {"x": "ü", "n": 1})
    assert (tmp_path / "sub" / "b.json").read_text(encoding="utf-8") == '{\n  "x": "ü",\n  "n": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt", "b.json"]


def test_failed_text_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomic(path, "old")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})  # fails while encoding: nothing written
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "ü", encoding="ascii")  # fails while writing the temp file
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_renames_into_place(tmp_path):
    final = tmp_path / "deep" / "out"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".out.tmp-") and not final.exists()
        (tmp / "nested").mkdir()
        (tmp / "nested" / "w.bin").write_bytes(b"\x00\x01")
        (tmp / "meta.json").write_text(json.dumps({"ok": True}))
    assert (final / "nested" / "w.bin").read_bytes() == b"\x00\x01"
    assert json.loads((final / "meta.json").read_text()) == {"ok": True}
    assert [p.name for p in final.parent.iterdir()] == ["out"]


def test_atomic_dir_replaces_an_existing_folder_only_when_asked(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_dir(final) as tmp:  # replace=False: refused before the body runs
            raise AssertionError("must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (final / "old.txt").read_text() == "old"

    with atomic_dir(final, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old folder is gone too


def test_atomic_dir_error_leaves_neither_temp_nor_a_changed_destination(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    final.mkdir()
    (final / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final, replace=True) as tmp:
            (tmp / "keep.txt").write_text("overwritten?")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in final.iterdir()] == ["keep.txt"] and (final / "keep.txt").read_text() == "mine"


def test_atomic_dir_named_temp_folder_sweeps_a_leftover(tmp_path):
    """A checkpoint-style caller: `.tmp-step-N` beside `step-N`, a crashed attempt's leftover removed."""
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-3").mkdir(parents=True)
    (root / ".tmp-step-3" / "stale.pt").write_text("stale")
    with atomic_dir(root / "step-3", tmp_name=".tmp-step-3") as tmp:
        assert tmp == root / ".tmp-step-3" and list(tmp.iterdir()) == []
        (tmp / "state.json").write_text("{}")
    assert [p.name for p in root.iterdir()] == ["step-3"]
    assert [p.name for p in (root / "step-3").iterdir()] == ["state.json"]
