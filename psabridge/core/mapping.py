"""The mapping engine: companies to sites, device types to configuration types, devices to
configurations, connector-neutral: it talks to the PSA and the RMM only through hooks.

Each mapping command first builds a `Plan`, the exact list of changes it would make; `--dry-run`
prints it and stops, otherwise `apply` carries it out. A command run twice plans nothing the
second time, because every change is planned from the current state on both sides.

One device never stops the others. A device whose hardware details, or whose company's
candidate configurations, cannot be read is skipped with the reason and the rest are planned;
a change that fails is reported and the rest are applied. Only a read the whole command stands
on (the device list, the companies, the configuration types) raises.
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal

import attrs

from psabridge.core import coordination, logs, outbox, pacing
from psabridge.core.bridge import Bridge
from psabridge.core.devices import DetailsRefresh, refresh_device_details
from psabridge.core.errors import PsabridgeError
from psabridge.core.matching import (
    Match,
    SiteSuggestion,
    match_configuration,
    suggest_configuration_type,
    suggest_sites,
)
from psabridge.core.models import (
    Company,
    CompanyFilters,
    CompanySiteMapping,
    Configuration,
    ConfigurationChanges,
    ConfigurationType,
    Device,
    DeviceDetails,
    DeviceMapping,
    DeviceTypeMapping,
    JournalEntry,
    Site,
)

log = logs.get_logger(__name__)

NEW = "new"  # a choice meaning "create a new site / configuration"
UNDECIDED = object()  # whether to list every configuration is for `_readings` to decide
MappingView = Literal["unmapped", "mapped", "all"]


GONE = "deleted in the PSA"  # the status shown for a mapped company the PSA no longer lists


class MappingError(PsabridgeError):
    """A mapping request that cannot be carried out as asked."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@contextmanager
def mapping_lease(bridge: Bridge, wait: float = coordination.LOCK_WAIT) -> Iterator[object]:
    """Hold the right to change mappings: planning and applying run under it, so two commands
    (or a command and a sync pass) never plan from the same state and both create."""
    with coordination.hold(bridge.store, f"mapping:{bridge.psa.name}", wait=wait,
                           what="another command is changing mappings", reentrant=True) as held:
        yield held


# -- plans ----------------------------------------------------------------------------------


@attrs.frozen
class Change:
    """One change a command makes; `--dry-run` prints it, `apply` carries it out."""

    action: str
    subject: str
    detail: str
    run: Callable[[], object] = attrs.field(eq=False, repr=False)
    # The subject's and the target's ids (company_id, site_uid, device_uid, configuration_id),
    # for callers that report changes as data rather than words; None for one not made yet.
    ids: dict[str, str | None] = attrs.field(factory=dict, kw_only=True, eq=False)
    # The remote write it makes through `Bridge.write`, when known at planning: its intent is
    # journalled with its group's, before the group starts.
    intent: JournalEntry | None = attrs.field(default=None, kw_only=True, eq=False)


@attrs.define
class Plan:
    """The changes a command would make, and what it leaves out, with why.

    What is left out for a lasting reason (`held`) becomes a warning when the plan is applied,
    and a device with a warning waits for the admin to clear it before automatic mapping tries
    it again. What is left out because a remote system failed for now (`deferred`: a server
    error, throttling, no answer) is only reported: the next run tries it again by itself.
    """

    changes: list[Change] = attrs.field(factory=list)
    held: list[tuple[str, str]] = attrs.field(factory=list)  # (subject, why)
    deferred: list[tuple[str, str]] = attrs.field(factory=list)  # (subject, why)
    skipped_ids: dict[str, dict[str, str | None]] = attrs.field(factory=dict)  # subject -> ids
    # Devices automatic mapping does not try yet, being unaudited (subject, device uid): not
    # asked for, so not a failure, but said, so that the admin knows they wait.
    not_audited: list[tuple[str, str]] = attrs.field(factory=list)

    def add(self, action: str, subject: str, detail: str, run: Callable[[], object],
            ids: dict[str, str | None] | None = None, intent: JournalEntry | None = None) -> None:
        self.changes.append(Change(action, subject, detail, run, ids=ids or {}, intent=intent))

    def skip(self, subject: str, why: str, transient: bool = False,
             ids: dict[str, str | None] | None = None) -> None:
        (self.deferred if transient else self.held).append((subject, why))
        if ids:
            self.skipped_ids[subject] = ids

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Everything left out, held back or deferred, with why."""
        return [*self.held, *self.deferred]


@attrs.frozen
class Outcome:
    done: list[Change]
    failed: list[tuple[Change, str]]


def _transient(error: PsabridgeError) -> bool:
    """Whether `error` is a remote system's passing state (5xx, throttled, no answer), which the
    next run simply tries again, rather than a lasting problem the admin has to look at."""
    return getattr(error, "transient", False)


def apply(bridge: Bridge, plan: Plan, progress: Callable[[Change], None] | None = None) -> Outcome:
    """Carry out a plan. What was held back, and a change that fails for a lasting reason,
    become warnings; the rest go on.

    The changes of a plan are independent of one another (each has its own subject, and what
    they take was settled when planning), so they run on the bridge's workers, a group at a
    time; the store rows of a group that can wait (the journal's outcomes, mappings to newly
    created records) are committed together at the end of the group (`Bridge.batched_writes`).
    `progress` is called in the caller's thread, once per change, as its group finishes."""
    known = {(w.subject, w.message) for w in bridge.store.warnings(bridge.psa.name)}
    held = [(subject, why) for subject, why in plan.held if (subject, why) not in known]
    if held:
        with bridge.store.transaction():
            for subject, why in held:
                bridge.store.add_warning(bridge.psa.name, subject, why)
    with bridge.one_run():  # changes that plan again (a site mapped under auto_map) read once
        return _apply(bridge, plan, progress)


