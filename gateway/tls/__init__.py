"""TLS for the connections the gateway and its workers make (issue 23).

    context.py     build client contexts from CA, certificate and key files; check the
                   audit API's server files at start (one-line errors, no key material)
    failures.py    say in one line why a handshake failed (expired, untrusted CA, wrong
                   host name, client certificate refused), from OpenSSL's verify codes
    natsclient.py  a nats-py client that refuses a server offering no TLS when TLS was
                   asked for, and ends its first connect on a certificate failure

Only the standard library's ``ssl`` and nats-py: the worker side imports this too.
"""

from gateway.tls.context import TlsFiles, check_server_files, client_context
from gateway.tls.failures import describe_tls_failure, tls_failure_in

__all__ = ["TlsFiles", "check_server_files", "client_context", "describe_tls_failure",
           "tls_failure_in"]
