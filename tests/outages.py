"""An endpoint that fails every time, for tests: `psabridge.simulation.ScriptedFault` is one-shot.

    outage = Outage.behind(sim.injector, lambda request: request.path.endswith(uid), status=500)
    ...                                      # every matching request is answered 500
    outage.end()                             # and from now on answered by the simulator again

The outage sits behind the simulator's fault injector, so the simulator's own request counters
still count every request it refuses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from werkzeug.wrappers import Request, Response


class Outage:
    """WSGI middleware answering `status` to every request `matches` picks, until `end()`."""

    def __init__(self, app, matches: Callable[[Request], bool], status: int):
        self.app = app
        self.matches = matches
        self.status = status
        self.refused = 0  # how many requests it answered in place of the simulator
        self.over = False
        self._lock = threading.Lock()

    @classmethod
    def behind(cls, injector, matches: Callable[[Request], bool], status: int) -> Outage:
        """Put an outage between a simulator's fault injector and the simulator itself."""
        outage = cls(injector.app, matches, status)
        injector.app = outage
        return outage

    def end(self) -> None:
        self.over = True

    def __call__(self, environ, start_response):
        if self.over or not self.matches(Request(environ)):
            return self.app(environ, start_response)
        with self._lock:
            self.refused += 1
        body = json.dumps({"error": "outage", "message": f"simulated outage ({self.status})"})
        return Response(body, self.status, content_type="application/json")(environ, start_response)