def _apply(bridge: Bridge, plan: Plan, progress: Callable[[Change], None] | None) -> Outcome:
    done, failed = [], []
    group = max(APPLY_GROUP, 8 * bridge.workers)
    for start in range(0, len(plan.changes), group):
        changes = plan.changes[start:start + group]
        try:
            with bridge.batched_writes([c.intent for c in changes if c.intent is not None]):
                outcomes = bridge.concurrently(lambda change: change.run(), changes)
        except PsabridgeError as exc:
            # The group's rows could not be committed (a lost lease): what was made remotely is
            # found and adopted by the next run, as after a crash.
            outcomes = [pacing.Done(change, error=exc) for change in changes]
        for outcome in outcomes:
            change = outcome.item
            if progress:
                progress(change)
            if outcome.error is None:
                done.append(change)
                continue
            exc = outcome.error
            message = f"{change.action} for {change.subject} failed: {exc}"
            # A stored warning holds a device back from automatic mapping until cleared;
            # a passing failure (5xx, throttled, no answer) is only retried by the next pass.
            if not _transient(exc):
                bridge.store.add_warning(bridge.psa.name, change.subject, message)
            log.warning("change failed", action=change.action, subject=change.subject, error=str(exc))
            failed.append((change, str(exc)))
    return Outcome(done, failed)


# Changes applied together: their store rows are committed at once, and a crash loses at most
# a group's worth of rows, which the next run makes good (see `Bridge.save_soon`).
APPLY_GROUP = 100


# -- companies and sites --------------------------------------------------------------------


@attrs.frozen
class CompanyRow:
    """One line of the companies table: a company under one of its types."""

    company: Company
    company_type: str
    suggestion: SiteSuggestion | None = None  # for unmapped companies
    mapping: CompanySiteMapping | None = None  # for mapped companies
    site_url: str | None = None  # link to the site in the RMM


def _company_passes(company: Company, filters: CompanyFilters) -> bool:
    if filters.type and filters.type.casefold() not in {t.casefold() for t in company.types}:
        return False
    if filters.status and filters.status.casefold() != company.status.casefold():
        return False
    if filters.search:
        needle = filters.search.casefold()
        return needle in company.name.casefold() or needle in company.identifier.casefold()
    return True


def rmm_sites(bridge: Bridge) -> list[Site]:
    return [site for site in bridge.sites() if not site.system]


def site_url(bridge: Bridge, site: Site) -> str:
    return site.url or bridge.rmm.site_url(site=site)


def load_companies(
    bridge: Bridge, view: MappingView = "unmapped", filters: CompanyFilters | None = None,
    sites: list[Site] | None = None,
) -> list[CompanyRow]:
    """The companies table: filtered, one row per type, with suggestions for
    unmapped companies and the mapped site with its link for mapped ones.

    `sites` are the RMM's sites when the caller has just read them (not read again)."""
    psa, rmm = bridge.pair
    filters = filters or CompanyFilters()
    mapped = {m.company_id: m for m in bridge.store.company_mappings(psa, rmm)}
    companies = [
        c for c in bridge.psa.list_companies(filters=filters)
        if not c.deleted and _company_passes(c, filters)
    ]
    sites = rmm_sites(bridge) if sites is None else sites
    sites_by_uid = {site.uid: site for site in sites}
    rows: list[CompanyRow] = []
    if view in ("mapped", "all"):
        listed = {c.id: c for c in companies}
        unfiltered = filters == CompanyFilters()
        for company_id, mapping in mapped.items():
            company = listed.get(company_id)
            if company is None and not unfiltered:
                continue  # filtered out
            if company is None:  # mapped, but gone from the PSA: shown so the admin can act
                company = Company(company_id, "", mapping.company_name, GONE, deleted=True)
            site = sites_by_uid.get(mapping.site_uid, Site(mapping.site_uid, mapping.site_name))
            rows.append(CompanyRow(company, mapping.company_type, mapping=mapping,
                                   site_url=site_url(bridge, site)))
    if view in ("unmapped", "all"):
        unmapped = [c for c in companies if c.id not in mapped]
        taken_sites = {m.site_uid for m in mapped.values()}
        free_sites = [(s.uid, s.name) for s in sites if s.uid not in taken_sites]
        suggestions = suggest_sites([(c.id, c.name) for c in unmapped], free_sites,
                                    threshold=bridge.option("site_threshold"))
        for company in unmapped:
            for company_type in company.types or ("",):
                if filters.type and company_type.casefold() != filters.type.casefold():
                    continue
                rows.append(CompanyRow(company, company_type, suggestion=suggestions[company.id]))
    return rows


