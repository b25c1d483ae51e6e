"""The admin verbs' client of a running broker's management API, and how they print answers.

Only the standard library (urllib) is used, so that the admin verbs stay light: they import
nothing of the engine.  Every failure is an :class:`AdminError`: one line on stderr, exit status
1 (69, as rabbitmqctl, when the broker cannot be reached: :class:`BrokerUnreachable`).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from typing import Any

import click

EX_UNAVAILABLE = 69  # as rabbitmqctl when the node cannot be reached


class AdminError(click.ClickException):
    """One clear line on stderr, exit status 1."""


class BrokerUnreachable(AdminError):
    """The management API cannot be reached: exit status 69, as rabbitmqctl."""

    exit_code = EX_UNAVAILABLE


def quote(name: str) -> str:
    """A name as one path segment of the API (``/`` is ``%2F``)."""
    return urllib.parse.quote(name, safe="")


class AdminApi:
    """A small client of the management API (urllib, basic auth, JSON)."""

    def __init__(self, url: str, user: str, password: str, as_json: bool = False, cacert: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        self.as_json = as_json
        self.cacert = cacert
        self._tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        """How an https URL's certificate is checked: against --cacert, else the system's CAs."""
        if self._tls is None:
            try:
                self._tls = ssl.create_default_context(cafile=self.cacert)
            except (OSError, ssl.SSLError) as e:
                raise AdminError(f"cannot load the CA bundle {self.cacert} (--cacert): {e}") from None
        return self._tls

    def call(self, method: str, path: str, body: Any = None, not_found: str | None = None,
             query: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer of ``METHOD /api/path`` (None if empty); ``not_found`` is
        the error text for a 404."""
        url = f"{self.url}/api/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Authorization": self.auth, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            context = self.tls_context() if url.startswith("https:") else None
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            reason = ""
            try:
                reason = json.loads(raw).get("reason", "")
            except (ValueError, AttributeError):
                reason = raw.decode(errors="replace").strip()
            if e.code == 404 and not_found:
                raise AdminError(not_found) from None
            if e.code == 401:
                raise AdminError(
                    f"the broker at {self.url} refused user '{self.user}': {reason or 'Login failed'} "
                    "(see --user/--password, BROKER_USER/BROKER_PASS)"
                ) from None
            raise AdminError(reason or f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            if isinstance(why, ssl.SSLCertVerificationError):
                raise AdminError(f"the certificate of the broker at {self.url} is not trusted: {why.verify_message}"
                                 " (give its CA with --cacert or BROKER_CACERT)") from None
            raise BrokerUnreachable(f"cannot reach the broker at {self.url}: {why}; is it running? (broker serve)") \
                from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise AdminError(f"the server at {self.url} did not answer JSON: is it a BurrowMQ management API?") \
                from None

    def exists(self, path: str) -> bool:
        """Whether ``GET /api/path`` finds something."""
        try:
            self.call("GET", path, not_found="\0")
        except AdminError as e:
            if e.message == "\0":
                return False
            raise
        return True


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return str(v)


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def print_rows(api: AdminApi, items: list[dict[str, Any]], columns: list[str], spec: dict[str, str]) -> None:
    """An aligned table (or JSON with --json) of ``columns`` of ``items``; ``spec`` maps a
    column's name to its dotted path in the API's JSON."""
    rows = [[_dig(it, spec.get(c, c)) for c in columns] for it in items]
    if api.as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2))
        return
    text = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    click.echo(line(columns))
    for r in text:
        click.echo(line(r))


def choose_columns(given: tuple[str, ...], default: list[str], spec: dict[str, str]) -> list[str]:
    """The columns asked for (``default`` if none), each checked against ``spec``."""
    cols = list(given) or default
    bad = [c for c in cols if c not in spec and not c.startswith("message_stats.")]
    if bad:
        raise click.UsageError(f"unknown column '{bad[0]}'; valid columns: {', '.join(spec)}")
    return cols
