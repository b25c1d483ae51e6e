"""What a TLS connection shows of itself, in RabbitMQ's terms, and the login name in its certificate.

RabbitMQ reports a TLS connection as ``ssl_protocol`` (``tlsv1.3``), ``ssl_key_exchange``
(``ecdhe_rsa``; ``any`` under TLS 1.3), ``ssl_cipher`` (``aes_256_gcm``), ``ssl_hash`` (``aead``
for AEAD ciphers, else the MAC's hash), and the client certificate's ``peer_cert_subject``,
``peer_cert_issuer`` (RFC 4514 strings, last RDN first) and ``peer_cert_validity``
(``2026-01-01T00:00:00Z - 2027-01-01T00:00:00Z``).  All are ``None`` on a plain connection.

The EXTERNAL login name is the certificate subject's common name (several are joined with ``,``),
or the whole subject string with ``distinguished_name``, as RabbitMQ's ``ssl_cert_login_from``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

# RabbitMQ's short names for the attributes cryptography would print as dotted OIDs
_ATTRIBUTE_NAMES = {
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GIVENNAME",
    NameOID.INITIALS: "INITIALS",
    NameOID.GENERATION_QUALIFIER: "GENERATIONQUALIFIER",
    NameOID.TITLE: "TITLE",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.PSEUDONYM: "PSEUDONYM",
    NameOID.EMAIL_ADDRESS: "EMAILADDRESS",
}
_CIPHER_NAMES: dict[str, dict[str, Any]] = {}  # OpenSSL's cipher name -> its details
_NO_TLS: dict[str, Any] = {
    "ssl": False, "ssl_protocol": None, "ssl_key_exchange": None, "ssl_cipher": None, "ssl_hash": None,
    "peer_cert_subject": None, "peer_cert_issuer": None, "peer_cert_validity": None,
}


def rfc4514(name: x509.Name) -> str:
    """A subject or issuer as RabbitMQ prints it (RFC 4514, last RDN first)."""
    return name.rfc4514_string(_ATTRIBUTE_NAMES)


def _stamp(t: Any) -> str:
    return str(t.strftime("%Y-%m-%dT%H:%M:%SZ"))


@dataclass(frozen=True)
class PeerCertificate:
    """A verified client certificate."""

    subject: str
    issuer: str
    validity: str
    common_names: tuple[str, ...]

    @classmethod
    def from_der(cls, der: bytes) -> "PeerCertificate":
        cert = x509.load_der_x509_certificate(der)
        cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        return cls(
            subject=rfc4514(cert.subject),
            issuer=rfc4514(cert.issuer),
            validity=f"{_stamp(cert.not_valid_before_utc)} - {_stamp(cert.not_valid_after_utc)}",
            common_names=cns,
        )

    def login_name(self, login_from: str) -> str | None:
        """The user name EXTERNAL logs in as (None: the certificate has no common name)."""
        if login_from == "distinguished_name":
            return self.subject
        return ",".join(self.common_names) or None


def _cipher_details(sslobj: Any, name: str) -> dict[str, Any]:
    details = _CIPHER_NAMES.get(name)
    if details is None:
        for c in sslobj.context.get_ciphers():
            _CIPHER_NAMES[c["name"]] = c
        details = _CIPHER_NAMES.get(name, {})
    return details


@dataclass(frozen=True)
class TLSInfo:
    """The TLS side of one connection: protocol, cipher suite, and the client certificate, if
    one was sent and verified."""

    protocol: str
    key_exchange: str
    cipher: str
    hash: str
    peer: PeerCertificate | None

    @classmethod
    def of(cls, sslobj: ssl.SSLObject | Any) -> "TLSInfo":
        name, version, _bits = sslobj.cipher() or ("", "", 0)
        d = _cipher_details(sslobj, name)
        kea = str(d.get("kea") or "kx-any").removeprefix("kx-")
        auth = str(d.get("auth") or "auth-any").removeprefix("auth-")
        key_exchange = "any" if kea == "any" else f"{kea}_{auth}"
        mac = "aead" if d.get("aead") else str(d.get("digest") or "")
        der = sslobj.getpeercert(binary_form=True)
        return cls(
            protocol=str(sslobj.version() or version).lower(),
            key_exchange=key_exchange,
            cipher=str(d.get("symmetric") or name).replace("-", "_"),
            hash=mac,
            peer=PeerCertificate.from_der(der) if der else None,
        )

    def as_json(self) -> dict[str, Any]:
        peer = self.peer
        return {
            "ssl": True,
            "ssl_protocol": self.protocol,
            "ssl_key_exchange": self.key_exchange,
            "ssl_cipher": self.cipher,
            "ssl_hash": self.hash,
            "peer_cert_subject": peer.subject if peer else None,
            "peer_cert_issuer": peer.issuer if peer else None,
            "peer_cert_validity": peer.validity if peer else None,
        }


def tls_json(info: TLSInfo | None) -> dict[str, Any]:
    """The ``ssl*`` and ``peer_cert_*`` fields of a connection in the management API."""
    return info.as_json() if info is not None else dict(_NO_TLS)
