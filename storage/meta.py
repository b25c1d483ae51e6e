"""Durable metadata: one JSON file (RabbitMQ's definitions shape), replaced atomically.

Write a temporary file, fsync it, rename it over the old one, fsync the
directory: a crash leaves either the old or the new file, never a mix.  Both
are private (0600) and never written through a symbolic link.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import logging
import os
from typing import Any

from .fileio import OS, FileIO

log = logging.getLogger("storage.meta")

FILENAME = "definitions.json"


def _special(v: Any) -> Any:
    """JSON for the values the json module cannot write (called by it, only for those)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        # kept as bytes (not text) so that a restored binding matches exactly as before
        return {"__bytes__": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, decimal.Decimal):
        return {"__decimal__": str(v)}
    if isinstance(v, datetime.datetime):
        return {"__timestamp__": v.timestamp()}
    return repr(v)


def _restore(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k == "__bytes__":
                return base64.b64decode(x)
            if k == "__decimal__":
                return decimal.Decimal(x)
            if k == "__timestamp__":
                return datetime.datetime.fromtimestamp(x, datetime.UTC)
        return {k: _restore(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x) for x in v]
    return v


def save(data_dir: str, definitions: dict, io: FileIO = OS) -> None:
    write(data_dir, encode(definitions), io)


def encode(definitions: dict) -> bytes:
    """The file's bytes for ``definitions`` (ValueError, UnicodeEncodeError for what cannot be written)."""
    return json.dumps(definitions, default=_special, ensure_ascii=False, separators=(",", ":")).encode()


def write(data_dir: str, raw: bytes, io: FileIO = OS) -> None:
    """Replace the file with ``raw``: once this returns, a crash leaves the new file."""
    path = os.path.join(data_dir, FILENAME)
    tmp = path + ".tmp"
    # a stale temp file, or a link planted in its place, is removed (unlink does not
    # follow links), never written through: O_EXCL creates a new file or fails
    io.unlink(tmp)
    fd = io.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        io.write_all(fd, raw)
        io.fdatasync(fd)
    finally:
        io.close(fd)
    io.replace(tmp, path)
    io.fsync_dir(data_dir)


def load(data_dir: str, io: FileIO = OS) -> dict:
    path = os.path.join(data_dir, FILENAME)
    try:
        return _restore(json.loads(io.read_file(path)))
    except FileNotFoundError:
        return {}