def plan_company_mappings(
    bridge: Bridge, choices: Mapping[str, str | None] | None,
    company_types: Mapping[str, str] | None = None,
) -> Plan:
    """Plan mapping companies to sites. `choices` maps a company id to a site uid, to NEW
    ("Create New" with the company's name) or to None (take the suggestion); `choices`
    None means every unmapped company by its suggestion (`companies map --suggested`)."""
    psa, rmm = bridge.pair
    plan = Plan()
    every_site = list(bridge.rmm.list_sites())
    site_list = [site for site in every_site if not site.system]
    system_sites = {site.uid: site for site in every_site if site.system}
    rows = {row.company.id: row for row in load_companies(bridge, "all", sites=site_list)}
    if choices is None:
        choices = {company_id: None for company_id, row in rows.items() if row.mapping is None}
    sites = {site.uid: site for site in site_list}
    mapped_sites = {m.site_uid: m.company_id for m in bridge.store.company_mappings(psa, rmm)}
    planned_sites: set[str] = set()
    for company_id, choice in choices.items():
        row = rows.get(company_id)
        if row is None:
            raise MappingError(f"the PSA has no company with id {company_id}")
        company = row.company
        subject = f"{company.name} ({company.id})"
        if row.mapping is not None:
            if choice in (None, NEW, row.mapping.site_uid):
                continue  # already mapped (a rerun of the same command): nothing to do
            raise MappingError(
                f"{subject} is already mapped to site {row.mapping.site_name}; unmap it first "
                f"with `psabridge companies unmap {company.id}`"
            )
        if choice is None:
            choice = row.suggestion.site_uid or NEW
        company_type = (company_types or {}).get(company_id, row.company_type)
        reused = ""
        if choice == NEW:
            # A site of exactly that name (one left by an interrupted run, say) is reused: never
            # two sites of one name.
            existing = next((s for s in sites.values() if s.name == company.name
                             and s.uid not in mapped_sites and s.uid not in planned_sites), None)
            if existing is None:
                plan.add("create site", subject, f"new site {company.name!r}",
                         _map_to_new_site(bridge, company, company_type),
                         ids={"company_id": company.id, "site_uid": None})
                continue
            choice = existing.uid
            reused = " (the RMM already has a site of that name: mapped to it, not created again)"
        if choice in system_sites:
            raise MappingError(f"site {system_sites[choice].name} is one of the RMM's own "
                               f"(system) sites, which are never mapped; choose another site "
                               f"for {subject}")
        site = sites.get(choice)
        if site is None:
            raise MappingError(f"the RMM has no site with uid {choice} (for {subject})")
        if site.uid in mapped_sites or site.uid in planned_sites:
            other = mapped_sites.get(site.uid, "another company in this request")
            raise MappingError(f"site {site.name} is already mapped to {other}; a site maps to one company")
        planned_sites.add(site.uid)
        plan.add("map company", subject, f"site {site.name}{reused}",
                 lambda c=company, s=site, t=company_type: _save_company_mapping(bridge, c, s, t),
                 ids={"company_id": company.id, "site_uid": site.uid})
    return plan


def _map_to_new_site(bridge: Bridge, company: Company, company_type: str) -> Callable[[], object]:
    def run():
        site = bridge.write(bridge.rmm, "create_site", company.name,
                            lambda: bridge.rmm.create_site(name=company.name))
        bridge.forget_sites()
        _save_company_mapping(bridge, company, site, company_type)

    return run


def _save_company_mapping(bridge: Bridge, company: Company, site: Site, company_type: str) -> None:
    psa, rmm = bridge.pair
    bridge.store.save_company_mapping(
        CompanySiteMapping(psa, rmm, company.id, company.name, site.uid, site.name, company_type))
    bridge.announce("on_site_mapped", psa=psa, rmm=rmm, company=company, site=site)
    if bridge.option("auto_map"):  # A newly mapped site triggers automatic mapping
        apply(bridge, plan_automatic_mapping(bridge, site_uids={site.uid}))


def plan_company_unmaps(bridge: Bridge, company_ids: Iterable[str]) -> Plan:
    """Plan removing company-site mappings; a company not mapped needs no change."""
    psa, rmm = bridge.pair
    mapped = {m.company_id: m for m in bridge.store.company_mappings(psa, rmm)}
    plan = Plan()
    for company_id in dict.fromkeys(company_ids):
        mapping = mapped.get(company_id)
        if mapping is None:
            continue
        plan.add("unmap company", f"{mapping.company_name} ({company_id})",
                 f"from site {mapping.site_name}; its devices keep their configurations",
                 lambda c=company_id: bridge.store.delete_company_mapping(psa, rmm, c),
                 ids={"company_id": company_id, "site_uid": mapping.site_uid})
    return plan


def unmap_companies(bridge: Bridge, company_ids: Iterable[str]) -> list[str]:
    """Remove company-site mappings; returns the ids that were mapped."""
    psa, rmm = bridge.pair
    return [cid for cid in company_ids if bridge.store.delete_company_mapping(psa, rmm, cid)]


# -- device types and configuration types ---------------------------------------------------


@attrs.frozen
class DeviceTypeRow:
    device_type: str
    configuration_type: ConfigurationType | None
    score: float | None  # None when the admin chose it (a stored mapping)
    mapped: bool

    @property
    def flagged(self) -> bool:
        """This type cannot be used to create configurations."""
        return bool(self.configuration_type and self.configuration_type.unusable)


def load_device_types(bridge: Bridge, device_types: Iterable[str] | None = None) -> list[DeviceTypeRow]:
    """Every RMM device type with its mapped or suggested configuration type."""
    psa, rmm = bridge.pair
    types = bridge.configuration_types()
    by_id = {t.id: t for t in types}
    stored = {m.device_type: m for m in bridge.store.device_type_mappings(psa, rmm)}
    if device_types is None:
        device_types = {d.device_type for d in bridge.devices() if d.device_type}
    rows = []
    for device_type in sorted(set(device_types) | set(stored)):
        if mapping := stored.get(device_type):
            chosen = by_id.get(mapping.configuration_type_id) or ConfigurationType(
                mapping.configuration_type_id, mapping.configuration_type_name)
            rows.append(DeviceTypeRow(device_type, chosen, None, True))
        else:
            suggestion = suggest_configuration_type(device_type, types)
            rows.append(DeviceTypeRow(device_type, suggestion.configuration_type,
                                      suggestion.score, False))
    return rows


