"""What a technician does in Autotask's own interface, for `psabridge simulate close-ticket` and
its siblings: served under /_simulator/ beside the simulated API (never part of it), by
`AutotaskSimulator.serve(control_token=...)`.

Each action takes a JSON object and answers one with snake_case keys; a request that cannot be
done is a `ControlError` that says which field is wrong and what to give instead. The change is
made as a technician (not the API user), so TicketWebhooks that exclude the API user's resource
still call back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psabridge.plugins.autotask.simulator.data import QUEUES, STATUS_COMPLETE, STATUS_NEW, STATUSES
from psabridge.simulation import ControlAction, ControlError

if TYPE_CHECKING:
    from psabridge.plugins.autotask.simulator import AutotaskSimulator

STATUS_LABELS = {value: label for value, label, *_ in STATUSES}
QUEUE_LABELS = {value: label for value, label, *_ in QUEUES}


def actions(sim: AutotaskSimulator) -> dict[str, ControlAction]:
    return {"close-ticket": lambda body: close_ticket(sim, body),
            "reopen-ticket": lambda body: reopen_ticket(sim, body)}


def _ticket(sim: AutotaskSimulator, value) -> dict:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
            or int(value) <= 0:
        raise ControlError(400, f"ticket must be a ticket id (a positive whole number), not {value!r}")
    ticket = sim.db.table("Tickets").get(int(value))
    if ticket is None:
        raise ControlError(404, f"no ticket {value}: `psabridge tickets list` shows the tickets "
                                "psabridge made")
    return ticket


def _set_status(sim: AutotaskSimulator, ticket: dict, status: int) -> dict:
    technician = sim.db.technicians()[0]
    before = dict(ticket)
    ticket["status"] = status
    sim.api.after_write("Tickets", before, ticket, person_id=technician["id"])
    company = sim.db.get("Companies", ticket["companyID"])
    queue = QUEUE_LABELS.get(ticket["queueID"]) if ticket["queueID"] is not None else None
    # `summary` and `board` as the ConnectWise simulator answers, so `simulate close-ticket`
    # prints either's answer.
    return {"ticket_id": ticket["id"], "ticket_number": ticket["ticketNumber"], "title": ticket["title"],
            "summary": ticket["title"], "board": queue or "(no queue)", "queue": queue,
            "status": STATUS_LABELS.get(status, str(status)), "closed": status == STATUS_COMPLETE,
            "company": company["companyName"] if company else None}


def close_ticket(sim: AutotaskSimulator, body: dict) -> dict:
    """{"ticket": id, "status": optional label}: a technician completes the ticket. Autotask
    has one completed status, Complete; naming another is refused."""
    with sim.db.lock:
        ticket = _ticket(sim, body.get("ticket"))
        name = body.get("status")
        if name is not None and (not isinstance(name, str) or name.strip().casefold() != "complete"):
            raise ControlError(400, f"{name!r} is not a completed status; Autotask's is: Complete")
        if ticket["status"] == STATUS_COMPLETE:
            raise ControlError(409, f"ticket {ticket['id']} is already complete")
        return _set_status(sim, ticket, STATUS_COMPLETE)


def reopen_ticket(sim: AutotaskSimulator, body: dict) -> dict:
    """{"ticket": id}: a technician sets a completed ticket back to New."""
    with sim.db.lock:
        ticket = _ticket(sim, body.get("ticket"))
        if ticket["status"] != STATUS_COMPLETE:
            raise ControlError(409, f"ticket {ticket['id']} is not complete")
        return _set_status(sim, ticket, STATUS_NEW)
