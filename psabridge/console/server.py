"""One WSGI app for `psabridge serve`: the webhooks under /hooks/ (and /health) when a webhook
secret is set, the console everywhere else."""

from __future__ import annotations

import json

from psabridge.core import webhooks


class ServedApp:
    """Dispatch by path: `/hooks/*` and `/health` to `hooks` (a WebhookApp, or None when no
    secret is set: then /hooks/ answers 404 saying so), everything else to `console`."""

    def __init__(self, console, hooks: webhooks.WebhookApp | None = None):
        self.console, self.hooks = console, hooks
        self.max_body = hooks.max_body if hooks else webhooks.MAX_BODY  # for waitress

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/hooks/") or path == "/health":
            if self.hooks is not None:
                return self.hooks(environ, start_response)
            if path.startswith("/hooks/"):
                body = json.dumps({"error": "webhooks are off: serve was started without a "
                                            "webhook secret"}).encode()
                start_response("404 Not Found", [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body)))])
                return [body]
            body = b'{"status": "ok"}'
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return self.console(environ, start_response)
