"""The matching rules: which site suits a company, which configuration type suits a device
type, and which configuration is a device's (the matching cascade).

Everything here is pure: data in, proposals out, no hooks and no store. Names are compared after
`normalise_name`, so "Acme Corp." and "ACME Corporation" are the same company and "Smith & Sons
LLC" is "Smith and Sons"; rapidfuzz scores what remains.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import attrs
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from psabridge.core.models import Configuration, ConfigurationType, Device, DeviceDetails

# Words that say what legal form a company has, not which company it is; each maps to its form,
# so that "Inc." and "Incorporated" are one form and "Inc." and "LLP" are two.
LEGAL_FORMS = {
    "inc": "inc", "incorporated": "inc", "corp": "corp", "corporation": "corp", "co": "co",
    "company": "co", "llc": "llc", "llp": "llp", "lp": "lp", "ltd": "ltd", "limited": "ltd",
    "plc": "plc", "pc": "pc", "pllc": "pllc", "gmbh": "gmbh", "ag": "ag", "sa": "sa", "sarl": "sarl",
    "bv": "bv", "nv": "nv", "pty": "pty", "pte": "pte", "srl": "srl", "spa": "spa", "kk": "kk",
    "oy": "oy", "ab": "ab", "as": "as", "aps": "aps",
}
# Words that describe a business's structure without naming it: set aside, as evidence of nothing.
DESCRIPTORS = frozenset({"group", "holdings", "the"})
# Short forms MSPs and RMM sites use, read as the word they stand for.
ABBREVIATIONS = {
    "intl": "international", "mgmt": "management", "svcs": "services", "svc": "services",
    "assoc": "associates", "assocs": "associates", "bros": "brothers", "mfg": "manufacturing",
    "ctr": "center", "cntr": "center", "centre": "center", "med": "medical", "fam": "family",
    "eng": "engineering", "engg": "engineering", "fin": "financial", "prop": "property",
    "tech": "technologies", "technology": "technologies", "dept": "department", "mtn": "mountain",
    "natl": "national", "univ": "university", "hosp": "hospital", "acct": "accounting",
    "n": "north", "s": "south", "e": "east", "w": "west",
}
# A trailing part naming a place or branch of the business ("- Main Office", "(HQ)", "Downtown").
_HEAD_OFFICE = frozenset({"hq", "headquarters", "head office", "main office", "main", "head"})
# A trailing run of these ends in a word that names a place of business on its own ("North
# Branch", "Downtown"); "Acme West" or "Smith Clinic" keep their last word.
LOCATION_WORDS = frozenset({
    "office", "branch", "campus", "annex", "downtown", "uptown", "midtown", "hq", "headquarters",
    "main", "head", "north", "south", "east", "west", "central",
})
LOCATION_ENDS = frozenset({"office", "branch", "campus", "annex", "downtown", "uptown", "midtown",
                           "hq", "headquarters"})
_DBA = re.compile(r"\s(?:dba|d/b/a|d\.b\.a\.?|doing business as|t/a|trading as)\s", re.IGNORECASE)
_DASH_TAIL = re.compile(r"\s[-\u2013\u2014|/]\s*([^-\u2013\u2014|/]+)$")
_PAREN_TAIL = re.compile(r"\s*[(\[]([^()\[\]]+)[)\]]\s*$")
_DROPPED = re.compile(r"[.'\u2019]")  # "P.C." is "pc", "O'Brien" is "obrien"
_NON_WORD = re.compile(r"[^\w\s]+")

DEFAULT_SITE_THRESHOLD = 85.0
DEFAULT_TYPE_THRESHOLD = 70.0
# How much each piece of evidence beside the name weighs (scores are 0-100).
LEGAL_FORM_DIFFERS = 4.0  # "Stonebridge Inc." and "Stonebridge LLP" may be two firms
LOCATION_DIFFERS = 30.0  # "Harbor Dental - Downtown" is not "Harbor Dental - Uptown"
LOCATION_ON_ONE_SIDE = 1.0  # "Harbor Dental" is most likely "Harbor Dental - Main Office"


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return _NON_WORD.sub(" ", _DROPPED.sub("", text.replace("&", " and ").replace("+", " and ")))


def _one_typo_from(word: str, vocabulary: Sequence[str]) -> str | None:
    """The word of `vocabulary` that `word` is, allowing one typo in words of five letters or
    more ("Corpooration", "Downotwn")."""
    if len(word) < 5:
        return None
    found = process.extractOne(word, vocabulary, scorer=OSA.distance, score_cutoff=1)
    return found[0] if found else None


_LONG_LEGAL_WORDS = tuple(w for w in (*LEGAL_FORMS, *DESCRIPTORS) if len(w) >= 6)
_LOCATION_VOCABULARY = tuple(sorted(LOCATION_WORDS))


def _strip_legal_tail(words: list[str]) -> tuple[list[str], str | None]:
    """The words without the legal forms and descriptors they end with, and the (first written)
    legal form."""
    legal_form = None
    while len(words) > 1:
        last = words[-1]
        if last == "c" and len(words) > 2 and words[-2] == "p":  # "P. C." written apart
            legal_form, words = legal_form or "pc", words[:-2]
            continue
        known = last if last in LEGAL_FORMS or last in DESCRIPTORS else \
            _one_typo_from(last, _LONG_LEGAL_WORDS)
        if known is None:
            break
        legal_form, words = legal_form or LEGAL_FORMS.get(known), words[:-1]
    return words, legal_form


def _location(words: list[str]) -> str:
    words = [w if w in LOCATION_WORDS else (_one_typo_from(w, _LOCATION_VOCABULARY) or w) for w in words]
    if " ".join(words) in _HEAD_OFFICE or words[0] in {"main", "head"}:
        return "main"
    return " ".join(ABBREVIATIONS.get(w, w) for w in words if w not in {"office", "branch"}) \
        or " ".join(words)


@attrs.frozen
class NameKey:
    """A name read once into what identifies the business and what is evidence beside it.

    `words` are the identifying words, abbreviations expanded, in their order; `location` is a
    branch or place tag ("main" for any head office); `legal_form` the company form ("inc",
    "llc"...). `comparable` is the words sorted, which is what names are first scored on, so
    that word order does not count.
    """

    words: tuple[str, ...]
    location: str | None = None
    legal_form: str | None = None
    comparable: str = attrs.field(init=False, eq=False, repr=False)

    @comparable.default
    def _sorted_words(self) -> str:
        return " ".join(sorted(self.words))


def _split_location(name: str) -> tuple[str, list[str]]:
    """The name and the words of a tag it ends with, "(HQ)" or "- Downtown" (none: [])."""
    for pattern in (_PAREN_TAIL, _DASH_TAIL):
        found = pattern.search(name)
        if found and any(c.isalnum() for c in name[:found.start()]):
            return name[:found.start()], _fold(found.group(1)).split()
    return name, []


def _trailing_place(words: list[str]) -> int:
    """Where a place written without a separator starts ("Acme Dental North Branch": 2), or
    len(words). It must end in a word that names a place on its own, or be one direction word
    after two or more ("Harbor Dental West"; "Acme West" keeps its name)."""
    def place_word(word: str) -> str | None:
        return word if word in LOCATION_WORDS else _one_typo_from(word, _LOCATION_VOCABULARY)

    cut = len(words)
    while cut > 1 and place_word(words[cut - 1]):
        cut -= 1
    if cut == len(words):
        return cut
    if place_word(words[-1]) in LOCATION_ENDS or (len(words) - cut == 1 and cut >= 2):
        return cut
    return len(words)


def name_key(name: str) -> NameKey:
    """Read one name (without its DBA part: see `name_keys`)."""
    head, tag = _split_location(name.strip())
    words, legal_form = _strip_legal_tail(_fold(head).split())
    tag, tag_form = _strip_legal_tail(tag)  # "Acme - HQ, Ltd": the form written after the tag
    legal_form = legal_form or tag_form
    if not tag:
        words, tag = words[:_trailing_place(words)], words[_trailing_place(words):]
        words, form = _strip_legal_tail(words)  # "Acme Inc. North Branch"
        legal_form = legal_form or form
    words = [ABBREVIATIONS.get(w, w) for w in words]
    while len(words) > 1 and words[0] in DESCRIPTORS:
        words.pop(0)
    return NameKey(tuple(words), _location(tag) if tag else None, legal_form)


def name_keys(name: str) -> tuple[NameKey, ...]:
    """Every name a business goes by in `name`: "Harris Holdings LLC dba Bright Path Bakery" is
    both "Bright Path Bakery" and "Harris"; the trading name first."""
    parts = _DBA.split(f" {name} ")
    keys = [name_key(part) for part in reversed(parts) if any(c.isalnum() for c in part)]
    return tuple(keys) or (name_key(name),)


def normalise_name(name: str) -> str:
    """A name as compared: lower-case ASCII words, '&' read as 'and', abbreviations expanded,
    legal forms, "The", "Group" and any location tag set aside."""
    return " ".join(name_key(name).words)


@functools.lru_cache(maxsize=1 << 16)  # the same few trade words meet again and again
def word_similarity(a: str, b: str) -> float:
    """How alike two words are (0-100): one typo in a word of four letters or more still reads
    as the word (90), two in a long word nearly so (75); other words are other words ("Boyd" is
    not "Byrd"), however many letters they share (at most 50)."""
    if a == b:
        return 100.0
    shortest = min(len(a), len(b))
    if shortest >= 4:
        edits = OSA.distance(a, b, score_cutoff=2)
        if edits <= 1:
            return 90.0
        if edits == 2 and shortest >= 8:
            return 75.0
    return min(fuzz.ratio(a, b), 50.0)


def _weighted_similarity(words: Sequence[str], other: Sequence[str],
                         weight: Callable[[str], float]) -> float:
    total = sum(weight(w) for w in words)
    found = sum(weight(w) * max(word_similarity(w, o) for o in other) for w in words)
    return found / total if total else 0.0


def names_score(a: NameKey, b: NameKey, weight: Callable[[str], float]) -> float:
    """How alike two names' identifying words are (0-100), each word weighed by how much it
    tells businesses apart (`weight`): "Boyd Electric" and "Byrd Electric" differ in the word that
    counts. Taken both ways and the lower kept, so that a word only one name has counts."""
    if not a.words or not b.words:
        return 0.0
    return min(_weighted_similarity(a.words, b.words, weight),
               _weighted_similarity(b.words, a.words, weight))


def compare_keys(company: NameKey, site: NameKey, name_score: float) -> float:
    """`name_score` (how alike the identifying words are, 0-100) weighed with the evidence beside
    the names: a differing legal form or location lowers it."""
    score = name_score
    if company.legal_form and site.legal_form and company.legal_form != site.legal_form:
        score -= LEGAL_FORM_DIFFERS
    if company.location != site.location:
        both = company.location is not None and site.location is not None
        if both and word_similarity(company.location, site.location) >= 90:
            pass  # "Downtown" and "Downotwn": one typo apart is the same place
        else:
            score -= LOCATION_DIFFERS if both else LOCATION_ON_ONE_SIDE
    return max(score, 0.0)


# Words that join a name's words without naming anything: never what a site is found by.
CONNECTIVES = frozenset({"and", "of", "for", "at", "on", "in", "de", "la", "le", "el", "y", "und"})


def _blocking_keys(word: str) -> set[str]:
    """The word and, for longer words, each way of deleting one letter: two words one typo apart
    (a letter missing, added, changed or two swapped) share at least one of these."""
    if len(word) < 4:
        return {word}
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


class _SiteIndex:
    """The sites' names read once, and which sites share a distinctive word (or a typo of one)
    with a name, so each company is scored against the few sites that could be its own."""

    BLOCKING_WORDS = 2  # the rarest words of a name: a site that is its own shares one of them
    SHORTLIST = 4  # candidates per name re-scored word by word

    def __init__(self, sites: Sequence[tuple[str, str]]):
        self.keys = [name_keys(name) for _, name in sites]
        self.entries: list[tuple[int, NameKey]] = []
        self.by_key: dict[str, list[int]] = {}
        self.frequency: dict[str, int] = {}
        for s_index, keys in enumerate(self.keys):
            for key in keys:
                entry = len(self.entries)
                self.entries.append((s_index, key))
                for word in set(key.words):
                    self.frequency[word] = self.frequency.get(word, 0) + 1
                    for block in _blocking_keys(word):
                        self.by_key.setdefault(block, []).append(entry)
        self.comparables = [key.comparable for _, key in self.entries]
        self._count = max(len(self.entries), 1)
        self._weights: dict[str, float] = {}

    def weight(self, word: str) -> float:
        """Inverse document frequency: a word most sites have tells little."""
        if word not in self._weights:
            self._weights[word] = math.log((self._count + 1) / (self.frequency.get(word, 0) + 1)) + 1
        return self._weights[word]

    def candidates(self, key: NameKey) -> list[int]:
        """The sites sharing the name's rarest word, or the next rarest unless many sites have it
        (then it tells nothing), each allowing one typo."""
        rarest = sorted(set(key.words) - CONNECTIVES or key.words,
                        key=lambda w: (self.frequency.get(w, 0), -len(w)))
        common = max(20, self._count // 100)
        blocking = rarest[:1] + [w for w in rarest[1:self.BLOCKING_WORDS]
                                 if self.frequency.get(w, 0) <= common]
        found: set[int] = set()
        for word in blocking:
            for block in _blocking_keys(word):
                found.update(self.by_key.get(block, ()))
        return sorted(found)

    def scores(self, key: NameKey, floor: float) -> dict[int, float]:
        """The best score of each site whose name could be `key`'s (at least `floor`)."""
        entries = self.candidates(key)
        if not entries:
            return {}
        names = [self.comparables[e] for e in entries]
        best: dict[int, float] = {}
        for _, _, i in process.extract(key.comparable, names, scorer=fuzz.ratio, processor=None,
                                       limit=self.SHORTLIST, score_cutoff=floor):
            s_index, site_key = self.entries[entries[i]]
            same_words = key.comparable == site_key.comparable
            score = compare_keys(key, site_key,
                                 100.0 if same_words else names_score(key, site_key, self.weight))
            if score > best.get(s_index, -1.0):
                best[s_index] = score
        return best


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


