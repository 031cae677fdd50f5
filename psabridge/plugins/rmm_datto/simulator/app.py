"""A stateful simulator of the Datto RMM API v2, faithful to API-NOTES §9's checklist.

    sim = DattoSimulator(seed=0)
    connection = Connection("datto", sim.settings("http://datto.sim"), transport=sim.transport())
    with sim.serve() as server:             # or over real loopback sockets
        settings = sim.settings(server.url)

What it enforces: the password grant with the public client at `/auth/oauth/token` (outside
/api); a Bearer token on every /api call except `system/status`, with expiry on an injectable
clock; 0-based pages of at most 250 with absolute `nextPageUrl`s; the account's sliding-window
quotas (429, then a 403 block); audits only for their own device class. It answers in Datto's
shapes: epoch-ms times, nulls, all 300 udf keys, `@class`-tagged alert contexts, void writes as
an empty 200. Fault injection and per-endpoint counters come from `psabridge.simulation`.
Behaviour the notes mark "not established" is an option of `SimOptions`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from psabridge import simulation
from psabridge.plugins.rmm_datto.simulator import data
from psabridge.plugins.rmm_datto.simulator.quota import QuotaKeeper, Quotas
from psabridge.plugins.rmm_datto.throttle import buckets_for

PAGE_MAX = 250
TOKEN_TTL = 100 * 3600  # 100 h (§2)
PUBLIC_CLIENT = ("public-client", "public")
KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class ManualClock:
    """A clock that only moves when told to: `clock.advance(3600)`. Epoch seconds."""

    def __init__(self, start: float = 1_790_000_000.0):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@attrs.define
class SimOptions:
    """Choices where the real API's behaviour is not established (NE in API-NOTES)."""

    token_ttl: float = TOKEN_TTL
    # nextPageUrl keeps only page and max, dropping filters (ts-core re-appends them, §4).
    next_page_keeps_filters: bool = False
    # totalCount was seen missing on open-alert pages (§4).
    total_count_on_open_alerts: bool = False
    # What resolving a resolved alert answers (§5 NE): 200 (void) or an error status.
    already_resolved_status: int = 400
    # Whether deleted devices also appear in /account/devices (§5 NE).
    account_devices_include_deleted: bool = True
    # Status of a void write: 200 or 204 (§5 NE).
    void_status: int = 200


class _Refusal(Exception):
    def __init__(self, status: int, message: str, error: str = ""):
        super().__init__(message)
        self.status, self.message, self.error = status, message, error or "error"


def _rules() -> Map:
    get, put, post = ["GET"], ["PUT"], ["POST"]
    state = "<any(open,resolved):state>"
    return Map([
        Rule("/auth/oauth/token", methods=post, endpoint="token"),
        Rule("/api/v2/system/status", methods=get, endpoint="system_status"),
        Rule("/api/v2/system/request_rate", methods=get, endpoint="request_rate"),
        Rule("/api/v2/system/pagination", methods=get, endpoint="pagination"),
        Rule("/api/v2/account", methods=get, endpoint="account"),
        Rule("/api/v2/account/sites", methods=get, endpoint="account_sites"),
        Rule("/api/v2/account/devices", methods=get, endpoint="account_devices"),
        Rule(f"/api/v2/account/alerts/{state}", methods=get, endpoint="account_alerts"),
        Rule("/api/v2/site", methods=put, endpoint="create_site"),
        Rule("/api/v2/site/<uid>", methods=get, endpoint="site"),
        Rule("/api/v2/site/<uid>/devices", methods=get, endpoint="site_devices"),
        Rule(f"/api/v2/site/<uid>/alerts/{state}", methods=get, endpoint="site_alerts"),
        Rule("/api/v2/device/<uid>", methods=get, endpoint="device"),
        Rule(f"/api/v2/device/<uid>/alerts/{state}", methods=get, endpoint="device_alerts"),
        Rule("/api/v2/device/<uid>/udf", methods=post, endpoint="set_udf"),
        Rule("/api/v2/device/<uid>/warranty", methods=post, endpoint="set_warranty"),
        Rule("/api/v2/audit/<any(device,printer,esxihost):kind>/<uid>", methods=get, endpoint="audit"),
        Rule("/api/v2/alert/<uid>", methods=get, endpoint="alert"),
        Rule("/api/v2/alert/<uid>/resolve", methods=post, endpoint="resolve_alert"),
        Rule("/api/v2/user/resetApiKeys", methods=post, endpoint="reset_keys"),
    ])


