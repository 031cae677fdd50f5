"""The web console: a werkzeug WSGI app rendering Jinja2 templates, for the admin's work that the
CLI also does (companies, device types, devices, ticketing, tickets, warnings, the journal).

Every change goes through the library functions the CLI calls: a mapping is planned with the
same `mapping.plan_*` function, shown as a preview, and carried out by `mapping.apply` under
`mapping.mapping_lease`; ticket settings are saved by `ticketing.change_ticket_settings`. The
console holds no rules of its own beyond reading a form.

Safe by default: every page but the login needs a session; the session is a signed cookie
(HttpOnly, SameSite=Strict) whose key lives in this process only; every POST carries the
session's CSRF token; every response has a strict Content-Security-Policy (no inline script)
and the usual security headers. Errors are shown on the page, never as a traceback.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import mimetypes
import secrets
import threading
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote

import attrs
import jinja2
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from psabridge.console import auth
from psabridge.core import logs, lookups, mapping, sync, ticketing, webhooks
from psabridge.core import plugins as plugins_lib
from psabridge.core import settings as settings_lib
from psabridge.core.bridge import Bridge, open_bridge
from psabridge.core.errors import PsabridgeError
from psabridge.core.models import Alert, CompanyFilters
from psabridge.core.store import Store

log = logs.get_logger(__name__)

SESSION_COOKIE = "psabridge_console"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
PUBLIC = {"login", "login_link", "static", "favicon"}
REPEAT_MINUTES_MAX = 7 * 24 * 60
# The RMM priorities offered in the priority grid: Datto RMM's five, plus any the settings or
# the open alerts name (another RMM's).
RMM_PRIORITIES = ("Critical", "High", "Moderate", "Low", "Information")
JOURNAL_ROWS = TICKET_ROWS = 200
FLASH_MAX, FLASH_CHARS = 6, 300

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class FormError(PsabridgeError):
    """A form field the console cannot use; the message names the field and what to do."""


class Bridges:
    """The bridge each request works with, kept between requests as `serve` keeps its own: the
    connectors (their HTTP clients and tokens) are reused while the enabled plugins and their
    settings stay as they are (`webhooks.LiveBridge`). Each request gets a Bridge of its own
    over them, so what a bridge reads once (configuration types, company ids) is fresh."""

    def __init__(self, pm, store: Store, transports: Mapping[str, Any] | None = None):
        self.pm, self.store, self.transports = pm, store, dict(transports or {})
        self._live: webhooks.LiveBridge | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Bridge:
        for _ in range(2):
            with self._lock:
                if self._live is None:
                    self._live = webhooks.LiveBridge(
                        open_bridge(self.pm, self.store, self.transports), self.transports)
                live = self._live
            try:
                bridge = live()
            except webhooks.PluginDisabled:
                with self._lock:  # another PSA or RMM may be the enabled one now: open again
                    self._live = None
                continue
            return Bridge(pm=bridge.pm, store=bridge.store, psa=bridge.psa, rmm=bridge.rmm)
        return open_bridge(self.pm, self.store, self.transports)


@attrs.define
class Ctx:
    """One request: the request itself and its session (a dict kept in the signed cookie)."""

    request: Request
    session: dict
    changed: bool = False

    def flash(self, kind: str, message: str) -> None:
        """A message for the next page. They travel in the session cookie, which a browser
        drops past 4 KB (logging the admin out): a few, each cut short, are kept."""
        flashes = self.session.setdefault("flash", [])
        if len(flashes) < FLASH_MAX:
            text = logs.redact_text(message)
            cut = text if len(text) <= FLASH_CHARS else text[:FLASH_CHARS - 1] + "…"
            flashes.append([kind, cut])
        elif len(flashes) == FLASH_MAX:
            flashes.append(["warning", "More messages were left out; the warnings (on the "
                                       "Tickets page) and the server's log have them all."])
        self.changed = True

    def form(self, name: str, default: str = "") -> str:
        return self.request.form.get(name, default).strip()


def _local_path(target: str | None) -> str:
    """`target` when it is a path on this console, else the overview (no open redirects)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _choice(value: str, prefix: str) -> tuple[bool, str | None]:
    """A row's drop-down value as (included, choice): `suggested` means the engine's proposal
    (None), `new` Create New, `skip` leave it out, `PREFIX:ID` that record."""
    if value in ("", "skip"):
        return False, None
    if value == "suggested":
        return True, None
    if value == "new":
        return True, mapping.NEW
    if value.startswith(prefix + ":") and value[len(prefix) + 1:]:
        return True, value[len(prefix) + 1:]
    raise FormError(f"{value!r} is not a choice this form offers; reload the page and choose again")


