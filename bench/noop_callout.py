"""The floor for any auth callout service written in Python: a responder that answers
every request with the same fixed grant.

It does only what the protocol cannot do without: open the xkey-sealed request, read the
user nkey and server id out of the request JWT (without verifying it), sign a user JWT
and the response with the issuer account key, seal the answer and publish it. No
identity, no policy, no audit, no metrics. It uses the same nats-py, the same key and
JWT encoding code, the same xkey setting and the same garbage collector settings as the
gateway, so the difference between the two is the cost of the gateway's checks.

    python bench/noop_callout.py --url nats://127.0.0.1:PORT --keys DIR

Never deploy this: it grants everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

import nats
from nats.aio.msg import Msg

from gateway.heap import settle_heap_for_serving
from gateway.keyfiles import ISSUER_FILE, USER_FILE, XKEY_FILE
from gateway.natsjwt.claims import (
    MAX_REQUEST_JWT,
    Permissions,
    UserGrant,
    encode_grant_response,
    encode_user_jwt,
)
from gateway.natsjwt.codec import decode_unverified
from gateway.natsjwt.nkeys import CurveKeyPair, Prefix, SigningKeyPair
from gateway.natsjwt.xkey import open_sealed, seal

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
FIXED = Permissions(pub_allow=("bench.>",), sub_allow=("bench.>", "_INBOX.>"))


class NoopResponder:
    def __init__(self, issuer: SigningKeyPair, xkey: CurveKeyPair, account: str) -> None:
        self._issuer = issuer
        self._xkey = xkey
        self._account = account

    def answer(self, data: bytes, server_xkey: str) -> bytes:
        token = open_sealed(data, self._xkey, server_xkey).decode()
        claims = decode_unverified(token, max_length=MAX_REQUEST_JWT).claims
        now = int(time.time())
        user_nkey, server_id = claims["nats"]["user_nkey"], claims["nats"]["server_id"]["id"]
        grant = UserGrant(user_nkey=user_nkey, account=self._account, name="noop",
                          permissions=FIXED, expires=now + 3600)
        user_jwt = encode_user_jwt(grant, self._issuer, now=now)
        response = encode_grant_response(user_nkey=user_nkey, server_id=server_id,
                                         user_jwt=user_jwt, signer=self._issuer, now=now)
        return seal(response.encode(), self._xkey, server_xkey)


async def serve(url: str, keys: Path, account: str) -> None:
    issuer = SigningKeyPair.from_seed((keys / ISSUER_FILE).read_text().strip(), Prefix.ACCOUNT)
    xkey = CurveKeyPair.from_seed((keys / XKEY_FILE).read_text().strip())
    responder = NoopResponder(issuer, xkey, account)
    nc = await nats.connect(url, nkeys_seed_str=(keys / USER_FILE).read_text().strip(),
                            max_reconnect_attempts=-1, reconnect_time_wait=0.5)

    async def on_request(msg: Msg) -> None:
        server_xkey = (msg.headers or {}).get("Nats-Server-Xkey", "")
        await msg.respond(responder.answer(msg.data, server_xkey))

    await nc.subscribe(AUTH_SUBJECT, queue="nats-gateway", cb=on_request)
    await nc.flush()
    settle_heap_for_serving()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", type=Path, required=True,
                        help="directory written by gateway.keyfiles.generate_keys")
    parser.add_argument("--account", default="APP")
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.keys, args.account))


if __name__ == "__main__":
    main()
