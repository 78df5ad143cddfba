"""Root's password, stored only as an scrypt hash (stdlib hashlib) in the data directory."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets

__all__ = ["hash_password", "verify_password", "load_or_init", "write_hash", "write_stored",
           "check_stored"]

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> dict:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return {"scheme": "scrypt", "n": _N, "r": _R, "p": _P, "salt": salt.hex(), "hash": digest.hex()}


def verify_password(stored: dict, password: str) -> bool:
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(stored["salt"]),
                            n=stored["n"], r=stored["r"], p=stored["p"], dklen=32)
    return hmac.compare_digest(digest.hex(), stored["hash"])


def write_hash(path: str, password: str) -> None:
    """Atomic, owner-only: a crash never leaves a half-written or world-readable file."""
    write_stored(path, hash_password(password))


def check_stored(stored: object) -> dict:
    """`stored` if it is a password hash as write_hash makes them; ValueError otherwise."""
    if not isinstance(stored, dict) or stored.get("scheme") != "scrypt" or \
            not {"n", "r", "p", "salt", "hash"} <= set(stored):
        raise ValueError("not a password hash")
    return stored


def write_stored(path: str, stored: dict) -> None:
    """A hash made elsewhere (a pool's master's, taken by a joining host), as write_hash."""
    check_stored(stored)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(stored, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_or_init(path: str, initial: str | None) -> tuple[dict, str | None]:
    """The stored hash, plus the clear password when this call had to create it (first start)."""
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh), None
    password = initial or secrets.token_urlsafe(12)
    write_hash(path, password)
    with open(path) as fh:
        return json.load(fh), password
