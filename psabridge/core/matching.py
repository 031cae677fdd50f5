"""The matching rules: which site suits a company, which configuration type suits a device
type, and which configuration is a device's (the matching cascade).

Everything here is pure: data in, proposals out, no hooks and no store. Names are compared after
`normalise_name`, so "Acme Corp." and "ACME Corporation" are the same company and "Smith & Sons
LLC" is "Smith and Sons"; rapidfuzz scores what remains.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs
from rapidfuzz import fuzz, process

from psabridge.core.models import Configuration, ConfigurationType, Device, DeviceDetails

# Words that say what legal form a company has, not which company it is.
LEGAL_SUFFIXES = frozenset(
    """inc incorporated corp corporation co company llc llp lp ltd limited plc gmbh ag sa sarl
    bv nv pty pte srl spa kk oy ab as aps group holdings""".split()
)
_NON_WORD = re.compile(r"[^\w\s]+")

DEFAULT_SITE_THRESHOLD = 85.0
DEFAULT_TYPE_THRESHOLD = 70.0


def normalise_name(name: str) -> str:
    """Lower-case, ASCII-folded words with '&' read as 'and' and legal suffixes dropped."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = _NON_WORD.sub(" ", text.lower().replace("&", " and "))
    words = text.split()
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


# -- companies to sites -------------------------------------------------------------------


@attrs.frozen
class SiteCandidate:
    """A site and how closely its name resembles a company's (0-100)."""

    site_uid: str
    site_name: str
    score: float


@attrs.frozen
class SiteSuggestion:
    """The site proposed for a company, why, and the next best site the admin may prefer."""

    site_uid: str | None  # None: nothing close enough, propose "Create New"
    site_name: str
    score: float
    reason: str = ""
    runner_up: SiteCandidate | None = None


def explain_site_match(company_name: str, site_name: str, score: float) -> str:
    """Why a site was proposed for a company, in words an admin can check at a glance."""
    if company_name.casefold().split() == site_name.casefold().split():
        return "same name"
    company, site = normalise_name(company_name), normalise_name(site_name)
    if company == site:
        return "same name once case, punctuation, '&' and legal suffixes are set aside"
    if sorted(company.split()) == sorted(site.split()):
        return "same words in another order"
    return f"similar names (score {score:.0f} of 100)"


def suggest_sites(
    companies: Sequence[tuple[str, str]],
    sites: Sequence[tuple[str, str]],
    threshold: float = DEFAULT_SITE_THRESHOLD,
    candidates_per_company: int = 3,
) -> dict[str, SiteSuggestion]:
    """Suggest one site per company, each site at most once, with the reason and the runner-up.

    `companies` and `sites` are (id, name) pairs; sites already mapped must be left out by the
    caller. Pairs are assigned best score first, so when "Acme" and "Acme West" both resemble
    the site "Acme", the closer one gets it and the other falls back to its next candidate or
    to "Create New" with its own name. The runner-up is the closest other site, whatever its
    score, so that an admin who rejects a suggestion sees the next choice.
    """
    site_names = [normalise_name(name) for _, name in sites]
    pairs: list[tuple[float, float, int, int]] = []
    closest: dict[int, list[tuple[float, int]]] = {}
    for c_index, (_, company_name) in enumerate(companies):
        found = process.extract(
            normalise_name(company_name), site_names, scorer=fuzz.token_sort_ratio,
            processor=None, limit=candidates_per_company + 1,
        )
        closest[c_index] = [(score, s_index) for _, score, s_index in found]
        for _, score, s_index in found:
            if score < threshold:
                continue
            # "Redwood Inc." and "Redwood Corp." normalise alike: the names as written break
            # the tie, so the site "REDWOOD INC." goes to "Redwood Inc.".
            as_written = fuzz.ratio(company_name.casefold(), sites[s_index][1].casefold())
            pairs.append((score, as_written, c_index, s_index))
    # Highest score first; then as written; then the earlier company and site (stable results).
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    chosen: dict[int, tuple[float, int]] = {}
    used_sites: set[int] = set()
    for score, _, c_index, s_index in pairs:
        if c_index in chosen or s_index in used_sites:
            continue
        used_sites.add(s_index)
        chosen[c_index] = (score, s_index)

    def candidate(score: float, s_index: int) -> SiteCandidate:
        return SiteCandidate(sites[s_index][0], sites[s_index][1], score)

    suggestions: dict[str, SiteSuggestion] = {}
    for c_index, (company_id, company_name) in enumerate(companies):
        if c_index in chosen:
            score, s_index = chosen[c_index]
            others = [c for c in closest[c_index] if c[1] != s_index]
            suggestions[company_id] = SiteSuggestion(
                sites[s_index][0], sites[s_index][1], score,
                reason=explain_site_match(company_name, sites[s_index][1], score),
                runner_up=candidate(*others[0]) if others else None)
            continue
        best = closest[c_index][0] if closest[c_index] else None
        if best is None:
            reason = "no sites to compare with"
        elif best[0] >= threshold:
            reason = (f"its closest site, {sites[best[1]][1]!r}, suits another company better")
        else:
            reason = f"no site scores {threshold:.0f} or more"
        suggestions[company_id] = SiteSuggestion(
            None, company_name, 0.0, reason=reason,
            runner_up=candidate(*best) if best else None)
    return suggestions


