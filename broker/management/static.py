"""The web UI's files, served by the management listener at ``/`` (no login needed to load them).

The UI is a few static files shipped in the package (``broker/management/ui/``):
``index.html``, ES modules and one stylesheet.  Nothing comes from elsewhere, so
the UI works offline and behind a firewall.  The files are read once, at the
first request, and kept with their gzip form and an ETag: a browser revalidates
(``Cache-Control: no-cache``) and gets ``304`` while nothing changed.

Every answer carries a Content-Security-Policy that allows scripts, styles and
API calls from this origin only, and forbids framing.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from .http import not_found

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    """One file of the UI, ready to send."""

    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


class UiFiles:
    """The UI's files by URL path: ``/`` is ``index.html``, ``/ui/NAME`` is ``NAME``."""

    def __init__(self, package: str = "broker.management", folder: str = "ui") -> None:
        self.package = package
        self.folder = folder
        self._assets: dict[str, Asset] | None = None

    def _load(self) -> dict[str, Asset]:
        assets: dict[str, Asset] = {}
        for entry in resources.files(self.package).joinpath(self.folder).iterdir():
            name = entry.name
            ctype = TYPES.get(name[name.rfind("."):]) if "." in name else None
            if ctype is None or not entry.is_file():
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets["/" if name == "index.html" else "/ui/" + name] = Asset(
                body, gzip.compress(body, 9, mtime=0), ctype, etag
            )
        return assets

    def answer(self, request: web.Request) -> web.Response:
        """The file at the request's path (404 for anything else)."""
        if self._assets is None:
            self._assets = self._load()
        asset = self._assets.get(request.path)
        if asset is None:
            raise not_found()
        headers = dict(SECURITY_HEADERS)
        headers["ETag"] = asset.etag
        headers["Vary"] = "Accept-Encoding"
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        body = asset.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = asset.content_type
        return web.Response(body=body, headers=headers)
