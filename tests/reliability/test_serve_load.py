"""`psabridge serve` under load, next to a `sync --watch` on the same store.

Both are real processes on one SQLite file; the test process serves the simulators on
loopback and plays Datto RMM delivering webhooks: 16 threads post about a hundred deliveries at
once, for distinct alerts and for the same alerts again (byte for byte, which is a replay, and
serialised differently, which is the same event sent again). A webhook receiver must answer
every one of them, and never with a 5xx: Datto would retry it, or give up on it. Then, once
polling has had its turn, every alert must have exactly one ticket.
"""

from __future__ import annotations

import collections
import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.reliability.soak_processes import (
    Process,
    free_port,
    pass_reports,
    psabridge_env,
    quiet_report,
    wait_until,
    wait_until_serving,
)
from tests.reliability.world import _marker, check_invariants, raise_alerts, set_up, settled, world

SEED = 61
SECRET = "serve-load-webhook-secret-0123"
ALERTS = 60
DELIVERIES = 100
THREADS = 16

# One alert event, written three ways: what a sender that retries, or two senders, may produce.
BODY_FORMS = (
    lambda uid: json.dumps({"alertUid": uid}),
    lambda uid: json.dumps({"alertUid": uid}, separators=(",", ":")),
    lambda uid: json.dumps({"alertUid": uid}, indent=1),
)


def plan_deliveries(alert_uids: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """Each alert once, and some again, in any of its forms. An alert's copies are queued next
    to each other, so that the threads deliver them at the same moment, as a sender retrying
    on a slow answer, or two senders, would."""
    copies = collections.Counter(alert_uids)
    while sum(copies.values()) < DELIVERIES:
        copies[rng.choice(alert_uids)] += 1
    deliveries = []
    for uid in rng.sample(alert_uids, len(alert_uids)):
        deliveries += [(uid, rng.choice(BODY_FORMS)(uid)) for _ in range(copies[uid])]
    return deliveries


def test_serve_under_parallel_webhooks_answers_no_5xx_and_tickets_each_alert_once(tmp_path):
    rng = random.Random(SEED)
    db = tmp_path / "state.db"
    print(f"serve load seed={SEED} alerts={ALERTS} deliveries={DELIVERIES} threads={THREADS}")
    with world(db, SEED, companies=10, loopback=True) as w:
        set_up(w)
        env = psabridge_env(db, PSABRIDGE_WEBHOOK_SECRET=SECRET)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = Process("serve", ["-v", "serve", "--port", str(port)], env, tmp_path)
        watcher = Process("watcher", ["-v", "sync", "--watch", "--interval", "1", "--json"],
                          env, tmp_path)
        processes = [serve.start(), watcher.start()]
        try:
            wait_until_serving(serve, url)
            # Once the watcher has mapped the devices, its passes (every second) poll the very
            # alerts the webhooks are about: two processes racing for each alert, both writing.
            wait_until(lambda: any(map(quiet_report, pass_reports(watcher))), 20,
                       "the watcher's first quiet pass (devices mapped)")
            alerts = raise_alerts(w, ALERTS, rng, repeats=0)
            assert len(alerts) == ALERTS, "the estate has too few devices for the test"
            deliveries = plan_deliveries([a["alertUid"] for a in alerts], rng)

            def deliver(delivery: tuple[str, str]) -> tuple[str, int | str, str]:
                uid, body = delivery
                try:
                    answer = httpx.post(f"{url}/hooks/rmm?token={SECRET}", content=body,
                                        headers={"Content-Type": "application/json"}, timeout=20)
                except httpx.TransportError as exc:
                    return uid, f"no answer ({type(exc).__name__})", ""
                return uid, answer.status_code, answer.text[:200]

            with ThreadPoolExecutor(THREADS) as pool:
                answers = list(pool.map(deliver, deliveries))
            statuses = collections.Counter(status for _, status, _ in answers)
            print({"answers": dict(statuses)})
            failed = [a for a in answers if not isinstance(a[1], int) or a[1] >= 500]
            assert not failed, (f"{len(failed)} of {len(answers)} deliveries answered 5xx or not "
                                f"at all (first 5: {failed[:5]}); answers: {dict(statuses)}")

            # Polling picks up whatever the webhooks left; a quiet pass begun after the burst
            # says the watcher has nothing left to do (devices mapped, alerts decided).
            passes_before = len(pass_reports(watcher))
            wait_until(lambda: settled(w) and any(
                quiet_report(r) for r in pass_reports(watcher)[passes_before + 1:]),
                20, "every alert decided and a quiet pass of the watcher")
        except BaseException:
            for process in processes:
                print(process.tails())
            raise
        finally:
            for process in processes:
                process.stop()

        markers = collections.Counter(t.get("externalXRef") for t in w.cw.db.tickets.values())
        tickets_per_alert = {a["alertUid"]: markers[_marker(a["alertUid"])] for a in alerts}
        not_once = {uid: n for uid, n in tickets_per_alert.items() if n != 1}
        assert not not_once, f"alerts without exactly one ticket (alert: tickets): {not_once}"
        figures = check_invariants(w)
        print(figures)
        assert figures["tickets"] == ALERTS
