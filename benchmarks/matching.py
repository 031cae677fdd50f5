"""How well and how fast companies are matched to sites: first-suggestion quality on realistic
name distortions, and the CPU a large estate costs.

    python benchmarks/matching.py                 # the checked-in set: 5,125 companies x 5,458 sites
    python benchmarks/matching.py --generate --companies 1000 --seed 2 --show-wrong 10
    python benchmarks/matching.py --generate --write-set benchmarks/data/matching_set.csv

It makes `--companies` distinct client names, then the RMM's sites the way MSPs' two systems drift
apart: each site is its company's name put through one to three distortions (case, punctuation,
"&"/"and", legal suffix added, dropped or changed, a location tag, abbreviations, a typo, "The",
a DBA name on either side). Some companies have no site (the right answer is "Create New"), some
sites belong to no company, and some companies are branches of one business ("Harbor Dental -
Downtown", "Harbor Dental - Uptown") whose sites must not be crossed.

The set graded by default is checked in (benchmarks/data/matching_set.csv, written by
`--write-set` from seed 1), so a change of the generator does not move the figures. It prints,
for `matching.suggest_sites` and for difflib's `get_close_matches` as a yardstick: the CPU
seconds (process time) of one call, the share of companies whose first suggestion is right (their
site, or Create New when they have none), wrong (another site), or missed (Create New although
their site exists), and the same per distortion. Targets: under 1 s CPU at 5k x 5k, at least
98 % right, under 0.5 % wrong.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psabridge.core.matching import DEFAULT_SITE_THRESHOLD, suggest_sites  # noqa: E402

SURNAMES = """Smith Johnson Garcia Miller Davis Martinez Anderson Taylor Thomas Moore Jackson Martin
Lee Thompson White Harris Clark Lewis Walker Hall Young King Wright Lopez Hill Green Baker Nelson
Carter Mitchell Roberts Turner Phillips Campbell Parker Evans Edwards Collins Stewart Morris Murphy
Cook Rogers O'Brien Bennett Reed Morgan Bell Cooper Richardson Cox Howard Ward Torres Peterson Gray
Ramirez James Watson Brooks Kelly Sanders Price Wood Barnes Ross Henderson Coleman Jenkins Perry
Powell Long Patterson Hughes Flores Washington Butler Simmons Foster Gonzales Bryant Alexander
Russell Griffin Diaz Hayes Myers Ford Hamilton Graham Sullivan Wallace Woods Cole West Jordan Owens
Reynolds Fisher Ellis Harrison Gibson McDonald Cruz Marshall Ortiz Gomez Murray Freeman Wells Webb
Simpson Stevens Tucker Porter Hunter Hicks Crawford Henry Boyd Mason Kennedy Warren Dixon Burns
Gordon Shaw Holmes Rice Robertson Hunt Black Daniels Palmer Mills Nichols Grant Knight Ferguson
Rose Stone Hawkins Dunn Perkins Hudson Spencer Gardner Stephens Payne Pierce Berry Matthews Arnold
Wagner Willis Ray Watkins Olson Carroll Duncan Snyder Hart Cunningham Bradley Lane Andrews Ruiz
Harper Fox Riley Armstrong Carpenter Weaver Greene Lawrence Elliott Chavez Sims Austin Peters
Kelley Franklin Lawson Fields Ryan Schmidt Carr Vasquez Castillo Wheeler Chapman Oliver Montgomery
Richards Williamson Johnston Banks Meyer Bishop McCoy Howell Alvarez Morrison Hansen Fernandez
Harvey Little Burton Stanley Nguyen George Jacobs Reid Fuller Lynch Dean Gilbert Garrett Romero
Welch Larson Frazier Burke Hanson Day Mendoza Moreno Bowman Medina Fowler Brewer Hoffman Carlson
Silva Pearson Holland Douglas Fleming Jensen Vargas Byrd Davidson Hopkins May Terry Herrera Wade
Soto Walters Curtis Neal Caldwell Lowe Jennings Barnett Graves Jimenez Horton Shelton Barrett
O'Connor Castro Sutton Gregory McKinney Lucas Miles Craig Rodriquez Chambers Holt Lambert Fletcher
Watts Bates Hale Rhodes Pena Beck Newman Haynes McDaniel Mendez Bush Vaughn Parks Dawson Santiago
Norris Hardy Love Steele Curry Powers Schultz Barker Guzman Page Munoz Ball Keller Chandler Weber
Leonard Walsh Lyons Ramsey Wolfe Schneider Mullins Benson Sharp Bowen Daniel Barber Cummings Hines
Baldwin Griffith Valdez Hubbard Salazar Reeves Warner Stevenson Burgess Santos Tate Cross Garner
Mann Mack Moss Thornton Dennis McGee Farmer Delgado Aguilar Vega Glover Manning Cohen Harmon Rodgers
Robbins Newton Todd Blair Higgins Ingram Reese Cannon Strickland Townsend Potter Goodwin Walton
Rowe Hampton Ortega Patton Swanson Joseph Francis Goodman Maldonado Yates Becker Erickson Hodges
Rios Conner Adkins Webster Norman Malone Hammond Flowers Cobb Moody Quinn Blake Maxwell Pope Floyd
Osborne Paul McCarthy Guerrero Lindsey Estrada Sandoval Gibbs Tyler Gross Fitzgerald Stokes Doyle
Sherman Saunders Wise Colon Gill Alvarado Greer Padilla Simon Waters Nunez Ballard Schwartz McBride
Houston Christensen Klein Pratt Briggs Parsons McLaughlin Zimmerman French Buchanan Moran Copeland
Roy Pittman Brady McCormick Holloway Brock Poole Frank Logan Owen Bass Marsh Drake Wong Jefferson
Park Morton Abbott Sparks Patrick Norton Huff Clayton Massey Lloyd Figueroa Carson Bowers Roberson
Barton Tran Lamb Harrington Casey Boone Cortez Clarke Mathis Singleton Wilkins Cain Bryan Underwood
Hogan McKenzie Collier Luna Phelps McGuire Allison Bridges Wilkerson Nash Summers Atkins""".split()
NOUNS = """Acme Summit Riverside Pinnacle Evergreen Harbor Lakeside Northwind Oakwood Silverline
Redwood Cornerstone Keystone Granite Horizon Liberty Crescent Sterling Westfield Bayview
Stonebridge Falcon Meadowbrook Ironclad Apex Beacon Cascade Clearwater Coastal Compass Crown
Eagle Emerald Frontier Gateway Heritage Highland Legacy Lighthouse Magnolia Meridian Monarch
Orchard Paramount Pioneer Prairie Premier Quantum Radiant Ridgeline Sapphire Sequoia Shoreline
Skyline Summitview Sunrise Timberline Trinity Valley Vanguard Vertex Willow Windmill Zenith
Aspen Birchwood Bluewater Brightwater Canyon Cedar Cobalt Copper Driftwood Elm Fairview Fox Hollow
Glacier Golden Greenfield Hawthorne Hillcrest Juniper Kingsbridge Larkspur Linden Maplewood
Mesa Millbrook Mosaic Northgate Oceanside Pacific Parkside Pebble Pine Ridge Quarry Rockport
Rosewood Sandstone Silver Creek Southgate Spring Stillwater Sycamore Tidewater Trailhead Union
Westbrook Whitestone Wildwood""".split()
TRADES = """Dental;Family Medicine;Law;Accounting;Construction;Logistics;Realty;Veterinary Clinic;
Engineering;Insurance;Architects;Auto Repair;Bakery;Financial Advisors;Manufacturing;Pharmacy;
Print & Copy;Plumbing;Marketing;Management Services;International Trading;Medical Center;Roofing;
Landscaping;Electric;Consulting;Brothers Moving;Technologies;Associates;Chiropractic;Orthodontics;
Title & Escrow;Property Management;Staffing;Freight;Optometry;Pediatrics;HVAC;Dermatology;
Physical Therapy""".replace("\n", "").split(";")
PATTERNS = (
    "{noun} Corp.", "{surname} & Sons LLC", "{surname} {trade}", "{noun} {trade} Group",
    "{surname} & {surname2} {trade}", "{noun} Inc.", "{noun} {trade}", "{surname} {trade} LLC",
    "{noun} Holdings Ltd", "The {noun} Company", "{surname}, {surname2} & Partners",
    "{noun} {trade} P.C.", "{surname} {trade} Inc.", "{noun} {trade} Ltd", "{noun} {surname} {trade}",
)
LOCATIONS = ("Main Office", "HQ", "Downtown", "Uptown", "North Branch", "South Branch", "West",
             "East Campus", "Annex", "Head Office")
ABBREVIATIONS = {"International": "Intl", "Management": "Mgmt", "Services": "Svcs",
                 "Associates": "Assoc.", "Brothers": "Bros.", "Technologies": "Tech",
                 "Medical": "Med.", "Center": "Ctr", "Company": "Co.", "Family": "Fam.",
                 "Manufacturing": "Mfg", "Corp.": "Corporation", "Engineering": "Eng.",
                 "Financial": "Fin.", "Property": "Prop."}
LEGAL = ("Inc.", "LLC", "Ltd", "Corp.", "Co.", "LLP", "P.C.", "Incorporated", "Limited")
LEGAL_WORDS = re.compile(r",?\s+(Inc\.|LLC|Ltd|Corp\.|Co\.|LLP|P\.C\.|Incorporated|Limited|Group|"
                         r"Holdings Ltd)$")


# Words that do not tell one business from another: two names that differ only in these are one
# client written two ways, so the generator never makes both (this is the benchmark's own rule,
# kept apart from the matcher's).
NOT_DISTINCTIVE = set("the inc incorporated corp corporation co company llc llp ltd limited pc group "
                      "holdings".split())


def business_key(name: str) -> str:
    words = re.sub(r"[^a-z0-9 ]", "", name.lower().replace("&", " and ")).split()
    return " ".join(w for w in words if w not in NOT_DISTINCTIVE)


def client_names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        surname, surname2 = rng.sample(SURNAMES, 2)
        name = rng.choice(PATTERNS).format(noun=rng.choice(NOUNS), surname=surname,
                                           surname2=surname2, trade=rng.choice(TRADES))
        key = business_key(name)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def _typo(rng: random.Random, name: str) -> str:
    words = name.split()
    long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    if not long:
        return name
    i = rng.choice(long)
    w, j = words[i], rng.randrange(1, len(words[i]) - 2)
    words[i] = rng.choice((w[:j] + w[j + 1] + w[j] + w[j + 2:], w[:j] + w[j + 1:], w[:j] + w[j] + w[j:]))
    return " ".join(words)


def distort(rng: random.Random, name: str, kind: str) -> str:
    if kind == "case":
        return rng.choice((name.upper(), name.lower(), name.title()))
    if kind == "punctuation":
        return rng.choice((re.sub(r"[.,']", "", name), name.replace(" ", ", ", 1) if " " in name else name))
    if kind == "ampersand":
        return name.replace("&", "and") if "&" in name else name.replace(" and ", " & ")
    if kind == "legal suffix":
        stripped = LEGAL_WORDS.sub("", name)
        if stripped != name:
            return rng.choice((stripped, f"{stripped} {rng.choice(LEGAL)}"))
        return f"{name}{rng.choice(('', ','))} {rng.choice(LEGAL)}"
    if kind == "location tag":
        where = rng.choice(LOCATIONS)
        return rng.choice((f"{name} - {where}", f"{name} ({where})", f"{name} {where}"))
    if kind == "abbreviation":
        for word, short in ABBREVIATIONS.items():
            if word in name:
                return name.replace(word, short)
        return name
    if kind == "typo":
        return _typo(rng, name)
    if kind == "the":
        return name[4:] if name.startswith("The ") else f"The {name}"
    if kind == "dba":  # the site carries the legal name with the trading name the PSA uses
        return f"{rng.choice(SURNAMES)} Holdings LLC dba {name}"
    raise ValueError(kind)


KINDS = ("case", "punctuation", "ampersand", "legal suffix", "location tag", "abbreviation",
         "typo", "the", "dba")


def make_estate(seed: int, n_companies: int):
    rng = random.Random(f"matching-benchmark:{seed}")
    names = client_names(rng, int(n_companies * 1.15))
    companies = names[:n_companies]
    strangers = names[n_companies:]  # sites of clients the PSA does not have
    keys = {business_key(name) for name in names}
    truth: dict[str, str | None] = {}
    kinds: dict[str, tuple[str, ...]] = {}
    sites: list[tuple[str, str]] = []
    branch_pairs = set(rng.sample(range(n_companies), n_companies // 40))
    company_rows: list[tuple[str, str]] = []
    for index, name in enumerate(companies):
        variants = [name]
        if index in branch_pairs:  # one business, two branches, two companies, two sites
            first, second = rng.sample(LOCATIONS, 2)
            variants = [f"{name} - {first}", f"{name} - {second}"]
        for v_index, variant in enumerate(variants):
            company_id = f"c{index}-{v_index}"
            company_rows.append((company_id, variant))
            if rng.random() < 0.08:  # no site in the RMM: Create New is right
                truth[company_id] = None
                continue
            chosen = tuple(rng.sample(KINDS, rng.choice((1, 1, 2, 3))))
            if len(variants) > 1:  # a branch's site keeps its own tag, written its own way
                chosen = tuple(k for k in chosen if k not in ("location tag", "dba"))
            site_name = variant
            for kind in chosen:
                distorted = distort(rng, site_name, kind)
                # A typo that turns "Morgan" into another client's "Moran" makes a site no
                # reader could place: keep the name as it was.
                if business_key(distorted) in keys and business_key(distorted) != business_key(variant):
                    continue
                site_name = distorted
            if len(variants) > 1:
                base, _, where = variant.rpartition(" - ")
                site_name = site_name.replace(f" - {where}", rng.choice((f" ({where})", f" - {where}")))
            site_uid = f"s{index}-{v_index}"
            sites.append((site_uid, site_name))
            truth[company_id] = site_uid
            kinds[company_id] = chosen or ("none",)
    sites += [(f"x{index}", name) for index, name in enumerate(strangers)]
    rng.shuffle(sites)
    return company_rows, sites, truth, kinds


SET_PATH = Path(__file__).resolve().parent / "data" / "matching_set.csv"


def write_set(path: Path, companies, sites, truth, kinds) -> None:
    """The estate as a file: one row per company (with its site and distortions) and per site."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["kind", "id", "name", "site_id", "distortions"])
        for company_id, name in companies:
            out.writerow(["company", company_id, name, truth[company_id] or "",
                          "+".join(kinds.get(company_id, ()))])
        for site_id, name in sites:
            out.writerow(["site", site_id, name, "", ""])


