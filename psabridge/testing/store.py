"""The store conformance kit: pytest checks that a storage plugin honours the store contract
(`psabridge.core.store.Store`) as the engine relies on it.

A storage plugin's tests subclass :class:`StoreContract` and provide one fixture, `store_url`:
the URL of a new, empty store (each test gets its own)::

    from psabridge.testing.store import StoreContract

    class TestMyStoreConforms(StoreContract):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mystore://{tmp_path}/state"

The kit opens the store through the `storage_open` hook (`make_store` opens another store object
on the same URL: another connection, as another process would have), and starts real processes
for the races. Override `schema_version(url)` to have the migration checks read the version.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import Counter

import pytest

from psabridge.core.coordination import try_hold
from psabridge.core.errors import StoreError
from psabridge.core.models import (
    AlertTicket,
    CompanySiteMapping,
    DeviceMapping,
    DeviceTypeMapping,
    JournalEntry,
    OutboxItem,
)
from psabridge.core.plugins import configure_plugin, make_plugin_manager
from psabridge.core.store import PLUGIN_TABLES, LeaseLost, _held_fences, open_store

# Long enough for a spawned process to import psabridge on a busy machine.
START_TIMEOUT = 120

_spawn = multiprocessing.get_context("spawn")


# -- what the racing processes run (module level: a spawned process imports it) ---------------

def _race(barrier, results, index: int, work, *args) -> None:
    try:
        barrier.wait(START_TIMEOUT)
        outcome = work(*args)
    except BaseException as exc:  # reported to the test, which names the process that failed
        results.put((index, None, f"{type(exc).__name__}: {exc}"))
    else:
        results.put((index, outcome, None))


def _open_and_close(url: str) -> None:
    store = open_store(make_plugin_manager(), url)
    store.close()


def _claim_all(url: str, names: list[str], hold_for: float) -> list[tuple[str, float, float]]:
    """Try to claim each of `names`; the claims this process won, each as (name, from, to) by
    the system's monotonic clock (one clock for every process of the host)."""
    store = open_store(make_plugin_manager(), url)
    won = []
    try:
        for name in names:
            with try_hold(store, name, ttl=30) as held:
                if held is not None:
                    start = time.monotonic()
                    time.sleep(hold_for)
                    won.append((name, start, time.monotonic()))
    finally:
        store.close()
    return won


def _write_rounds(url: str, writer: str, rounds: int) -> None:
    store = open_store(make_plugin_manager(), url)
    try:
        for round_ in range(rounds):
            store.add_warning(writer, f"subject {round_}", "message")
            with store.transaction():
                store.set_cursor(writer, f"cursor {round_}", str(round_))
                store.remember_message(f"{writer} message {round_}")
    finally:
        store.close()


def race(work, calls: list[tuple]) -> list:
    """Run `work(*call)` in one process per call, all released at once; what each returned.
    Fails naming each process that raised."""
    barrier = _spawn.Barrier(len(calls))
    results = _spawn.Queue()
    processes = [_spawn.Process(target=_race, args=(barrier, results, index, work, *call))
                 for index, call in enumerate(calls)]
    for process in processes:
        process.start()
    try:
        outcomes = sorted(results.get(timeout=START_TIMEOUT * 2) for _ in processes)
    finally:
        for process in processes:
            process.join(START_TIMEOUT)
            if process.is_alive():
                process.kill()
    failures = {f"process {index}": error for index, _, error in outcomes if error}
    assert not failures, failures
    return [outcome for _, outcome, _ in outcomes]


def _mapping(device: str, configuration: str) -> DeviceMapping:
    return DeviceMapping("connectwise", "datto", device, configuration, "c1", "s1")


