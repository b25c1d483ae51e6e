"""The TLS certificates the listeners serve: listing them, and reloading them from their files."""

from __future__ import annotations

from typing import Any

from ..tls import TLSConfigError
from .http import Ctx, Router, bad_request

routes = Router()


@routes.route("api/certificates")
async def certificates(ctx: Ctx) -> Any:
    """Each TLS listener's certificate file, subject and expiry."""
    ctx.require_monitor()
    return [rc.describe() for rc in ctx.broker.certificates.contexts]


@routes.route("api/certificates/reload", "POST")
async def reload_certificates(ctx: Ctx) -> Any:
    """Every listener's certificate, key and CA from their files again (as SIGHUP); all or none."""
    ctx.require_admin()
    try:
        return ctx.broker.certificates.reload()
    except TLSConfigError as exc:
        raise bad_request(f"certificates not reloaded (those in use stay): {exc}") from None