def plan_device_type_mappings(bridge: Bridge, choices: Mapping[str, str | None]) -> Plan:
    """Plan mapping device types: `choices` maps a device type to a configuration type (id or
    name, case aside) or None (its suggestion). An unknown choice raises before anything is
    planned; a type already mapped to the chosen configuration type needs no change."""
    psa, rmm = bridge.pair
    types = bridge.configuration_types()
    stored = {m.device_type: m for m in bridge.store.device_type_mappings(psa, rmm)}
    plan = Plan()
    for device_type, wanted in choices.items():
        chosen = _configuration_type(device_type, wanted, types)
        current = stored.get(device_type)
        if current is not None and current.configuration_type_id == chosen.id:
            continue
        mapping = DeviceTypeMapping(psa, rmm, device_type, chosen.id, chosen.name)
        was = f" (was {current.configuration_type_name})" if current else ""
        plan.add("map device type", device_type, f"configuration type {chosen.name}{was}",
                 lambda m=mapping: bridge.store.save_device_type_mapping(m),
                 ids={"device_type": device_type, "configuration_type_id": chosen.id})
    return plan


def _configuration_type(device_type: str, wanted: str | None,
                        types: list[ConfigurationType]) -> ConfigurationType:
    if wanted is None:
        chosen = suggest_configuration_type(device_type, types).configuration_type
        if chosen is None:
            raise MappingError(f"no configuration type resembles {device_type!r}; name one "
                               f"(`psabridge device-types map '{device_type}=TYPE'`)")
        return chosen
    chosen = next((t for t in types if wanted in (t.id, t.name)), None) or next(
        (t for t in types if t.name.casefold() == wanted.strip().casefold()), None)
    if chosen is None:
        names = ", ".join(sorted(t.name for t in types))
        raise MappingError(f"the PSA has no configuration type {wanted!r} (it has: {names})")
    return chosen


def map_device_type(bridge: Bridge, device_type: str, configuration_type: str | None) -> DeviceTypeMapping:
    """Map a device type to a configuration type (id or exact name; None = the suggestion).

    Applies to configurations created from now on only."""
    psa, rmm = bridge.pair
    types = bridge.configuration_types()
    if configuration_type is None:
        chosen = suggest_configuration_type(device_type, types).configuration_type
        if chosen is None:
            raise MappingError(f"no configuration type resembles {device_type!r}; name one")
    else:
        chosen = next((t for t in types if configuration_type in (t.id, t.name)), None)
        if chosen is None:
            names = ", ".join(sorted(t.name for t in types))
            raise MappingError(f"the PSA has no configuration type {configuration_type!r} (it has: {names})")
    mapping = DeviceTypeMapping(psa, rmm, device_type, chosen.id, chosen.name)
    bridge.store.save_device_type_mapping(mapping)
    return mapping


# -- devices and configurations -------------------------------------------------------------

DeviceState = Literal["unaudited", "unmapped", "mapped", "moved", "outside"]


@attrs.frozen
class DeviceRow:
    device: Device
    state: DeviceState
    company_id: str | None = None
    company_name: str = ""
    mapping: DeviceMapping | None = None
    match: Match | None = None  # the proposal for an unmapped, audited device
    problem: str = ""  # why an unmapped device has no proposal this time
    configuration_name: str | None = None  # the mapped configuration's, as the PSA names it


@attrs.define
class Estate:
    """What a devices command needs, read once: devices, mappings, sites' companies."""

    devices: list[Device]
    site_company: dict[str, CompanySiteMapping]
    device_mappings: dict[str, DeviceMapping]

    @classmethod
    def read(cls, bridge: Bridge) -> Estate:
        psa, rmm = bridge.pair
        return cls(
            devices=bridge.devices(),
            site_company={m.site_uid: m for m in bridge.store.company_mappings(psa, rmm)},
            device_mappings={m.device_uid: m for m in bridge.store.device_mappings(psa, rmm)},
        )

    def state_of(self, device: Device) -> DeviceState:
        mapping = self.device_mappings.get(device.uid)
        if mapping is not None:
            # Mapped only while the device is in the site linked to the mapped company.
            linked = self.site_company.get(device.site_uid)
            return "mapped" if linked and linked.company_id == mapping.company_id else "moved"
        if device.site_uid not in self.site_company:
            return "outside"
        return "unaudited" if device.last_audit is None else "unmapped"


def device_details(bridge: Bridge, devices: Iterable[Device]) -> DetailsRefresh:
    """Hardware identity per audited device, read from the RMM only where the audit changed;
    the devices whose read failed are in `failed`, with the error."""
    return refresh_device_details(bridge.rmm, bridge.store, bridge.rmm.name, devices,
                                  workers=bridge.workers)


def device_url(bridge: Bridge, device: Device) -> str:
    return device.url or bridge.rmm.device_url(device=device)


@attrs.frozen
class Unreadable:
    """Why a device cannot be planned this time: something its plan needs could not be read."""

    why: str
    transient: bool  # the remote system failed for now: the next run tries again by itself


@attrs.frozen
class Readings:
    """What planning read about devices: their details, their proposals, and for each device
    that lacks what its plan needs, why."""

    details: dict[str, DeviceDetails]
    proposals: dict[str, Match]
    unreadable: dict[str, Unreadable]