# Which write quota bucket each writing endpoint counts against (ts-core OperationMapping, §3).
OPERATIONS = {
    "create_site": "site-create", "set_udf": "device-udf-set",
    "set_warranty": "device-warranty-create", "resolve_alert": "alert-resolve",
    "reset_keys": "user-reset-keys",
}
_RULE_ARGUMENT = re.compile(r"<(?:[^:>]+:)?([^>]+)>")  # "<any(a,b):state>" -> "{state}"
UNAUTHENTICATED = {"token", "system_status"}
UNCOUNTED = {"token", "system_status", "request_rate"}  # whether request_rate counts is NE


class DattoSimulator:
    """One simulated Datto RMM account, its API user, and its data."""

    def __init__(self, seed: int = 0, faults: simulation.Faults | None = None,
                 clock: Callable[[], float] | None = None, quotas: Quotas | None = None,
                 options: SimOptions | None = None, estate: data.Estate | None = None,
                 sleep: Callable[[float], None] = time.sleep, **estate_options: Any):
        self.clock = clock or time.time
        self.options = options or SimOptions()
        self.sleep = sleep
        self._rng = random.Random(f"datto-sim:{seed}")
        self._lock = threading.RLock()
        estate = estate or data.generate_estate(seed, now_ms=int(self.clock() * 1000), **estate_options)
        self.estate = estate
        self.account = estate.account
        self.sites = {s["uid"]: s for s in estate.sites}
        self.devices = {d["uid"]: d for d in estate.devices}
        self.audits = dict(estate.audits)
        self.alerts = {a["alertUid"]: a for a in estate.alerts}
        self.api_key = "SIM" + "".join(self._rng.choice(KEY_ALPHABET) for _ in range(17))
        self.api_secret = "".join(self._rng.choice("0123456789ABCDEF") for _ in range(32))
        self.user_name = "api-user"
        self.tokens: dict[str, float] = {}  # token -> expiry (clock seconds)
        self.grants = 0
        self.quota = QuotaKeeper(quotas or Quotas(), self.clock)
        self._ids = data._Ids(random.Random(f"datto-sim-ids:{seed}"))
        self._ids.next_id = max([0, *(s["id"] for s in self.sites.values()),
                                 *(d["id"] for d in self.devices.values())])
        self._map = _rules()
        self.injector = simulation.FaultInjector(self._wsgi, faults, endpoint_of=self.endpoint_of,
                                                 throttle_body=_throttled)

    # -- the Python API tests drive -------------------------------------------------------------

    @property
    def app(self):
        return self.injector

    @property
    def counts(self):
        """Requests per endpoint template, e.g. counts["GET /api/v2/audit/{kind}/{uid}"]."""
        return self.injector.counts

    def transport(self):
        return simulation.transport(self.app)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0,
              control_token: str | None = None) -> Iterator[simulation.RunningServer]:
        """Serve on loopback for the duration of the block; with `control_token`, also the
        control endpoints under /_simulator/ (`controls`), outside the simulated API."""
        with simulation.serve(self.controlled_app(control_token), host, port) as server:
            yield server

    def controlled_app(self, control_token: str | None):
        """The API, and with `control_token` the control endpoints beside it."""
        if control_token is None:
            return self.app
        from psabridge.plugins.rmm_datto.simulator import controls

        return simulation.ControlPanel(self.app, control_token, controls.actions(self))

    def settings(self, url: str) -> dict[str, str]:
        """The Datto plugin's settings for this simulator served at `url`."""
        url = url.rstrip("/")
        return {"api_url": url, "api_key": self.api_key, "api_secret": self.api_secret,
                "portal_url": f"{url}/portal"}

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = dict.fromkeys(self.tokens, self.clock() - 1)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def site_named(self, name: str) -> dict:
        return next(s for s in self.sites.values() if s["name"] == name)

    def add_device(self, site_uid: str, hostname: str, kind: str = "desktop", audited: bool = True,
                   serial: str | None = None) -> dict:
        with self._lock:
            builder = data._Builder(self._rng, self._ids, self.now_ms(), self.account["uid"], self.estate)
            device = builder.device(self.sites[site_uid], kind, hostname, audited=audited, serial=serial)
            self.devices[device["uid"]] = device
            self.audits[device["uid"]] = self.estate.audits[device["uid"]]
            return device

    def delete_device(self, uid: str) -> None:
        """Delete as Datto does: flag it and move it to the "Deleted Devices" site."""
        with self._lock:
            deleted_site = self.sites[data.DELETED_DEVICES_SITE_UID]
            self.devices[uid].update(deleted=True, siteUid=deleted_site["uid"],
                                     siteId=deleted_site["id"], siteName=deleted_site["name"])

    def audit_device(self, uid: str, **system: Any) -> None:
        """A new audit arrived: change serial/manufacturer/model and lastAuditDate."""
        with self._lock:
            device = self.devices[uid]
            audit = self.audits[uid]
            if "serial" in system:
                serial = system.pop("serial")
                if device["deviceClass"] == "printer":
                    audit["snmpInfo"]["snmpSerial"] = serial
                elif device["deviceClass"] == "esxihost":
                    audit["systemInfo"]["serviceTag"] = serial
                else:
                    audit["bios"]["serialNumber"] = serial
            audit["systemInfo"].update(system)
            device["lastAuditDate"] = self.now_ms()

    def raise_alert(self, device_uid: str, context: dict | None = None, priority: str = "High",
                    creates_ticket: bool | None = True) -> dict:
        with self._lock:
            context = context or {"@class": "online_offline_status_ctx", "status": "OFFLINE"}
            alert = data.make_alert(self._ids, self.devices[device_uid], context, priority,
                                    self.now_ms(), creates_ticket)
            self.alerts[alert["alertUid"]] = alert
            return alert

    def resolve_alert(self, uid: str, by: str = "technician") -> None:
        with self._lock:
            self.alerts[uid].update(resolved=True, resolvedOn=self.now_ms(), resolvedBy=by)

    # -- WSGI ------------------------------------------------------------------------------------

    def endpoint_of(self, method: str, path: str) -> str:
        try:
            rule, _ = self._map.bind("sim").match(path, method=method, return_rule=True)
        except HTTPException:
            return f"{method} {path}"
        return f"{method} " + _RULE_ARGUMENT.sub(r"{\1}", rule.rule)

    def _wsgi(self, environ, start_response):
        request = simulation.BoundedRequest(environ)
        try:
            endpoint, args = self._map.bind_to_environ(environ).match()
            response = self._handle(request, endpoint, args)
        except HTTPException as exc:  # no route, wrong method, a body over the size limit
            response = _json({"error": exc.name, "message": exc.description}, exc.code or 400)
        except _Refusal as refusal:
            response = _json({"error": refusal.error, "message": refusal.message}, refusal.status)
        return response(environ, start_response)

    def _handle(self, request: Request, endpoint: str, args: dict) -> Response:
        if self.quota.blocked():  # the IP block sits in front of everything, the token too
            raise _Refusal(403, "Forbidden: too many requests from this address", "forbidden")
        if endpoint not in UNAUTHENTICATED:
            self._check_token(request)
        if endpoint not in UNCOUNTED:
            self._admit(request.method, OPERATIONS.get(endpoint))
        with self._lock:
            return getattr(self, f"_on_{endpoint}")(request, **args)

    def _check_token(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        with self._lock:
            expiry = self.tokens.get(token) if token else None
        if expiry is None:
            raise _Refusal(401, "Full authentication is required to access this resource",
                           "unauthorized")
        if self.clock() >= expiry:
            raise _Refusal(401, "Access token expired", "invalid_token")

    def _admit(self, method: str, operation: str | None) -> None:
        verdict = self.quota.admit(buckets_for(method, operation))
        if verdict.status == 403:
            raise _Refusal(403, "Forbidden: too many requests from this address", "forbidden")
        if verdict.status == 429:
            raise _Refusal(429, "Rate limit exceeded", "too_many_requests")
        if verdict.delay:
            self.sleep(verdict.delay)

    # -- auth ------------------------------------------------------------------------------------

    def _on_token(self, request: Request) -> Response:
        if _basic_credentials(request) != PUBLIC_CLIENT:
            raise _Refusal(401, "Bad client credentials", "unauthorized")
        form = request.form
        if form.get("grant_type") != "password":
            raise _Refusal(400, "Unsupported grant type", "unsupported_grant_type")
        if (form.get("username"), form.get("password")) != (self.api_key, self.api_secret):
            raise _Refusal(400, "Bad credentials", "invalid_grant")
        token = "".join(self._rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40))
        self.tokens[token] = self.clock() + self.options.token_ttl
        self.grants += 1
        return _json({"access_token": token, "token_type": "bearer",
                      "expires_in": int(self.options.token_ttl), "scope": "default",
                      "jti": self._ids.uid()})

    def _on_reset_keys(self, request: Request) -> Response:
        """Issue new keys; the old ones and every token made with them stop working (§2)."""
        self.api_key = "SIM" + self._ids.uid().replace("-", "")[:17].upper()
        self.api_secret = self._ids.uid().replace("-", "").upper()
        self.tokens.clear()
        return _json({"apiAccessKey": self.api_key, "apiSecretKey": self.api_secret,
                      "userName": self.user_name})

    # -- system and account --------------------------------------------------------------------

    def _on_system_status(self, request: Request) -> Response:
        return _json({"version": "2.0.0 (simulated)", "status": "OK", "started": self.now_ms()})

    def _on_request_rate(self, request: Request) -> Response:
        quotas = self.quota.quotas
        return _json({
            "slidingTimeWindowSizeSeconds": int(quotas.window), "accountUid": self.account["uid"],
            "accountCount": self.quota.count("read"), "accountRateLimit": quotas.reads,
            "accountCutOffRatio": quotas.cutoff_ratio, "accountWriteRateLimit": quotas.writes,
            "accountWriteCount": self.quota.count("write"),
            "operationWriteStatus": {name: {"limit": quotas.limit(name), "count": count}
                                     for name, count in self.quota.operation_counts().items()},
        })

    def _on_pagination(self, request: Request) -> Response:
        return _json({"max": PAGE_MAX})

    def _on_account(self, request: Request) -> Response:
        live = [d for d in self.devices.values() if not d["deleted"]]
        online = sum(bool(d["online"]) for d in live)
        return _json({**self.account, "devicesStatus": {
            "numberOfDevices": len(live), "numberOfOnlineDevices": online,
            "numberOfOfflineDevices": len(live) - online, "numberOfOnDemandDevices": 0,
            "numberOfManagedDevices": len(live)}})

    # -- sites -----------------------------------------------------------------------------------

    def _on_account_sites(self, request: Request) -> Response:
        sites = list(self.sites.values())
        if wanted := request.args.get("siteName"):
            sites = [s for s in sites if wanted.lower() in s["name"].lower()]
        status = self._devices_status_by_site()
        return self._page(request, "sites", sites,
                          render=lambda s: self._site_out(request, s, status.get(s["uid"])))

    def _on_site(self, request: Request, uid: str) -> Response:
        return _json(self._site_out(request, self._site(uid)))

    def _on_create_site(self, request: Request) -> Response:
        body = _object_body(request, CREATE_SITE)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Refusal(400, "Site name is required", "bad_request")
        site = data.make_site(self._ids, self.account["uid"], name.strip())
        site.update({k: body[k] for k in ("description", "notes", "onDemand") if k in body})
        self.sites[site["uid"]] = site
        return _json(self._site_out(request, site))

    def _site(self, uid: str) -> dict:
        if uid not in self.sites:
            raise _Refusal(404, "Site was not found", "not_found")
        return self.sites[uid]

    def _devices_status_by_site(self) -> dict[str, tuple[int, int]]:
        """(devices, online devices) per site uid, in one pass over the devices."""
        status: dict[str, list[int]] = {}
        for device in self.devices.values():
            counts = status.setdefault(device["siteUid"], [0, 0])
            counts[0] += 1
            counts[1] += bool(device["online"])
        return {uid: (total, online) for uid, (total, online) in status.items()}

    def _site_out(self, request: Request, site: dict,
                  status: tuple[int, int] | None = None) -> dict:
        if status is None:
            status = self._devices_status_by_site().get(site["uid"])
        total, online = status or (0, 0)
        return {**site, "portalUrl": f"{_portal(request)}/site/{site['id']}", "devicesStatus": {
            "numberOfDevices": total, "numberOfOnlineDevices": online,
            "numberOfOfflineDevices": total - online}}

    # -- devices and audits ------------------------------------------------------------------------

    def _on_account_devices(self, request: Request) -> Response:
        devices = [d for d in self.devices.values()
                   if self.options.account_devices_include_deleted or not d["deleted"]]
        for param, field in (("hostname", "hostname"), ("siteName", "siteName")):
            if wanted := request.args.get(param):
                devices = [d for d in devices if wanted.lower() in (d[field] or "").lower()]
        return self._page(request, "devices", devices, render=lambda d: self._device_out(request, d))

    def _on_site_devices(self, request: Request, uid: str) -> Response:
        self._site(uid)
        devices = [d for d in self.devices.values() if d["siteUid"] == uid]
        return self._page(request, "devices", devices, render=lambda d: self._device_out(request, d))

    def _on_device(self, request: Request, uid: str) -> Response:
        return _json(self._device_out(request, self._device(uid)))

    def _on_audit(self, request: Request, kind: str, uid: str) -> Response:
        device = self._device(uid)
        if device["deviceClass"] != kind:
            raise _Refusal(400, f"Device with uid {uid} is not of class {kind}", "bad_request")
        audit = copy.deepcopy(self.audits[uid])
        if kind == "device":
            audit["portalUrl"] = f"{_portal(request)}/device/{device['id']}"
        return _json(audit)

    def _on_set_udf(self, request: Request, uid: str) -> Response:
        """Merge the given udfN fields; "" clears one to null (§5 "UDF writes")."""
        device, body = self._device(uid), _body(request)
        if not isinstance(body, dict) or any(k not in device["udf"] for k in body):
            raise _Refusal(400, "Only udf1..udf300 can be set", "bad_request")
        _check_fields(body, dict.fromkeys(body, "string"))
        device["udf"].update({k: (None if v == "" else v) for k, v in body.items()})
        return self._void()

    def _on_set_warranty(self, request: Request, uid: str) -> Response:
        device, body = self._device(uid), _object_body(request, WARRANTY)
        if "warrantyDate" not in body:
            raise _Refusal(400, "warrantyDate is required", "bad_request")
        device["warrantyDate"] = body["warrantyDate"]
        return self._void()

    def _device(self, uid: str) -> dict:
        if uid not in self.devices:
            raise _Refusal(404, "Device was not found", "not_found")
        return self.devices[uid]

    def _device_out(self, request: Request, device: dict) -> dict:
        # A shallow copy is enough: answers are serialised at once, under the state lock.
        out = dict(device)
        if device["deviceClass"] != "rmmnetworkdevice":  # network devices: mostly nulls (§5)
            out["portalUrl"] = f"{_portal(request)}/device/{device['id']}"
        return out

    # -- alerts ----------------------------------------------------------------------------------

    def _on_account_alerts(self, request: Request, state: str) -> Response:
        return self._alert_page(request, state, lambda a: True)

    def _on_site_alerts(self, request: Request, uid: str, state: str) -> Response:
        self._site(uid)
        return self._alert_page(request, state, lambda a: a["alertSourceInfo"]["siteUid"] == uid)

    def _on_device_alerts(self, request: Request, uid: str, state: str) -> Response:
        self._device(uid)
        return self._alert_page(request, state, lambda a: a["alertSourceInfo"]["deviceUid"] == uid)

    def _alert_page(self, request: Request, state: str, keep: Callable[[dict], bool]) -> Response:
        resolved = state == "resolved"
        muted = request.args.get("muted")
        alerts = [a for a in self.alerts.values() if a["resolved"] == resolved and keep(a)
                  and (muted is None or str(a["muted"]).lower() == muted.lower())]
        with_total = resolved or self.options.total_count_on_open_alerts
        return self._page(request, "alerts", copy.deepcopy(alerts), with_total=with_total)

    def _on_alert(self, request: Request, uid: str) -> Response:
        return _json(copy.deepcopy(self._alert(uid)))

    def _on_resolve_alert(self, request: Request, uid: str) -> Response:
        alert = self._alert(uid)
        if alert["resolved"]:
            if self.options.already_resolved_status >= 400:
                raise _Refusal(self.options.already_resolved_status, "Alert is already resolved",
                               "bad_request")
            return self._void()
        alert.update(resolved=True, resolvedOn=self.now_ms(), resolvedBy=self.user_name)
        return self._void()

    def _alert(self, uid: str) -> dict:
        if uid not in self.alerts:
            raise _Refusal(404, "Alert was not found", "not_found")
        return self.alerts[uid]

    # -- paging ----------------------------------------------------------------------------------

    def _page(self, request: Request, key: str, items: list, with_total: bool = True,
              render: Callable[[dict], dict] | None = None) -> Response:
        """One 0-based page of at most 250, with absolute next/prev URLs (§4). `render` turns
        each item of the page (only those) into its wire form."""
        try:
            page = int(request.args.get("page", 0))
            size = int(request.args.get("max", PAGE_MAX))
        except ValueError:
            raise _Refusal(400, "page and max must be integers", "bad_request") from None
        if page < 0:
            raise _Refusal(400, "page must not be negative", "bad_request")
        size = min(max(size, 1), PAGE_MAX)  # larger values are clamped, not refused
        chunk = items[page * size:(page + 1) * size]
        if render is not None:
            chunk = [render(item) for item in chunk]
        more = (page + 1) * size < len(items)
        details: dict[str, Any] = {
            "count": len(chunk),
            "prevPageUrl": self._page_url(request, page - 1, size) if page > 0 else None,
            "nextPageUrl": self._page_url(request, page + 1, size) if more else None,
        }
        if with_total:
            details["totalCount"] = len(items)
        return _json({"pageDetails": details, key: chunk})

    def _page_url(self, request: Request, page: int, size: int) -> str:
        query = {k: v for k, v in request.args.items() if k not in ("page", "max")} \
            if self.options.next_page_keeps_filters else {}
        query.update(max=str(size), page=str(page))
        return f"{request.base_url}?{urlencode(query)}"

    def _void(self) -> Response:
        return Response(b"", self.options.void_status)


