"""Who may use the web console: the admin's password (argon2-hashed, kept in the store), or a
one-time login link printed when `serve` starts; and a brake on guessing.

The password hash is kept as a store option of its own (`console`/`password_hash`), never the
password. The session that a login starts lives in a signed cookie (see `app.py`): the signing
key is made anew each time `serve` starts, so a restart logs everyone out and no key is stored.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

import argon2

from psabridge.core.errors import PsabridgeError
from psabridge.core.store import Store

OPTION_PLUGIN = "console"  # the store keeps the console's own options under this name
PASSWORD_OPTION = "password_hash"
MIN_PASSWORD_LENGTH = 12
LOGIN_LINK_SECONDS = 15 * 60

_hasher = argon2.PasswordHasher()


class BadPassword(PsabridgeError, ValueError):
    """A password the console will not take (blank, or too short)."""


def set_password(store: Store, password: str) -> None:
    """Keep the argon2 hash of `password` as the console's login password."""
    check_new_password(password)
    store.set_option(OPTION_PLUGIN, PASSWORD_OPTION, _hasher.hash(password))


def check_new_password(password: str) -> None:
    """Raise BadPassword saying why `password` may not be the console's password."""
    if not password.strip():
        raise BadPassword("the console password is blank (only spaces or other blank "
                          "characters): anyone could guess it; choose one of at least "
                          f"{MIN_PASSWORD_LENGTH} characters with letters, digits or symbols")
    # Spaces around a password add no strength (and are easily typed by mistake).
    if len(password.strip()) < MIN_PASSWORD_LENGTH:
        raise BadPassword(f"the console password must be at least {MIN_PASSWORD_LENGTH} "
                          "characters, not counting spaces at either end")


def has_password(store: Store) -> bool:
    return bool(store.option(OPTION_PLUGIN, PASSWORD_OPTION))


def check_password(store: Store, password: str) -> bool:
    """Whether `password` is the console's password (False when none is set)."""
    stored = store.option(OPTION_PLUGIN, PASSWORD_OPTION)
    if not stored:
        return False
    try:
        return _hasher.verify(stored, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


class LoginLinks:
    """One-time login tokens: each opens one session, once, within LOGIN_LINK_SECONDS."""

    def __init__(self, seconds: float = LOGIN_LINK_SECONDS, clock=time.monotonic):
        self._tokens: dict[str, float] = {}
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self._clock() + self._seconds
        return token

    def redeem(self, token: str) -> bool:
        """Whether `token` is a live link's; a redeemed token is gone."""
        with self._lock:
            now = self._clock()
            for known, expires in list(self._tokens.items()):
                if expires < now:
                    del self._tokens[known]
                elif hmac.compare_digest(known.encode(), token.encode()):
                    del self._tokens[known]
                    return True
        return False


class LoginThrottle:
    """At most `attempts` failed logins per client address in `seconds`; after that, refused
    until the oldest failure ages out (a guesser gets a handful of tries per window)."""

    def __init__(self, attempts: int = 5, seconds: float = 300, clock=time.monotonic):
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self.attempts, self.seconds, self._clock = attempts, seconds, clock
        self._lock = threading.Lock()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures[address]
        while failures and failures[0] < self._clock() - self.seconds:
            failures.popleft()
        return failures

    def wait_seconds(self, address: str) -> int:
        """0 when `address` may try now, else how many seconds until it may."""
        with self._lock:
            failures = self._recent(address)
            if len(failures) < self.attempts:
                return 0
            return max(1, int(failures[0] + self.seconds - self._clock()) + 1)

    def failed(self, address: str) -> None:
        with self._lock:
            self._recent(address).append(self._clock())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