def _readings(bridge: Bridge, estate: Estate, devices: list[Device],
                  to_match: list[Device], listing: Listing | None | object = UNDECIDED) -> Readings:
    """The details of `devices` and the proposals for `to_match` (some of `devices`), with
    one candidates query batch per company. A device whose details cannot be read, or whose
    company's candidates cannot, is in `unreadable` instead; the others are read all the same."""
    refresh = device_details(bridge, devices)
    unreadable = {uid: _unreadable_details(uid, error) for uid, error in refresh.failed.items()}
    taken = {m.configuration_id: m.device_uid for m in estate.device_mappings.values()}
    by_company: dict[str, list[Device]] = defaultdict(list)
    for device in to_match:
        if device.uid not in unreadable:
            by_company[estate.site_company[device.site_uid].company_id].append(device)
    if listing is UNDECIDED:
        listing = Listing.read(bridge, set(by_company))

    def candidates_of(company: tuple[str, list[Device]]) -> dict[str, list[Configuration]]:
        company_id, company_devices = company
        if listing is not None:
            return listing.candidates(company_id, company_devices, refresh.details)
        return bridge.psa.match_configurations(company_id=company_id,
                               devices=company_devices, details=refresh.details)

    proposals = {}
    for outcome in bridge.concurrently(candidates_of, list(by_company.items())):
        company_id, company_devices = outcome.item
        if outcome.error is not None:
            linked = estate.site_company[company_devices[0].site_uid]  # any of them names it
            log.warning("candidate configurations not read", company=company_id,
                        error=str(outcome.error))
            unreadable |= {d.uid: _unreadable_candidates(linked, outcome.error)
                           for d in company_devices}
            continue
        for device in company_devices:
            proposals[device.uid] = match_configuration(
                device, refresh.details[device.uid], device_url(bridge, device),
                outcome.value.get(device.uid, ()), taken)
    return Readings(refresh.details, proposals, unreadable)


@attrs.define
class Listing:
    """Every configuration of the companies with devices to match, from one paged listing,
    indexed by what a device can share with one (the rule of `psa_match_configurations`: the
    same management link, or the same serial number or name, case and spaces aside)."""

    by_key: dict[tuple[str, str, str], list[Configuration]]  # (company, kind, value)

    @classmethod
    def read(cls, bridge: Bridge, company_ids: set[str]) -> Listing | None:
        """The listing, when it costs fewer requests than asking company by company (at least
        one request each); None when it does not, or the PSA cannot list them all. A listing
        that fails leaves the per-company questions to try."""
        # A listing costs its count and at least one page: it can win from three companies on.
        if len(company_ids) < 3 or not (bridge.psa.supports("psa_configuration_listing_cost")
                                        and bridge.psa.supports("psa_list_all_configurations")):
            return None
        try:
            cost = bridge.psa.configuration_listing_cost()
            if cost is None or cost >= len(company_ids):
                return None
            by_key: dict[tuple[str, str, str], list[Configuration]] = defaultdict(list)
            for configuration in bridge.psa.list_all_configurations():
                if configuration.company_id in company_ids:
                    for kind, value in _configuration_keys(configuration):
                        by_key[(configuration.company_id, kind, value)].append(configuration)
        except PsabridgeError as exc:
            log.warning("configurations not listed; asking company by company", error=str(exc))
            return None
        log.info("configurations_listed", requests=cost, companies=len(company_ids))
        return cls(dict(by_key))

    def candidates(self, company_id: str, devices: list[Device],
                   details: Mapping[str, DeviceDetails]) -> dict[str, list[Configuration]]:
        """For each of `devices` (of company `company_id`), its candidate configurations."""
        found = {}
        for device in devices:
            serial = getattr(details.get(device.uid), "serial_number", None)
            matches: dict[str, Configuration] = {}
            for kind, value in (("link", device.url or ""), ("serial", _fold(serial)),
                                ("name", _fold(device.hostname))):
                for configuration in self.by_key.get((company_id, kind, value), ()) if value else ():
                    matches[configuration.id] = configuration
            found[device.uid] = list(matches.values())
        return found


def _configuration_keys(configuration: Configuration) -> list[tuple[str, str]]:
    return [key for key in (("link", configuration.management_link or ""),
                            ("serial", _fold(configuration.serial_number)),
                            ("name", _fold(configuration.name))) if key[1]]


def _fold(value: str | None) -> str:
    return (value or "").strip().casefold()


def _unreadable_details(device_uid: str, error: PsabridgeError) -> Unreadable:
    what = (f"its hardware details (serial number, manufacturer, model) could not be read from "
            f"the RMM: {error}")
    if _transient(error):
        return Unreadable(f"{what}; the next run tries again", transient=True)
    return Unreadable(
        f"{what}; check the device in the RMM, then `psabridge warnings clear` to try again, "
        f"or map it by hand (`psabridge devices map {device_uid}=CONFIGURATION_ID`)", transient=False)


def _unreadable_candidates(company: CompanySiteMapping, error: PsabridgeError) -> Unreadable:
    what = (f"the PSA could not be asked which configurations of company {company.company_name} "
            f"({company.company_id}) match it: {error}")
    if _transient(error):
        return Unreadable(f"{what}; the next run tries again", transient=True)
    if setting := getattr(error, "setting", None):
        return Unreadable(f"{what}; fix the PSA connector's {setting} setting (`psabridge "
                          "configure`), then `psabridge warnings clear` to try again",
                          transient=False)
    return Unreadable(f"{what}; check the company in the PSA, then `psabridge warnings clear` to "
                      "try again", transient=False)


def load_devices(bridge: Bridge, view: MappingView = "unmapped") -> list[DeviceRow]:
    """The devices table: unmapped devices with their proposals (or why there is
    none this time), or mapped ones."""
    estate = Estate.read(bridge)
    rows, to_match = [], []
    for device in estate.devices:
        if device.deleted:
            continue
        state = estate.state_of(device)
        if state == "outside" or (view == "mapped" and state != "mapped") or (
            view == "unmapped" and state == "mapped"
        ):
            continue
        linked = estate.site_company.get(device.site_uid)
        rows.append(DeviceRow(device, state, linked.company_id if linked else None,
                              linked.company_name if linked else "",
                              estate.device_mappings.get(device.uid)))
        if state == "unmapped":
            to_match.append(device)
    readings = _readings(bridge, estate, to_match, to_match)
    problems = {uid: unreadable.why for uid, unreadable in readings.unreadable.items()}
    problems |= {row.device.uid: UNAUDITED for row in rows if row.state == "unaudited"}
    names = _configuration_names(bridge, [row.mapping.configuration_id for row in rows
                                          if row.mapping])
    return [attrs.evolve(row, match=readings.proposals.get(row.device.uid),
                         problem=problems.get(row.device.uid, ""),
                         configuration_name=names.get(row.mapping.configuration_id)
                         if row.mapping else None) for row in rows]


