"""Render the nats-server configuration that matches the gateway's keys (config mode).

The block holds only public keys: the auth callout issuer account (``A...``), the
gateway's xkey (``X...``) and the gateway's own NATS user nkey (``U...``), which
authenticates by signing the server nonce and so needs no password in the file.
``max_control_line`` is raised because the CONNECT line carries the credential
envelope, and OIDC tokens with many claims pass the 4 KB default (docs/envelope.md).

Two shapes for config mode. ``render_callout_config`` is a whole server config (listen,
accounts, ``system_account``) for a new server. ``render_merge_accounts`` and
``render_merge_authorization`` are the two pieces to add to an existing config: NATS
config has no block merge (a second ``accounts { }`` replaces the first, and with it the
user's accounts and their JetStream settings), but ``include`` works inside a block, so
the first piece is included *inside* the user's ``accounts { }`` and holds only the
callout account, and the second is included at top level. A whole config can also
carry TLS for the client port (``ServerTls``: certificate, key, and with ``verify`` the
CA of required client certificates); nats-server then refuses clients that do not
speak TLS.

Clusters and leaf nodes (``render_cluster_block``, ``render_leaf_remotes``) are separate
blocks appended to a whole config: every node of a cluster carries the same callout block
(the same issuer and xkey), because nats-server sends ``$SYS.REQ.USER.AUTH`` on the node
the client connected to and routes carry it to a replica subscribed on any node; each
server seals with its own curve key, and the gateway answers to the key in each request.
No I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["MERGE_ACCOUNTS_FILE", "MERGE_AUTHORIZATION_FILE", "CalloutServerConfig",
           "ClusterNode", "LeafRemote", "ServerTls", "merge_instructions",
           "render_callout_config", "render_cluster_block", "render_leaf_remotes",
           "render_merge_accounts", "render_merge_authorization", "render_operator_config",
           "render_server_name", "render_static_config"]

DEFAULT_MAX_CONTROL_LINE = 32 * 1024
MERGE_ACCOUNTS_FILE = "nats-gateway-accounts.conf"
MERGE_AUTHORIZATION_FILE = "nats-gateway-authorization.conf"


@dataclass(frozen=True)
class ServerTls:
    """TLS on the client port: the server's certificate and key, and with ``verify`` the
    CA whose client certificates it requires (mutual TLS)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False
    # nats-server's default handshake timeout is 0.5 s; a reconnect storm on a busy host
    # takes longer than that, and a timed-out handshake is one more retry per client.
    timeout_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.verify and not self.ca_file:
            raise ValueError("tls verify needs a ca file to check client certificates")


@dataclass(frozen=True)
class CalloutServerConfig:
    issuer_account: str
    auth_user_nkey: str
    target_account: str = "APP"
    auth_account: str = "AUTH"
    xkey: str | None = None
    host: str = "127.0.0.1"
    port: int = 4222
    auth_timeout_seconds: float = 2.0
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE
    ports_file_dir: str | None = None
    http_port: int | None = None
    extra_accounts: tuple[str, ...] = ()  # more accounts policies may place users in
    # Users of an existing config that keep their static credentials: with auth_callout
    # on, every user not in auth_users is sent to the callout.
    static_users: tuple[str, ...] = ()
    tls: ServerTls | None = None  # TLS on the client port (full mode)
    # JetStream for the target account (streams of task events, durable consumers):
    # the server's store directory; None leaves JetStream off.
    jetstream_store_dir: str | None = None


def _q(value: str) -> str:
    # JSON string quoting is valid nats-server config syntax and escapes everything.
    return json.dumps(value)


def _listen_lines(host: str, port: int, ports_file_dir: str | None) -> list[str]:
    lines = [f"listen: {_q(f'{host}:{port}')}"]
    if ports_file_dir:
        lines.append(f"ports_file_dir: {_q(ports_file_dir)}")
    return lines


