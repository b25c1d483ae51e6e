"""TLS for the broker's listeners: checked certificate files, server contexts, and their reload.

Theory of operation
-------------------
A listener that speaks TLS (AMQPS, the management API, the metrics endpoint) holds a
:class:`ReloadableContext`: the files it was configured with and the ``ssl.SSLContext`` built
from them.  Building a context checks the files first, so that a bad one is reported in one line
naming the file and the problem: missing or unreadable, not PEM, an expired certificate, an
encrypted key without (or with a wrong) password, a key that does not match the certificate, a CA
bundle that cannot be loaded.  ``broker serve`` builds every context before it starts; a failure
stops the start.

Every context has the same modern defaults: TLS 1.2 and 1.3 only, the ssl module's secure cipher
list (forward secrecy, no SHA-1 MACs), no compression, no renegotiation, the server's cipher
preference.

Reload (SIGHUP, ``broker reload-certs``) builds new contexts from the same paths; only when all of
them build are they swapped in, so a half-rotated set of files changes nothing.  How a listener
picks up the new context:

* the AMQPS listener (broker/amqps.py) starts each accepted socket's handshake with ``context``
  as it is at that moment: certificate, key and CA bundle all change for new connections;
* an HTTP listener hands its server one *front* context for good; that context's SNI callback,
  which OpenSSL runs early in every handshake (with or without a server name from the client),
  switches the connection to the current context, whose certificate and key then answer.

Connections already open keep the certificate they were opened with.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .certinfo import rfc4514

log = logging.getLogger("broker.tls")

DEFAULT_TLS_PORT = 5671
MAX_PEM_BYTES = 1 << 20  # a certificate chain or key file larger than this is refused
_CERT_REQS = {"none": ssl.CERT_NONE, "peer": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


class TLSConfigError(ValueError):
    """A TLS file or setting that cannot be used; the text is one line naming it."""


@dataclass(frozen=True)
class CertFiles:
    """A certificate chain and its private key (PEM), with the options that named them."""

    cert: str
    key: str
    password: str | None = None
    cert_option: str = "--tls-cert"
    key_option: str = "--tls-key"


@dataclass(frozen=True)
class ClientVerification:
    """How a listener checks client certificates: ``none``, ``peer`` (checked when sent) or
    ``require`` (a client without a valid certificate is refused), against the CA bundle ``ca``."""

    mode: str = "none"
    ca: str | None = None
    ca_option: str = "--tls-ca"


def _read(path: str, what: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TLSConfigError(f"{what} {path} ({option}) cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TLSConfigError(f"{what} {path} ({option}) is larger than {MAX_PEM_BYTES} bytes")
    return data


def check_cert_files(files: CertFiles, now: datetime.datetime | None = None) -> x509.Certificate:
    """The leaf certificate of ``files`` once every check passed; else :class:`TLSConfigError`."""
    cert_pem = _read(files.cert, "TLS certificate", files.cert_option)
    key_pem = _read(files.key, "TLS key", files.key_option)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TLSConfigError(
            f"TLS certificate {files.cert} ({files.cert_option}) holds no PEM certificate"
        ) from None
    leaf = chain[0]
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise TLSConfigError(
            f"TLS certificate {files.cert} ({files.cert_option}) expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    password = files.password.encode() if files.password is not None else None
    try:
        key = serialization.load_pem_private_key(key_pem, password=password)
    except TypeError:  # encrypted without a password, or a password for a clear key
        if password is None:
            raise TLSConfigError(
                f"TLS key {files.key} ({files.key_option}) is encrypted: give its password "
                "(--tls-key-password)"
            ) from None
        raise TLSConfigError(
            f"TLS key {files.key} ({files.key_option}) is not encrypted, but a password was given"
        ) from None
    except ValueError:
        why = "wrong password, or not a PEM private key" if password is not None else "not a PEM private key"
        raise TLSConfigError(f"TLS key {files.key} ({files.key_option}) cannot be loaded: {why}") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and the like
        raise TLSConfigError(f"TLS key {files.key} ({files.key_option}) cannot be loaded: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TLSConfigError(
            f"TLS key {files.key} ({files.key_option}) does not match the certificate {files.cert} "
            f"({files.cert_option})"
        )
    return leaf


def server_context(files: CertFiles, verify: ClientVerification | None = None
                   ) -> tuple[ssl.SSLContext, x509.Certificate]:
    """A checked server context with the modern defaults (see the module's docstring), and the
    certificate it serves."""
    verify = verify or ClientVerification()
    leaf = check_cert_files(files)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
                    | ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE)
    password = files.password

    def give_password() -> str:  # never OpenSSL's prompt on a terminal
        return password or ""

    try:
        ctx.load_cert_chain(files.cert, files.key, password=give_password)
    except (ssl.SSLError, OSError) as exc:  # the files changed since they were checked
        raise TLSConfigError(f"TLS certificate {files.cert} ({files.cert_option}) cannot be used: {exc}") from None
    if verify.mode != "none":
        if not verify.ca:
            raise TLSConfigError(f"--tls-verify {verify.mode} needs a CA bundle ({verify.ca_option})")
        _read(verify.ca, "TLS CA bundle", verify.ca_option)
        try:
            ctx.load_verify_locations(cafile=verify.ca)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(
                f"TLS CA bundle {verify.ca} ({verify.ca_option}) cannot be loaded: {exc}"
            ) from None
    ctx.verify_mode = _CERT_REQS[verify.mode]
    return ctx, leaf


class ReloadableContext:
    """One listener's TLS context, rebuilt from the same files on :meth:`prepare` / :meth:`swap`."""

    def __init__(self, name: str, files: CertFiles, verify: ClientVerification | None = None) -> None:
        self.name = name
        self.files = files
        self.verify = verify or ClientVerification()
        self.context, self.certificate = server_context(files, self.verify)
        self._front: ssl.SSLContext | None = None

    def prepare(self) -> tuple[ssl.SSLContext, x509.Certificate]:
        """A new context from the files as they are now (raises :class:`TLSConfigError`)."""
        return server_context(self.files, self.verify)

    def swap(self, built: tuple[ssl.SSLContext, x509.Certificate]) -> None:
        """New connections use this context (and certificate) from now on."""
        self.context, self.certificate = built

    def front_context(self) -> ssl.SSLContext:
        """The context to give a server that keeps one context for good (aiohttp's): each
        handshake is switched to the current context by the SNI callback."""
        if self._front is None:
            self._front = self.context
            self._front.sni_callback = self._to_current
        return self._front

    def _to_current(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self.context is not ctx:
            conn.context = self.context

    def describe(self) -> dict[str, str]:
        """The certificate file in use and its subject and expiry, for the reload's answer."""
        return {
            "listener": self.name,
            "certificate": self.files.cert,
            "subject": rfc4514(self.certificate.subject),
            "not_after": self.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class Certificates:
    """Every listener's :class:`ReloadableContext`: reloaded together, all or none."""

    def __init__(self) -> None:
        self.contexts: list[ReloadableContext] = []

    def add(self, context: ReloadableContext) -> ReloadableContext:
        self.contexts.append(context)
        return context

    def get(self, name: str) -> ReloadableContext | None:
        return next((rc for rc in self.contexts if rc.name == name), None)

    def reload(self) -> list[dict[str, str]]:
        """Rebuild every context from its files; swap them in only if all build (else
        :class:`TLSConfigError` and nothing changes).  Returns what each listener now serves."""
        if not self.contexts:
            raise TLSConfigError("no listener uses TLS: there are no certificates to reload")
        fresh = [(rc, rc.prepare()) for rc in self.contexts]
        for rc, built in fresh:
            rc.swap(built)
        done = [rc.describe() for rc in self.contexts]
        for d in done:
            log.info("TLS certificate reloaded for the %s: %s (%s), valid until %s", d["listener"], d["certificate"],
                     d["subject"], d["not_after"])
        return done