UNAUDITED = "not audited by the RMM yet: it can be mapped after its first audit"


def _configuration_names(bridge: Bridge, ids: list[str]) -> dict[str, str]:
    """The names of the mapped configurations, for the table; none when the PSA cannot say
    now (the ids are still shown)."""
    if not ids:
        return {}
    try:
        return {c.id: c.name for c in bridge.psa.get_configurations(ids=sorted(ids))}
    except PsabridgeError as error:
        log.warning("configuration_names_unread", error=str(error))
        return {}


def plan_device_mappings(bridge: Bridge, choices: Mapping[str, str | None]) -> Plan:
    """Plan mapping devices: `choices` maps a device uid to a configuration id (a manual choice
    that overrides the cascade), NEW, or None (take the proposal)."""
    estate = Estate.read(bridge)
    devices = {d.uid: d for d in estate.devices}
    plan = Plan()
    wanted = []
    for uid in choices:
        device = devices.get(uid)
        if device is None or device.deleted:
            raise MappingError(f"the RMM has no device with uid {uid}")
        state = estate.state_of(device)
        if state == "mapped":
            mapping = estate.device_mappings[uid]
            if choices[uid] in (None, NEW, mapping.configuration_id):
                continue  # already mapped (a rerun of the same command): nothing to do
            raise MappingError(f"{device.hostname} is already mapped to configuration "
                               f"{mapping.configuration_id}; unmap it first")
        if state == "outside" or device.site_uid not in estate.site_company:
            raise MappingError(f"{device.hostname} is in a site that is not mapped to a company; "
                               "map the site first (`psabridge companies map`)")
        if state == "unaudited":
            raise MappingError(f"{device.hostname} has not been audited by the RMM yet, and its "
                               "hardware must be known to map it; try again after its first audit")
        wanted.append(device)
    _plan_devices(bridge, estate, wanted, choices, plan)
    return plan


def plan_automatic_mapping(bridge: Bridge, site_uids: set[str] | None = None,
                           estate: Estate | None = None) -> Plan:
    """Plan automatic mapping: every unmapped, audited device of the mapped sites (or of
    `site_uids`) by its proposal. Devices with an open warning wait until it is cleared."""
    estate = estate or Estate.read(bridge)
    plan = Plan(not_audited=_not_audited(estate, site_uids))
    _plan_devices(bridge, estate, _automatic_candidates(bridge, estate, site_uids), {}, plan)
    return plan


def _not_audited(estate: Estate, site_uids: set[str] | None) -> list[tuple[str, str]]:
    """The devices automatic mapping leaves for after their first audit (subject, uid)."""
    return [(_device_subject(d), d.uid) for d in estate.devices
            if not d.deleted and estate.state_of(d) == "unaudited"
            and (site_uids is None or d.site_uid in site_uids)]


def _automatic_candidates(bridge: Bridge, estate: Estate, site_uids: set[str] | None) -> list[Device]:
    waiting = {w.subject for w in bridge.store.warnings(bridge.psa.name)}
    return [
        d for d in estate.devices
        if not d.deleted and estate.state_of(d) in ("unmapped", "moved")
        and d.last_audit is not None and d.site_uid in estate.site_company
        and (site_uids is None or d.site_uid in site_uids)
        and _device_subject(d) not in waiting
    ]


def map_automatically(bridge: Bridge, site_uids: set[str] | None = None,
                      estate: Estate | None = None,
                      progress: Callable[[Change], None] | None = None) -> tuple[Plan, Outcome]:
    """`plan_automatic_mapping`, applied as it is planned: the devices go company by company
    in groups, and while one group's changes are applied (ConnectWise's requests) the next
    group is planned (Datto's audits), so each remote works at its own pace beside the other
    instead of one waiting for the other. Returns the whole plan and what applying it did.

    The result is the plan's: a group's devices are planned from the same state as the whole
    plan would be (a company's candidates and the configurations its devices take are the
    company's alone), and each group's changes are applied as `apply` applies a plan."""
    estate = estate or Estate.read(bridge)
    devices = _automatic_candidates(bridge, estate, site_uids)
    by_company: dict[str, list[Device]] = defaultdict(list)
    for device in devices:
        by_company[estate.site_company[device.site_uid].company_id].append(device)
    listing = Listing.read(bridge, set(by_company)) if devices else None
    groups: list[list[Device]] = [[]]
    for company_devices in by_company.values():
        if groups[-1] and len(groups[-1]) + len(company_devices) > PIPELINE_GROUP:
            groups.append([])
        groups[-1].extend(company_devices)
    whole, done, failed = Plan(not_audited=_not_audited(estate, site_uids)), [], []

    def plan_group(group: list[Device]) -> Plan:
        plan = Plan()
        _plan_devices(bridge, estate, group, {}, plan, listing)
        return plan

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psabridge-planner") as planner:
        # One group planned ahead: the planner's context carries this caller's leases.
        pending = planner.submit(contextvars.copy_context().run, plan_group, groups[0])
        for index in range(len(groups)):
            plan = pending.result()
            if index + 1 < len(groups):
                pending = planner.submit(contextvars.copy_context().run, plan_group,
                                         groups[index + 1])
            outcome = apply(bridge, plan, progress)
            whole.changes += plan.changes
            whole.held += plan.held
            whole.deferred += plan.deferred
            whole.skipped_ids |= plan.skipped_ids
            done += outcome.done
            failed += outcome.failed
    return whole, Outcome(done, failed)


