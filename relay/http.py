"""/metrics (Prometheus text format), /healthz and /readyz on one small threaded HTTP server.

The two probes answer different questions (docs/operations.md, "Probes"):

* ``/healthz`` (liveness): is this process's control loop turning? It stays 200 through any outage of Postgres
  or Kafka, which a restart would not cure, and fails only when the loop has not turned for a whole
  :class:`Pulse` window (a deadlock, a call that never returns): then a restart is the cure.
* ``/readyz`` (readiness): can this relay publish now? 503 while it waits at start-up, while the database does
  not answer or its leases are not renewing, while no Kafka broker answers, and once it is stopping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("relay.http")


def liveness_window_s(heartbeat_s: float, kafka_timeout_s: float) -> float:
    """How long a control loop may go without turning before ``/healthz`` fails. One turn may legitimately take
    a whole dependency timeout (a start-up attempt against Kafka makes several calls bounded by the Kafka
    timeout; a lease round waits for a database connect), so the window is well above that, and never below a
    minute: a probe that restarts a relay merely slowed by an outage would turn the outage into a crash loop."""
    return max(60.0, 3 * heartbeat_s, 4 * kafka_timeout_s)


class Pulse:
    """A loop calls :meth:`beat` at each turn; :meth:`alive` is false once it has not for ``window_s``."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self._clock = window_s, clock
        self._at = clock()

    def beat(self) -> None:
        self._at = self._clock()  # a float store: atomic under the GIL, read by the HTTP threads

    def alive(self) -> bool:
        return self._clock() - self._at < self.window_s


class HealthServer:
    """Serves the metrics and the two probes (module docstring). The probes' answers come from whoever runs the
    process at the moment: the start-up wait first, then the supervisor (:meth:`answer_from`)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok = (outer.healthy if path == "/healthz" else outer.ready)()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the log

        self.registry, self.healthy, self.ready = registry, healthy, ready
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="relay-http", daemon=True)

    def answer_from(self, healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self.healthy, self.ready = healthy, ready

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
