"""The `nats-gateway` command: the only module that prints.

The top-level help (USAGE below) is what users read first: every command is in it, and
tests/unit/test_cli_help.py checks that it stays so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from gateway.cli_audit import add_audit_commands, run_audit_command
from gateway.cli_policy import add_policy_commands, run_policy_command
from gateway.config import GatewaySettings, load_settings, read_seed
from gateway.errors import ConfigError, GatewayError
from gateway.keyfiles import generate_keys, generate_operator_keys
from gateway.logs import configure_logging
from gateway.natsconf import (
    MERGE_ACCOUNTS_FILE,
    MERGE_AUTHORIZATION_FILE,
    CalloutServerConfig,
    ClusterNode,
    LeafRemote,
    ServerTls,
    merge_instructions,
    render_callout_config,
    render_cluster_block,
    render_leaf_remotes,
    render_merge_accounts,
    render_merge_authorization,
    render_server_name,
)
from gateway.natsjwt.nkeys import CurveKeyPair, Prefix, SigningKeyPair

__all__ = ["main"]

DEFAULT_DEV_DIR = Path(".nats-gateway/dev")

DESCRIPTION = """\
Authorize NATS clients (Airflow workers) by who they are and which DAG and task they
act for: nats-server asks the gateway through auth callout, the gateway checks the
worker's OIDC token or AWS IAM proof against the policies, answers with a user JWT
limited to that task, and records every decision in an audit log.

commands:
  nats-gateway dev [--state-dir DIR] [--api-port N] [--no-xkey] [--tls]
                                         everything on this machine, to try it out
  nats-gateway dev token --dag D --task T [--run R]
                                         print a credential envelope from the dev issuer
  nats-gateway dev issuer --public-url URL [--listen HOST:PORT]
                                         only the sample OIDC issuer (compose stack)
  nats-gateway keys generate --out DIR [--operator [--accounts A,B]]
                                         create the gateway's keys
  nats-gateway nats-config --config FILE [--mode full|merge] [--listen HOST:PORT]
                           [--tls-cert F --tls-key F [--tls-ca F --tls-verify]]
                                         the nats-server config that trusts those keys
  nats-gateway serve --config FILE [--workers N]
                                         run the gateway
  nats-gateway policy check DIR | explain ... | schema
                                         validate, explain and describe policies
  nats-gateway audit migrate | verify | purge --config FILE
                                         manage and verify the audit store

