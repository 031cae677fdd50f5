"""Who may do what, and for how long: leases, their heartbeat and their fencing.

docs/architecture.md ("Coordination") explains the design; in short:

* A *lease* is a named, exclusive right held in the store (`sync`, `mapping`, `alert:...`),
  granted for a time-to-live measured by the store's own clock, never by the holder's. While
  the work runs, a heartbeat thread renews it every third of its ttl, so a live holder keeps it
  however slow its remote calls are, and a dead one loses it when the ttl runs out. A holder that
  died on this host is recognised at once (its process is gone) and its lease is taken over.
* Every grant carries a *fencing token* that is never handed out twice. While code runs inside
  `hold(...)`, every commit it makes to the store checks that the token is still the lease's
  current one, so a holder that stalled past its lease (and was replaced) cannot commit over
  the next holder's work.
* Before each remote write and each retry of a remote call, `ensure_held()` checks that the
  leases covering it are still this holder's with a third of their ttl to spare (by the
  holder's monotonic clock, counted from the last renewal it *sent*): no retry outlives the
  claim it runs under.
* While a remote write is unanswered, its leases are marked *in flight* (`mark_in_flight`):
  nobody takes them over, even from a dead holder, until the remote system can no longer act
  on it, so a successor never looks for a ticket that is still being made.
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import attrs

from psabridge.core import logs
from psabridge.core.errors import PsabridgeError, StoreError
from psabridge.core.models import Lease, LeaseHolder
from psabridge.core.settings import seconds_from_environment
from psabridge.core.store import LeaseLost, Store, _held_fences, _held_in_flight

log = logs.get_logger(__name__)

# Time-to-live of the sync pass's and the mapping commands' leases, and of a claim on one alert
# or one outbox item. A live holder renews its lease, so the ttl only bounds how long a holder
# that died on *another* host blocks the work (one on this host is detected at once). The
# environment variables shorten them for tests that kill processes on purpose.
LOCK_TTL = seconds_from_environment("PSABRIDGE_LOCK_TTL", 60.0)
CLAIM_TTL = seconds_from_environment("PSABRIDGE_CLAIM_TTL", 60.0)
# An in-flight mark lasts this share longer than its write's window, so that the next write of
# the same change, made within those seconds, needs no mark of its own (`mark_in_flight`).
HEADROOM = 0.25
# How long an admin's mapping command waits for a sync pass's mapping step to finish.
LOCK_WAIT = seconds_from_environment("PSABRIDGE_LOCK_WAIT", 30.0, zero_allowed=True)


class Busy(PsabridgeError):
    """Someone else holds the lease."""

    def __init__(self, name: str, holder: LeaseHolder | None, what: str):
        self.name = name
        self.holder = holder
        who = describe_owner(holder.owner) if holder else "another process"
        if holder is not None and holder_is_gone(holder.owner):
            super().__init__(
                f"{what}: {who} has ended, but a write it sent got no answer and may still be "
                f"acted on; psabridge waits that out ({max(holder.expires_in, 0):.0f} s more), "
                "then looks for what it made: try again then")
        else:
            super().__init__(f"{what} (by {who}); try again when it has finished")


def _process_start(pid: int | str) -> str:
    """The start time of a process (Linux), so that a reused pid is not taken for the holder."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_HOST = socket.gethostname()
_PROCESS = f"{_HOST}:{os.getpid()}:{_process_start(os.getpid())}"


def _owner() -> str:
    # One owner per grant: two threads of one process exclude each other too. Computed per call
    # because a forked child (multiprocessing) has another pid than the module saw.
    pid = os.getpid()
    process = _PROCESS if _PROCESS.split(":")[1] == str(pid) else \
        f"{_HOST}:{pid}:{_process_start(pid)}"
    return f"{process}:{uuid.uuid4().hex[:12]}"


def new_owner() -> str:
    """A new holder's name: this host and process, and a random part of its own."""
    return _owner()


def describe_owner(owner: str) -> str:
    host, pid, *_ = (owner.split(":") + ["", ""])[:3]
    return f"process {pid} on {host}" if pid else f"holder {owner}"


def holder_is_gone(owner: str) -> bool:
    """True when `owner` was a process on this host that no longer runs (killed, crashed).

    Another host's process can only be judged by its lease running out."""
    host, pid, start, *_ = (owner.split(":") + ["", "", ""])[:4]
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    return bool(start) and _process_start(pid) != start  # the pid was reused


def waiting_out(holder: LeaseHolder | None) -> float | None:
    """Seconds until the lease `holder` holds is free when nobody works under it any more and
    it is kept only while a write sent under it that got no answer is waited out (its holder
    gave it up, or died); None when it is free or a live holder works under it."""
    if holder is None or not (holder.released or holder_is_gone(holder.owner)):
        return None
    return max(0.0, holder.expires_in)


