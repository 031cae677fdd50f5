"""Settings: a connector's, validated against its declared `Setting`s, and psabridge's own
tuning knobs read from the environment."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from psabridge.core.errors import SettingsError
from psabridge.core.models import Setting


def seconds_from_environment(name: str, default: float, zero_allowed: bool = False) -> float:
    """A number of seconds from the environment variable `name`. A value that is not a positive
    number (or 0, where that means "none") is ignored, with a warning, rather than stopping
    every command before it has said anything."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (0 < seconds < float("inf") or (zero_allowed and seconds == 0)):
        lowest = "0 or more" if zero_allowed else "above 0"
        # Read at import, before logging is set up: straight to stderr, never into the output.
        print(f"Warning: {name}={raw[:50]!r} ignored: it must be a number of seconds {lowest}; "
              f"using {default:g}", file=sys.stderr)
        return default
    return seconds


TRUSTED_PROXIES_ENV = "PSABRIDGE_TRUSTED_PROXIES"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(raw: str | None = None) -> tuple[Network, ...]:
    """The reverse proxies whose `X-Forwarded-For` the console believes: addresses or networks
    (`10.0.0.5`, `10.0.0.0/24`, `::1`), separated by commas, from PSABRIDGE_TRUSTED_PROXIES
    (or `raw`). None by default: anyone can send that header, so it is believed only from a
    proxy the admin named. A value that is not an address stops `serve`: a security setting
    quietly ignored would lock everyone out together, or let a guesser pose as many clients."""
    raw = os.environ.get(TRUSTED_PROXIES_ENV, "") if raw is None else raw
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError("serve", {TRUSTED_PROXIES_ENV: (
                f"{item[:60]!r} is not an IP address or network; give the proxies' addresses "
                "separated by commas, e.g. 127.0.0.1,10.0.0.0/24")}) from None
    return tuple(networks)


def client_address(remote_addr: str | None, forwarded_for: str | None,
                   proxies: tuple[Network, ...]) -> str:
    """The address of the client behind the trusted `proxies`: the connection's address,
    unless it is a trusted proxy; then the `X-Forwarded-For` entries are read from the right
    (each proxy appends the address it was reached from) and the first one that is not a
    trusted proxy is the client. Entries left of it are the client's own claims, never read."""
    address = remote_addr or "?"
    if not proxies or not forwarded_for:
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    while _is_trusted(address, proxies) and hops:
        hop = hops.pop()
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # garbage from the proxy's side: keep the last address known
    return address


def _is_trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def url_problem(value: str) -> str | None:
    """Say what is wrong with a service URL under the URL rules, or None if it is fine."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        bare = value.strip().split("://")[-1].removeprefix("www.")
        if parts.scheme and "://" in value:
            return f"{value!r} uses {parts.scheme}://; write it with https://, e.g. https://{bare}"
        return f"{value!r} has no protocol; write it with https://, e.g. https://{bare}"
    if not parts.hostname:
        return f"{value!r} has no host name; write it as https://host.example.com"
    if parts.hostname.lower().startswith("www."):
        bare = parts.hostname[4:]
        return f"{value!r} must not contain www; use {parts.scheme}://{bare}"
    return None


def setting_envvar(plugin: str, name: str) -> str:
    """The environment variable `psabridge configure PLUGIN` reads setting `name` from."""
    return f"PSABRIDGE_{plugin.upper()}_{name.upper()}"


def _how_to_set(plugin: str, setting: Setting) -> str:
    option = "--" + setting.name.replace("_", "-")
    if not setting.secret:
        return f"set it with {option}"
    # Never as a flag: `ps` and the shell's history would show it.
    return (f"run `psabridge configure {plugin}` to be asked for it, or set "
            f"{setting_envvar(plugin, setting.name)} or {option}-file PATH")


def settings_problems(declared: Iterable[Setting], values: Mapping[str, str],
                      plugin: str = "PLUGIN") -> dict[str, str]:
    """Return one message per invalid setting, keyed by the setting's name (empty when valid)."""
    problems: dict[str, str] = {}
    for setting in declared:
        value = (values.get(setting.name) or "").strip() or (setting.default or "")
        if not value:
            if setting.required:
                problems[setting.name] = f"{setting.label} is required; {_how_to_set(plugin, setting)}"
            continue
        if setting.kind == "url" and (problem := url_problem(value)):
            problems[setting.name] = problem
        elif setting.kind == "integer" and (problem := integer_problem(setting, value)):
            problems[setting.name] = problem
        elif setting.check and (problem := setting.check(value)):
            problems[setting.name] = problem
    return problems


def integer_problem(setting: Setting, value: str) -> str | None:
    """Say what is wrong with `value` for an integer setting, or None if it is fine."""
    low, high = setting.minimum, setting.maximum
    bounds = (f"from {low} to {high}" if low is not None and high is not None
              else f"of at least {low}" if low is not None
              else f"of at most {high}" if high is not None else "")
    wanted = " ".join(filter(None, ("a whole number", bounds)))
    shown = value if len(value) <= 20 else value[:20] + "..."
    if not value.lstrip("-").isdigit() or len(value) > 18:
        return f"{setting.label} must be {wanted}, not {shown!r}"
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        return f"{setting.label} must be {wanted}, not {number}"
    return None


def validate_settings(plugin: str, declared: Iterable[Setting], values: Mapping[str, str]) -> None:
    """Raise SettingsError naming every invalid field, or return quietly."""
    if problems := settings_problems(declared, values, plugin):
        raise SettingsError(plugin, problems)


def with_defaults(declared: Iterable[Setting], values: Mapping[str, str]) -> dict[str, str]:
    """`values`, with each setting left empty given its declared default."""
    filled = dict(values)
    for setting in declared:
        if setting.default is not None and not (filled.get(setting.name) or "").strip():
            filled[setting.name] = setting.default
    return filled


def normalise_settings(declared: Iterable[Setting], values: Mapping[str, str]) -> dict[str, str]:
    """Strip whitespace and trailing slashes from URLs, keep only declared names."""
    cleaned = {}
    for setting in declared:
        if (value := values.get(setting.name)) is None:
            continue
        value = value.strip()
        if setting.kind == "url":
            value = value.rstrip("/")
        cleaned[setting.name] = value
    return cleaned