Run `nats-gateway COMMAND --help` for a command's options. Docs: README.md, docs/."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nats-gateway", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=os.environ.get("NATS_GATEWAY_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default: "
                             "$NATS_GATEWAY_LOG_LEVEL or INFO)")
    parser.add_argument("--log-format", choices=("text", "json"),
                        default=os.environ.get("NATS_GATEWAY_LOG_FORMAT", "text"),
                        help="json: one object per line (for log pipelines)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway from a config file")
    serve.add_argument("--config", type=Path, required=True,
                       help="the gateway's TOML config (docs/configuration.md)")
    serve.add_argument("--workers", type=int, default=1,
                       help="run N processes in the queue group (worker 0 serves the API)")

    keys = commands.add_parser("keys", help="manage the gateway's keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="create issuer, auth user and xkey")
    generate.add_argument("--out", type=Path, required=True,
                          help="directory for the key files (created; existing keys are "
                               "never overwritten)")
    generate.add_argument("--operator", action="store_true",
                          help="also the operator-mode keys: operator, system account, and "
                               "a key and signing key per target account")
    generate.add_argument("--accounts", default="APP",
                          help="operator mode: comma-separated target account names")

    nats_config = commands.add_parser(
        "nats-config", help="write the nats-server config that trusts the gateway's keys",
        description="Print (or write) the nats-server configuration for the gateway's keys. "
                    "--mode full: a whole server config, for a new server. --mode merge: "
                    "two files to include into an existing config, which keep its accounts "
                    "(and their JetStream) as they are. Operator mode (nats.mode = "
                    "\"operator\") always writes a whole config into --out.")
    nats_config.add_argument("--config", type=Path, required=True,
                             help="the gateway's TOML config (its keys and nats.url)")
    nats_config.add_argument("--mode", choices=("full", "merge"), default="full",
                             help="full (default): print a whole server config; merge: "
                                  "write the callout account and authorization block "
                                  "into --out, to include into your existing config")
    nats_config.add_argument("--listen", metavar="HOST:PORT",
                             help="where the server listens (default: host and port of "
                                  "nats.url; 0.0.0.0:4222 for every interface); full "
                                  "and operator mode")
    nats_config.add_argument("--monitor-port", type=int, metavar="PORT",
                             help="also serve nats-server's monitoring endpoints "
                                  "(/healthz, /varz) on this port of the listen host")
    nats_config.add_argument("--jetstream", metavar="STORE_DIR",
                             help="full mode: enable JetStream, storing in STORE_DIR, for "
                                  "the target account (streams of task events, docs/"
                                  "policies.md \"JetStream\")")
    nats_config.add_argument("--keep-user", action="append", default=[], metavar="NAME",
                             help="merge mode: a user of your existing config that keeps "
                                  "its static credentials instead of going through the "
                                  "callout (listed in auth_users; repeatable)")
    nats_config.add_argument("--tls-cert", type=Path, metavar="FILE",
                             help="full mode: serve the client port over TLS with this "
                                  "certificate (PEM, with its chain)")
    nats_config.add_argument("--tls-key", type=Path, metavar="FILE",
                             help="the certificate's key (with --tls-cert)")
    nats_config.add_argument("--tls-ca", type=Path, metavar="FILE",
                             help="CA bundle nats-server checks client certificates "
                                  "against (with --tls-verify)")
    nats_config.add_argument("--tls-verify", action="store_true",
                             help="require a client certificate signed by --tls-ca from "
                                  "every client (mutual TLS; the gateway then needs "
                                  "nats.tls.cert_file)")
    nats_config.add_argument("--out", type=Path,
                             help="merge and operator mode: directory to write the files "
                                  "into (operator: nats-server.conf, gateway.jwt, "
                                  "worker.creds)")
    nats_config.add_argument("--keys", type=Path,
                             help="operator mode: keys directory (default: the issuer "
                                  "seed's directory)")
    _add_topology_arguments(nats_config)

    dev = commands.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--state-dir", type=Path, default=DEFAULT_DEV_DIR,
                     help=f"keys, configs, logs and the audit database of the dev stack "
                          f"(default: {DEFAULT_DEV_DIR})")
    dev.add_argument("--api-port", type=int, default=8080,
                     help="port of the audit API (default: 8080)")
    dev.add_argument("--policy-dir", type=Path, default=Path("policies"),
                     help="policy directory (default: policies)")
    dev.add_argument("--host", default="127.0.0.1",
                     help="address nats-server and the audit API listen on (default: "
                          "127.0.0.1; 0.0.0.0 inside a container)")
    dev.add_argument("--nats-port", type=int, default=-1,
                     help="nats-server's port (default: any free port)")
    dev.add_argument("--no-xkey", action="store_true",
                     help="do not encrypt callout requests (xkey is on by default)")
    dev.add_argument("--tls", action="store_true",
                     help="TLS on nats-server and the audit API, with a CA made in the "
                          "state dir (STATE_DIR/tls/ca.pem); off by default")
    dev_commands = dev.add_subparsers(dest="dev_command")
    token = dev_commands.add_parser("token", help="print a credential envelope")
    token.add_argument("--dag", required=True, help="the DAG id to ask for")
    token.add_argument("--task", required=True, help="the task id to ask for")
    token.add_argument("--run", default=None, help="the run id to ask for (optional)")
    token.add_argument("--subject", default=None, help="token subject (default: client id)")
    sample = dev_commands.add_parser(
        "issuer", help="run only the sample OIDC issuer (for the compose stack)")
    sample.add_argument("--listen", default="0.0.0.0:9000", help="HOST:PORT")
    sample.add_argument("--public-url", required=True,
                        help="the issuer URL clients and the gateway use, e.g. http://oidc:9000")

    add_policy_commands(commands)
    add_audit_commands(commands)
    return parser


def _serve(config: Path) -> int:
    settings = load_settings(config)
    asyncio.run(_run_gateway(settings))
    return 0


async def _run_gateway(settings: GatewaySettings, on_started: str = "") -> None:
    from gateway.heap import settle_heap_for_serving
    from gateway.runtime import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(settings)
    gateway.reload_policies_on_sighup()  # before start: SIGHUP's default would kill us
    try:
        if not await _start_unless_stopped(gateway.start(), stop):
            return
        settle_heap_for_serving()
        if on_started:
            print(on_started.replace("{api_port}", str(gateway.api_port)), flush=True)
        await stop.wait()
    finally:
        await gateway.stop()