@attrs.define(eq=False)
class Held:
    """A lease this process holds, kept alive by the heartbeat thread while the work runs."""

    lease: Lease
    store: Store = attrs.field(repr=False)
    valid_until: float  # by time.monotonic(): the lease cannot have run out before then
    guards_writes: bool = True  # its remote writes keep it taken while in flight
    unanswered: bool = False  # a write made under it got no answer: it stays in flight
    answered: bool = False  # its last write was answered; the store clears its mark next commit
    # Until when (time.monotonic()) the store's in-flight mark surely lasts; 0 when it has none.
    in_flight_until: float = 0.0
    lost: bool = False

    def check(self, spare: float | None = None) -> None:
        """Raise LeaseLost unless the lease is ours with `spare` seconds (a third of its ttl
        by default) left before it could run out."""
        spare = self.lease.ttl / 3 if spare is None else spare
        if self.lost or time.monotonic() + spare > self.valid_until:
            raise LeaseLost(self.lease)

    def _renew(self) -> bool:
        """Renew the lease once; False when it is lost (no more renewals)."""
        sent = time.monotonic()
        try:
            renewed = self.store.renew_lease(self.lease)
        except StoreError as exc:  # the store is busy or gone: try again next beat
            log.warning("could not renew a lease", lease=self.lease.name, error=str(exc))
            return True
        if not renewed:
            self.lost = True
            log.warning("lost a lease to another holder", lease=self.lease.name)
            return False
        self.valid_until = sent + self.lease.ttl
        return True

    def _start(self) -> None:
        _heartbeat.add(self)

    def _finish(self) -> None:
        _heartbeat.remove(self)
        try:
            self.store.release_lease(self.lease)
        except StoreError as exc:  # it will run out on its own
            log.warning("could not release a lease", lease=self.lease.name, error=str(exc))


class _Heartbeat:
    """The thread that renews every lease this process holds, each every third of its ttl.

    One thread for all of them, not one per lease: a claim is taken for every alert, and
    starting and joining a thread per claim cost more than the rest of its bookkeeping."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[Held, float] = {}  # each lease's next renewal, by time.monotonic()
        self._renewing: Held | None = None
        # When the thread, waiting, will next look (None: not until woken). Sooner work wakes
        # it; later work waits for that look, so a claim per alert costs no thread switch.
        self._wakes_at: float | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, held: Held) -> None:
        with self._changed:
            self._due[held] = due = time.monotonic() + held.lease.ttl / 3
            # A forked child (multiprocessing) has the parent's object but not its thread.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._wakes_at = None
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat",
                                                daemon=True)
                self._thread.start()
            if self._wakes_at is None or due < self._wakes_at:
                self._changed.notify_all()

    def remove(self, held: Held) -> None:
        """Stop renewing `held`; returns once no renewal of it is under way, so that a release
        that follows is never undone by a renewal."""
        with self._changed:
            self._due.pop(held, None)
            while self._renewing is held:
                self._changed.wait()

    def _next_due(self) -> list[Held]:
        with self._changed:
            while True:
                now = time.monotonic()
                due = [held for held, at in self._due.items() if at <= now]
                if due:
                    return due
                soonest = min(self._due.values(), default=None)
                self._wakes_at = soonest
                self._changed.wait(None if soonest is None else soonest - now)
                self._wakes_at = None

    def _run(self) -> None:
        while True:
            for held in self._next_due():
                with self._changed:
                    if held not in self._due:
                        continue  # released meanwhile
                    self._renewing = held
                keep = True
                try:
                    keep = held._renew()
                except Exception:  # noqa: BLE001 - the other leases must still be renewed
                    log.warning("could not renew a lease", lease=held.lease.name, exc_info=True)
                finally:
                    with self._changed:
                        self._renewing = None
                        if held in self._due:
                            if keep:
                                self._due[held] = time.monotonic() + held.lease.ttl / 3
                            else:
                                del self._due[held]
                        self._changed.notify_all()


_heartbeat = _Heartbeat()

_held: contextvars.ContextVar[tuple[Held, ...]] = contextvars.ContextVar(
    "psabridge_held_leases", default=())


def _acquire(store: Store, name: str, ttl: float,
             guards_writes: bool = True) -> tuple[Held | None, LeaseHolder | None]:
    owner = _owner()
    sent = time.monotonic()
    lease = store.acquire_lease(name, owner, ttl)
    holder = None
    if lease is None:
        holder = store.lease_holder(name)
        if holder is not None and holder_is_gone(holder.owner):
            log.warning("taking over the lease of a process that is gone", lease=name,
                        holder=describe_owner(holder.owner))
            lease = store.acquire_lease(name, owner, ttl, replacing=holder.owner)
    if lease is None:
        return None, holder
    return Held(lease, store, valid_until=sent + ttl, guards_writes=guards_writes), None


@contextmanager
def try_hold(store: Store, name: str, ttl: float = CLAIM_TTL) -> Iterator[Held | None]:
    """Hold lease `name` for the duration of the block, or yield None when another holder has
    it (this very code included: a claim is not re-entrant)."""
    held, _ = _acquire(store, name, ttl)
    if held is None:
        yield None
        return
    with _holding(held):
        yield held


class Claims(dict[str, "Held"]):
    """The leases of a group held by `try_hold_each`, by name."""

    def __init__(self, granted: dict[str, Held]):
        super().__init__(granted)
        # What is held around the group (the pass's lease): one member's work runs under it
        # and that member alone.
        self._around = (_held.get(), _held_fences.get(), _held_in_flight.get())

    @contextmanager
    def alone(self, held: Held) -> Iterator[None]:
        """For the block, of the group only `held` counts as held here: the remote writes made
        in it mark that one in flight, and its commits are fenced by that one (and by what is
        held around the group). One alert's work in a group of claims."""
        leases, fences, in_flight = self._around
        tokens = (_held.set(leases + (held,)), _held_fences.set(fences + (held.lease,)),
                  _held_in_flight.set(in_flight + (held,)))
        try:
            yield
        finally:
            _held_in_flight.reset(tokens[2])
            _held_fences.reset(tokens[1])
            _held.reset(tokens[0])


