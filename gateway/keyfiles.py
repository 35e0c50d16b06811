"""Create and read the gateway's key files: the only module that writes seeds to disk.

Files are created with mode 0600 and never overwritten, so a second run cannot silently
replace the keys a running nats-server config trusts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.chain import CheckpointSigner
from gateway.errors import ConfigError
from gateway.natsjwt.nkeys import CurveKeyPair, Prefix, SigningKeyPair

__all__ = [
    "CHECKPOINT_FILE",
    "ISSUER_FILE",
    "OPERATOR_FILE",
    "SYSTEM_ACCOUNT_FILE",
    "USER_FILE",
    "XKEY_FILE",
    "KeyPublics",
    "account_files",
    "ensure_checkpoint_key",
    "generate_keys",
    "generate_operator_keys",
    "read_publics",
]

ISSUER_FILE = "issuer.nk"
USER_FILE = "auth-user.nk"
XKEY_FILE = "xkey.nk"
CHECKPOINT_FILE = "audit-checkpoint.key"
_ALL = (ISSUER_FILE, USER_FILE, XKEY_FILE, CHECKPOINT_FILE)


@dataclass(frozen=True)
class KeyPublics:
    issuer_account: str
    auth_user: str
    xkey: str
    checkpoint: str = ""


def _write_secret(path: Path, seed: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"`{path}` exists: refusing to overwrite a key") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(seed + "\n")


def generate_keys(directory: Path) -> KeyPublics:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [name for name in _ALL if (directory / name).exists()]
    if existing:
        raise ConfigError(f"`{directory / existing[0]}` exists: refusing to overwrite a key")
    issuer = SigningKeyPair.generate(Prefix.ACCOUNT)
    user = SigningKeyPair.generate(Prefix.USER)
    xkey = CurveKeyPair.generate()
    checkpoint = CheckpointSigner.generate()
    _write_secret(directory / ISSUER_FILE, issuer.seed)
    _write_secret(directory / USER_FILE, user.seed)
    _write_secret(directory / XKEY_FILE, xkey.seed)
    _write_secret(directory / CHECKPOINT_FILE, checkpoint.seed_hex)
    return KeyPublics(issuer.public_key, user.public_key, xkey.public_key,
                      checkpoint.public_key)


OPERATOR_FILE = "operator.nk"
SYSTEM_ACCOUNT_FILE = "system-account.nk"


def account_files(name: str) -> tuple[str, str]:
    """(account key file, signing key file) of a target account in operator mode."""
    return f"account-{name}.nk", f"account-{name}-signing.nk"


def generate_operator_keys(directory: Path, accounts: list[str]) -> dict[str, str]:
    """Operator mode: the operator, the system account, and for each target account its
    key and a signing key (users are signed by the signing key, so the account key itself
    can stay offline). Returns public keys by file name."""
    files = [OPERATOR_FILE, SYSTEM_ACCOUNT_FILE] + [f for a in accounts for f in account_files(a)]
    existing = [name for name in files if (directory / name).exists()]
    if existing:
        raise ConfigError(f"`{directory / existing[0]}` exists: refusing to overwrite a key")
    publics = {}
    for name in files:
        prefix = Prefix.OPERATOR if name == OPERATOR_FILE else Prefix.ACCOUNT
        pair = SigningKeyPair.generate(prefix)
        _write_secret(directory / name, pair.seed)
        publics[name] = pair.public_key
    return publics


def ensure_checkpoint_key(directory: Path) -> str:
    """Create the audit checkpoint key if it is missing (keys made before it existed);
    returns its public key."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        _write_secret(path, CheckpointSigner.generate().seed_hex)
    return CheckpointSigner.from_seed_hex(path.read_text()).public_key


def read_publics(directory: Path) -> KeyPublics:
    def seed(name: str) -> str:
        return (directory / name).read_text().strip()

    checkpoint = directory / CHECKPOINT_FILE
    return KeyPublics(
        SigningKeyPair.from_seed(seed(ISSUER_FILE), Prefix.ACCOUNT).public_key,
        SigningKeyPair.from_seed(seed(USER_FILE), Prefix.USER).public_key,
        CurveKeyPair.from_seed(seed(XKEY_FILE)).public_key,
        CheckpointSigner.from_seed_hex(seed(CHECKPOINT_FILE)).public_key
        if checkpoint.exists() else "",
    )