def explain_site_match(company_name: str, site_name: str, score: float,
                       company_keys: Sequence[NameKey] = (),
                       site_keys: Sequence[NameKey] = ()) -> str:
    """Why a site was proposed for a company, in words an admin can check at a glance.
    (`company_keys` and `site_keys` are the names' `name_keys`, when the caller has them.)"""
    if company_name.casefold().split() == site_name.casefold().split():
        return "same name"
    company_keys = company_keys or name_keys(company_name)
    site_keys = site_keys or name_keys(site_name)
    pairs = [(c, s) for c in company_keys for s in site_keys if c.comparable == s.comparable]
    if not pairs:
        return f"similar names (score {score:.0f} of 100)"
    company, site = pairs[0]
    trading = len(company_keys) > 1 or len(site_keys) > 1
    said = ("same trading name ('doing business as')" if trading and company.words != site.words
            else "same words in another order" if company.words != site.words
            else "same name once case, punctuation, abbreviations, '&' and legal forms are set aside")
    if company.legal_form and site.legal_form and company.legal_form != site.legal_form:
        said += f"; legal forms differ ({company.legal_form}, {site.legal_form})"
    if company.location and site.location and company.location != site.location:
        said += f"; locations differ ({company.location}, {site.location})"
    elif site.location and not company.location:
        said += f"; the site names a location ({site.location})"
    elif company.location and not site.location:
        said += f"; the company names a location ({company.location})"
    return said