# -- device types to configuration types --------------------------------------------------

# RMM device categories and the words PSAs commonly use for them.
TYPE_ALIASES = {
    "desktop": ("workstation", "desktop", "pc"),
    "laptop": ("laptop", "notebook", "workstation"),
    "server": ("server",),
    "printer": ("printer",),
    "network device": ("network", "switch", "router", "firewall"),
    "esxi host": ("esxi", "hypervisor", "virtual host", "server"),
}


@attrs.frozen
class TypeSuggestion:
    configuration_type: ConfigurationType | None
    score: float


def suggest_configuration_type(
    device_type: str, types: Iterable[ConfigurationType], threshold: float = DEFAULT_TYPE_THRESHOLD
) -> TypeSuggestion:
    """The configuration type whose name best fits `device_type`, or none above `threshold`.

    Types with required questions and inactive types are never suggested: they cannot be
    used to create configurations, so proposing one would only produce warnings later.
    """
    usable = [t for t in types if not t.has_required_questions and not t.inactive]
    wanted = normalise_name(device_type)
    words = (wanted, *TYPE_ALIASES.get(wanted, ()))
    best: tuple[float, ConfigurationType | None] = (0.0, None)
    for candidate in usable:
        name = normalise_name(candidate.name)
        score = max(fuzz.token_set_ratio(word, name) for word in words)
        if score > best[0]:
            best = (score, candidate)
    score, chosen = best
    return TypeSuggestion(chosen, score) if chosen and score >= threshold else TypeSuggestion(None, 0.0)


# -- devices to configurations ------------------------------------------------------------

MatchStep = Literal["link", "serial", "name", "manufacturer", "model", "none", "manual"]


@attrs.frozen
class Match:
    """The proposal for one device: a configuration and the step that found it, or none and why.

    With no configuration, the proposal is to create one named `create_name` ("[name]" in the
    seed's words).
    """

    configuration: Configuration | None
    step: MatchStep
    reason: str
    create_name: str = ""


def _same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.strip().casefold() == b.strip().casefold()


def _same_maker(a: str | None, b: str | None) -> bool:
    return bool(a and b) and normalise_name(a) == normalise_name(b)


_STEPS = (
    ("serial", lambda c, d, dd: _same(c.serial_number, dd.serial_number)),
    ("name", lambda c, d, dd: _same(c.name, d.hostname)),
    ("manufacturer", lambda c, d, dd: _same_maker(c.manufacturer, dd.manufacturer)),
    ("model", lambda c, d, dd: _same(c.model_number, dd.model)),
)


def match_configuration(
    device: Device,
    details: DeviceDetails,
    device_url: str | None,
    candidates: Iterable[Configuration],
    taken: dict[str, str] | None = None,
) -> Match:
    """Run the matching cascade over `candidates` (configurations of the device's company).

    1. a configuration whose Manage Device link is this device's URL is the match;
    2. otherwise each of serial number, configuration name, manufacturer and model number
       narrows the pool: one left is the match, several go on to the next step, and a step
       that matches none of the pool leaves it as it was (it could not tell them apart);
    3. several left after the model number step: no match.
    Configurations mapped to another device (`taken`: configuration id -> device uid) are out,
    and so are those whose serial number contradicts the device's: a different serial is
    different hardware, whatever the name says.
    """
    taken = taken or {}
    create = Match(None, "none", "", create_name=device.hostname)
    pool, excluded = [], []
    for configuration in candidates:
        holder = taken.get(configuration.id or "")
        if holder and holder != device.uid:
            excluded.append(f"{configuration.name} ({configuration.id}) is mapped to device {holder}")
        elif (configuration.serial_number and details.serial_number
              and not _same(configuration.serial_number, details.serial_number)):
            excluded.append(f"{configuration.name} ({configuration.id}) has serial "
                            f"{configuration.serial_number}, not {details.serial_number}")
        else:
            pool.append(configuration)

    if device_url:
        linked = [c for c in pool if c.management_link == device_url]
        if len(linked) == 1:
            return Match(linked[0], "link", "its Manage Device link points to this device")
        if linked:
            pool = linked

    if not pool:
        why = "; ".join(excluded) or "no configuration of the company has its serial number or name"
        return attrs.evolve(create, reason=why)

    narrowed_by = []
    for step, same in _STEPS:
        narrowed = [c for c in pool if same(c, device, details)]
        if len(narrowed) == 1:
            via = " and ".join([*narrowed_by, step])
            return Match(narrowed[0], step, f"the only configuration matching by {via}")
        if narrowed:
            pool = narrowed
            narrowed_by.append(step)
    if not narrowed_by:
        return attrs.evolve(create, reason="no configuration matches its serial number, name, "
                                           "manufacturer or model number")
    names = ", ".join(sorted(f"{c.name} ({c.id})" for c in pool))
    return attrs.evolve(
        create, reason=f"{len(pool)} configurations still match after the model number step: {names}"
    )
