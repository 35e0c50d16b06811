"""One line saying why a TLS handshake failed, from what OpenSSL reports.

``ssl.SSLCertVerificationError`` carries OpenSSL's ``verify_code``; the codes below are
``X509_V_ERR_*`` from OpenSSL's ``x509_vfy.h``. Other handshake failures are
``ssl.SSLError`` with a ``reason`` (the alert the peer sent). Libraries wrap both
(httpx's ``ConnectError``, asyncio's transports), so the cause chain is searched. Pure.
"""

from __future__ import annotations

import ssl

__all__ = ["describe_tls_failure", "tls_failure_in"]

_EXPIRED = 10
_NOT_YET_VALID = 9
_WRONG_HOST = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
# UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
# UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_UNTRUSTED
_UNTRUSTED = {2, 18, 19, 20, 21, 27}
_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate "
                                         "(set cert_file and key_file)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate's ca",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server refused the client certificate as "
                                       "expired",
    "WRONG_VERSION_NUMBER": "the server does not speak tls on this port",
}


def tls_failure_in(exc: BaseException | None) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc`` (itself, or in its cause/context chain)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_tls_failure(exc: ssl.SSLError, *, host: str, trust: str) -> str:
    """Why the handshake failed, for a one-line message: ``host`` is the name checked,
    ``trust`` says which CAs were trusted (`` `ca.pem` `` or "the system's ca store")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _EXPIRED:
            return "the server's certificate has expired"
        if code == _NOT_YET_VALID:
            return "the server's certificate is not valid yet"
        if code in _WRONG_HOST:
            return f"the server's certificate is not valid for host `{host}`"
        if code in _UNTRUSTED:
            return f"the server's certificate is not signed by a ca in {trust}"
        return f"the server's certificate was refused: {exc.verify_message.lower()}"
    reason = exc.reason or ""
    if reason in _ALERTS:
        return _ALERTS[reason]
    return f"tls handshake failed ({reason.lower() or type(exc).__name__.lower()})"