class StoreContract:
    """The behaviours every store must have; subclass it and provide `store_url`."""

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("provide a `store_url` fixture: the URL of a new, empty store")

    def schema_version(self, url: str) -> int | None:
        """The schema version the store at `url` records (None: not checked)."""
        return None

    @pytest.fixture
    def store_pm(self):
        return make_plugin_manager()

    @pytest.fixture
    def make_store(self, store_pm, store_url):
        opened = []

        def make():
            store = open_store(store_pm, store_url)
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, make_store):
        return make_store()

    # -- transactions ----------------------------------------------------------------------

    def test_a_failed_change_leaves_nothing_half_written(self, store):
        with pytest.raises(RuntimeError), store.transaction():
            store.set_cursor("datto", "alerts", "1")
            store.record(JournalEntry("datto", "resolve_alert", "a1", "ok"))
            raise RuntimeError("crash in the middle")
        assert store.cursor("datto", "alerts") is None
        assert store.journal() == []

    def test_nested_changes_commit_with_the_outermost(self, store, make_store):
        other = make_store()
        with store.transaction():
            store.set_cursor("datto", "alerts", "1")
            with store.transaction():
                store.set_option("connectwise", "auto", {"on": True})
            assert other.option("connectwise", "auto") is None  # not visible before the commit
        assert other.cursor("datto", "alerts") == "1"
        assert other.option("connectwise", "auto") == {"on": True}

    def test_a_refused_write_inside_a_change_leaves_the_rest_of_it_usable(self, store):
        store.save_device_mapping(_mapping("d1", "cfg1"))
        with store.transaction():
            with pytest.raises(StoreError, match="configuration cfg1 is already mapped"):
                store.save_device_mapping(_mapping("d2", "cfg1"))
            store.save_device_mapping(_mapping("d2", "cfg2"))
        assert [(m.device_uid, m.configuration_id)
                for m in store.device_mappings("connectwise", "datto")] == [("d1", "cfg1"),
                                                                            ("d2", "cfg2")]

    # -- mappings --------------------------------------------------------------------------

    def test_one_device_per_configuration_and_one_company_per_site(self, store):
        store.save_device_mapping(_mapping("d1", "cfg1"))
        with pytest.raises(StoreError, match="configuration cfg1 is already mapped to another device"):
            store.save_device_mapping(_mapping("d2", "cfg1"))
        store.save_device_mapping(_mapping("d1", "cfg2"))  # the same device moves: one row
        assert [m.configuration_id for m in store.device_mappings("connectwise", "datto")] == ["cfg2"]
        assert store.device_mapping("connectwise", "datto", "d1").configuration_id == "cfg2"

        store.save_company_mapping(CompanySiteMapping("connectwise", "datto", "c1", "Acme", "s1",
                                                      "Acme HQ", "Client"))
        with pytest.raises(StoreError, match="site Acme HQ is already mapped to another company"):
            store.save_company_mapping(CompanySiteMapping("connectwise", "datto", "c2", "Other",
                                                          "s1", "Acme HQ", "Client"))
        assert store.company_mapping_of_site("connectwise", "datto", "s1").company_id == "c1"
        assert store.delete_company_mapping("connectwise", "datto", "c1") is True
        assert store.delete_company_mapping("connectwise", "datto", "c1") is False

    def test_lists_come_in_the_same_order_from_every_store(self, store):
        for name in ("beta", "Alpha", "alpha", "_under"):
            store.save_company_mapping(CompanySiteMapping("connectwise", "datto", name, name,
                                                          f"s-{name}", name, "Client"))
        # Byte order, as SQLite compares text: capitals before lower case, "_" between.
        assert [m.company_name for m in store.company_mappings("connectwise", "datto")] == \
            ["Alpha", "_under", "alpha", "beta"]
        store.save_device_type_mapping(DeviceTypeMapping("connectwise", "datto", "Server", "1", "S"))
        store.save_device_type_mapping(DeviceTypeMapping("connectwise", "datto", "Desktop", "2", "D"))
        store.save_device_type_mapping(DeviceTypeMapping("connectwise", "datto", "Server", "3", "S"))
        assert [(m.device_type, m.configuration_type_id)
                for m in store.device_type_mappings("connectwise", "datto")] == \
            [("Desktop", "2"), ("Server", "3")]

    def test_alert_rows_list_in_the_order_they_were_last_saved(self, store):
        for uid in ("a1", "a2", "a3"):
            store.save_alert_ticket(AlertTicket("connectwise", "datto", uid, "pending",
                                                marker=f"m-{uid}", monitor="disk", device_uid="d1"))
        first = store.alert_ticket("connectwise", "datto", "a1")
        store.save_alert_ticket(AlertTicket("connectwise", "datto", "a1", "open", ticket_id="t1",
                                            monitor="disk", device_uid="d1",
                                            opened_at=first.opened_at))
        assert [t.alert_uid for t in store.alert_tickets("connectwise", "datto")] == ["a2", "a3", "a1"]
        assert [t.alert_uid for t in store.alert_tickets("connectwise", "datto", ("open",))] == ["a1"]
        assert [t.alert_uid for t in store.alert_tickets("connectwise", "datto", ticket_id="t1")] == ["a1"]
        latest = store.latest_ticket_for("connectwise", "datto", "disk", "d1", first.opened_at)
        assert latest.alert_uid == "a1" and latest.opened_at == first.opened_at

    # -- leases, fencing, claims -----------------------------------------------------------

    def test_a_lease_is_exclusive_until_released_and_tokens_are_never_reused(self, store, make_store):
        other = make_store()
        first = store.acquire_lease("sync", "me", ttl=30)
        assert first is not None
        assert other.acquire_lease("sync", "you", ttl=30) is None
        holder = other.lease_holder("sync")
        assert (holder.owner, holder.token) == ("me", first.token)
        assert 0 < holder.expires_in <= 30
        assert store.renew_lease(first) is True
        store.release_lease(first)
        assert other.lease_holder("sync") is None
        second = other.acquire_lease("sync", "you", ttl=30)
        assert second.token > first.token
        assert store.renew_lease(first) is False  # not the holder any more

    def test_an_expired_lease_passes_to_the_next_and_a_known_dead_holder_is_replaced(self, store):
        short = store.acquire_lease("sync", "sleepy", ttl=0.3)
        time.sleep(0.5)
        taken = store.acquire_lease("sync", "next", ttl=30)
        assert taken is not None and taken.token > short.token
        assert store.acquire_lease("sync", "third", ttl=30, replacing="someone else") is None
        replaced = store.acquire_lease("sync", "third", ttl=30, replacing="next")
        assert replaced is not None and replaced.token > taken.token

    def test_lease_times_are_the_stores_not_the_clients(self, store, make_store):
        time_machine = pytest.importorskip("time_machine")
        with time_machine.travel(time.time() + 3 * 3600, tick=True):  # this host is 3 hours ahead
            lease = store.acquire_lease("sync", "skewed", ttl=30)
            assert 25 < store.lease_holder("sync").expires_in <= 30
        with time_machine.travel(time.time() - 3 * 3600, tick=True):  # another, 3 hours behind
            assert make_store().acquire_lease("sync", "behind", ttl=30) is None
        store.release_lease(lease)

    def test_a_stale_holder_cannot_commit_over_the_next_holder(self, store, make_store):
        stale = store.acquire_lease("alert:connectwise:a1", "stalled", ttl=0.3)
        time.sleep(0.5)
        successor = make_store()
        current = successor.acquire_lease("alert:connectwise:a1", "next", ttl=30)
        assert current is not None

        fences = _held_fences.set((stale,))
        try:
            with pytest.raises(LeaseLost):
                store.set_cursor("datto", "alerts", "stale")
            with pytest.raises(LeaseLost), store.transaction():
                store.save_alert_ticket(AlertTicket("connectwise", "datto", "a1", "pending"))
            # What was done remotely is recorded whoever did it: the journal is not fenced.
            store.record(JournalEntry("connectwise", "create_ticket", "a1", "ok"))
        finally:
            _held_fences.reset(fences)
        assert successor.cursor("datto", "alerts") is None
        assert successor.alert_ticket("connectwise", "datto", "a1") is None
        assert [e.target for e in successor.journal()] == ["a1"]

        fences = _held_fences.set((current,))
        try:
            successor.set_cursor("datto", "alerts", "current")
        finally:
            _held_fences.reset(fences)
        assert store.cursor("datto", "alerts") == "current"

    def test_a_lease_with_a_write_in_flight_stays_taken_after_its_release(self, store):
        lease = store.acquire_lease("alert:connectwise:a1", "writer", ttl=30)
        store.mark_in_flight([lease], 2.0)
        store.release_lease(lease)
        assert store.acquire_lease("alert:connectwise:a1", "next", ttl=30) is None
        assert 0 < store.lease_holder("alert:connectwise:a1").expires_in <= 2.0
        lease2 = store.acquire_lease("alert:connectwise:a2", "writer", ttl=30)
        store.mark_in_flight([lease2], 30.0)
        store.mark_in_flight([lease2], None)  # answered
        store.release_lease(lease2)
        assert store.acquire_lease("alert:connectwise:a2", "next", ttl=30) is not None

    def test_a_claim_is_taken_once_across_two_connections(self, store, make_store):
        other = make_store()
        with try_hold(store, "outbox:close:1") as mine:
            with try_hold(other, "outbox:close:1") as theirs:
                assert mine is not None and theirs is None
        with try_hold(other, "outbox:close:1") as theirs:
            assert theirs is not None

    def test_claims_are_taken_once_across_processes(self, store_url, store):
        names = [f"alert:connectwise:a{n}" for n in range(12)]
        won = race(_claim_all, [(store_url, names, 0.05)] * 4)
        by_name: dict[str, list[tuple[float, float]]] = {}
        for process in won:
            for name, start, end in process:
                by_name.setdefault(name, []).append((start, end))
        assert set(by_name) == set(names)  # every claim was had by someone...
        for name, spans in by_name.items():  # ...and by one process at a time
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end <= start, f"{name} was held by two processes at once"
        assert all(store.lease_holder(name) is None for name in names)

    def test_processes_writing_at_once_lose_no_write(self, store_url, store):
        writers = [f"writer {n}" for n in range(3)]
        race(_write_rounds, [(store_url, writer, 15) for writer in writers])
        expected = dict.fromkeys(writers, 15)
        assert Counter(w.plugin for w in store.warnings()) == expected
        assert Counter(r["plugin"] for r in store.table_rows("cursors")) == expected
        assert all(store.message_seen(f"{w} message 14") for w in writers)

    # -- outbox, cursors, options, journal, webhook messages -------------------------------

    def test_the_outbox_keeps_one_wish_per_key_and_waits_between_tries(self, store):
        first = store.enqueue(OutboxItem("connectwise:close:1", "connectwise", "close", "1",
                                         {"status": "a"}))
        latest = store.enqueue(OutboxItem("connectwise:close:1", "connectwise", "close", "1",
                                          {"status": "b"}))
        other = store.enqueue(OutboxItem("datto:resolve:9", "datto", "resolve", "9"))
        assert [(i.key, dict(i.payload)) for i in store.outbox()] == [
            ("connectwise:close:1", {"status": "b"}), ("datto:resolve:9", {})]
        store.outbox_done(first)  # an older wish's answer: the newer one stays
        assert [i.key for i in store.outbox(key="connectwise:close:1")] == ["connectwise:close:1"]
        store.outbox_retry(other, "503 from the RMM", delay=3600)
        due = store.outbox(due_only=True)
        assert [i.key for i in due] == ["connectwise:close:1"]
        [waiting] = store.outbox(key="datto:resolve:9")
        assert (waiting.attempts, waiting.last_error) == (1, "503 from the RMM")
        store.outbox_done(latest)
        assert [i.key for i in store.outbox()] == ["datto:resolve:9"]

    def test_cursors_options_and_webhook_messages(self, store):
        assert store.cursor("datto", "alerts") is None
        store.set_cursor("datto", "alerts", "2026-01-01T00:00:00Z")
        store.set_cursor("datto", "alerts", "2026-01-02T00:00:00Z")
        assert store.cursor("datto", "alerts") == "2026-01-02T00:00:00Z"
        store.set_option("connectwise", "ticketing", {"on": True, "boards": [1, 2]})
        assert store.option("connectwise", "ticketing") == {"on": True, "boards": [1, 2]}
        assert store.message_seen("m1") is False
        store.remember_message("m1")
        store.remember_message("m1")  # a second delivery: the first stays
        assert store.message_seen("m1") is True
        store.remember_message("m2", keep_seconds=0)  # forgets those older than now
        time.sleep(0.05)
        store.remember_message("m3", keep_seconds=0.01)
        assert (store.message_seen("m1"), store.message_seen("m3")) == (False, True)

    def test_the_journal_and_warnings_keep_their_order(self, store):
        for n in range(3):
            store.record(JournalEntry("datto" if n % 2 else "connectwise", "act", f"t{n}", "ok",
                                      {"n": n}))
        assert [(e.target, dict(e.detail)) for e in store.journal()] == [
            ("t0", {"n": 0}), ("t1", {"n": 1}), ("t2", {"n": 2})]
        assert [e.target for e in store.journal("datto")] == ["t1"]
        ids = [store.add_warning("datto", f"s{n}", "m").id for n in range(3)]
        assert ids == sorted(ids) and [w.id for w in store.warnings("datto")] == ids
        assert store.clear_warnings("datto") == 3 and store.warnings() == []

    # -- plugins, secrets, migrations ------------------------------------------------------

    def test_removing_a_plugin_purges_its_rows_but_not_the_journal(self, store_pm, store):
        from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

        configure_plugin(store_pm, store, "connectwise", ConnectWiseSimulator(seed=1).settings(
            "http://connectwise.simulator"))
        store.save_device_mapping(_mapping("d1", "cfg1"))
        store.save_alert_ticket(AlertTicket("connectwise", "datto", "a1", "open", ticket_id="t1"))
        store.set_cursor("connectwise", "tickets", "x")
        store.set_option("connectwise", "ticketing", {"on": True})
        store.add_warning("connectwise", "s", "m")
        store.enqueue(OutboxItem("connectwise:close:1", "connectwise", "close", "1"))
        store.record(JournalEntry("connectwise", "create_ticket", "a1", "ok"))
        store.set_cursor("datto", "alerts", "kept")

        deleted = store.purge_plugin("connectwise")  # what `plugins remove` does to the store

        assert {table: n for table, n in deleted.items() if n} == {
            "plugins": 1, "device_configurations": 1, "alert_tickets": 1, "cursors": 1,
            "options": 1, "warnings": 1, "outbox": 1}

        for table in PLUGIN_TABLES:
            assert [row for row in store.table_rows(table) if "connectwise" in row.values()] == [], table
        assert store.cursor("datto", "alerts") == "kept"
        assert [e.target for e in store.journal("connectwise")] == ["a1"]

    def test_secrets_are_never_kept_in_plaintext(self, store_pm, store):
        from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator

        settings = ConnectWiseSimulator(seed=1).settings("http://connectwise.simulator")
        secret = "plaintext-private-key-0123456789"
        settings["private_key"] = secret
        configure_plugin(store_pm, store, "connectwise", settings)
        for table in PLUGIN_TABLES + ("journal",):
            for row in store.table_rows(table):
                assert not any(secret in str(value) for value in row.values()), table
        from psabridge.core.plugins import plugin_settings

        assert plugin_settings(store_pm, store, "connectwise")["private_key"] == secret

    def test_opening_again_changes_nothing(self, store_pm, store_url, store):
        store.set_cursor("datto", "alerts", "x")
        version = self.schema_version(store_url)
        for _ in range(2):
            open_store(store_pm, store_url).close()
        assert store.cursor("datto", "alerts") == "x"
        assert self.schema_version(store_url) == version

    def test_processes_opening_a_new_store_at_once_all_open_it(self, store_pm, store_url):
        race(_open_and_close, [(store_url,)] * 5)
        store = open_store(store_pm, store_url)
        try:
            store.set_cursor("datto", "alerts", "x")
            assert store.cursor("datto", "alerts") == "x"
        finally:
            store.close()