def suggest_sites(
    companies: Sequence[tuple[str, str]],
    sites: Sequence[tuple[str, str]],
    threshold: float = DEFAULT_SITE_THRESHOLD,
    candidates_per_company: int = 3,
) -> dict[str, SiteSuggestion]:
    """Suggest one site per company, each site at most once, with the reason and the runner-up.

    `companies` and `sites` are (id, name) pairs; sites already mapped must be left out by the
    caller. Each name is read once (`name_keys`); a company is scored only against sites sharing
    a word with it, or a word one typo away. Pairs are assigned best score first, so when "Acme"
    and "Acme West" both resemble the site "Acme", the closer one gets it and the other falls back
    to its next candidate or to "Create New" with its own name. The runner-up is the closest other
    site that shares a word with the company, so that an admin who rejects a suggestion sees the
    next choice.
    """
    index = _SiteIndex(sites)
    company_keys = [name_keys(name) for _, name in companies]
    floor = min(threshold, 40.0)  # below this a name's words differ too much to be weighed
    pairs: list[tuple[float, float, int, int]] = []
    closest: dict[int, list[tuple[float, int]]] = {}
    for c_index, (_, company_name) in enumerate(companies):
        best: dict[int, float] = {}
        for key in company_keys[c_index]:
            for s_index, score in index.scores(key, floor).items():
                best[s_index] = max(score, best.get(s_index, 0.0))
        ranked = sorted(((score, s_index) for s_index, score in best.items()),
                        key=lambda p: (-p[0], p[1]))[:candidates_per_company + 1]
        closest[c_index] = ranked
        for score, s_index in ranked:
            if score < threshold:
                continue
            # "Redwood Inc." and "Redwood Corp." read alike: the names as written break the
            # tie, so the site "REDWOOD INC." goes to "Redwood Inc.".
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
                reason=explain_site_match(company_name, sites[s_index][1], score,
                                          company_keys[c_index], index.keys[s_index]),
                runner_up=candidate(*others[0]) if others else None)
            continue
        top = closest[c_index][0] if closest[c_index] else None
        if top is None:
            reason = "no site has a name close to it"
        elif top[0] >= threshold:
            reason = f"its closest site, {sites[top[1]][1]!r}, suits another company better"
        else:
            reason = f"no site scores {threshold:.0f} or more"
        suggestions[company_id] = SiteSuggestion(
            None, company_name, 0.0, reason=reason, runner_up=candidate(*top) if top else None)
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

    Unusable types (ConnectWise's with required questions) and inactive types are never
    suggested: they cannot be
    used to create configurations, so proposing one would only produce warnings later.
    """
    usable = [t for t in types if not t.unusable and not t.inactive]
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