def read_set(path: Path):
    companies, sites, truth, kinds = [], [], {}, {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["kind"] == "company":
                companies.append((row["id"], row["name"]))
                truth[row["id"]] = row["site_id"] or None
                if row["distortions"]:
                    kinds[row["id"]] = tuple(row["distortions"].split("+"))
            else:
                sites.append((row["id"], row["name"]))
    return companies, sites, truth, kinds


def difflib_suggestions(companies, sites, threshold=0.85):
    keys = [name.casefold() for _, name in sites]
    out = {}
    for company_id, name in companies:
        best = difflib.get_close_matches(name.casefold(), keys, n=1, cutoff=threshold)
        out[company_id] = sites[keys.index(best[0])][0] if best else None
    return out


def grade(suggested: dict[str, str | None], truth, kinds) -> None:
    total = Counter()
    per_kind: dict[str, Counter] = {}
    for company_id, right in truth.items():
        got = suggested[company_id]
        verdict = "right" if got == right else ("missed" if got is None else "wrong")
        total[verdict] += 1
        for kind in kinds.get(company_id, ("no site",)):
            per_kind.setdefault(kind, Counter())[verdict] += 1
    n = sum(total.values())
    print(f"  companies {n}: right {total['right'] / n:.2%}, wrong {total['wrong'] / n:.2%}, "
          f"missed {total['missed'] / n:.2%}")
    for kind, counts in sorted(per_kind.items()):
        k = sum(counts.values())
        print(f"    {kind:<13} {k:>5}: right {counts['right'] / k:7.2%}  wrong {counts['wrong'] / k:6.2%}"
              f"  missed {counts['missed'] / k:6.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, default=SET_PATH,
                        help="the checked-in estate to grade (default: %(default)s)")
    parser.add_argument("--generate", action="store_true",
                        help="grade a freshly generated estate instead of the checked-in one")
    parser.add_argument("--write-set", type=Path, metavar="PATH",
                        help="write the generated estate to PATH (how the checked-in set was made)")
    parser.add_argument("--companies", type=int, default=5000, help="with --generate")
    parser.add_argument("--seed", type=int, default=1, help="with --generate")
    parser.add_argument("--no-difflib", dest="difflib", action="store_false",
                        help="skip the difflib yardstick (about a minute at full size)")
    parser.add_argument("--show-wrong", type=int, default=0, metavar="N",
                        help="print N wrong or missed suggestions")
    args = parser.parse_args()
    if args.generate or args.write_set:
        companies, sites, truth, kinds = make_estate(args.seed, args.companies)
        source = f"generated, seed {args.seed}"
        if args.write_set:
            write_set(args.write_set, companies, sites, truth, kinds)
            print(f"wrote {args.write_set}")
    else:
        companies, sites, truth, kinds = read_set(args.set)
        source = args.set.relative_to(Path.cwd()) if args.set.is_relative_to(Path.cwd()) else args.set
    print(f"{len(companies)} companies x {len(sites)} sites "
          f"(threshold {DEFAULT_SITE_THRESHOLD:.0f}; {source})")
    started = time.process_time()
    suggestions = suggest_sites(companies, sites)
    cpu = time.process_time() - started
    print(f"psabridge suggest_sites: {cpu:.2f} s CPU")
    chosen = {company_id: s.site_uid for company_id, s in suggestions.items()}
    grade(chosen, truth, kinds)
    if args.show_wrong:
        names, site_names = dict(companies), dict(sites)
        shown = 0
        for company_id, right in truth.items():
            if chosen[company_id] != right and shown < args.show_wrong:
                shown += 1
                print(f"    {names[company_id]!r}: got {site_names.get(chosen[company_id])!r} "
                      f"({suggestions[company_id].score:.0f}), right {site_names.get(right)!r}")
    if args.difflib:
        started = time.process_time()
        baseline = difflib_suggestions(companies, sites)
        print(f"difflib get_close_matches: {time.process_time() - started:.2f} s CPU")
        grade(baseline, truth, kinds)


if __name__ == "__main__":
    main()
