"""Crash-safe file writing: nothing hyperkd writes is ever left half-written.

Every writer goes through :func:`atomic_path`: data goes to a temporary file in the
destination folder, is flushed and fsynced, then renamed over the target in one step
(``os.replace`` is atomic on POSIX and Windows). A crash leaves the old file or the new
one, never a torn one.

The temporary comes from :func:`tempfile.mkstemp`, which creates it private (mode 0600).
Before the rename it gets the mode a plain ``open(target, "w")`` would have given: the
existing file's mode when ``target`` is replaced, else ``0o666`` less the process umask. So
an atomic write never tightens permissions (a chip store or model folder written under
umask 022 stays readable by the group and others, as the user expects).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``).

    Elsewhere it is read by setting and restoring it (``os.umask``), the only portable way.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_file_mode(target: Path) -> int:
    """The permission bits ``open(target, "w")`` would leave: kept if it exists, else 0666 & ~umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary keeps ``target``'s extension (plus ``suffix``) so libraries that infer
    a format from the name (``np.save``, rasterio) keep working. The renamed file has the
    permissions a plain write would give it (see the module docstring), not mkstemp's 0600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp" + suffix + target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _plain_file_mode(target))
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; swap it in for ``target`` on success.

    For outputs that are a folder of files (a shared model: weights, config, card): the old
    folder is renamed aside, the new one renamed into place, then the old one removed, so
    ``target`` is at every moment either the complete old folder or the complete new one. A
    failure inside the block removes the temporary and leaves ``target`` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def apply_umask(path: str | Path) -> None:
    """Give ``path`` the mode a new plain file gets (``0o666`` less the umask).

    For files that a library writes private: safetensors' ``save_file`` (used by the Hub
    mixin's ``save_pretrained``) creates them with mode 0600 whatever the umask.
    """
    os.chmod(path, 0o666 & ~_umask())
