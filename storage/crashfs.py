"""An in-memory file system that forgets what was not fsync'd: power loss, simulated.

Theory of operation
-------------------
:class:`CrashFS` implements :class:`storage.fileio.FileIO` on a tree of
in-memory inodes.  Each file keeps two contents: the *volatile* one that reads
see, and the *durable* one as of its last fsync.  Each directory keeps two
tables of entries: the volatile one that lookups use, and the durable one as of
its last directory fsync.  So a file created, renamed or removed is only
durably so once its directory has been fsync'd, and its bytes only once the
file has, as POSIX promises and no more (the rules CrashMonkey and ALICE test
against).

:meth:`CrashFS.crash` returns the file system a power loss at this instant
would leave: the tree reachable through durable entries only, each file with
its durable content.  Given a random generator it also keeps, per file, a
random prefix of the bytes appended since the last fsync (a disk may persist
some unsynced writes, in order), or the unsynced content of a rewritten file
whole.  Every operation calls :attr:`CrashFS.before_op` (if set) with its
sequence number first, so that a test can take a crash image before any
chosen operation; :attr:`CrashFS.fail` makes a chosen operation raise an
``OSError`` instead (a failing disk).

This module is test support: the broker runs on :data:`storage.fileio.OS`.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable


class _File:
    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""


class _Dir:
    __slots__ = ("entries", "durable")

    def __init__(self) -> None:
        self.entries: dict[str, _File | _Dir] = {}
        self.durable: dict[str, _File | _Dir] = {}


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class CrashFS:
    """A FileIO whose :meth:`crash` keeps only what fsyncs made durable."""

    def __init__(self, root: _Dir | None = None) -> None:
        self.root = root if root is not None else _Dir()
        self.fds: dict[int, tuple[_File, int, str]] = {}
        self.pos: dict[int, int] = {}  # the file offset of descriptors not opened O_APPEND
        self.next_fd = 3
        self.ops = 0
        self.before_op: Callable[[int, str, str], None] | None = None
        self.fail: Callable[[int, str, str], OSError | None] | None = None
        self._lock = threading.RLock()  # the store fsyncs from a worker thread

    # -- the tree -------------------------------------------------------------
    def _op(self, name: str, path: str) -> None:
        self.ops += 1
        if self.before_op is not None:
            self.before_op(self.ops, name, path)
        if self.fail is not None:
            exc = self.fail(self.ops, name, path)
            if exc is not None:
                raise exc

    @staticmethod
    def _parts(path: str) -> list[str]:
        return [p for p in os.path.normpath(path).split("/") if p]

    def _lookup(self, path: str) -> _File | _Dir | None:
        node: _File | _Dir = self.root
        for part in self._parts(path):
            if not isinstance(node, _Dir):
                return None
            nxt = node.entries.get(part)
            if nxt is None:
                return None
            node = nxt
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise _err(errno.EINVAL, path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if parent is None:
            raise _err(errno.ENOENT, path)
        if not isinstance(parent, _Dir):
            raise _err(errno.ENOTDIR, path)
        return parent, parts[-1]

    def _file_of(self, fd: int) -> tuple[_File, int, str]:
        try:
            return self.fds[fd]
        except KeyError:
            raise _err(errno.EBADF, str(fd)) from None

    # -- FileIO ---------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        with self._lock:
            self._op("open", path)
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                if not flags & os.O_CREAT:
                    raise _err(errno.ENOENT, path)
                node = parent.entries[name] = _File()
            elif flags & os.O_CREAT and flags & os.O_EXCL:
                raise _err(errno.EEXIST, path)
            if isinstance(node, _Dir):
                raise _err(errno.EISDIR, path)
            if flags & os.O_TRUNC:
                del node.data[:]
            fd = self.next_fd
            self.next_fd += 1
            self.fds[fd] = (node, flags, path)
            return fd

    def close(self, fd: int) -> None:
        with self._lock:
            self._op("close", str(fd))
            self._file_of(fd)
            del self.fds[fd]
            self.pos.pop(fd, None)

    def write_all(self, fd: int, data: bytes) -> None:
        with self._lock:
            f, flags, path = self._file_of(fd)
            self._op("write", path)
            if flags & os.O_APPEND:
                f.data += data
            else:
                pos = self.pos.get(fd, 0)
                if len(f.data) < pos:
                    f.data += bytes(pos - len(f.data))
                f.data[pos : pos + len(data)] = data
                self.pos[fd] = pos + len(data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        with self._lock:
            f, _flags, path = self._file_of(fd)
            self._op("pwrite", path)
            if len(f.data) < offset:
                f.data += bytes(offset - len(f.data))
            f.data[offset : offset + len(data)] = data

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        with self._lock:
            f, _flags, _path = self._file_of(fd)
            return bytes(f.data[offset : offset + n])

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            f, _flags, path = self._file_of(fd)
            self._op("truncate", path)
            if size <= len(f.data):
                del f.data[size:]
            else:
                f.data += bytes(size - len(f.data))

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            f, _flags, path = self._file_of(fd)
            self._op("fsync", path)
            f.durable = bytes(f.data)

    def fsync_dir(self, path: str) -> None:
        with self._lock:
            self._op("fsync_dir", path)
            node = self._lookup(path)
            if node is None:
                raise _err(errno.ENOENT, path)
            if not isinstance(node, _Dir):
                raise _err(errno.ENOTDIR, path)
            node.durable = dict(node.entries)

    def _file(self, path: str) -> _File:
        """The file at ``path`` (ENOENT, EISDIR as the OS would say); the caller holds the lock."""
        node = self._lookup(path)
        if node is None:
            raise _err(errno.ENOENT, path)
        if isinstance(node, _Dir):
            raise _err(errno.EISDIR, path)
        return node

    def read_file(self, path: str) -> bytes:
        with self._lock:
            return bytes(self._file(path).data)

    def file_size(self, path: str) -> int:
        with self._lock:
            return len(self._file(path).data)

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            node = self._lookup(path)
            if node is None:
                raise _err(errno.ENOENT, path)
            if not isinstance(node, _Dir):
                raise _err(errno.ENOTDIR, path)
            return list(node.entries)

    def isdir(self, path: str) -> bool:
        with self._lock:
            return isinstance(self._lookup(path), _Dir)

    def exists(self, path: str) -> bool:
        with self._lock:
            return self._lookup(path) is not None

    def makedirs(self, path: str) -> None:
        with self._lock:
            node: _File | _Dir = self.root
            for part in self._parts(path):
                if not isinstance(node, _Dir):
                    raise _err(errno.ENOTDIR, path)
                nxt = node.entries.get(part)
                if nxt is None:
                    self._op("mkdir", path)
                    nxt = node.entries[part] = _Dir()
                node = nxt
            if not isinstance(node, _Dir):
                raise _err(errno.EEXIST, path)

    def tighten_dir(self, path: str) -> int | None:
        return None

    def lock(self, fd: int) -> None:
        self._file_of(fd)

    def unlink(self, path: str) -> None:
        with self._lock:
            self._op("unlink", path)
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if isinstance(node, _Dir):
                raise _err(errno.EISDIR, path)
            parent.entries.pop(name, None)

    def replace(self, src: str, dst: str) -> None:
        with self._lock:
            self._op("rename", src)
            sp, sname = self._parent(src)
            dp, dname = self._parent(dst)
            node = sp.entries.get(sname)
            if node is None:
                raise _err(errno.ENOENT, src)
            del sp.entries[sname]
            dp.entries[dname] = node

    def rmtree(self, path: str) -> None:
        with self._lock:
            self._op("rmtree", path)
            try:
                parent, name = self._parent(path)
            except OSError:
                return
            node = parent.entries.pop(name, None)
            # the removal of each entry below is volatile too: a crash before the
            # parent's fsync brings the whole tree back as it was durably
            if isinstance(node, _Dir):
                _clear(node)

    def tree_size(self, path: str) -> int:
        with self._lock:
            node = self._lookup(path)
            return _size(node) if node is not None else 0

    # -- power loss -------------------------------------------------------------
    def crash(self, rng: random.Random | None = None) -> "CrashFS":
        """The file system a power loss now would leave (open files are closed)."""
        with self._lock:
            memo: dict[int, _File | _Dir] = {}
            root = _durable_copy(self.root, memo, rng)
            assert isinstance(root, _Dir)
            return CrashFS(root)

    def snapshot(self) -> dict[str, bytes]:
        """Every file's current content by path (for tests' own checks)."""
        with self._lock:
            out: dict[str, bytes] = {}
            _walk(self.root, "", out)
            return out


def _clear(d: _Dir) -> None:
    for child in d.entries.values():
        if isinstance(child, _Dir):
            _clear(child)
    d.entries = {}


def _size(node: _File | _Dir) -> int:
    if isinstance(node, _File):
        return len(node.data)
    return sum(_size(c) for c in node.entries.values())


def _walk(d: _Dir, prefix: str, out: dict[str, bytes]) -> None:
    for name, child in d.entries.items():
        if isinstance(child, _Dir):
            _walk(child, f"{prefix}/{name}", out)
        else:
            out[f"{prefix}/{name}"] = bytes(child.data)


def _durable_copy(node: _File | _Dir, memo: dict[int, _File | _Dir], rng: random.Random | None) -> _File | _Dir:
    got = memo.get(id(node))
    if got is not None:
        return got
    if isinstance(node, _File):
        f = _File()
        memo[id(node)] = f
        kept = node.durable
        data = bytes(node.data)
        if rng is not None and data != kept and rng.random() < 0.5:
            if data.startswith(kept):
                kept = data[: len(kept) + rng.randint(0, len(data) - len(kept))]
            else:
                kept = data
        f.data = bytearray(kept)
        f.durable = kept
        return f
    d = _Dir()
    memo[id(node)] = d
    for name, child in node.durable.items():
        d.entries[name] = _durable_copy(child, memo, rng)
    d.durable = dict(d.entries)
    return d
