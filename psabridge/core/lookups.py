"""Look-ups: the PSA's and the RMM's own records, with the ids other commands ask for.

`psabridge ticketing set` wants the ids of the PSA's ticket routing choices, statuses,
priorities and sources;
`companies map` wants company ids and site uids; `devices map` wants device uids and
configuration ids. These functions read them from the enabled connectors so the admin need not
ask the APIs by hand. Each returns a list of JSON-ready rows (dicts with snake_case keys, every
id in a field of its own), the same for the CLI's table, its `--json` and any other caller.

Nothing here writes: a look-up only reads from the PSA and the RMM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from psabridge.core import ticketing
from psabridge.core.bridge import Bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import CompanyFilters, Device, RoutingField, TicketOptions

Row = dict


class NotFound(PsabridgeError):
    """A look-up was asked for something the PSA or RMM does not have (e.g. an unknown board)."""


def _options(bridge: Bridge, options: TicketOptions | None) -> TicketOptions:
    return options if options is not None else bridge.psa.ticket_options()


# -- PSA: ticket options -------------------------------------------------------------------------
#
# The PSA's connector declares its routing fields (`TicketOptions.routing`): ConnectWise's board,
# type and subtype, Autotask's queue, issue type and sub-issue type... Nothing here knows one.


def routing_field(options: TicketOptions, name: str) -> RoutingField:
    """The routing field called `name` (or labelled so, case aside); NotFound lists them."""
    key = name.strip().casefold().replace(" ", "_").replace("-", "_")
    for field in options.routing:
        if key in (field.name.casefold(), field.label.casefold().replace(" ", "_")):
            return field
    names = ", ".join(f.name for f in options.routing) or "none"
    raise NotFound(f"the PSA has no ticket field {name!r}; its fields are {names} "
                   "(`psabridge psa routing` lists them)")


def routing_fields(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """The PSA's ticket routing fields: `name` (what `ticketing set --route` takes), `label`,
    `required`, `scoped_by` (the field whose choice decides this one's, or None), `choices`
    (how many)."""
    return [{"name": f.name, "label": f.label, "required": f.required, "scoped_by": f.scoped_by,
             "choices": len(f.choices)} for f in _options(bridge, options).routing]


def _scope_names(options: TicketOptions, field_name: str | None) -> dict[str, str]:
    field = options.field(field_name) if field_name else None
    return {c.id: c.name for c in field.choices} if field else {}


def routing_choices(bridge: Bridge, field: str, within: str | None = None,
                    options: TicketOptions | None = None) -> list[Row]:
    """The choices of one routing field, of every scope or of one (`within`: the id or name of a
    choice of the field scoping it): `id`, `name`, `scope_id`, `scope` (its name), `inactive`,
    `default` (the PSA's default choice), `usable` (whether tickets can be created with it)
    and `why` (why not, in words)."""
    options = _options(bridge, options)
    declared = routing_field(options, field)
    if within and declared.scoped_by is None:
        raise NotFound(f"the PSA's {declared.label.lower()} choices are the same everywhere: "
                       "leave out --within")
    wanted = scope_id(options, declared.scoped_by, within) if within else None
    names = _scope_names(options, declared.scoped_by)
    rows = []
    for choice in declared.choices:
        if wanted is not None and choice.scope_id not in (None, wanted):
            continue
        why = "; ".join(filter(None, [choice.unusable,
                                      "it is inactive in the PSA" if choice.inactive else ""]))
        rows.append({"id": choice.id, "name": choice.name, "scope_id": choice.scope_id,
                     "scope": names.get(choice.scope_id, "") if choice.scope_id else "",
                     "inactive": choice.inactive, "default": choice.default,
                     "usable": not why, "why": why})
    return rows


def scope_id(options: TicketOptions, field_name: str, text: str) -> str:
    """The id of the choice of the scoping field `field_name` that `text` names."""
    field = routing_field(options, field_name)
    return resolve(field.label.lower(), text, [(c.id, c.name) for c in field.choices],
                   f"`psabridge psa choices {field.name}`")


def statuses(bridge: Bridge, within: str | None = None,
             options: TicketOptions | None = None) -> list[Row]:
    """The PSA's ticket statuses, all or those of one scope (`within`: the id or name of a choice
    of the field statuses are scoped by, e.g. a board): `id`, `name`, `scope_id`, `scope`,
    `closed` (a closed status, for `--closed-status`), `default`, `inactive`."""
    options = _options(bridge, options)
    if within and options.status_scope is None:
        raise NotFound("the PSA's statuses are the same everywhere: leave out --within")
    wanted = scope_id(options, options.status_scope, within) if within else None
    names = _scope_names(options, options.status_scope)
    return [{"id": s.id, "name": s.name, "scope_id": s.scope_id,
             "scope": names.get(s.scope_id, "") if s.scope_id else "",
             "closed": s.closed, "default": s.default, "inactive": s.inactive}
            for s in options.statuses if wanted is None or s.scope_id == wanted]


def priorities(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """Ticket priorities, in the PSA's order: `id`, `name`, `inactive`."""
    return [{"id": p.id, "name": p.name, "inactive": p.inactive}
            for p in _options(bridge, options).priorities]


def sources(bridge: Bridge, options: TicketOptions | None = None) -> list[Row]:
    """Ticket sources: `id`, `name`, `inactive`."""
    return [{"id": s.id, "name": s.name, "inactive": s.inactive}
            for s in _options(bridge, options).sources]


# -- PSA: companies and configurations -----------------------------------------------------------


def companies(bridge: Bridge, search: str | None = None) -> list[Row]:
    """The PSA's companies (all types and statuses), optionally those whose name contains
    `search`: `id`, `identifier`, `name`, `status`, `types` (a list)."""
    found = bridge.psa.list_companies(filters=CompanyFilters(search=search or None))
    return [{"id": c.id, "identifier": c.identifier, "name": c.name, "status": c.status,
             "types": list(c.types)} for c in found if not c.deleted]


def configurations(bridge: Bridge, company_id: str) -> list[Row]:
    """The configurations of one company: `id`, `name`, `type_id`, `type`, `status`, `active`,
    `serial_number`, `management_link` (the RMM's link, when the configuration is mapped)."""
    if not bridge.psa.supports("psa_list_configurations"):
        raise NotFound(f"the {bridge.psa.name} plugin cannot list a company's configurations")
    found = bridge.psa.list_configurations(company_id=str(company_id))
    return [{"id": c.id, "name": c.name, "type_id": c.type_id, "type": c.type_name,
             "status": c.status, "active": c.active, "serial_number": c.serial_number,
             "management_link": c.management_link} for c in found]


# -- RMM -----------------------------------------------------------------------------------------


def sites(bridge: Bridge) -> list[Row]:
    """The RMM's sites: `uid`, `id`, `name`, `system` (a site of the RMM's own, such as its
    deleted devices, which is never mapped), `url`."""
    return [{"uid": s.uid, "id": s.id, "name": s.name, "system": s.system, "url": s.url}
            for s in bridge.rmm.list_sites()]


def devices(bridge: Bridge, site_uid: str | None = None) -> list[Row]:
    """The RMM's devices, of one site or all: `uid`, `id`, `hostname`, `site_uid`, `device_type`,
    `last_audit` (ISO 8601, or None before the first audit: such a device cannot be mapped yet),
    `deleted`."""
    return [{"uid": d.uid, "id": d.id, "hostname": d.hostname, "site_uid": d.site_uid,
             "device_type": d.device_type,
             "last_audit": d.last_audit.isoformat() if d.last_audit else None,
             "deleted": d.deleted}
            for d in bridge.rmm.list_devices(site_uid=site_uid or None)]


def monitors(bridge: Bridge) -> list[Row]:
    """The monitors raising the RMM's open alerts now, one row each (the RMM hooks name a
    monitor only on its alerts, so a monitor with no open alert is not listed): `monitor` (the
    name `psabridge ticketing monitor` takes), `open_alerts`, `devices` (how many devices),
    `priorities` (a list), `creates_ticket` (the monitor's own setting, as its alerts say),
    `example` (what one of its alerts says)."""
    seen: dict[str, dict] = {}
    for alert in bridge.rmm.list_alerts(resolved=False, since=None):
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


# -- names to ids --------------------------------------------------------------------------------
#
# Wherever a command asks for an id it takes a name too. Each function below returns the id of
# the one record whose id (or uid) is `text`, else whose name is `text` (case and surrounding
# spaces aside); a name that fits several records, or none, is an error that lists the
# candidates and the look-up command that shows them all.

CANDIDATES_SHOWN = 8


class Ambiguous(NotFound):
    """A name fits several records; the caller must give an id."""


def _listing(pairs: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name!r} ({id_})" for id_, name in pairs[:CANDIDATES_SHOWN])
    more = len(pairs) - CANDIDATES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def resolve(kind: str, text: str, records: Iterable[tuple[str, str]], listed_by: str,
            where: str = "the PSA", ids: Iterable[tuple[str, str]] = ()) -> str:
    """The id of the record of `kind` whose id or name is `text`.

    `records` are (id, name) pairs; `ids` other (alias, id) pairs that also name a record by a
    key of its own, such as a company's identifier or a site's numeric id. `listed_by` is the
    command that lists them, named in the error."""
    records = list(records)
    wanted = str(text).strip()
    if not wanted:
        raise NotFound(f"an empty {kind} was given; give its id or name ({listed_by} lists them)")
    by_id = {id_: name for id_, name in records}
    if wanted in by_id:
        return wanted
    aliases = {alias: id_ for alias, id_ in ids if alias}
    if wanted in aliases:
        return aliases[wanted]
    key = wanted.casefold()
    named = [(id_, name) for id_, name in records if (name or "").strip().casefold() == key]
    if len(named) == 1:
        return named[0][0]
    if named:
        raise Ambiguous(f"{len(named)} {kind}s are named {wanted!r}: {_listing(named)}; give the "
                        "id of the one you mean")
    close = [(id_, name) for id_, name in records if key in (name or "").casefold()]
    if not close:
        from rapidfuzz import fuzz, process  # only for the error message

        found = process.extract(key, [(name or "").casefold() for _, name in records],
                                scorer=fuzz.WRatio, limit=CANDIDATES_SHOWN)
        close = [records[index] for _, score, index in found if score >= 60]
    hint = f"; did you mean {_listing(close)}?" if close else ""
    raise NotFound(f"{where} has no {kind} with id or name {wanted!r}{hint} ({listed_by} lists "
                   "them)")


def route_id(bridge: Bridge, field: str, text: str, routing: Mapping[str, str],
             options: TicketOptions | None = None) -> str:
    """The id of the choice of the routing field `field` that `text` names, among those fitting
    the scope already chosen in `routing` (a type of the board chosen)."""
    options = _options(bridge, options)
    declared = routing_field(options, field)
    scope = routing.get(declared.scoped_by) if declared.scoped_by else None
    choices = [c for c in declared.choices if scope is None or c.scope_id in (None, scope)]
    label = declared.label.lower()
    where = f" of {ticketing.describe_choice(options, declared.scoped_by, scope)}" if scope else ""
    listed_by = f"`psabridge psa choices {declared.name}" + (f" --within {scope}`" if scope else "`")
    return resolve(f"{label}{where}", text, [(c.id, c.name) for c in choices], listed_by)


def status_id(bridge: Bridge, text: str, scope: str | None,
              options: TicketOptions | None = None) -> str:
    """A status, by id or name, among those of the scope `scope` (an id of a choice of the
    field statuses are scoped by; None where statuses are global)."""
    options = _options(bridge, options)
    scoped = options.status_scope is not None
    where = f" of {ticketing.describe_choice(options, options.status_scope, scope)}" \
        if scoped and scope else ""
    return resolve(f"status{where}", text,
                   [(s.id, s.name) for s in options.statuses
                    if not scoped or s.scope_id == scope],
                   "`psabridge psa statuses" + (f" --within {scope}`" if scoped and scope else "`"))


def priority_id(bridge: Bridge, text: str, options: TicketOptions | None = None) -> str:
    return resolve("priority", text, [(p.id, p.name) for p in _options(bridge, options).priorities],
                   "`psabridge psa priorities`")


def source_id(bridge: Bridge, text: str, options: TicketOptions | None = None) -> str:
    return resolve("ticket source", text, [(s.id, s.name) for s in _options(bridge, options).sources],
                   "`psabridge psa sources`")


def company_id(bridge: Bridge, text: str, rows: list[Row] | None = None) -> str:
    """A PSA company by id, identifier or name (`rows`: `companies()` when already read)."""
    rows = companies(bridge) if rows is None else rows
    return resolve("company", text, [(r["id"], r["name"]) for r in rows],
                   "`psabridge psa companies`", ids=[(r["identifier"], r["id"]) for r in rows])


def configuration_id(bridge: Bridge, text: str, company: str, rows: list[Row] | None = None) -> str:
    """A configuration of the company `company` (an id), by id or name."""
    rows = configurations(bridge, company) if rows is None else rows
    return resolve(f"configuration of company {company}", text,
                   [(r["id"], r["name"]) for r in rows],
                   f"`psabridge psa configurations --company {company}`")


def site_uid(bridge: Bridge, text: str, rows: list[Row] | None = None) -> str:
    """An RMM site by uid, id or name (`rows`: `sites()` when already read)."""
    rows = sites(bridge) if rows is None else rows
    return resolve("site", text, [(r["uid"], r["name"]) for r in rows], "`psabridge rmm sites`",
                   where="the RMM", ids=[(str(r["id"]), r["uid"]) for r in rows if r["id"]])


def device_uid(bridge: Bridge, text: str, rows: list[Row] | None = None) -> str:
    """An RMM device by uid, id or hostname (`rows`: `devices()` when already read)."""
    rows = devices(bridge) if rows is None else rows
    live = [r for r in rows if not r["deleted"]]
    return resolve("device", text, [(r["uid"], r["hostname"]) for r in live],
                   "`psabridge rmm devices`", where="the RMM",
                   ids=[(str(r["id"]), r["uid"]) for r in live if r["id"]])


def device(bridge: Bridge, text: str) -> Device:
    """The RMM's device whose uid, id or hostname is `text`."""
    found = [d for d in bridge.rmm.list_devices(site_uid=None) if not d.deleted]
    uid = resolve("device", text, [(d.uid, d.hostname) for d in found], "`psabridge rmm devices`",
                  where="the RMM", ids=[(str(d.id), d.uid) for d in found if d.id])
    return next(d for d in found if d.uid == uid)


def rmm_priority(bridge: Bridge, text: str) -> str:
    """An RMM alert priority as the RMM spells it (`critical` is `Critical`). An RMM that says
    which priorities it has (its `alert_priorities`) takes only those; one that does not takes
    any name but an empty one."""
    from psabridge.core.plugins import plugin_record

    wanted = str(text).strip()
    known = plugin_record(bridge.pm, bridge.rmm.name).alert_priorities
    if not wanted:
        raise NotFound("an empty RMM priority was given; give one of the RMM's priorities"
                       + (f" ({', '.join(known)})" if known else ""))
    if not known:
        return wanted
    found = next((p for p in known if p.casefold() == wanted.casefold()), None)
    if found is None:
        raise NotFound(f"the RMM has no alert priority {wanted!r}; its priorities are "
                       f"{', '.join(known)}")
    return found


def monitor_name(bridge: Bridge, text: str, known: Iterable[str] = ()) -> tuple[str, bool]:
    """A monitor as `ticketing monitor` saves it, and whether the RMM's open alerts (or the
    names in `known`, the monitors already set) name it.

    The RMM names a monitor only on its alerts, so a monitor with no open alert cannot be
    checked: such a name is taken as given, and the caller says so. An empty name never is."""
    wanted = str(text).strip()
    if not wanted:
        raise NotFound("an empty monitor name was given; `psabridge rmm monitors` lists the "
                       "monitors raising alerts now")
    names = [*known, *(row["monitor"] for row in monitors(bridge))]
    if wanted in names:
        return wanted, True
    close = [n for n in dict.fromkeys(names) if n.casefold() == wanted.casefold()]
    if len(close) == 1:
        return close[0], True
    return wanted, False


def device_type(bridge: Bridge, text: str, known: Iterable[str]) -> str:
    """An RMM device type as the RMM spells it, among `known` (the RMM's devices' types and
    the types already mapped)."""
    wanted = str(text).strip()
    known = sorted(set(known))
    if not wanted:
        raise NotFound("an empty device type was given; `psabridge device-types list` lists "
                       "them")
    if wanted in known:
        return wanted
    found = [t for t in known if t.casefold() == wanted.casefold()]
    if len(found) == 1:
        return found[0]
    raise NotFound(f"the RMM has no device of type {wanted!r}; its device types are "
                   f"{', '.join(known) or 'none yet'} (`psabridge device-types list`)")