# Devices planned at once by `map_automatically`: enough for the workers of both remotes to be
# busy, few enough that the first changes start soon.
PIPELINE_GROUP = 200


def _device_subject(device: Device) -> str:
    return f"{device.hostname} ({device.uid})"


def _plan_devices(bridge: Bridge, estate: Estate, devices: list[Device],
                  choices: Mapping[str, str | None], plan: Plan,
                  listing: Listing | None | object = UNDECIDED) -> None:
    psa, rmm = bridge.pair
    # A device chosen by hand for an existing configuration needs neither details nor proposal.
    by_hand = {d.uid for d in devices if choices.get(d.uid) not in (None, NEW)}
    to_match = [d for d in devices if choices.get(d.uid) is None]
    readings = _readings(bridge, estate, [d for d in devices if d.uid not in by_hand], to_match,
                         listing)
    manual_ids = {choices[uid] for uid in by_hand}
    manual = {c.id: c for c in bridge.psa.get_configurations(ids=sorted(manual_ids))} \
        if manual_ids else {}
    taken = {m.configuration_id: m.device_uid for m in estate.device_mappings.values()}
    type_map = {m.device_type: m for m in bridge.store.device_type_mappings(psa, rmm)}
    config_types = None
    live = bridge.company_ids() if devices else set()
    for device in devices:
        subject = _device_subject(device)
        ids = {"device_uid": device.uid}
        linked = estate.site_company[device.site_uid]
        company_id = linked.company_id
        if company_id not in live:
            plan.skip(subject, f"its site is mapped to company {linked.company_name} "
                      f"({company_id}), which the PSA no longer lists (deleted?); unmap it with "
                      f"`psabridge companies unmap {company_id}` and map the site again", ids=ids)
            continue
        if unreadable := readings.unreadable.get(device.uid):
            plan.skip(subject, unreadable.why, transient=unreadable.transient, ids=ids)
            continue
        choice = choices.get(device.uid)
        if choice is None:
            configuration = readings.proposals[device.uid].configuration
            holder = taken.get(configuration.id) if configuration else None
            if holder and holder != device.uid:
                # Another device of this run took the proposed configuration first (the
                # cascade could not tell them apart): this one gets a configuration of its own.
                configuration = None
        elif choice == NEW:
            configuration = None
        else:
            configuration = manual.get(choice)
            if configuration is None:
                raise MappingError(f"the PSA has no configuration {choice} (for {subject})")
            if configuration.company_id != company_id:
                raise MappingError(f"configuration {choice} belongs to another company than "
                                   f"{subject}'s site")
        if configuration is not None:
            holder = taken.get(configuration.id)
            if holder and holder != device.uid:  # only an admin's choice gets here (see above)
                raise MappingError(f"configuration {configuration.id} is already mapped to device "
                                   f"{holder}; a configuration is mapped to one device only")
            taken[configuration.id] = device.uid
            plan.add("map device", subject, f"configuration {configuration.name} ({configuration.id})",
                     _map_existing(bridge, device, company_id, configuration),
                     ids={**ids, "configuration_id": configuration.id})
            continue
        # No configuration: create one, if the device type allows it.
        type_mapping = type_map.get(device.device_type)
        if type_mapping is None:
            plan.skip(subject, f"no configuration type is mapped for device type "
                      f"{device.device_type!r}; map one with `psabridge device-types map`", ids=ids)
            continue
        if config_types is None:
            config_types = {t.id: t for t in bridge.configuration_types()}
        config_type = config_types.get(type_mapping.configuration_type_id)
        if config_type is None or config_type.unusable:
            why = config_type.unusable if config_type else "no longer exists in the PSA"
            plan.skip(subject, f"configuration type {type_mapping.configuration_type_name!r} {why}; "
                      f"map device type {device.device_type!r} to another one with "
                      "`psabridge device-types map`", ids=ids)
            continue
        draft = _configuration_draft(bridge, device, company_id, config_type,
                                     readings.details[device.uid])
        plan.add("create configuration", subject, f"new configuration [{draft.name}] "
                 f"of type {config_type.name}", _create_and_map(bridge, device, draft),
                 ids={**ids, "configuration_id": None},
                 intent=JournalEntry(psa, "create_configuration", device.uid, "intent",
                                     {"name": draft.name}))


def _configuration_draft(bridge: Bridge, device: Device, company_id: str,
                         config_type: ConfigurationType, details: DeviceDetails) -> Configuration:
    """Type, status, manufacturer, model, serial; the warranty date as the expiration date."""
    return Configuration(
        name=device.hostname, company_id=company_id, type_id=config_type.id,
        type_name=config_type.name, serial_number=details.serial_number,
        manufacturer=details.manufacturer, model_number=details.model,
        management_link=device_url(bridge, device), expiration_date=device.warranty_date,
    )


def _create_and_map(bridge: Bridge, device: Device, draft: Configuration) -> Callable[[], object]:
    def run():
        created = bridge.write(bridge.psa, "create_configuration", device.uid,
                               lambda: bridge.psa.create_configuration(configuration=draft),
                               name=draft.name)
        # It can wait for the group's commit: a crash before it leaves a configuration with
        # this device's link, which the next run's matching finds and maps.
        bridge.save_soon(lambda: _save_device_mapping(bridge, device, created.company_id,
                                                      created.id))
        log.info("configuration_created", device_uid=device.uid, configuration_id=created.id,
                 company_id=created.company_id, name=created.name)
        bridge.announce("on_configuration_created", psa=bridge.psa.name, device=device,
                        configuration=created)

    return run