def _throttled(seconds: float) -> Response:
    """A fault-injected 429 in the body the quota's own 429 has; with a Retry-After, whose
    presence on Datto's answers is not established (§3), so that a throttle rate set for a
    test does not make clients wait Datto's 60-120 s each time."""
    return _json({"error": "too_many_requests", "message": "Rate limit exceeded"}, 429,
                 headers={"Retry-After": simulation.retry_after_text(seconds)})


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, content_type="application/json")


def _body(request: Request) -> Any:
    """The JSON body, None when there is none; a 400 when it is not strict JSON or nests too deeply
    (werkzeug answers 413 for one over the size limit)."""
    data = request.get_data()
    if not data:
        return None
    try:
        return simulation.parse_json(data)
    except simulation.UnreadableJson as exc:
        raise _Refusal(400, f"The request body cannot be read: {exc}", "bad_request") from None


# The fields of the request bodies (the OpenAPI document's CreateSiteRequest and Warranty), each
# with the JSON it takes. Unknown fields are ignored, as Datto's JSON reader ignores them.
CREATE_SITE = {"name": "string", "description": "string", "notes": "string", "onDemand": "boolean",
               "splashtopAutoInstall": "boolean", "proxySettings": "object"}
WARRANTY = {"warrantyDate": "date"}
_FIELD_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "text"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "date": (lambda v: isinstance(v, str) and _is_iso_date(v), "a date as yyyy-mm-dd"),
}


def _object_body(request: Request, fields: dict[str, str]) -> dict:
    """The body as a JSON object whose `fields` have their kinds (null is always allowed)."""
    body = _body(request)
    if not isinstance(body, dict):
        raise _Refusal(400, "The request body must be a JSON object", "bad_request")
    _check_fields(body, fields)
    return body


def _check_fields(body: dict, fields: dict[str, str]) -> None:
    """Refuse, naming it, the first field of `body` that is not null nor of its kind."""
    for field, kind in fields.items():
        value = body.get(field)
        is_kind, expected = _FIELD_KINDS[kind]
        if value is not None and not is_kind(value):
            raise _Refusal(400, f"Invalid value for field '{field}': expected {expected}",
                           "bad_request")


def _is_iso_date(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:  # 2025-02-30
        return False
    return True


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _portal(request: Request) -> str:
    """The simulated web UI's base; portalUrl's real format is not established (§8)."""
    return f"{request.host_url}portal"