async def _start_unless_stopped(start: Coroutine[None, None, None],
                                stop: asyncio.Event) -> bool:
    """Run ``start`` unless a signal comes first (waiting for nats-server has no end);
    False when stopped. A start that fails raises."""
    starting = asyncio.ensure_future(start)
    signalled = asyncio.ensure_future(stop.wait())
    await asyncio.wait((starting, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    return False


def _keys_generate(out: Path, operator: bool, accounts: str) -> int:
    publics = generate_keys(out)
    if operator:
        names = [a.strip() for a in accounts.split(",") if a.strip()]
        for file, public in generate_operator_keys(out, names).items():
            print(f"{file}: {public}")
    print(f"wrote {out}/issuer.nk, auth-user.nk, xkey.nk, audit-checkpoint.key "
          "(mode 0600; keep them secret)")
    print(f"issuer account (auth_callout.issuer): {publics.issuer_account}")
    print(f"auth user nkey (auth_callout.auth_users): {publics.auth_user}")
    print(f"xkey (auth_callout.xkey):                 {publics.xkey}")
    print(f"audit checkpoint key (audit.checkpoint_key_file): {publics.checkpoint}")
    return 0


def _listen_address(listen: str | None, nats_url: str) -> tuple[str, int]:
    """--listen, or the host and port the gateway itself connects to (nats.url)."""
    if listen is None:
        url = urlsplit(nats_url.split(",")[0].strip())
        try:
            port = url.port or 4222
        except ValueError as exc:
            raise ConfigError(f"nats.url `{nats_url}` has a bad port: pass --listen") from exc
        return url.hostname or "127.0.0.1", port
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.lstrip("-").isdigit():
        raise ConfigError(f"--listen `{listen}` must be HOST:PORT")
    return host.strip("[]"), int(port_text)


def _callout_server_config(args: argparse.Namespace, settings: GatewaySettings, host: str,
                           port: int) -> CalloutServerConfig:
    issuer = SigningKeyPair.from_seed(read_seed(settings.keys.issuer_seed_file, "issuer"),
                                      Prefix.ACCOUNT)
    user = SigningKeyPair.from_seed(read_seed(settings.nats.user_seed_file, "nats user"),
                                    Prefix.USER)
    xkey = None
    if settings.keys.xkey_seed_file is not None:
        xkey = CurveKeyPair.from_seed(read_seed(settings.keys.xkey_seed_file, "xkey"))
    return CalloutServerConfig(
        extra_accounts=tuple(sorted(settings.nats.account_names
                                    - {settings.nats.target_account})),
        issuer_account=issuer.public_key, auth_user_nkey=user.public_key,
        target_account=settings.nats.target_account, auth_account=settings.nats.auth_account,
        xkey=xkey.public_key if xkey else None, host=host, port=port,
        auth_timeout_seconds=settings.nats.auth_timeout_seconds, http_port=args.monitor_port,
        static_users=tuple(args.keep_user), tls=_server_tls(args),
        jetstream_store_dir=args.jetstream,
    )


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The client port's TLS from --tls-* (absolute paths: nats-server resolves relative
    ones against its working directory, not the config's)."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_ca is not None or args.tls_verify:
            raise ConfigError("--tls-ca and --tls-verify need --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.mode == "merge":
        raise ConfigError("--tls-* is for --mode full: add a `tls { }` block to your "
                          "existing config yourself (docs/operations.md)")
    ca = str(args.tls_ca.resolve()) if args.tls_ca is not None else None
    try:
        return ServerTls(cert_file=str(args.tls_cert.resolve()),
                         key_file=str(args.tls_key.resolve()), ca_file=ca,
                         verify=args.tls_verify)
    except ValueError as exc:
        raise ConfigError(f"{exc}: pass --tls-ca") from None


def _write_merge_files(cfg: CalloutServerConfig, out: Path | None) -> int:
    if out is None:
        raise ConfigError("merge mode writes two files to include: pass --out DIR")
    out.mkdir(parents=True, exist_ok=True)
    (out / MERGE_ACCOUNTS_FILE).write_text(render_merge_accounts(cfg))
    (out / MERGE_AUTHORIZATION_FILE).write_text(render_merge_authorization(cfg))
    print(f"wrote {out / MERGE_ACCOUNTS_FILE} and {out / MERGE_AUTHORIZATION_FILE}")
    print(merge_instructions(), end="")
    targets = ", ".join(sorted((*cfg.extra_accounts, cfg.target_account)))
    print(f"granted users are placed in account(s) {targets}: each must exist in your "
          "accounts block")
    return 0


def _nats_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    host, port = _listen_address(args.listen, settings.nats.url)
    topology = _topology_blocks(args)
    if settings.nats.mode == "operator" and (args.tls_cert or args.tls_key):
        raise ConfigError("--tls-* is for config mode: add a `tls { }` block to the "
                          "operator-mode server config yourself (docs/operations.md)")
    if args.jetstream and (args.mode == "merge" or settings.nats.mode == "operator"):
        raise ConfigError("--jetstream is for a whole config-mode server: merged configs "
                          "keep their accounts' JetStream settings, operator mode sets it "
                          "in account JWTs")
    if settings.nats.mode == "operator":
        from gateway.operator_setup import write_operator_files

        if topology:
            raise ConfigError("--cluster-* and --leaf-remote are for config mode: add the "
                              "blocks to the written nats-server.conf by hand")
        if args.mode == "merge":
            raise ConfigError("merge mode is for config mode; operator mode keeps accounts "
                              "in JWTs (docs/operator-mode.md)")
        if args.out is None:
            raise ConfigError("operator mode writes several files: pass --out DIR")
        files = write_operator_files(settings, args.keys or settings.keys.issuer_seed_file.parent,
                                     args.out, host=host, port=port)
        print(f"wrote {files.server_config} (nats-server -c), {files.gateway_jwt} "
              f"(nats.user_jwt_file), {files.worker_creds} (workers' sentinel, mode 0600)")
        return 0
    cfg = _callout_server_config(args, settings, host, port)
    if settings.nats.tls_enabled and cfg.tls is None and args.mode == "full":
        raise ConfigError("the gateway connects with tls (nats.url or [nats.tls]): pass "
                          "--tls-cert and --tls-key so that the server speaks it")
    if args.mode == "merge":
        return _write_merge_files(cfg, args.out)
    print(render_callout_config(cfg))
    if topology:
        print(topology)
    return 0


def _add_topology_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cluster and leaf nodes (full mode; run once per node, docs/operations.md)")
    group.add_argument("--cluster-name", metavar="NAME",
                       help="the cluster's name, the same on every node")
    group.add_argument("--server-name", metavar="NAME",
                       help="this server's name, unique in the cluster (in audit records; "
                            "needed with --cluster-name)")
    group.add_argument("--cluster-listen", metavar="HOST:PORT",
                       help="where this node accepts routes from the other nodes")
    group.add_argument("--routes", metavar="URL,URL",
                       help="nats-route://HOST:PORT of every node (this one may be listed: "
                            "nats-server ignores a route to itself)")
    group.add_argument("--leaf-remote", action="append", default=[],
                       metavar="ACCOUNT=URL[,URL]",
                       help="an edge server: bind local ACCOUNT to the hub account of the "
                            "user in URL (nats-leaf://USER:PASSWORD@HUB:PORT, one per hub "
                            "node); give one for the callout account so the hub's gateway "
                            "answers (repeatable)")


def _cluster_node(args: argparse.Namespace) -> ClusterNode | None:
    given = {"--cluster-name": args.cluster_name, "--cluster-listen": args.cluster_listen,
             "--routes": args.routes, "--server-name": args.server_name}
    if not any(value for flag, value in given.items() if flag != "--server-name"):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise ConfigError(f"a cluster node also needs {', '.join(missing)}")
    routes = tuple(r.strip() for r in args.routes.split(",") if r.strip())
    for route in routes:
        url = urlsplit(route)
        if url.scheme not in ("nats-route", "nats", "tls") or not url.hostname or not _port(url):
            raise ConfigError(f"route `{route}` must be nats-route://HOST:PORT")
    host, port = _listen_address(args.cluster_listen, "")
    return ClusterNode(args.cluster_name, f"{host}:{port}", routes)


def _port(url: SplitResult) -> int | None:
    try:
        return url.port
    except ValueError:
        return None


def _leaf_remotes(specs: Sequence[str]) -> tuple[LeafRemote, ...]:
    remotes = []
    for spec in specs:
        account, _, joined = spec.partition("=")
        urls = tuple(url.strip() for url in joined.split(",") if url.strip())
        if not account or not urls or not all(_leaf_url(url) for url in urls):
            # the URL may hold the leaf user's password: never echo it
            raise ConfigError(f"--leaf-remote for account `{account}` must be "
                              "ACCOUNT=nats-leaf://USER:PASSWORD@HUB:PORT[,...]")
        remotes.append(LeafRemote(urls, account))
    return tuple(remotes)


def _leaf_url(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.scheme in ("nats-leaf", "nats", "tls") and bool(parts.hostname)
            and bool(_port(parts)))


def _topology_blocks(args: argparse.Namespace) -> str:
    """The cluster and leaf blocks to append to a whole config ("" for a single server)."""
    node = _cluster_node(args)
    remotes = _leaf_remotes(args.leaf_remote)
    if (node or remotes or args.server_name) and (args.mode == "merge"):
        raise ConfigError("--server-name, --cluster-* and --leaf-remote are for full mode: "
                          "add the blocks from a full-mode run to your config by hand")
    blocks = [render_server_name(args.server_name)] if args.server_name else []
    if node:
        blocks.append(render_cluster_block(node))
    if remotes:
        blocks.append(render_leaf_remotes(remotes))
    return "\n".join(blocks)


def _dev(args: argparse.Namespace) -> int:
    from gateway.dev.environment import DevEnvironment

    env = DevEnvironment(state_dir=args.state_dir, policy_dir=args.policy_dir,
                         api_port=args.api_port, xkey=not args.no_xkey, host=args.host,
                         nats_port=args.nats_port, tls=args.tls)
    settings = env.start()
    try:
        banner = _dev_banner(env, settings)
        asyncio.run(_run_gateway(settings, on_started=banner))
    finally:
        env.stop()
    return 0


def _dev_banner(env: object, settings: GatewaySettings) -> str:
    from gateway.dev.environment import DevEnvironment

    assert isinstance(env, DevEnvironment)
    return env.banner(settings)


def _dev_token(args: argparse.Namespace) -> int:
    from gateway.client import fetch_client_credentials_token, oidc_envelope
    from gateway.dev.environment import read_dev_state

    state = read_dev_state(args.state_dir)
    extra = {"audience": state["audience"], "dag_id": args.dag, "task_id": args.task}
    if args.subject:
        extra["subject"] = args.subject
    token = fetch_client_credentials_token(
        state["token_endpoint"], state["client_id"], state["client_secret"], **extra)
    print(oidc_envelope(token, dag_id=args.dag, task_id=args.task, run_id=args.run))
    return 0


def _dev_issuer(listen: str, public_url: str) -> int:
    """The sample issuer alone; its client secret comes from NATS_GATEWAY_SAMPLE_CLIENT_SECRET
    (a sample credential, set in the compose file)."""
    from gateway.dev.issuer import DevIssuer

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen `{listen}` must be HOST:PORT")
    secret = os.environ.get("NATS_GATEWAY_SAMPLE_CLIENT_SECRET")
    issuer = DevIssuer(host=host, port=int(port), public_url=public_url,
                       client_secret=secret).start()
    print(f"sample OIDC issuer {issuer.issuer} listening on {listen}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    issuer.stop()
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        if args.workers > 1:
            from gateway.api.listen import listen_socket
            from gateway.supervisor import supervise

            settings = load_settings(args.config)  # fail here, once, on a bad config
            if settings.api.enabled:  # ... or a taken port, before any worker joins the group
                listen_socket(settings.api.host, settings.api.port).close()
            return supervise(args.config, args.workers, log_level=args.log_level,
                             log_format=args.log_format)
        return _serve(args.config)
    if args.command == "keys":
        return _keys_generate(args.out, args.operator, args.accounts)
    if args.command == "nats-config":
        return _nats_config(args)
    if args.command == "policy":
        return run_policy_command(args)
    if args.command == "audit":
        return run_audit_command(args)
    if args.command == "dev" and args.dev_command == "token":
        return _dev_token(args)
    if args.command == "dev" and args.dev_command == "issuer":
        return _dev_issuer(args.listen, args.public_url)
    return _dev(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_logging(args.log_level, args.log_format)
        return _dispatch(args)
    except GatewayError as exc:
        print(f"nats-gateway: error: {exc.description}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
