"""Look-ups: the PSA's and the RMM's own records, with the ids other commands ask for.

`psabridge ticketing set` wants board, status, type, subtype, priority and source ids;
`companies map` wants company ids and site uids; `devices map` wants device uids and
configuration ids. These functions read them from the enabled connectors so the admin need not
ask the APIs by hand. Each returns a list of JSON-ready rows (dicts with snake_case keys, every
id in a field of its own), the same for the CLI's table, its `--json` and any other caller.

Nothing here writes: a look-up only reads from the PSA and the RMM.
"""

from __future__ import annotations

from collections.abc import Iterable

from psabridge.core.bridge import Bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Board, CompanyFilters, Named, TicketOptions

Row = dict


class NotFound(PsabridgeError):
    """A look-up was asked for something the PSA or RMM does not have (e.g. an unknown board)."""


def _options(bridge: Bridge, options: TicketOptions | None) -> TicketOptions:
    return options if options is not None else bridge.psa.call("psa_ticket_options")


# -- PSA: ticket options -------------------------------------------------------------------------


def why_board_is_unusable(board: Board) -> str:
    """Why tickets cannot be created on `board`, in words; "" when they can.

    The PSA needs a default team and a default status on a board to create a ticket there.
    """
    missing = [what for what, present in (("default team", board.has_default_team),
                                          ("default status", board.default_status_id))
               if not present]
    reasons = []
    if missing:
        reasons.append(f"it has no {' and no '.join(missing)}, so the PSA refuses tickets on it; "
                       "set one on the board in the PSA")
    if board.inactive:
        reasons.append("it is inactive in the PSA")
    return "; ".join(reasons)