def _map_existing(bridge: Bridge, device: Device, company_id: str,
                  configuration: Configuration) -> Callable[[], object]:
    def run():
        changes = _link_changes(bridge, device, configuration)
        key = f"configuration:{configuration.id}"
        with bridge.store.transaction():  # the mapping and the link it calls for, together
            _save_device_mapping(bridge, device, company_id, configuration.id)
            if changes is None and outbox.waiting(bridge, bridge.psa, key):
                # A write to this configuration is still to be sent (the clear of an earlier
                # unmap, say): the link as read will not last, so it is written again after it.
                changes = ConfigurationChanges(management_link=device_url(bridge, device))
            if changes is not None:
                link = outbox.enqueue(bridge, bridge.psa, "update_configuration", key,
                                      configuration.id, changes=changes)
        log.info("configuration_linked", device_uid=device.uid, configuration_id=configuration.id,
                 company_id=company_id)
        if changes is not None:
            _sent_or_raise(bridge, link.key)

    return run


def _sent_or_raise(bridge: Bridge, key: str) -> None:
    """Send an outbox item now. A failure is reported to the plan, as passing: the item stays
    queued for the next sync pass, or the outbox already made it a warning."""
    drained = outbox.drain(bridge, [key])
    if drained.retrying or drained.given_up:
        raise MappingError("; ".join(drained.retrying + drained.given_up), transient=True)


def _link_changes(
    bridge: Bridge, device: Device, configuration: Configuration
) -> ConfigurationChanges | None:
    """What mapping writes on an existing configuration: the Manage Device link and the
    warranty date, only into an empty expiration date. None when nothing changes."""
    url = device_url(bridge, device)
    expiration = (device.warranty_date
                  if device.warranty_date and configuration.expiration_date is None else None)
    if configuration.management_link == url and expiration is None:
        return None
    return ConfigurationChanges(management_link=url, expiration_date=expiration)


def _save_device_mapping(bridge: Bridge, device: Device, company_id: str, configuration_id: str) -> None:
    psa, rmm = bridge.pair
    bridge.store.save_device_mapping(
        DeviceMapping(psa, rmm, device.uid, configuration_id, company_id, device.site_uid))


def device_subject(uid: str, hostnames: Mapping[str, str]) -> str:
    """A device as a plan names it: `HOSTNAME (uid)`, or the uid of one the RMM no longer
    lists."""
    return f"{hostnames[uid]} ({uid})" if hostnames.get(uid) else uid


def unmap_devices(bridge: Bridge, device_uids: Iterable[str],
                  hostnames: Mapping[str, str] | None = None) -> Plan:
    """Plan an unmap: clear the link on the configuration (it stays Active), forget the mapping.
    `hostnames` (uid -> hostname) name the devices in the plan."""
    psa, rmm = bridge.pair
    mappings = {m.device_uid: m for m in bridge.store.device_mappings(psa, rmm)}
    plan = Plan()
    for uid in device_uids:
        mapping = mappings.get(uid)
        if mapping is None:
            continue  # not mapped (or already unmapped by an earlier run)
        plan.add("unmap device", device_subject(uid, hostnames or {}),
                 f"configuration {mapping.configuration_id} keeps its status",
                 lambda m=mapping: _unmap(bridge, m),
                 ids={"device_uid": uid, "configuration_id": mapping.configuration_id})
    return plan


def _unmap(bridge: Bridge, mapping: DeviceMapping) -> None:
    with bridge.store.transaction():
        bridge.store.delete_device_mapping(mapping.psa, mapping.rmm, mapping.device_uid)
        clear = outbox.enqueue(bridge, bridge.psa, "unmap_configurations",
                               f"configuration:{mapping.configuration_id}",
                               mapping.configuration_id)
    _sent_or_raise(bridge, clear.key)


def plan_deleted_devices(bridge: Bridge, estate: Estate | None = None) -> Plan:
    """A mapped device deleted in the RMM is unmapped and its configuration set Inactive.

    A device counts as deleted when the RMM flags it so or when it is missing from a complete
    account listing. (The other direction: a configuration deleted in the PSA leaves
    the device mapped, so nothing here looks at the PSA.)
    """
    estate = estate or Estate.read(bridge)
    present = {d.uid: d for d in estate.devices}
    plan = Plan()
    for uid, mapping in estate.device_mappings.items():
        device = present.get(uid)
        if device is not None and not device.deleted:
            continue
        subject = f"{device.hostname} ({uid})" if device else uid
        plan.add("deactivate configuration", subject,
                 f"configuration {mapping.configuration_id} set Inactive, device unmapped",
                 lambda m=mapping: _deactivate(bridge, m),
                 ids={"device_uid": uid, "configuration_id": mapping.configuration_id})
    return plan


def _deactivate(bridge: Bridge, mapping: DeviceMapping) -> None:
    changes = ConfigurationChanges(active=False, clear_management_link=True)
    with bridge.store.transaction():
        bridge.store.delete_device_mapping(mapping.psa, mapping.rmm, mapping.device_uid)
        # A configuration already deleted in the PSA has nothing to deactivate.
        deactivate = outbox.enqueue(bridge, bridge.psa, "update_configuration",
                                    f"configuration:{mapping.configuration_id}",
                                    mapping.configuration_id, changes=changes, if_exists=True)
    _sent_or_raise(bridge, deactivate.key)


def map_now(bridge: Bridge) -> Plan:
    """The Map Now button: only there while automatic mapping is on."""
    if not bridge.option("auto_map"):
        raise MappingError("automatic mapping is off; turn it on with `psabridge devices auto on`")
    return plan_automatic_mapping(bridge)

