"""The webhook endpoint under any request: whatever the body (any JSON shape, any bytes, any size
up to the limit, nesting of any depth), the headers and the token, the answer is a JSON answer
below 500, and never repeats the secret.

The app runs in-process (werkzeug's test client) on the in-memory connectors, with a mapped
device and ticketing on, so that a body naming a real alert or ticket reaches the handlers.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from psabridge.core import ticketing
from psabridge.core.webhooks import MAX_BODY, WebhookApp
from tests.core.test_mapping import bridge, psa, rmm  # noqa: F401 - fixtures
from tests.core.test_ticketing import ready  # noqa: F401 - fixture

SECRET = "fuzz+webhook/secret=0123&x"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)


def senders_payloads(path: str, real_ids: list[str]) -> st.SearchStrategy[dict]:
    """Bodies as the sender to `path` sends them, naming real records or not, stating a state
    or not."""
    real = st.sampled_from(real_ids)
    callbacks = st.fixed_dictionaries(
        {"Type": st.sampled_from(["ticket", "Ticket", "company"]),
         "ID": st.one_of(real, st.integers(1, 5000), st.from_regex(r"[0-9]{1,25}", fullmatch=True))},
        optional={"MessageId": st.sampled_from(["m-1", "m-2"]) | printable,
                  "Action": st.sampled_from(["added", "updated", "deleted"]),
                  "Entity": st.none() | st.text(max_size=200)})
    alerts = st.fixed_dictionaries(
        {"alertUid": st.one_of(real, real, st.text(max_size=200))},
        optional={"event": st.sampled_from(["raised", "resolved"]) | json_values,
                  "resolved": json_values, "status": json_values})
    return callbacks if path == "/hooks/psa" else alerts


@st.composite
def shaped_payloads(draw, real_ids: list[str]) -> dict:
    """Bodies close to what a sender sends: the fields the handlers read, with any value."""
    real = st.sampled_from(real_ids)
    fields = {
        "Type": st.sampled_from(["ticket", "company"]) | json_values,
        "ID": real | json_values,
        "MessageId": printable | json_values,
        "alertUid": real | json_values,
        "alert_uid": st.text(max_size=50),
        "event": json_values,
        "resolved": json_values,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    payload = {name: draw(fields[name]) for name in chosen}
    return payload | draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))


def big_bodies() -> st.SearchStrategy[bytes]:
    """Bodies up to the size limit, built rather than drawn byte by byte."""
    size = st.integers(0, MAX_BODY - 64)
    return st.one_of(
        size.map(lambda n: b"[" * (n // 2) + b"]" * (n // 2)),  # deep and balanced
        size.map(lambda n: b'{"alertUid": ' + b"[" * n),  # deep and never closed
        size.map(lambda n: b'{"alertUid": "' + b"a" * n + b'"}'),  # one long string
        size.map(lambda n: b'{"ID": ' + b"9" * n + b', "Type": "ticket"}'),  # a huge number
        size.map(lambda n: b'"' + b'\\"' * (n // 2)),  # escaped quotes, never closed
        st.binary(max_size=2048),
    )


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Draw from each strategy `weight` times as often as from one of weight 1 (`one_of` draws
    from its branches evenly)."""
    branches = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(branches) - 1).flatmap(lambda i: branches[i])


def bodies(path: str, real_ids: list[str]) -> st.SearchStrategy[bytes]:
    def encoded(payloads):
        return payloads.map(lambda p: json.dumps(p).encode())

    return weighted((5, encoded(senders_payloads(path, real_ids))),
                    (2, encoded(shaped_payloads(real_ids))),
                    (1, encoded(json_values)),
                    (2, big_bodies()))


# Mostly the right token, so that most requests reach the handlers; else near misses and noise.
tokens = weighted((7, st.just(SECRET)), (1, st.sampled_from([SECRET[:-1], SECRET + " ", ""])),
                  (1, printable))
token_placements = st.lists(st.sampled_from(["query", "bearer", "header"]), min_size=1, max_size=2)
other_headers = st.dictionaries(
    st.sampled_from(["Content-Type", "Authorization", "X-Psabridge-Token", "Content-Encoding",
                     "Transfer-Encoding", "X-Forwarded-For"]), printable, max_size=3)


@pytest.fixture
def endpoint(bridge, ready, psa, rmm):  # noqa: F811
    """The app, and the ids bodies may name: alerts open and resolved, a ticket (fixed now: what
    hypothesis draws from must not change while it runs)."""
    alerts = [rmm.raise_alert(ready, monitor=f"m{i}") for i in range(3)]
    ticket = ticketing.ticket_for_alert(bridge, alerts[1])
    rmm.resolve(alerts[0].uid)
    return WebhookApp(lambda: bridge, SECRET), [*(a.uid for a in alerts), ticket.ticket_id, "1"]


@FUZZ
@given(data=st.data())
def test_no_request_makes_the_endpoint_answer_500(endpoint, data):
    app, real_ids = endpoint
    path = data.draw(st.sampled_from(["/hooks/psa", "/hooks/rmm"] * 4 + ["/health", "/hooks/other"]))
    method = data.draw(st.sampled_from(["POST"] * 10 + ["GET", "PUT"]))
    body = data.draw(bodies(path, real_ids))
    token = data.draw(tokens)
    headers = data.draw(other_headers)
    query = data.draw(st.dictionaries(printable, printable, max_size=2))
    for placement in data.draw(token_placements):
        if placement == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif placement == "header":
            headers["X-Psabridge-Token"] = token
        else:
            query["token"] = token
    query_string = urlencode(query, quote_via=quote)
    if "token" in query and data.draw(st.booleans()):
        query_string += f"&token={token}"  # as typed by hand: not encoded at all

    answer = Client(app).open(path, method=method, data=body, headers=headers,
                              query_string=query_string)

    event(f"{path} {answer.status_code}")  # what was reached: --hypothesis-show-statistics
    assert answer.status_code < 500, (answer.status_code, answer.get_data()[:300])
    assert answer.headers["Content-Type"] == "application/json"
    json.loads(answer.get_data())
    assert SECRET not in answer.get_data(as_text=True)
