"""Logins, session validity, the 200-session limit and idle expiry (the guide's chapter 4).

Password checks go through per-source gates (`logins.LoginGates`): failures slow that source
alone, each doubling its wait, with asyncio.sleep, so they never delay other clients. Logins
over the local Unix socket are root, password ignored.

A password that passed the (deliberately slow, ~50 ms) scrypt check is remembered for a few
minutes as a keyed digest of the stored hash and the password, so clients that send Basic
credentials with every request (curl, wget, pollers) do not pay scrypt each time; a changed
password changes the stored hash and so misses at once. Failures are never remembered.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
import time
from concurrent.futures import Executor

from ..model.errors import XenAPIError
from ..model.events import EventHub
from ..model.store import Store
from ..model.xtypes import NULL_REF
from .logins import LoginGates
from .passwords import verify_password, write_hash

__all__ = ["SessionManager"]

ROOT = "root"
POOL_PASSWORD = "root_password"     # the ref of a pool's root_password record
_VERIFIED_TTL = 300.0   # seconds a verified password is taken without scrypt
_VERIFIED_MAX = 16      # distinct verified passwords remembered (normally one)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class SessionManager:
    def __init__(self, store: Store, events: EventHub, host_ref: str, password_path: str, *,
                 executor: Executor | None = None, limit: int = 200,
                 idle_timeout: float = 24 * 3600, fail_delay: float = 0.5) -> None:
        self.store = store
        self.events = events
        self.host_ref = host_ref
        self.executor = executor
        self.password_path = password_path
        self._hash_stamp: tuple[int, int] | None = None
        self._hash: dict = {}
        self._pool_text, self._pool_hash = "", {}
        self._verify_key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}    # keyed digest -> monotonic time verified
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.fail_delay = fail_delay
        self.gates = LoginGates(fail_delay)

    @property
    def password_hash(self) -> dict:
        """A pool's (its database holds it), else the data directory's file, re-read when it
        changes, so `xcp-httpd passwd` applies without a restart."""
        rec = self.store.find("root_password", POOL_PASSWORD)
        if rec is not None:
            if rec["hash"] != self._pool_text:
                self._pool_hash, self._pool_text = json.loads(rec["hash"]), rec["hash"]
            return self._pool_hash
        st = os.stat(self.password_path)
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._hash_stamp:
            with open(self.password_path) as fh:
                self._hash = json.load(fh)
            self._hash_stamp = stamp
        return self._hash

    def _verified_key(self, stored: dict, password: str) -> bytes:
        return hmac.new(self._verify_key, f"{stored.get('hash')}\0{password}".encode(),
                        hashlib.sha256).digest()

    def recently_verified(self, user: str, password: str) -> bool:
        """The cheap check (a keyed digest, one stat of the password file): this password
        passed scrypt a few minutes ago. A guess never passes it, so it needs no gate."""
        if user != ROOT:
            return False
        seen = self._verified.get(self._verified_key(self.password_hash, password))
        return seen is not None and time.monotonic() - seen < _VERIFIED_TTL

    def password_ok(self, user: str, password: str) -> bool:
        if user != ROOT:
            return False
        stored = self.password_hash
        key = self._verified_key(stored, password)
        now = time.monotonic()
        seen = self._verified.get(key)
        if seen is not None and now - seen < _VERIFIED_TTL:
            return True
        if not verify_password(stored, password):
            return False
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[key] = now
        return True

    async def authenticate(self, user: str, password: str, *, local: bool = False,
                           source: str = "") -> str:
        """The one login policy (RPC logins, Basic auth, console CONNECTs): the user name a
        session gets, or SESSION_AUTHENTICATION_FAILED. Callers on the local socket are root,
        password ignored; others are checked under their source's gate."""
        if local or self.recently_verified(user, password):
            return ROOT if local else user

        async def verify() -> bool:
            # scrypt is deliberately slow: keep it off the event loop, on its own pool.
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.password_ok, user, password)
        await self.gates.check(source, user, verify)
        return user

    async def login(self, user: str, password: str, *, originator: str = "",
                    local: bool = False, source: str = "") -> str:
        return self.open_session(await self.authenticate(user, password, local=local,
                                                         source=source), originator)

    async def change_password(self, old: str, new: str, *, local: bool = False,
                              source: str = "") -> None:
        """root's password: the old one proves the caller (not over the local socket)."""
        await self.authenticate(ROOT, old, local=local, source=source)
        if not new:
            raise XenAPIError("INVALID_VALUE", "new_pwd", "")
        await asyncio.get_running_loop().run_in_executor(
            self.executor, write_hash, self.password_path, new)
        if self.store.find("root_password", POOL_PASSWORD) is not None:
            with open(self.password_path) as fh:      # the pool's, on every host
                self.share_password(fh.read())

    def share_password(self, text: str | None = None) -> None:
        """Make root's password the pool's (this host's file, or `text`, a stored hash)."""
        if text is None:
            with open(self.password_path) as fh:
                text = fh.read()
        if self.store.find("root_password", POOL_PASSWORD) is None:
            self.store.create("root_password", {"hash": text}, ref=POOL_PASSWORD)
        else:
            self.store.update("root_password", POOL_PASSWORD, {"hash": text})

    def open_session(self, user: str, originator: str = "", *, pool: bool = False) -> str:
        """`pool`: another agent of the pool (session.slave_login)."""
        sessions = self.store.all("session")
        while len(sessions) >= self.limit:
            oldest = min(sessions, key=lambda r: sessions[r]["last_active"])
            self.logout(oldest)
        now = _now()
        return self.store.create("session", {
            "this_host": self.host_ref, "this_user": NULL_REF, "last_active": now,
            "validation_time": now, "is_local_superuser": True, "auth_user_name": user,
            "originator": originator, "rbac_permissions": [], "pool": pool})

    def check(self, ref: str) -> None:
        rec = self.store.find("session", ref)
        if rec is None:
            raise XenAPIError("SESSION_INVALID", ref)
        self.store.touch("session", ref, {"last_active": _now()})

    def from_peer(self, ref: str) -> bool:
        """Whether `ref` is a pool session (another agent of the pool calling)."""
        rec = self.store.find("session", ref)
        return rec is not None and bool(rec["pool"])

    def valid(self, ref: str) -> bool:
        return self.store.find("session", ref) is not None

    def logout(self, ref: str) -> None:
        if self.store.find("session", ref) is not None:
            self.store.destroy("session", ref)
        self.events.forget_session(ref)
        self.events.wake()   # blocked event calls of this session answer SESSION_INVALID

    def gc(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        idle = [ref for ref, rec in self.store.all("session").items()
                if now - rec["last_active"].timestamp() > self.idle_timeout]
        for ref in idle:
            self.logout(ref)
        return len(idle)