def _tls_block(tls: ServerTls) -> str:
    lines = [f"  cert_file: {_q(tls.cert_file)}", f"  key_file: {_q(tls.key_file)}"]
    if tls.ca_file:
        lines.append(f"  ca_file: {_q(tls.ca_file)}")
    if tls.verify:
        lines.append("  verify: true")
    lines.append(f"  timeout: {tls.timeout_seconds}")
    return "tls {\n" + "\n".join(lines) + "\n}"


def _callout_account(cfg: CalloutServerConfig) -> str:
    return f"{cfg.auth_account} {{ users: [ {{ nkey: {_q(cfg.auth_user_nkey)} }} ] }}"


def _authorization_block(cfg: CalloutServerConfig) -> str:
    xkey_line = f"\n    xkey: {_q(cfg.xkey)}" if cfg.xkey else ""
    return f"""authorization {{
  timeout: {cfg.auth_timeout_seconds}
  auth_callout {{
    issuer: {_q(cfg.issuer_account)}
    auth_users: [ {", ".join(_q(u) for u in (cfg.auth_user_nkey, *cfg.static_users))} ]
    account: {cfg.auth_account}{xkey_line}
  }}
}}
"""


def _target_accounts(cfg: CalloutServerConfig) -> list[str]:
    return [cfg.target_account, *cfg.extra_accounts]


def _target_body(cfg: CalloutServerConfig, name: str) -> str:
    # Only the target account gets JetStream: the callout and system accounts never need it.
    if cfg.jetstream_store_dir is not None and name == cfg.target_account:
        return "jetstream: enabled "
    return ""


def render_callout_config(cfg: CalloutServerConfig) -> str:
    """A whole server config: for a new nats-server, or one the gateway's stack owns."""
    lines = [
        "# generated by `nats-gateway nats-config`: auth callout, config mode, whole server",
        *_listen_lines(cfg.host, cfg.port, cfg.ports_file_dir),
        f"max_control_line: {cfg.max_control_line}",
    ]
    if cfg.tls is not None:
        lines.append(_tls_block(cfg.tls))
    if cfg.http_port is not None:
        lines.append(f"http: {_q(f'{cfg.host}:{cfg.http_port}')}")
    if cfg.jetstream_store_dir is not None:
        lines.append(f"jetstream {{ store_dir: {_q(cfg.jetstream_store_dir)} }}")
    targets = "".join(f"\n  {name} {{ {_target_body(cfg, name)}}}"
                      for name in _target_accounts(cfg))
    lines.append(f"accounts {{\n  {_callout_account(cfg)}{targets}\n  SYS {{ }}\n}}")
    lines.append("system_account: SYS")
    lines.append(_authorization_block(cfg))
    return "\n".join(lines)


def render_merge_accounts(cfg: CalloutServerConfig) -> str:
    """The callout account, to be included inside an existing ``accounts { }`` block.
    Target accounts are named in comments only: defining one the user already has would
    replace it (its users, its JetStream) silently."""
    targets = ", ".join(_target_accounts(cfg))
    return "\n".join([
        "# generated by `nats-gateway nats-config --mode merge`: include this INSIDE your",
        "# `accounts { }` block. It defines only the account the gateway answers from.",
        f"# Granted users are placed in: {targets}. Each must be an account of your config;",
        "# add `NAME { }` to your accounts block for any that is missing (never a second",
        "# definition of one you have: it would replace yours).",
        _callout_account(cfg),
        "",
    ])


def render_merge_authorization(cfg: CalloutServerConfig) -> str:
    """The top-level part: the callout itself and a CONNECT line large enough for tokens."""
    return "\n".join([
        "# generated by `nats-gateway nats-config --mode merge`: include this at TOP LEVEL.",
        "# It is the server's `authorization` block: if your config has one already, merge",
        "# by hand instead. Every user not in `auth_users` now goes through the callout:",
        "# list users that keep their password with `nats-config --keep-user NAME`.",
        f"max_control_line: {cfg.max_control_line}",
        _authorization_block(cfg),
    ])


