"""How the broker creates files and directories in its data directory.

Everything there is private to the broker's user whatever the umask: directories
0700, files 0600 (the metadata holds password hashes).  Files are opened without
following a symbolic link in their last path component, so a link planted in the
data directory (say ``broker.lock -> /etc/passwd``) makes the open fail with
``ELOOP`` instead of writing through it.  Every file or directory storage creates
goes through :func:`open_private` or :func:`make_private_dir`.
"""

from __future__ import annotations

import os
import stat

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def open_private(path: str, flags: int) -> int:
    """``os.open`` for files in the data directory: mode 0600 when created,
    never through a symbolic link, not inherited by child processes."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)


def unlink_if_present(path: str) -> None:
    """Remove a file or a symbolic link (never its target); no error if it is not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0700; an existing one is left as it is."""
    os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)


def tighten_dir(path: str) -> int | None:
    """Make an existing directory 0700; return its old mode if that was wider
    (group or other bits), else None.  Raises ``OSError`` if chmod fails."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077 == 0:
        return None
    os.chmod(path, PRIVATE_DIR_MODE)
    return mode


def fsync_dir(directory: str) -> None:
    """fsync a directory (so that a file created or renamed in it survives a power loss)."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written."""
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]
