"""What processes share through the store (`psabridge.core.shared`), on both stores: a Datto
token reused by a second process instead of a grant of its own, renewed once when refused and
shared again; ConnectWise's codebase looked up once for all; the PSA's ticket options read once
for all; and the token never in plaintext in the store."""

from __future__ import annotations

import json
import time

import pytest

from psabridge.core import logs
from psabridge.core.bridge import SHARED_TICKET_OPTIONS, TICKET_OPTIONS_KEPT, Bridge
from psabridge.core.connectors import PsaConnector, RmmConnector
from psabridge.core.plugins import configure_plugin, connection_for
from psabridge.core.shared import SharedValues
from psabridge.core.store import open_store
from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator
from psabridge.plugins.rmm_datto.client import ClientOptions, client_for
from psabridge.plugins.rmm_datto.simulator import DattoSimulator, ManualClock

GRANT = "POST /auth/oauth/token"
CODEBASE = "GET /login/companyinfo/psabridge"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres_db")


@pytest.fixture
def shared_store(pm, store_url):
    store = open_store(pm, store_url)
    yield store
    store.close()


@pytest.fixture(autouse=True)
def opened():
    """The stores the test's other "processes" opened, closed at its end."""
    stores = []
    yield stores
    for store in stores:
        store.close()


def open_another(pm, store_url: str, stores: list):
    stores.append(open_store(pm, store_url))
    return stores[-1]


@pytest.fixture
def datto(pm, shared_store):
    sim = DattoSimulator(seed=0, clock=ManualClock())
    configure_plugin(pm, shared_store, "datto", sim.settings("http://datto.sim"))
    return sim


@pytest.fixture
def process(pm, store_url, opened):
    def another(sim) -> RmmConnector:
        """The Datto connector as another psabridge process on the store has it: its own
        store connection, its own client, nothing in memory from the others."""
        return RmmConnector(pm, connection_for(pm, open_another(pm, store_url, opened), "datto",
                                               sim.transport()))
    return another


def raw_rows(store) -> str:
    return json.dumps([row for table in ("options", "plugins") for row in store.table_rows(table)])


def test_a_second_process_uses_the_token_the_first_was_granted(pm, shared_store, process, datto):
    first, second = process(datto), process(datto)
    list(first.list_sites())
    list(second.list_sites())
    list(process(datto).list_sites())  # a restart after a crash, say
    assert datto.counts[GRANT] == 1
    [token] = datto.tokens
    stored = raw_rows(shared_store)
    assert token not in stored and "fernet:" in stored  # sealed like a secret setting


def test_a_refused_token_is_renewed_once_and_the_new_one_shared(process, datto):
    first, second = process(datto), process(datto)
    list(first.list_sites())
    list(second.list_sites())
    datto.expire_tokens()  # both hold a token the API now refuses
    list(first.list_sites())  # 401, a grant, written back
    list(second.list_sites())  # 401, and the store already has the new one: no grant
    assert datto.counts[GRANT] == 2
    assert datto.counts["GET /api/v2/account/sites"] == 4 + 2  # each refused request sent again


def test_a_token_near_its_expiry_is_not_taken_from_the_store(process, datto):
    list(process(datto).list_sites())
    later = process(datto)
    # This process's wall clock says the shared token expires in a minute: it gets its own.
    client_for(later.connection, ClientOptions(
        wall_clock=lambda: time.time() + datto.options.token_ttl - 60))
    list(later.list_sites())
    assert datto.counts[GRANT] == 2
    list(process(datto).list_sites())  # and shares it
    assert datto.counts[GRANT] == 2


def test_a_token_granted_for_another_key_is_not_used(pm, shared_store, process, datto):
    list(process(datto).list_sites())
    datto.api_key, datto.api_secret = "NEWKEY0123456789", "NEWSECRET0123456789"  # the admin's new key
    configure_plugin(pm, shared_store, "datto", datto.settings("http://datto.sim"))
    list(process(datto).list_sites())
    assert datto.counts[GRANT] == 2 and datto.counts["GET /api/v2/account/sites"] == 2


def test_connectwise_s_codebase_is_looked_up_once_for_every_process(pm, shared_store, store_url,
                                                                   opened):
    sim = ConnectWiseSimulator(seed=3, companies=2)
    configure_plugin(pm, shared_store, "connectwise", sim.settings("http://connectwise.test"))
    for _ in range(3):
        connector = PsaConnector(pm, connection_for(pm, open_another(pm, store_url, opened), "connectwise",
                                                    sim.transport()))
        connector.get_ticket("1")
    assert sim.counts[CODEBASE] == 1
    sim.options.codebase = "v2025_2/"  # an upgrade moved the instance: one lookup, then shared
    for _ in range(2):
        connector = PsaConnector(pm, connection_for(pm, open_another(pm, store_url, opened), "connectwise",
                                                    sim.transport()))
        connector.get_ticket("1")
    assert sim.counts[CODEBASE] == 2


def test_shared_values_are_sealed_and_go_with_their_plugin(pm, shared_store):
    shared = SharedValues(shared_store, "datto")
    logs.register_secret("a-token-0123456789")
    assert shared.put("token", "a-token-0123456789")
    assert shared.get("token") == "a-token-0123456789"
    assert SharedValues(shared_store, "connectwise").get("token") is None
    assert "a-token-0123456789" not in raw_rows(shared_store)
    shared.forget("token")
    assert shared.get("token") is None
    shared.put("token", "a-token-0123456789")
    shared_store.purge_plugin("datto")
    assert shared.get("token") is None


def test_a_value_sealed_under_another_key_counts_as_none(pm, shared_store, monkeypatch):
    shared = SharedValues(shared_store, "datto")
    shared.put("token", "a-token-0123456789")
    monkeypatch.setenv("PSABRIDGE_SECRET_KEY", "Q" * 43 + "=")  # another installation's key
    assert shared.get("token") is None
    assert shared.put("token", "b-token-0123456789")  # and it is replaced, under this key
    assert shared.get("token") == "b-token-0123456789"


def test_the_psa_s_ticket_options_are_read_once_for_every_process(pm, shared_store, store_url,
                                                                  opened):
    """A ticket's limits come from them; ConnectWise costs four requests per board and more
    to read them, which each worker, replica and restart used to pay before its first ticket."""
    sim = ConnectWiseSimulator(seed=3, companies=2)
    configure_plugin(pm, shared_store, "connectwise", sim.settings("http://connectwise.test"))

    def another_process() -> Bridge:
        store = open_another(pm, store_url, opened)
        return Bridge(pm=pm, store=store, psa=PsaConnector(pm, connection_for(
            pm, store, "connectwise", sim.transport())), rmm=None)

    first = another_process().ticket_options()
    assert another_process().ticket_options() == first
    assert another_process().with_fresh_reads().ticket_options() == first
    assert sim.counts["GET /service/boards"] == 1
    SharedValues(shared_store, "connectwise").put(SHARED_TICKET_OPTIONS, json.dumps(
        {"read_at": time.time() - TICKET_OPTIONS_KEPT - 1, "options": {}}))  # read long ago
    assert another_process().ticket_options() == first
    assert sim.counts["GET /service/boards"] == 2