def _rows_chosen(ctx: Ctx, prefix: str) -> dict[str, str | None]:
    """The rows a mapping form asks for: the one whose own button was pressed (`only`), else
    the ticked ones (`select`), each with its drop-down's choice; skipped rows are left out."""
    form = ctx.request.form
    keys = [form["only"]] if form.get("only") else form.getlist("select")
    chosen = {}
    for key in keys:
        included, choice = _choice(form.get(f"choice:{key}", "suggested"), prefix)
        if included:
            chosen[key] = choice
    if not chosen:
        raise FormError("nothing to do: tick the rows to change (and not Skip), or use a row's "
                        "own Preview button")
    return chosen


class ConsoleApp:
    """WSGI app of the console. `bridges` gives the bridge of each request; `links` issues the
    one-time login links `serve` prints."""

    def __init__(self, pm, store: Store, transports: Mapping[str, Any] | None = None,
                 links: auth.LoginLinks | None = None, throttle: auth.LoginThrottle | None = None,
                 trusted_proxies: tuple[settings_lib.Network, ...] = ()):
        self.pm, self.store = pm, store
        self.trusted_proxies = tuple(trusted_proxies)
        self.bridges = Bridges(pm, store, transports)
        self.links = links or auth.LoginLinks()
        self.throttle = throttle or auth.LoginThrottle()
        # A key of this process only: a restart ends every session, and no key is stored.
        self._signer = URLSafeTimedSerializer(secrets.token_bytes(32), salt="psabridge-console")
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("psabridge.console", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.urls = Map([
            Rule("/login", endpoint="login", methods=["GET", "POST"]),
            Rule("/login/<token>", endpoint="login_link", methods=["GET", "POST"]),
            Rule("/logout", endpoint="logout", methods=["POST"]),
            Rule("/static/<name>", endpoint="static", methods=["GET"]),
            Rule("/favicon.ico", endpoint="favicon", methods=["GET"]),
            Rule("/", endpoint="overview", methods=["GET"]),
            Rule("/pass", endpoint="run_pass", methods=["POST"]),
            Rule("/check", endpoint="check", methods=["POST"]),
            Rule("/companies", endpoint="companies", methods=["GET"]),
            Rule("/companies/preview", endpoint="companies_preview", methods=["POST"]),
            Rule("/companies/apply", endpoint="companies_apply", methods=["POST"]),
            Rule("/companies/unmap", endpoint="companies_unmap", methods=["POST"]),
            Rule("/device-types", endpoint="device_types", methods=["GET"]),
            Rule("/device-types/map", endpoint="device_types_map", methods=["POST"]),
            Rule("/devices", endpoint="devices", methods=["GET"]),
            Rule("/devices/preview", endpoint="devices_preview", methods=["POST"]),
            Rule("/devices/apply", endpoint="devices_apply", methods=["POST"]),
            Rule("/devices/auto", endpoint="devices_auto", methods=["POST"]),
            Rule("/ticketing", endpoint="ticketing", methods=["GET"]),
            Rule("/ticketing/save", endpoint="ticketing_save", methods=["POST"]),
            Rule("/ticketing/monitors", endpoint="ticketing_monitors", methods=["POST"]),
            Rule("/ticketing/switch", endpoint="ticketing_switch", methods=["POST"]),
            Rule("/tickets", endpoint="tickets", methods=["GET"]),
            Rule("/warnings/clear", endpoint="warnings_clear", methods=["POST"]),
            Rule("/journal", endpoint="journal", methods=["GET"]),
        ], strict_slashes=False)

    # -- plumbing --------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        ctx = Ctx(request, self._load_session(request))
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            if endpoint not in PUBLIC and not ctx.session.get("user"):
                wanted = request.full_path.rstrip("?") if request.method == "GET" else "/"
                response = redirect(f"/login?next={quote(wanted)}", 303)
            elif request.method == "POST" and not self._csrf_ok(ctx):
                response = self.error_page(ctx, 403, "This form has expired or did not come from "
                                           "this console. Reload the page and try again.")
            else:
                response = getattr(self, f"on_{endpoint}")(ctx, **args)
        except HTTPException as exc:
            response = self.error_page(ctx, exc.code or 400, exc.description or exc.name)
        except Exception:  # noqa: BLE001 - the page says so; the log has the traceback
            log.error("console request failed", path=request.path, exc_info=True)
            response = self.error_page(ctx, 500, "Something unexpected went wrong; the server's "
                                       "log has the details (run `serve -vv` for more).")
        self._save_session(ctx, response)
        response.headers.extend(SECURITY_HEADERS)
        return response(environ, start_response)

    def _load_session(self, request: Request) -> dict:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            try:
                session = self._signer.loads(cookie, max_age=SESSION_SECONDS)
                if isinstance(session, dict) and session.get(CSRF_FIELD):
                    return session
            except BadSignature:
                pass
        return {CSRF_FIELD: secrets.token_urlsafe(32), "new": True}

    def _save_session(self, ctx: Ctx, response: Response) -> None:
        if not (ctx.changed or ctx.session.pop("new", False)):
            return
        ctx.session.pop("new", None)
        # Secure when the browser came over HTTPS, directly or through the TLS proxy (trusting
        # the proxy's header here can only make the cookie stricter).
        https = ctx.request.scheme == "https" or \
            ctx.request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        response.set_cookie(SESSION_COOKIE, self._signer.dumps(ctx.session), httponly=True,
                            samesite="Strict", secure=https, path="/")

    def _csrf_ok(self, ctx: Ctx) -> bool:
        sent = ctx.request.form.get(CSRF_FIELD, "")
        return bool(sent) and hmac.compare_digest(sent.encode(), ctx.session[CSRF_FIELD].encode())

    def render(self, ctx: Ctx, template: str, status: int = 200, **values) -> Response:
        flashes = ctx.session.pop("flash", [])
        if flashes:
            ctx.changed = True
        html = self.templates.get_template(template).render(
            csrf_token=ctx.session[CSRF_FIELD], flashes=flashes, path=ctx.request.path,
            logged_in=bool(ctx.session.get("user")), **values)
        return Response(html, status, content_type="text/html; charset=utf-8")

    def error_page(self, ctx: Ctx, status: int, message: str) -> Response:
        return self.render(ctx, "error.html", status, message=logs.redact_text(message))

    def bridge_or_page(self, ctx: Ctx) -> Bridge | Response:
        try:
            return self.bridges()
        except PsabridgeError as exc:
            return self.error_page(ctx, 503, str(exc))

    def act(self, ctx: Ctx, back: str, action: Callable[[Bridge], Response | None]) -> Response:
        """Run a form's action; what goes wrong is flashed on the page the form came from."""
        try:
            result = action(self.bridges())
        except PsabridgeError as exc:
            ctx.flash("error", str(exc))
            return redirect(back, 303)
        return result if result is not None else redirect(back, 303)

    def page(self, ctx: Ctx, template: str, build: Callable[[Bridge], dict]) -> Response:
        """A page read from the PSA and RMM; if they cannot be read, the page says why."""
        try:
            values = build(self.bridges())
        except PsabridgeError as exc:
            return self.error_page(ctx, 503, str(exc))
        return self.render(ctx, template, **values)

    # -- login -----------------------------------------------------------------------------

    def on_static(self, ctx: Ctx, name: str) -> Response:
        folder = resources.files("psabridge.console") / "static"
        if "/" in name or name.startswith(".") or not (folder / name).is_file():
            raise NotFound("no such file")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = Response((folder / name).read_bytes(), content_type=kind)
        return response

    def on_favicon(self, ctx: Ctx) -> Response:
        return Response(status=204)  # no icon, and no 404 in the browser's console

    def _log_in(self, ctx: Ctx, address: str, target: str) -> Response:
        self.throttle.succeeded(address)
        ctx.session.clear()  # a new session: a new CSRF token, nothing carried over
        ctx.session.update({"user": "admin", CSRF_FIELD: secrets.token_urlsafe(32)})
        ctx.changed = True
        log.info("console login", remote=address)
        return redirect(_local_path(target), 303)

    def client_address(self, ctx: Ctx) -> str:
        """Who is logging in, for the brake on guessing: behind a trusted reverse proxy, the
        address it says it was reached from; else the connection's."""
        return settings_lib.client_address(ctx.request.remote_addr,
                                           ctx.request.headers.get("X-Forwarded-For"),
                                           self.trusted_proxies)

    def on_login(self, ctx: Ctx) -> Response:
        address = self.client_address(ctx)
        target = ctx.request.args.get("next") or ctx.form("next") or "/"
        values = {"next": _local_path(target), "has_password": auth.has_password(self.store)}
        if ctx.request.method == "GET":
            return self.render(ctx, "login.html", **values)
        if wait := self.throttle.wait_seconds(address):
            return self.render(ctx, "login.html", 429, error=f"Too many failed logins; try again "
                               f"in {wait} seconds.", **values)
        if auth.check_password(self.store, ctx.request.form.get("password", "")):
            return self._log_in(ctx, address, target)
        self.throttle.failed(address)
        log.warning("console login refused", remote=address)
        return self.render(ctx, "login.html", 401, error="Wrong password.", **values)

    def on_login_link(self, ctx: Ctx, token: str) -> Response:
        """A one-time link: a GET shows a button (a link previewer must not use it up), the
        POST it makes logs in."""
        address = self.client_address(ctx)
        if ctx.request.method == "GET":
            return self.render(ctx, "login_link.html", token=token)
        if wait := self.throttle.wait_seconds(address):
            return self.error_page(ctx, 429, f"Too many failed logins; try again in {wait} seconds.")
        if self.links.redeem(token):
            return self._log_in(ctx, address, "/")
        self.throttle.failed(address)
        return self.error_page(ctx, 401, "This login link was used already or has expired. "
                               "Restart `psabridge serve` for a new one, or log in with the "
                               "password (`psabridge console set-password`).")

    def on_logout(self, ctx: Ctx) -> Response:
        ctx.session.clear()
        ctx.session[CSRF_FIELD] = secrets.token_urlsafe(32)
        ctx.changed = True
        return redirect("/login", 303)

    # -- overview --------------------------------------------------------------------------

    def on_overview(self, ctx: Ctx) -> Response:
        plugins = plugins_lib.list_plugins(self.pm, self.store)
        values: dict[str, Any] = {
            "plugins": [p for p in plugins if p.kind in ("psa", "rmm")],
            "last_pass": self.store.option(auth.OPTION_PLUGIN, "last_pass"),
            "warnings": self.store.warnings(), "connection_error": None, "counts": None,
        }
        try:
            bridge = self.bridges()
        except PsabridgeError as exc:
            values["connection_error"] = str(exc)
            return self.render(ctx, "overview.html", **values)
        psa, rmm = bridge.pair
        states: dict[str, int] = {}
        for row in bridge.store.alert_tickets(psa, rmm):
            states[row.state] = states.get(row.state, 0) + 1
        settings = ticketing.ticket_settings(bridge)
        values.update(pair=(psa, rmm), auto_map=bridge.option("auto_map"), ticketing=settings,
                      counts={"companies mapped": len(bridge.store.company_mappings(psa, rmm)),
                              "device types mapped": len(bridge.store.device_type_mappings(psa, rmm)),
                              "devices mapped": len(bridge.store.device_mappings(psa, rmm)),
                              **{f"alerts {state}": n for state, n in sorted(states.items())}})
        return self.render(ctx, "overview.html", **values)

    def on_check(self, ctx: Ctx) -> Response:
        """Ask the PSA and the RMM whether they answer, as `plugins enable` does."""
        def run(bridge: Bridge) -> None:
            for kind, connector in (("psa", bridge.psa), ("rmm", bridge.rmm)):
                hook = f"{kind}_check_connection"
                if not connector.supports(hook):
                    ctx.flash("warning", f"{connector.name} cannot be checked (it has no {hook})")
                    continue
                try:
                    report = connector.check_connection()
                except PsabridgeError as exc:
                    ctx.flash("error", f"{connector.name}: {exc}")
                    continue
                ctx.flash("ok" if report.ok else "error",
                          f"{connector.name}: {'answers' if report.ok else 'fails'}"
                          + (f" ({report.detail})" if report.detail else ""))
                for permission in report.missing_permissions:
                    ctx.flash("warning", f"{connector.name}: the API user lacks {permission}")

        return self.act(ctx, "/", run)

    def on_run_pass(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            report = sync.run_pass(bridge)
            figures = {k: v for k, v in attrs.asdict(report).items() if isinstance(v, int)}
            self.store.set_option(auth.OPTION_PLUGIN, "last_pass", {
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "figures": figures, "errors": report.errors})
            done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items() if v)
            ctx.flash("error" if report.errors else "ok",
                      f"Pass finished: {done or 'nothing to do'}"
                      + (f"; {len(report.errors)} error(s): " + "; ".join(report.errors)
                         if report.errors else "."))

        return self.act(ctx, "/", run)

    # -- companies and sites ---------------------------------------------------------------

    def on_companies(self, ctx: Ctx) -> Response:
        args = ctx.request.args
        view = args.get("view", "unmapped")
        if view not in ("unmapped", "mapped", "all"):
            view = "unmapped"
        filters = CompanyFilters(type=args.get("type") or None, status=args.get("status") or None,
                                 search=args.get("search", "").strip() or None)

        def build(bridge: Bridge) -> dict:
            everyone = lookups.companies(bridge)
            sites = mapping.rmm_sites(bridge)
            rows, seen = [], set()
            for row in mapping.load_companies(bridge, view, filters, sites=sites):
                if (row.company.id, row.mapping is None) in seen:
                    continue  # one row per company, naming every type it has
                seen.add((row.company.id, row.mapping is None))
                rows.append(row)
            taken = {m.site_uid for m in bridge.store.company_mappings(*bridge.pair)}
            return {
                "rows": rows, "view": view, "filters": filters,
                "free_sites": sorted((s for s in sites if s.uid not in taken),
                                     key=lambda s: s.name.casefold()),
                "types": sorted({t for c in everyone for t in c["types"]}),
                "statuses": sorted({c["status"] for c in everyone if c["status"]}),
            }

        # htmx asks for the table alone when a filter changes; a plain GET gets the page.
        fragment = (ctx.request.headers.get("HX-Request") == "true"
                    and ctx.request.headers.get("HX-History-Restore-Request") != "true")
        return self.page(ctx, "companies_table.html" if fragment else "companies.html", build)

    def _company_plan(self, ctx: Ctx, bridge: Bridge) -> tuple[mapping.Plan, dict]:
        chosen = _rows_chosen(ctx, "site")
        # The company's type kept with the mapping is the library's choice, as for the CLI.
        return mapping.plan_company_mappings(bridge, chosen), chosen

    def on_companies_preview(self, ctx: Ctx) -> Response:
        def preview(bridge: Bridge) -> Response:
            plan, chosen = self._company_plan(ctx, bridge)
            hidden = [("select", key) for key in chosen]
            hidden += [(f"choice:{key}", ctx.request.form.get(f"choice:{key}", "suggested"))
                       for key in chosen]
            return self._preview(ctx, plan, hidden, "companies")

        return self.act(ctx, "/companies", preview)

    def on_companies_apply(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> Response | None:
            with mapping.mapping_lease(bridge):
                plan, _ = self._company_plan(ctx, bridge)
                return self._apply_as_previewed(ctx, bridge, plan, "companies")

        return self.act(ctx, "/companies", run)

    def on_companies_unmap(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            ids = ctx.request.form.getlist("company")
            if not ids:
                raise FormError("choose a company to unmap")
            with mapping.mapping_lease(bridge):
                removed = mapping.unmap_companies(bridge, ids)
            ctx.flash("ok", f"Unmapped {len(removed)} compan{'y' if len(removed) == 1 else 'ies'}; "
                      "their devices keep their configurations.")

        return self.act(ctx, "/companies?view=mapped", run)

    def _preview(self, ctx: Ctx, plan: mapping.Plan, hidden: list, what: str,
                 status: int = 200) -> Response:
        """The plan, and a form to apply it that carries the choices and, for the apply to
        compare, the changes previewed."""
        planned = [("planned", json.dumps([c.action, c.subject, c.detail, c.ids]))
                   for c in plan.changes]
        return self.render(ctx, "preview.html", status, title=f"{what.capitalize()}: the plan",
                           plan=plan, hidden=[*hidden, *planned], apply_url=f"/{what}/apply",
                           back_url=f"/{what}")

    def _apply_as_previewed(self, ctx: Ctx, bridge: Bridge, plan: mapping.Plan,
                            what: str) -> Response | None:
        """Carry out `plan` (planned again just now) if it is the plan the admin previewed;
        else apply nothing and show the new plan, saying what left the old one and why."""
        previewed = []
        for value in ctx.request.form.getlist("planned"):
            try:
                action, subject, detail, ids = json.loads(value)
            except (ValueError, TypeError):
                raise FormError("this form's plan is unreadable; preview again") from None
            previewed.append((action, subject, detail, ids if isinstance(ids, dict) else {}))
        now = {(c.action, c.subject, c.detail) for c in plan.changes}
        before = {(a, s, d) for a, s, d, _ in previewed}
        if now == before:
            self._apply(ctx, bridge, plan)
            return None
        for action, subject, detail, ids in previewed:
            if (action, subject, detail) not in now:
                ctx.flash("warning", f"No longer in the plan: {action} for {subject} ({detail}): "
                          f"{self._why_gone(bridge, plan, subject, ids)}.")
        for change in plan.changes:
            if (change.action, change.subject, change.detail) not in before:
                ctx.flash("warning", f"New in the plan: {change.action} for {change.subject} "
                          f"({change.detail}).")
        ctx.flash("error", "Nothing was applied: the plan changed since the preview. Check the "
                           "plan below and apply it again.")
        hidden = [(k, v) for k, v in ctx.request.form.items(multi=True)
                  if k not in (CSRF_FIELD, "planned")]
        return self._preview(ctx, plan, hidden, what, status=409)

    @staticmethod
    def _why_gone(bridge: Bridge, plan: mapping.Plan, subject: str, ids: dict) -> str:
        """Why a previewed change is not in the plan made again: what changed meanwhile."""
        for skipped, why in plan.skipped:
            if skipped == subject:
                return why
        company_id, device_uid = ids.get("company_id"), ids.get("device_uid")
        if company_id and not device_uid:
            mapped = {m.company_id: m for m in bridge.store.company_mappings(*bridge.pair)}
            if company_id in mapped:
                return (f"since the preview, it was mapped to site "
                        f"{mapped[company_id].site_name} (by the CLI or another session)")
            return "since the preview, it is no longer mapped"
        if device_uid:
            mapped = {m.device_uid: m for m in bridge.store.device_mappings(*bridge.pair)}
            if device_uid in mapped:
                return (f"since the preview, it was mapped to configuration "
                        f"{mapped[device_uid].configuration_id} (by automatic mapping, the CLI "
                        "or another session)")
            return "since the preview, it is no longer mapped"
        return "the PSA or the RMM changed since the preview"

    def _apply(self, ctx: Ctx, bridge: Bridge, plan: mapping.Plan) -> None:
        outcome = mapping.apply(bridge, plan)
        done = len(outcome.done)
        ctx.flash("error" if outcome.failed else "ok",
                  f"Done: {done} change{'s' * (done != 1)}, {len(outcome.failed)} failed, "
                  f"{len(plan.skipped)} skipped.")
        for change, error in outcome.failed:
            ctx.flash("error", f"Failed: {change.action} for {change.subject}: {error}")
        for subject, why in plan.skipped[:2]:
            ctx.flash("warning", f"Skipped {subject}: {why}")
        if len(plan.skipped) > 2:
            ctx.flash("warning", f"{len(plan.skipped) - 2} more skipped; those held back are "
                                 "listed as warnings on the Tickets page.")

    # -- device types ----------------------------------------------------------------------

    def on_device_types(self, ctx: Ctx) -> Response:
        def build(bridge: Bridge) -> dict:
            types = sorted(bridge.configuration_types(), key=lambda t: t.name.casefold())
            return {"rows": mapping.load_device_types(bridge),
                    "types": [t for t in types if not t.inactive]}

        return self.page(ctx, "device_types.html", build)

    def on_device_types_map(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            form = ctx.request.form
            keys = [form["only"]] if form.get("only") else form.getlist("select")
            chosen = {}
            for key in keys:
                device_type, configuration_type = form.get(f"name:{key}"), form.get(f"choice:{key}")
                if not device_type or not configuration_type:
                    raise FormError("choose a configuration type for each ticked device type")
                chosen[device_type] = configuration_type
            if not chosen:
                raise FormError("nothing to do: tick the device types to map, or use a row's own "
                                "Save button")
            unusable = {t.id: t.unusable for t in bridge.configuration_types() if t.unusable}
            with mapping.mapping_lease(bridge):
                for device_type, configuration_type in chosen.items():
                    saved = mapping.map_device_type(bridge, device_type, configuration_type)
                    ctx.flash("ok", f"{device_type} → {saved.configuration_type_name}")
                    if saved.configuration_type_id in unusable:
                        ctx.flash("warning", f"{saved.configuration_type_name} "
                                  f"{unusable[saved.configuration_type_id]}: no configuration "
                                  f"can be created for new {device_type} devices; choose "
                                  "another type for that.")

        return self.act(ctx, "/device-types", run)

    # -- devices ---------------------------------------------------------------------------

    def on_devices(self, ctx: Ctx) -> Response:
        def build(bridge: Bridge) -> dict:
            rows = mapping.load_devices(bridge, "all")
            exceptions, proposals, mapped = [], [], []
            for row in rows:
                kind = device_exception(row)
                if row.state in ("mapped", "moved"):
                    mapped.append(row)
                elif kind:
                    exceptions.append((kind, row))
                else:
                    proposals.append(row)
            exceptions.sort(key=lambda item: (EXCEPTION_ORDER.index(item[0]),
                                              item[1].device.hostname.casefold()))
            candidates = {}
            taken = {m.configuration_id: m.device_uid
                     for m in bridge.store.device_mappings(*bridge.pair)}
            for _kind, row in exceptions:
                if row.company_id and row.company_id not in candidates and row.state != "unaudited":
                    candidates[row.company_id] = lookups.configurations(bridge, row.company_id)
            return {"exceptions": exceptions, "proposals": proposals, "mapped": mapped,
                    "candidates": candidates, "taken": taken, "auto_map": bridge.option("auto_map")}

        return self.page(ctx, "devices.html", build)

    def _device_plan(self, ctx: Ctx, bridge: Bridge) -> tuple[mapping.Plan, list]:
        what = ctx.form("what")
        if what == "map":
            chosen = _rows_chosen(ctx, "configuration")
            hidden = [("select", key) for key in chosen]
            hidden += [(f"choice:{key}", ctx.request.form.get(f"choice:{key}", "suggested"))
                       for key in chosen]
            return mapping.plan_device_mappings(bridge, chosen), hidden
        if what == "unmap":
            uids = ctx.request.form.getlist("unmap")
            if not uids:
                raise FormError("tick the mapped devices to unmap")
            return mapping.unmap_devices(bridge, uids), [("unmap", uid) for uid in uids]
        if what == "map-now":
            return mapping.map_now(bridge), []
        raise FormError("this form asks for nothing the console knows; reload the page")

    def on_devices_preview(self, ctx: Ctx) -> Response:
        def preview(bridge: Bridge) -> Response:
            plan, hidden = self._device_plan(ctx, bridge)
            hidden.append(("what", ctx.form("what")))
            return self._preview(ctx, plan, hidden, "devices")

        return self.act(ctx, "/devices", preview)

    def on_devices_apply(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> Response | None:
            with mapping.mapping_lease(bridge):
                plan, _ = self._device_plan(ctx, bridge)
                return self._apply_as_previewed(ctx, bridge, plan, "devices")

        return self.act(ctx, "/devices", run)

    def on_devices_auto(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            state = ctx.form("auto_map")
            if state not in ("on", "off"):
                raise FormError("Automatically Map is on or off")
            bridge.set_option("auto_map", state == "on")
            ctx.flash("ok", f"Automatic mapping is {state}.")

        return self.act(ctx, "/devices", run)

    # -- ticketing -------------------------------------------------------------------------

    def on_ticketing(self, ctx: Ctx) -> Response:
        def build(bridge: Bridge) -> dict:
            options = bridge.psa.ticket_options()
            settings = ticketing.ticket_settings(bridge)
            fields = [{"name": f.name, "label": f.label, "scoped": bool(f.scoped_by),
                       "choices": lookups.routing_choices(bridge, f.name, options=options)}
                      for f in options.routing]
            monitors = {row["monitor"]: row for row in lookups.monitors(bridge)}
            for name in settings.monitors:
                monitors.setdefault(name, {"monitor": name, "open_alerts": 0, "priorities": []})
            rmm_priorities = list(RMM_PRIORITIES)
            for name in [*settings.priorities, *(p for m in monitors.values()
                                                 for p in m["priorities"])]:
                if name not in rmm_priorities:
                    rmm_priorities.append(name)
            return {
                "settings": settings, "origins": ticketing.ORIGINS,
                "fields": [{**f, "usable": [c for c in f["choices"] if c["usable"]]}
                           for f in fields],
                "unusable": [{**c, "label": f["label"]} for f in fields for c in f["choices"]
                             if not c["usable"]],
                "statuses": lookups.statuses(bridge, options=options),
                "priorities": lookups.priorities(bridge, options),
                "sources": lookups.sources(bridge, options),
                "rmm_priorities": rmm_priorities,
                "monitors": sorted(monitors.values(), key=lambda m: m["monitor"]),
                "problems": ticketing.check_ticket_settings(bridge, settings, options),
                "repeat_max": REPEAT_MINUTES_MAX,
            }

        return self.page(ctx, "ticketing.html", build)

    def on_ticketing_save(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            options = bridge.psa.ticket_options()
            settings = ticketing.ticket_settings(bridge)

            def offered(field: str, label: str, ids: set[str]) -> str | None:
                value = ctx.form(field)
                if value and value not in ids:
                    raise FormError(f"{label}: {value!r} is not one the PSA offers; reload the "
                                    "page and choose from the list")
                return value or None

            statuses = {s.id for s in options.statuses}
            source = offered("source", "Source", {s.id for s in options.sources})
            priority_ids = {p.id for p in options.priorities}
            priorities = {}
            for key in ctx.request.form:
                if key.startswith("priority:") and ctx.form(key):
                    rmm_priority = key.removeprefix("priority:")
                    priorities[rmm_priority] = offered(key, f"Priority for {rmm_priority}",
                                                       priority_ids)
            attributes = dict(settings.attributes)
            for origin in ticketing.ORIGINS:
                routing = {}
                for field in options.routing:  # only the choices the page offers
                    usable = {c.id for c in field.choices if not c.inactive and not c.unusable}
                    value = offered(f"route:{field.name}:{origin}",
                                    f"{field.label} ({origin} tickets)", usable)
                    if value:
                        routing[field.name] = value
                values = {
                    "open_status_id": offered(f"open_status:{origin}",
                                              f"Open status ({origin} tickets)", statuses),
                    "closed_status_id": offered(f"closed_status:{origin}",
                                                f"Closed status ({origin} tickets)", statuses),
                }
                if routing or any(values.values()):
                    attributes[origin] = ticketing.TicketAttributes(routing=routing, **values)
                else:
                    attributes.pop(origin, None)
            repeat = ctx.form("repeat_minutes")
            try:
                minutes = int(repeat) if repeat else 0
            except ValueError:
                minutes = -1
            if not 0 <= minutes <= REPEAT_MINUTES_MAX:
                raise FormError(f"Repeat window: {repeat!r} is not a whole number of minutes from "
                                f"0 (off) to {REPEAT_MINUTES_MAX} (a week)")
            settings = attrs.evolve(settings, source_id=source, priorities=priorities,
                                    attributes=attributes, repeat_minutes=minutes or None)
            problems = ticketing.change_ticket_settings(bridge, settings, options)
            ctx.flash("ok", "Ticket settings saved.")
            for problem in problems:
                ctx.flash(problem.severity, problem.message)

        return self.act(ctx, "/ticketing", run)

    def on_ticketing_monitors(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            settings = ticketing.ticket_settings(bridge)
            overrides = dict(settings.monitors)
            form = ctx.request.form
            for key in form.getlist("monitor"):
                name = form.get(f"name:{key}", "")
                if not name:
                    raise FormError("a monitor row lost its name; reload the page")
                wanted = form.get(f"tickets:{key}") == "on"
                current = overrides.get(name)
                if current is not None:
                    overrides[name] = attrs.evolve(current, create_tickets=wanted)
                elif not wanted:
                    overrides[name] = ticketing.MonitorOverride(create_tickets=False)
            ticketing.change_ticket_settings(bridge, attrs.evolve(settings, monitors=overrides))
            ctx.flash("ok", "Monitor overrides saved.")

        return self.act(ctx, "/ticketing", run)

    def on_ticketing_switch(self, ctx: Ctx) -> Response:
        def run(bridge: Bridge) -> None:
            state = ctx.form("ticketing")
            if state not in ("on", "off"):
                raise FormError("ticketing is turned on or off")
            ticketing.set_ticketing_enabled(bridge, state == "on")
            ctx.flash("ok", "Ticketing is on: alerts raised from now on make tickets."
                      if state == "on" else "Ticketing is off; its settings are kept.")

        return self.act(ctx, "/ticketing", run)

    # -- tickets, warnings, journal ----------------------------------------------------------

    def on_tickets(self, ctx: Ctx) -> Response:
        def build(bridge: Bridge) -> dict:
            every = bridge.store.alert_tickets(*bridge.pair)
            rows = list(reversed(every))[:TICKET_ROWS]
            devices = {d.uid: d for d in bridge.rmm.list_devices(site_uid=None)}
            ticket_links = bridge.psa.supports("psa_ticket_url")
            lines = []
            for row in rows:
                device = devices.get(row.device_uid)
                alert = Alert(row.alert_uid, "", row.device_uid, "", row.monitor)
                lines.append({
                    "row": row, "device": device,
                    "alert_url": (bridge.rmm.alert_url(alert=alert)
                                  if row.origin == "alert" else None),
                    "device_url": mapping.device_url(bridge, device) if device else None,
                    "ticket_url": (bridge.psa.ticket_url(ticket_id=row.ticket_id)
                                   if ticket_links and row.ticket_id else None),
                })
            return {"lines": lines, "total": len(every), "limit": TICKET_ROWS,
                    "warnings": bridge.store.warnings()}

        return self.page(ctx, "tickets.html", build)

    def on_warnings_clear(self, ctx: Ctx) -> Response:
        plugin = ctx.form("plugin") or None
        cleared = self.store.clear_warnings(plugin)
        ctx.flash("ok", f"Cleared {cleared} warning{'s' * (cleared != 1)}; the devices they held "
                  "back are tried again by automatic mapping.")
        return redirect("/tickets#warnings", 303)

    def on_journal(self, ctx: Ctx) -> Response:
        args = ctx.request.args
        wanted = {k: args.get(k, "").strip() for k in ("plugin", "outcome", "search")}
        entries = self.store.journal(wanted["plugin"] or None)
        plugins = sorted({e.plugin for e in self.store.journal()})
        if wanted["outcome"]:
            entries = [e for e in entries if e.outcome == wanted["outcome"]]
        if wanted["search"]:
            needle = wanted["search"].casefold()
            entries = [e for e in entries if needle in e.action.casefold()
                       or needle in e.target.casefold() or needle in str(dict(e.detail)).casefold()]
        shown = list(reversed(entries))[:JOURNAL_ROWS]
        return self.render(ctx, "journal.html", entries=shown, total=len(entries),
                           wanted=wanted, plugins=plugins, limit=JOURNAL_ROWS)


EXCEPTION_ORDER = ("ambiguous", "no match", "unaudited", "taken", "unreadable")


def device_exception(row: mapping.DeviceRow) -> str | None:
    """What keeps an unmapped device from a proposal to map it to an existing configuration,
    in the console's words; None when it has one (or is mapped)."""
    if row.state == "unaudited":
        return "unaudited"
    if row.state != "unmapped":
        return None
    if row.problem:
        return "unreadable"
    if row.match is None or row.match.configuration is not None:
        return None
    if "still match" in row.match.reason:
        return "ambiguous"
    if "is mapped to device" in row.match.reason:
        return "taken"
    return "no match"


def make_console(pm, store: Store, transports: Mapping[str, Any] | None = None) -> ConsoleApp:
    return ConsoleApp(pm, store, transports)
