"""Capture authorization request JWTs produced by the real nats-server, as test vectors.

Run: .venv/bin/python scripts/capture_request_vectors.py
Writes tests/vectors/auth_request_*.json. Only xkey-off requests are kept: an xkey-on
vector would need a curve seed in the repository; xkey is tested live instead. The
JWTs are signed by the server's per-process key and hold no secret (the token sent is a
placeholder string).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path

import nats

from gateway.dev.natsserver import NatsServer, find_nats_server
from gateway.natsconf import CalloutServerConfig, render_callout_config
from gateway.natsjwt.claims import encode_error_response, verify_authorization_request
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors"
CASES = {
    "token": {"token": '{"v":1,"method":"oidc","token":"placeholder","scope":'
                       '{"dag_id":"etl","task_id":"load"}}'},
    "user_password": {"user": "alice", "password": "placeholder-password"},
}


async def capture(server: NatsServer, issuer: SigningKeyPair, user: SigningKeyPair,
                  connect_kwargs: dict[str, str]) -> str:
    captured: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_request(msg: nats.aio.msg.Msg) -> None:
        token = msg.data.decode()
        request = verify_authorization_request(
            token, expected_subject=issuer.public_key, now=int(json.loads(
                __import__("base64").urlsafe_b64decode(token.split(".")[1] + "==")
            )["iat"]))
        if not captured.done():
            captured.set_result(token)
        await msg.respond(encode_error_response(
            user_nkey=request.user_nkey, server_id=request.server.id, error="capture only",
            signer=issuer, now=int(asyncio.get_running_loop().time())).encode())

    auth = await nats.connect(server.url, nkeys_seed_str=user.seed)
    await auth.subscribe("$SYS.REQ.USER.AUTH", cb=on_request)
    # The capture answers with an error on purpose: the client is refused.
    with contextlib.suppress(nats.errors.Error):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0,
                           name="vector-client", **connect_kwargs)
    result = await asyncio.wait_for(captured, 5)
    await auth.close()
    return result


async def main() -> None:
    issuer = SigningKeyPair.generate(Prefix.ACCOUNT)
    user = SigningKeyPair.generate(Prefix.USER)
    config = render_callout_config(CalloutServerConfig(
        issuer_account=issuer.public_key, auth_user_nkey=user.public_key, port=-1))
    version = __import__("subprocess").run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp, NatsServer(config, workdir=Path(tmp)) as server:
        for name, kwargs in CASES.items():
            token = await capture(server, issuer, user, kwargs)
            vector = {"nats_server_version": version, "expected_subject": issuer.public_key,
                      "connect": kwargs, "request_jwt": token}
            (OUT / f"auth_request_{name}.json").write_text(json.dumps(vector, indent=2) + "\n")
            print(f"wrote auth_request_{name}.json")


if __name__ == "__main__":
    asyncio.run(main())
