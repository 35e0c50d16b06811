"""Connect latency through the gateway over TLS, beside plain TCP, paired in one run.

Two nats-servers with the same keys, one with a `tls { }` block on its client port (a CA
made on the fly, EC P-256 certificates), each with its own `nats-gateway serve` (OIDC,
SQLite audit, xkey on, the gateway's own connection to its server over the same
transport). Each round measures plain then TLS, one connect at a time, each connect a
new TCP connection (and with TLS a full handshake: nats-py resumes no session), so the
difference is what TLS adds to a worker's connect.

    .venv/bin/python bench/tls_connect.py --connects 300 --rounds 3 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _common import callout_stack, machine, write_section  # bench/ is on sys.path
from _load import Credential, percentile, sequential, wait_ready
from _systems import OIDC_POLICY, oidc_credential

from gateway.dev.issuer import DevIssuer
from gateway.dev.tlscerts import DevCa
from gateway.natsconf import ServerTls

MODES = ("plain TCP", "TLS")


def _oidc_toml(issuer: DevIssuer) -> str:
    return f"""[[oidc.issuers]]
issuer = "{issuer.issuer}"
audiences = ["nats-gateway"]"""


def _rounds(urls: dict[str, str], credentials: dict[str, Credential], rounds: int,
            connects: int, warmup: int) -> dict[str, list[list[float]]]:
    samples: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    for number in range(rounds):
        for mode in MODES:
            taken = sequential(urls[mode], credentials[mode], connects, warmup)
            samples[mode].append(taken.latencies)
            print(f"round {number + 1} {mode}: p50 {percentile(taken.latencies, 0.5):.2f} ms, "
                  f"{taken.failed} failed connects", flush=True)
    return samples


def report(samples: dict[str, list[list[float]]], command: str) -> str:
    rows = ["| transport | p50 ms | p90 ms | p99 ms | p50 per round (ms) |",
            "|---|---|---|---|---|"]
    for mode in MODES:
        every = [s for taken in samples[mode] for s in taken]
        per_round = ", ".join(f"{percentile(t, 0.5):.2f}" for t in samples[mode])
        rows.append(f"| {mode} | {percentile(every, 0.5):.2f} | {percentile(every, 0.9):.2f} | "
                    f"{percentile(every, 0.99):.2f} | {per_round} |")
    added = [percentile(t, 0.5) - percentile(p, 0.5)
             for t, p in zip(samples["TLS"], samples["plain TCP"], strict=True)]
    return "\n\n".join([
        "## Connect through the gateway: TLS beside plain TCP",
        f"Command: `{command}`",
        f"Machine: {machine()}",
        "Same gateway configuration (OIDC, SQLite audit, xkey on) behind two nats-servers, "
        "one with TLS on its client port (`tls { }` from `nats-config --tls-cert`, EC P-256, "
        "TLS 1.3); rounds alternate plain and TLS; every connect is a new connection and a "
        "full handshake. Run at a modest size on a 2-core machine shared with other work: "
        "compare the two rows of this table with each other, not with other sections.",
        "\n".join(rows),
        f"TLS adds a median of {statistics.median(added):.2f} ms to a connect (per round: "
        f"{', '.join(f'{a:.2f}' for a in added)}): the handshake, on a connect that also "
        "carries the callout, the identity check and the durable audit record.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connects", type=int, default=300, help="per round and transport")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    with DevIssuer() as issuer, ExitStack() as stack:
        def scratch() -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory()))

        ca = DevCa(scratch())
        cert = ca.issue("nats")
        tls = ServerTls(cert_file=str(cert.cert_file), key_file=str(cert.key_file))
        credential = oidc_credential(issuer)
        credentials = {"plain TCP": credential,
                       "TLS": dataclasses.replace(credential, ca_file=str(ca.ca_file))}
        urls = {}
        for mode in MODES:
            tmp = scratch()
            (tmp / "policies").mkdir()
            (tmp / "policies" / "bench.yaml").write_text(OIDC_POLICY.format(issuer=issuer.issuer))
            nats_tls = f'[nats.tls]\nca_file = "{ca.ca_file}"\n' if mode == "TLS" else ""
            system = stack.enter_context(callout_stack(
                tmp, extra_toml=f"{nats_tls}{_oidc_toml(issuer)}",
                tls=tls if mode == "TLS" else None))
            urls[mode] = system.url
            wait_ready(system.url, credentials[mode])
        samples = _rounds(urls, credentials, args.rounds, args.connects, args.warmup)
    command = shlex.join([".venv/bin/python", "bench/tls_connect.py", *sys.argv[1:]])
    section = report(samples, command)
    print(section)
    if args.write:
        write_section(args.write, "tls-connect", section)


if __name__ == "__main__":
    main()