def merge_instructions() -> str:
    """What to add to an existing config so that it includes the two merge files.
    nats-server resolves an include relative to the including file, even a path that
    starts with `/`: the files go next to the server config."""
    return f"""copy both files next to your nats-server config, add two includes to it, and check
it with `nats-server -t -c FILE`:
accounts {{
  # ... your accounts, unchanged ...
  include {_q(MERGE_ACCOUNTS_FILE)}
}}
include {_q(MERGE_AUTHORIZATION_FILE)}
"""


def render_static_config(
    *, user: str, password: str, host: str = "127.0.0.1", port: int = 4222,
    ports_file_dir: str | None = None,
) -> str:
    """A plain password server with no callout: the floor that benchmarks compare against."""
    lines = [
        "# static password user, no auth callout (benchmark floor)",
        *_listen_lines(host, port, ports_file_dir),
        f"authorization {{ users: [ {{ user: {_q(user)}, password: {_q(password)} }} ] }}",
        "",
    ]
    return "\n".join(lines)


def render_operator_config(
    *, operator_jwt: str, system_account: str, account_jwts: dict[str, str],
    host: str = "127.0.0.1", port: int = 4222, ports_file_dir: str | None = None,
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE,
) -> str:
    """Operator mode: trust the operator, preload every account JWT (memory resolver).
    The auth callout itself is configured in the callout account's JWT."""
    preload = "\n".join(f"  {key}: {_q(jwt)}" for key, jwt in account_jwts.items())
    lines = [
        "# generated by `nats-gateway nats-config`: auth callout, operator mode",
        *_listen_lines(host, port, ports_file_dir),
        f"max_control_line: {max_control_line}",
        f"operator: {_q(operator_jwt)}",
        f"system_account: {_q(system_account)}",
        "resolver: MEMORY",
        f"resolver_preload: {{\n{preload}\n}}",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ClusterNode:
    """One node of a nats-server cluster: its unique name and where its routes meet.

    ``routes`` may name every node, this one included: nats-server drops a route to itself,
    so one list serves every node's config."""

    cluster_name: str
    listen: str  # HOST:PORT for routes from the other nodes
    routes: tuple[str, ...]  # nats-route://HOST:PORT of the nodes


def render_server_name(name: str) -> str:
    """A unique server name shows in every audit record (``server_name``) and in the
    server's logs, where the generated server id says nothing to an operator."""
    return f"server_name: {_q(name)}\n"


def render_cluster_block(node: ClusterNode) -> str:
    """``cluster { }``, appended to a whole callout config."""
    routes = "".join(f"\n    {_q(route)}" for route in node.routes)
    return "\n".join([
        "# cluster: every node carries the same auth_callout block above",
        "cluster {",
        f"  name: {_q(node.cluster_name)}",
        f"  listen: {_q(node.listen)}",
        f"  routes: [{routes}\n  ]",
        "}",
        "",
    ])


@dataclass(frozen=True)
class LeafRemote:
    """A leaf connection from an edge server to the hub, binding one local account to the
    hub account the URLs' user belongs to. Several URLs (one per hub node) let the leaf
    reconnect to another node when one dies."""

    urls: tuple[str, ...]  # nats-leaf://USER:PASSWORD@HUB:PORT (the hubs' leafnodes ports)
    account: str  # the local account bound to it


def render_leaf_remotes(remotes: tuple[LeafRemote, ...]) -> str:
    """``leafnodes { remotes [...] }`` for an edge server whose auth callout is answered
    by the gateway at the hub: the callout account is one of the remotes, so its
    ``$SYS.REQ.USER.AUTH`` requests travel to the hub's queue group (docs/operations.md)."""
    lines = [f"    {{ urls: [ {', '.join(_q(url) for url in r.urls)} ], account: {_q(r.account)} }}"
             for r in remotes]
    return "\n".join(["leafnodes {", "  remotes: [", *lines, "  ]", "}", ""])
