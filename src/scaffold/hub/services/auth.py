"""API keys: who is calling, with which role; repeated failures from one address slow down."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Mapping

from scaffold.errors import Forbidden, TooManyRequests, Unauthorized
from scaffold.hub.core.types import ApiKey, Clock, Role
from scaffold.hub.store.base import Store

ROLE_RANK: dict[Role, int] = {"viewer": 0, "agent": 1, "admin": 2}


def new_key() -> tuple[str, str]:
    """A fresh API key and the SHA-256 hex digest the hub stores instead of it."""
    key = secrets.token_urlsafe(32)
    return key, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    """Checks `Authorization: Bearer KEY` or `X-API-Key: KEY` against the stored hashes."""

    def __init__(
        self,
        store: Store,
        clock: Clock = time.monotonic,
        max_failures: int = 20,
        window_seconds: float = 60.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def authenticate(self, headers: Mapping[str, str], address: str, required: Role) -> ApiKey:
        """The caller's key. Past the failure limit an address gets 429 for bad keys only:
        keys are 256-bit random, so the limit curbs floods rather than guessing, and one
        misconfigured worker must not lock out the others sharing its address."""
        presented = _presented_key(headers)
        key = self.store.find_key(digest(presented)) if presented is not None else None
        if key is None:
            self._check_rate(address)
            self._record_failure(address)
            if presented is None:
                raise Unauthorized("send the API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
            raise Unauthorized("the API key is not valid (wrong, or revoked)")
        if ROLE_RANK[key.role] < ROLE_RANK[required]:
            raise Forbidden(f"this needs the {required} role; key {key.name!r} is {key.role}")
        return key

    def _check_rate(self, address: str) -> None:
        failures = self._failures.get(address)
        if not failures:
            return
        now = self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            retry = max(1, int(failures[0] + self.window - now) + 1)
            raise TooManyRequests(
                f"too many failed authentications from {address}; try again in {retry} s", retry
            )

    def _record_failure(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque())
        self._failures.move_to_end(address)
        failures.append(self.clock())
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


class Keys:
    """The API keys as an admin manages them: listed without their secrets, created, revoked."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def all(self) -> list[ApiKey]:
        return self.store.list_keys()

    def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key made through the API: its record, and the key itself, which is shown once."""
        key, hashed = new_key()
        return self.store.add_key(name, role, hashed, "api", self.clock()), key

    def revoke(self, name: str) -> ApiKey:
        return self.store.revoke_key(name, self.clock())


def _presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None
