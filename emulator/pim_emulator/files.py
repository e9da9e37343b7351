"""The data directory holds secrets (the store keeps client secrets and user passwords, the
TLS and signing keys, ``control_key`` in connection.json): the directory is 0700 and every
file in it 0600, whatever the umask and whatever the modes it had before (README "Files in
the data directory").

A directory that already exists with a looser mode is tightened, not refused: it is ours
(same owner) and the point is that nobody else reads what the sandbox writes there from now
on. A directory owned by another user is refused, since its owner could loosen it again.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirError(Exception):
    """The data directory cannot be made private; the message says why and what to do."""


def secure_data_dir(path: Path) -> None:
    """Create ``path`` (0700) or tighten it to 0700; make every regular file in it 0600."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(f"the data directory {path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise DataDirError(
            f"the data directory {path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()}): "
            "give a directory of your own (it is made mode 0700)"
        )
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    tighten_files(path)


def tighten_files(path: Path) -> None:
    """Make every regular file directly in ``path`` 0600 (symlinks are left alone: chmod would
    follow them out of the directory)."""
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile (a temp file)
                continue
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
                try:
                    os.chmod(entry.path, FILE_MODE)
                except FileNotFoundError:
                    pass


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically (temp file + ``os.replace``) with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT keeps the mode of a leftover temp file
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if fd != -1:
            os.close(fd)
    os.replace(tmp, path)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600 (before a library such as SQLite opens it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
