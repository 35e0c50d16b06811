"""A local STS for development, tests and benchmarks: moto's server with authentication on.

moto (``moto[server]``, a dev dependency) runs as a subprocess on a free port with
``INITIAL_NO_AUTH_ACTION_COUNT=3``: three bootstrap calls create an admin user, then every
request must be SigV4-signed by a key moto knows, so a tampered signature is refused as
real STS would. Roles can be created and assumed with boto3, giving a worker the same
kind of temporary credentials IRSA, ECS or MWAA would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import boto3

__all__ = ["ACCOUNT", "REGION", "MotoSts"]

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"


class MotoSts:
    """moto's server as a subprocess with request authentication on, so signatures are
    really checked: after three setup calls every request must be signed by a known key."""

    def __init__(self, roles: tuple[str, ...] = ("airflow-prod-worker",
                                                   "airflow-staging-worker")) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listening(port)
        self._admin = self._bootstrap_admin()
        for role in roles:
            self._create_role(role)

    def _wait_listening(self, port: int) -> None:
        for _ in range(200):
            if self._proc.poll() is not None:
                raise RuntimeError("moto server exited; is moto[server] installed?")
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def _client(self, service: str, key: str, secret: str, token: str | None = None) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key, aws_secret_access_key=secret,
                            aws_session_token=token)

    def _bootstrap_admin(self) -> tuple[str, str]:
        iam = self._client("iam", "AKIABOOTSTRAP0000000", "unused")
        iam.create_user(UserName="admin")
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        return key["AccessKeyId"], key["SecretAccessKey"]

    def _create_role(self, role: str) -> None:
        iam = self._client("iam", *self._admin)
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}}]}
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName=role, PolicyName="whoami", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}))

    def role_session(self, role: str, session: str) -> Any:
        """A boto3 Session holding the role's temporary credentials, as a worker has."""
        creds = self._client("sts", *self._admin).assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName=session)[
            "Credentials"]
        return boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                             aws_secret_access_key=creds["SecretAccessKey"],
                             aws_session_token=creds["SessionToken"], region_name=REGION)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)

    def __enter__(self) -> MotoSts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