@contextmanager
def try_hold_each(store: Store, names: Iterable[str], ttl: float = CLAIM_TTL) -> Iterator[Claims]:
    """Hold, for the block, each lease of `names` that no other holder has: yields those held,
    by name. They are taken in one commit and given up in one, where `try_hold` costs two
    commits for each: a pass's new alerts are claimed as a group. Taken in the order of their
    names, so that two processes taking groups that overlap never wait on each other in a
    circle. Work on one of them goes in `Claims.alone`."""
    claims = Claims({})
    names = sorted(set(names))
    if not names:
        yield claims
        return
    with store.transaction(fenced=False):
        for name in names:
            held, _ = _acquire(store, name, ttl)
            if held is not None:
                claims[name] = held
    holding = ExitStack()
    try:
        for held in claims.values():
            holding.enter_context(_holding(held))
        yield claims
    finally:
        try:
            with store.transaction(fenced=False):  # every release in one commit
                holding.close()
        except StoreError:
            holding.close()  # the releases not made run out on their own


@contextmanager
def hold(store: Store, name: str, ttl: float = LOCK_TTL, wait: float = 0.0,
         what: str = "this work", reentrant: bool = False,
         guards_writes: bool = True) -> Iterator[Held]:
    """Hold lease `name` for the block, waiting up to `wait` seconds for its holder to finish;
    raise Busy, naming the holder, if it does not. `what` says what the lease protects. With
    `reentrant`, code already holding `name` (in this thread) holds it again for free. A lease
    that does not `guards_writes` (one pass at a time, say) is not kept taken by the remote
    writes made under it: the leases of the things written are."""
    if reentrant:
        for held in _held.get():
            if held.lease.name == name and held.store is store:
                yield held
                return
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        held, holder = _acquire(store, name, ttl, guards_writes)
        if held is not None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise Busy(name, holder, what)
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)
    with _holding(held):
        yield held


@contextmanager
def _holding(held: Held) -> Iterator[None]:
    held._start()
    leases = _held.set(_held.get() + (held,))
    fences = _held_fences.set(_held_fences.get() + (held.lease,))
    in_flight = _held_in_flight.set(_held_in_flight.get() + (held,))
    try:
        yield
    finally:
        _held_fences.reset(fences)
        _held.reset(leases)
        try:
            held._finish()  # its release clears an answered write's mark
        finally:
            _held_in_flight.reset(in_flight)


def ensure_held(spare: float | None = None) -> None:
    """Raise LeaseLost if any lease the running code holds is lost or about to run out: called
    before every remote write and every retry, so none is made by a holder that was replaced."""
    for held in _held.get():
        held.check(spare)


def mark_in_flight(seconds: float | None, holders: Iterable[Held] | None = None) -> None:
    """Record that a remote write is in flight under the leases held here, and may be acted on
    by the remote system for up to `seconds` (None: it was answered, nothing is in flight, unless
    an earlier write under the same lease got no answer).

    Until then no other process takes those leases over, not even from a holder that died:
    it would otherwise look for what the write made before the remote system has made it.

    A mark is written for a quarter longer than asked (HEADROOM), and a lease whose mark
    still covers a new write's window is not marked again: the requests of one change (a
    ticket, then its configuration) share one commit. An answer is not written at once: the
    store clears the mark in the holder's next commit (the journal entry of the answer, the
    next write's mark, or the lease's release), so the answer costs no commit of its own. A
    holder that dies in between leaves its lease in flight for the window, as if the answer had
    not come. `holders`: those leases, rather than all held here (a group's, in one statement)."""
    by_store: dict[int, tuple[Store, list[Held]]] = {}
    now = time.monotonic()
    for held in _held.get() if holders is None else holders:
        if not held.guards_writes:
            continue
        if seconds is None:
            held.answered = not held.unanswered
            continue
        held.answered = False
        if held.in_flight_until < now + seconds:
            by_store.setdefault(id(held.store), (held.store, []))[1].append(held)
    for store, marking in by_store.values():
        window = seconds * (1 + HEADROOM)
        store.mark_in_flight([held.lease for held in marking], window)
        for held in marking:
            held.in_flight_until = now + window


def mark_unanswered() -> None:
    """A write got no answer: the leases held here stay in flight for its whole window, even if
    later writes under them are answered."""
    for held in _held.get():
        held.unanswered = True
