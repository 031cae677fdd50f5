"""What a technician does in ConnectWise Manage's own interface, for `psabridge simulate
close-ticket`: served under /_simulator/ beside the simulated API (never part of it), by
`ConnectWiseSimulator.serve(control_token=...)`.

Each action takes a JSON object and answers one with snake_case keys; a request that cannot be
done is a `ControlError` that says which field is wrong and what to give instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psabridge.plugins.connectwise.simulator.db import ref
from psabridge.simulation import ControlAction, ControlError

if TYPE_CHECKING:
    from psabridge.plugins.connectwise.simulator import ConnectWiseSimulator


def actions(sim: ConnectWiseSimulator) -> dict[str, ControlAction]:
    return {"close-ticket": lambda body: close_ticket(sim, body)}


def close_ticket(sim: ConnectWiseSimulator, body: dict) -> dict:
    """{"ticket": id, "status": optional name}: a technician moves the ticket to a closed status
    of its board (the first one, unless named), and ConnectWise calls back as it does for any
    change to a ticket."""
    ticket_id = _ticket_id(body.get("ticket"))
    db = sim.db
    with db.lock:
        ticket = db.tickets.get(ticket_id)
        if ticket is None:
            raise ControlError(404, f"no ticket {ticket_id}: `psabridge tickets list` shows the tickets "
                                    "psabridge made")
        statuses = sorted((s for s in db.statuses_of(ticket["board"]["id"]) if not s.get("inactive")),
                          key=lambda s: s["sortOrder"])
        closed = [s for s in statuses if s["closedStatus"]]
        status = _closed_status(body.get("status"), statuses, closed, ticket["board"]["name"])
        if ticket.get("closedFlag"):
            raise ControlError(409, f"ticket {ticket_id} is already closed (status "
                                    f"{ticket['status']['name']})")
        ticket["status"] = ref(status)
        sim.api._follow_status(ticket)
        db.touch(ticket)
        sim.api.notify("ticket", "updated", ticket)
        return {"ticket_id": ticket_id, "summary": ticket["summary"], "board": ticket["board"]["name"],
                "status": status["name"], "closed": bool(ticket["closedFlag"]),
                "company": ticket["company"]["name"]}


def _ticket_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
            or int(value) <= 0:
        raise ControlError(400, f"ticket must be a ticket number (a positive whole number), not {value!r}")
    return int(value)


def _closed_status(name, statuses: list[dict], closed: list[dict], board: str) -> dict:
    names = ", ".join(s["name"] for s in closed) or "none"
    if name is None:
        if not closed:
            raise ControlError(409, f"board {board} has no closed status to close the ticket with")
        return closed[0]
    if not isinstance(name, str):
        raise ControlError(400, "status must be the name of a status, as text")
    found = next((s for s in statuses if s["name"].casefold() == name.strip().casefold()), None)
    if found is None or not found["closedStatus"]:
        what = "is not a closed status" if found else "is not a status"
        raise ControlError(400, f"{name!r} {what} of board {board}; its closed statuses are: {names}")
    return found
