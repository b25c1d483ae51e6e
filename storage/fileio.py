"""The file layer every part of storage/ goes through.

:class:`FileIO` names the few file-system operations the store and the metadata
file need (open, append, positioned read and write, truncate, fsync, directory
fsync, rename, unlink, list, make and remove directories).  :data:`OS` is the
real implementation on ``os``; :class:`storage.crashfs.CrashFS` is an in-memory
one that remembers what an fsync made durable, so that tests can simulate a
power loss.  Handles are small integers in both (file descriptors for ``OS``).

The store holds one ``FileIO`` and calls it once per batch of records (one
``write_all`` per file per loop turn), never per message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import Executor, wait
from typing import Protocol

from .files import fsync_dir, make_private_dir, open_private, tighten_dir, unlink_if_present, write_all


class FileIO(Protocol):
    """The file-system operations of storage/ (``os`` semantics and errors)."""

    def open(self, path: str, flags: int) -> int:
        """``os.open`` of a private file (0600 when created, never through a symbolic link)."""
        ...

    def close(self, fd: int) -> None: ...

    def write_all(self, fd: int, data: bytes) -> None: ...

    def pwrite(self, fd: int, data: bytes, offset: int) -> None: ...

    def pread(self, fd: int, n: int, offset: int) -> bytes: ...

    def truncate(self, fd: int, size: int) -> None: ...

    def fdatasync(self, fd: int) -> None: ...

    def fsync_dir(self, path: str) -> None:
        """Make the entries of a directory (files created, renamed or removed in it) durable."""
        ...

    def read_file(self, path: str) -> bytes:
        """The whole content of a file (``FileNotFoundError`` if there is none)."""
        ...

    def file_size(self, path: str) -> int:
        """The size of a file in bytes (``FileNotFoundError`` if there is none)."""
        ...

    def listdir(self, path: str) -> list[str]: ...

    def isdir(self, path: str) -> bool: ...

    def exists(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents, private (0700); an existing one is kept."""
        ...

    def tighten_dir(self, path: str) -> int | None:
        """Make a directory private; its old mode if that was wider, else None."""
        ...

    def lock(self, fd: int) -> None:
        """Take an exclusive lock on an open file without waiting (``OSError`` if held)."""
        ...

    def unlink(self, path: str) -> None:
        """Remove a file; no error if it is not there."""
        ...

    def replace(self, src: str, dst: str) -> None: ...

    def rmtree(self, path: str) -> None:
        """Remove a directory and everything in it; no error if it is not there."""
        ...

    def tree_size(self, path: str) -> int:
        """Bytes of every file under ``path``."""
        ...


class OsFileIO:
    """The real file system."""

    def open(self, path: str, flags: int) -> int:
        return open_private(path, flags)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write_all(self, fd: int, data: bytes) -> None:
        write_all(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        os.pwrite(fd, data, offset)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return os.pread(fd, n, offset)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)  # data and the size that reaches it; mtime need not hit the disk

    def fsync_dir(self, path: str) -> None:
        fsync_dir(path)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def file_size(self, path: str) -> int:
        return os.stat(path, follow_symlinks=False).st_size

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def makedirs(self, path: str) -> None:
        make_private_dir(path)

    def tighten_dir(self, path: str) -> int | None:
        return tighten_dir(path)

    def lock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unlink(self, path: str) -> None:
        unlink_if_present(path)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def tree_size(self, path: str) -> int:
        total = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
        return total


OS: FileIO = OsFileIO()


def fsync_all(
    io: FileIO, fds: list[int], dirs: list[str], pool: Executor | None = None, paths: Iterable[str] = ()
) -> None:
    """fdatasync each file (one closed meanwhile is skipped), each file named in ``paths``
    (opened for it; one removed meanwhile is skipped) and fsync each directory (one removed
    meanwhile is skipped): the group commit's one batch of syncs.

    With a ``pool`` the syncs of a batch run in parallel: the file system then
    commits them together, so a batch of several files (segments, ack files)
    costs about one sync instead of one per file.  The first error is raised
    once all have finished."""

    def sync_file(fd: int) -> None:
        try:
            io.fdatasync(fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:  # a segment deleted meanwhile needs no sync
                raise

    def sync_dir(d: str) -> None:
        try:
            io.fsync_dir(d)
        except FileNotFoundError:
            pass

    def sync_path(path: str) -> None:
        try:
            fd = io.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            io.fdatasync(fd)
        finally:
            io.close(fd)

    paths = list(paths)
    if pool is None or len(fds) + len(dirs) + len(paths) < 2:
        for fd in fds:
            sync_file(fd)
        for p in paths:
            sync_path(p)
        for d in dirs:
            sync_dir(d)
        return
    futures = ([pool.submit(sync_file, fd) for fd in fds] + [pool.submit(sync_path, p) for p in paths]
               + [pool.submit(sync_dir, d) for d in dirs])
    wait(futures)
    for f in futures:
        f.result()