def boards(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """Every service board: `id`, `name`, `has_default_team`, `default_status_id`, `inactive`,
    `usable` (whether tickets can be created on it) and `why` (why not, in words; "" if usable).
    """
    rows = []
    for board in _options(bridge, options).boards:
        why = why_board_is_unusable(board)
        rows.append({"id": board.id, "name": board.name, "has_default_team": board.has_default_team,
                     "default_status_id": board.default_status_id, "inactive": board.inactive,
                     "usable": not why, "why": why})
    return rows


def find_board(options: TicketOptions, board: str) -> Board:
    """The board whose id is `board`, else the one named `board` (case-insensitive)."""
    by_id = {b.id: b for b in options.boards}
    if board in by_id:
        return by_id[board]
    named = [b for b in options.boards if b.name.casefold() == board.strip().casefold()]
    if len(named) == 1:
        return named[0]
    if named:
        raise NotFound(f"several boards are named {board!r}; give the board's id "
                       f"({', '.join(b.id for b in named)})")
    raise NotFound(f"the PSA has no board with id or name {board!r}; `psabridge psa boards` lists "
                   "them")


def _board_names(options: TicketOptions) -> dict[str, str]:
    return {b.id: b.name for b in options.boards}


def statuses(bridge: Bridge, board: str | None = None,
             options: TicketOptions | None = None) -> list[Row]:
    """The statuses of every board, or of one (`board`: its id or name): `id`, `name`,
    `board_id`, `board`, `closed` (a closed status, for `--closed-status`), `default`, `inactive`.
    """
    options = _options(bridge, options)
    wanted = find_board(options, board).id if board else None
    names = _board_names(options)
    return [{"id": s.id, "name": s.name, "board_id": s.board_id, "board": names.get(s.board_id, ""),
             "closed": s.closed, "default": s.default, "inactive": s.inactive}
            for s in options.statuses if wanted is None or s.board_id == wanted]


def _per_board(values: Iterable[Named], options: TicketOptions, board: str | None) -> list[Row]:
    wanted = find_board(options, board).id if board else None
    names = _board_names(options)
    return [{"id": v.id, "name": v.name, "board_id": v.board_id,
             "board": names.get(v.board_id, "") if v.board_id else ""}
            for v in values if wanted is None or v.board_id in (None, wanted)]


def ticket_types(bridge: Bridge, board: str | None = None,
                 options: TicketOptions | None = None) -> list[Row]:
    """Ticket types of every board, or of one: `id`, `name`, `board_id`, `board`."""
    options = _options(bridge, options)
    return _per_board(options.types, options, board)


def ticket_subtypes(bridge: Bridge, board: str | None = None,
                    options: TicketOptions | None = None) -> list[Row]:
    """Ticket subtypes of every board, or of one: `id`, `name`, `board_id`, `board`."""
    options = _options(bridge, options)
    return _per_board(options.subtypes, options, board)


def priorities(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """Ticket priorities, in the PSA's order: `id`, `name`."""
    return [{"id": p.id, "name": p.name} for p in _options(bridge, options).priorities]


def sources(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """Ticket sources: `id`, `name`."""
    return [{"id": s.id, "name": s.name} for s in _options(bridge, options).sources]


# -- PSA: companies and configurations -----------------------------------------------------------


def companies(bridge: Bridge, search: str | None = None) -> list[Row]:
    """The PSA's companies (all types and statuses), optionally those whose name contains
    `search`: `id`, `identifier`, `name`, `status`, `types` (a list)."""
    found = bridge.psa.call("psa_list_companies", filters=CompanyFilters(search=search or None))
    return [{"id": c.id, "identifier": c.identifier, "name": c.name, "status": c.status,
             "types": list(c.types)} for c in found if not c.deleted]


def configurations(bridge: Bridge, company_id: str) -> list[Row]:
    """The configurations of one company: `id`, `name`, `type_id`, `type`, `status`, `active`,
    `serial_number`, `management_link` (the RMM's link, when the configuration is mapped)."""
    if not bridge.psa.supports("psa_list_configurations"):
        raise NotFound(f"the {bridge.psa.name} plugin cannot list a company's configurations")
    found = bridge.psa.call("psa_list_configurations", company_id=str(company_id))
    return [{"id": c.id, "name": c.name, "type_id": c.type_id, "type": c.type_name,
             "status": c.status, "active": c.active, "serial_number": c.serial_number,
             "management_link": c.management_link} for c in found]


# -- RMM -----------------------------------------------------------------------------------------


def sites(bridge: Bridge) -> list[Row]:
    """The RMM's sites: `uid`, `id`, `name`, `system` (a site of the RMM's own, such as its
    deleted devices, which is never mapped), `url`."""
    return [{"uid": s.uid, "id": s.id, "name": s.name, "system": s.system, "url": s.url}
            for s in bridge.rmm.call("rmm_list_sites")]


def devices(bridge: Bridge, site_uid: str | None = None) -> list[Row]:
    """The RMM's devices, of one site or all: `uid`, `id`, `hostname`, `site_uid`, `device_type`,
    `last_audit` (ISO 8601, or None before the first audit: such a device cannot be mapped yet),
    `deleted`."""
    return [{"uid": d.uid, "id": d.id, "hostname": d.hostname, "site_uid": d.site_uid,
             "device_type": d.device_type,
             "last_audit": d.last_audit.isoformat() if d.last_audit else None,
             "deleted": d.deleted}
            for d in bridge.rmm.call("rmm_list_devices", site_uid=site_uid or None)]


def monitors(bridge: Bridge) -> list[Row]:
    """The monitors raising the RMM's open alerts now, one row each (the RMM hooks name a
    monitor only on its alerts, so a monitor with no open alert is not listed): `monitor` (the
    name `psabridge ticketing monitor` takes), `open_alerts`, `devices` (how many devices),
    `priorities` (a list), `creates_ticket` (the monitor's own setting, as its alerts say),
    `example` (what one of its alerts says)."""
    seen: dict[str, dict] = {}
    for alert in bridge.rmm.call("rmm_list_alerts", resolved=False, since=None):
        row = seen.setdefault(alert.monitor, {"monitor": alert.monitor, "open_alerts": 0,
                                              "devices": set(), "priorities": [],
                                              "creates_ticket": alert.creates_ticket,
                                              "example": alert.message})
        row["open_alerts"] += 1
        row["devices"].add(alert.device_uid)
        if alert.priority not in row["priorities"]:
            row["priorities"].append(alert.priority)
    return [{**row, "devices": len(row["devices"])}
            for row in sorted(seen.values(), key=lambda r: r["monitor"])]
