"""A protocol-faithful fake of the Grafana HTTP API endpoints the receiver calls.

Grafana cannot be installed here, so this stands in for it. It answers like Grafana does:

* ``GET /api/user`` with the ``grafana_session`` cookie: 200 and the signed-in user's JSON
  (``id``, ``email``, ``name``, ``login``, ``theme``, ``orgId``, ``isGrafanaAdmin``,
  ``isDisabled``, ``isExternal``, ``updatedAt``, ``createdAt``, ``avatarUrl``), or 401 with
  ``{"message": "Unauthorized"}`` for a missing or unknown session;
* ``GET /api/user/orgs``: 200 and ``[{"orgId", "name", "role"}]``, or 401.

A test registers sessions with :meth:`FakeGrafana.sign_in`, can make Grafana fail
(:attr:`FakeGrafana.down`: 503 on every call), and reads how many calls it got.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeGrafana"]


class FakeGrafana:
    """Serve the fake on 127.0.0.1 in a background thread for a ``with`` block."""

    def __init__(self, cookie_name: str = "grafana_session") -> None:
        self.cookie_name = cookie_name
        self.sessions: dict[str, dict[str, Any]] = {}
        self.orgs: dict[str, list[dict[str, Any]]] = {}
        self.down = False
        self.calls = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the http.server naming
                fake.calls += 1
                if fake.down:
                    self._answer(503, {"message": "Service unavailable"})
                    return
                user = fake.sessions.get(self._cookie())
                if user is None:
                    self._answer(401, {"message": "Unauthorized"})
                elif self.path == "/api/user":
                    self._answer(200, user)
                elif self.path == "/api/user/orgs":
                    self._answer(200, fake.orgs[user["login"]])
                else:
                    self._answer(404, {"message": "Not found"})

            def _cookie(self) -> str:
                for part in (self.headers.get("Cookie") or "").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == fake.cookie_name:
                        return value
                return ""

            def _answer(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def sign_in(
        self, cookie: str, login: str, *, name: str = "", admin: bool = False, role: str = "Viewer"
    ) -> None:
        """Make ``cookie`` a valid session of ``login`` with ``role`` in organisation 1."""
        user_id = 100 + len(self.sessions)
        self.sessions[cookie] = {
            "id": user_id, "email": f"{login}@example.com", "name": name or login,
            "login": login, "theme": "dark", "orgId": 1, "isGrafanaAdmin": admin,
            "isDisabled": False, "isExternal": False, "updatedAt": "2026-11-30T10:00:00Z",
            "createdAt": "2025-01-01T10:00:00Z", "avatarUrl": "/avatar/0",
        }  # fmt: skip
        self.orgs[login] = [
            {"orgId": 1, "name": "Main Org.", "role": role},
            {"orgId": 2, "name": "Other", "role": "Admin"},
        ]

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
