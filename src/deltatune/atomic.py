"""Atomic writes: a reader sees the old content or the new one, never half a file or folder.

    write_text_atomic(path, text)                # a temp file beside `path`, fsynced, renamed
    write_json_atomic(path, obj)                 # the same for indented JSON + a newline
    with atomic_dir(final, replace=True) as tmp: # fill `tmp`; on success it becomes `final`
        (tmp / "weights.safetensors").write_bytes(...)

Everything is written next to its destination (same folder, so the same filesystem) and put
in place with one rename, the only step POSIX makes atomic. Files are fsynced before the
rename and the parent folder after it, so a crash cannot leave a renamed but empty file.
On any exception the temp file or folder is removed and the destination is left as it was.

`atomic_dir` names its temp folder `.{final.name}.tmp-XXXXXXXX` unless given `tmp_name`
(a caller that sweeps its own leftovers, such as `checkpoints/.tmp-step-N`, picks the name).
Replacing an existing folder takes two renames (old one aside, new one in), so for that
instant `final` is missing; the old folder is deleted after the new one is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` (as is: no newline translation) to `path` via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{_token()}"
    try:
        # "x" (not mkstemp) so the file gets the usual umask permissions, not 0600
        with open(tmp, "x", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | Path, obj, indent: int | None = 2, default=None) -> Path:
    """`obj` as JSON (UTF-8, non-ASCII kept, `indent`, a final newline), written atomically.
    `default` is json's fallback for objects it cannot encode (e.g. `str`)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n"
    return write_text_atomic(path, text)


def write_jsonl_atomic(path: str | Path, records: list[dict]) -> Path:
    """One JSON object per line, written atomically; keys starting with "_" (loader
    bookkeeping such as `_origin`) are left out, so the file reads back as the user's data."""
    rows = ({k: v for k, v in r.items() if not k.startswith("_")} for r in records)
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextmanager
def atomic_dir(final: str | Path, replace: bool = False, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; on a clean exit it is fsynced and renamed to
    `final`, on an exception it is removed and `final` is untouched.

    An existing `final` (folder or file) is replaced only with `replace=True`; otherwise it is
    a FileExistsError, raised before anything is created. A leftover folder at `tmp_name`
    (from a crashed earlier attempt) is removed first.
    """
    final = Path(final)
    if not replace and _exists(final):
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / (tmp_name or f".{final.name}.tmp-{_token()}")
    if tmp_name is not None:
        _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _commit(tmp, final, replace)
    finally:
        _remove(tmp)  # gone after a commit; after an error this is the cleanup
    _fsync_dir(final.parent)


def _commit(tmp: Path, final: Path, replace: bool) -> None:
    """Rename `tmp` to `final`; an existing `final` is set aside first, restored if the rename
    fails, and deleted once the new folder is in place."""
    if not _exists(final):
        os.rename(tmp, final)  # on Linux this would also replace an empty folder: checked above
        return
    if not replace:  # appeared while the caller was writing
        raise FileExistsError(f"{final} already exists")
    old = final.parent / f".{final.name}.old-{_token()}"
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    _remove(old)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a link; nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder (deepest first): the data and the
    folder entries naming it are on disk before the rename makes them visible."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder) / name
            if file.is_file() and not file.is_symlink():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """fsync a folder's entry list; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the data itself was synced
    finally:
        os.close(fd)


def _token() -> str:
    """A short random suffix, so concurrent writers never share a temp name."""
    return uuid.uuid4().hex[:8]
