"""A protocol-faithful fake of the Grafana HTTP API endpoints the receiver calls.

Grafana cannot be installed here, so this stands in for it. It answers like Grafana does:

* ``GET /api/user`` with the ``grafana_session`` cookie: 200 and the signed-in user's JSON
  (``id``, ``email``, ``name``, ``login``, ``theme``, ``orgId``, ``isGrafanaAdmin``,
  ``isDisabled``, ``isExternal``, ``updatedAt``, ``createdAt``, ``avatarUrl``), or 401 with
  ``{"message": "Unauthorized"}`` for a missing or unknown session;
* ``GET /api/user/orgs``: 200 and ``[{"orgId", "name", "role"}]``, or 401.

* with a service-account token (``Authorization: Bearer``; an unknown one gets 401 and
  ``{"message": "invalid API key"}``):
  * ``GET /api/search?type=dash-db&limit=L&page=P[&folderUIDs=U]``: the dashboards' hits
    (``id``, ``uid``, ``title``, ``uri``, ``url``, ``slug``, ``type``, ``tags``, ``isStarred``,
    ``folderId``, ``folderUid``, ``folderTitle``, ``folderUrl``; the folder keys are absent for
    the General folder), sorted by title, ``limit`` per page from page 1;
  * ``GET /api/dashboards/uid/<uid>``: ``{"dashboard": ..., "meta": {...}}`` with ``version``,
    ``provisioned``, ``folderUid``, ``folderTitle``, ``url``, ``slug``, ``canSave``; 404
    ``{"message": "Dashboard not found"}``;
  * ``POST /api/dashboards/db`` with ``{"dashboard", "folderUid", "message", "overwrite"}``:
    200 ``{"id", "uid", "url", "status": "success", "version", "slug"}`` and the version
    incremented; 412 ``{"message": "The dashboard has been changed by someone else",
    "status": "version-mismatch"}`` when the version sent is not the stored one (and
    ``overwrite`` is false); 400 ``{"message": "Cannot save provisioned dashboard"}``;
  * ``GET /api/plugins/<id>/settings``: 200 for an installed plugin, else 404
    ``{"message": "Plugin not found, no installed plugin with that id"}``.

A test registers sessions with :meth:`FakeGrafana.sign_in`, tokens in :attr:`tokens`,
dashboards with :meth:`add_dashboard`; it can make Grafana fail (:attr:`FakeGrafana.down`: 503
on every call), make a save race a concurrent edit (:attr:`edit_before_save`), and read how
many calls it got and every save (:attr:`saves`).
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
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
        self.tokens: set[str] = set()
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "meta"}
        self.plugins: set[str] = set()
        self.saves: list[dict[str, Any]] = []
        #: uids whose next save finds that someone else saved a new version meanwhile
        self.edit_before_save: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the http.server naming
                self._handle("GET")

            def do_POST(self) -> None:  # the http.server naming
                self._handle("POST")

            def _handle(self, method: str) -> None:
                fake.calls += 1
                if fake.down:
                    self._answer(503, {"message": "Service unavailable"})
                elif self.headers.get("Authorization"):
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                    self._answer(*fake.api(method, self.path, self.headers, body))
                else:
                    self._answer(*fake.user_api(self.path, self._cookie()))

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

    def user_api(self, path: str, cookie: str) -> tuple[int, Any]:
        """Answer one call made with a browser's session cookie."""
        user = self.sessions.get(cookie)
        if user is None:
            return 401, {"message": "Unauthorized"}
        if path == "/api/user":
            return 200, user
        if path == "/api/user/orgs":
            return 200, self.orgs[user["login"]]
        return 404, {"message": "Not found"}

    def api(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """Answer one call of the token-authenticated API: its status and JSON document."""
        token = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if token not in self.tokens:
            return 401, {"message": "invalid API key"}
        url = urllib.parse.urlsplit(path)
        with self.lock:
            if method == "GET" and url.path == "/api/search":
                return 200, self._search(urllib.parse.parse_qs(url.query))
            if method == "GET" and url.path.startswith("/api/dashboards/uid/"):
                found = self.dashboards.get(url.path.rsplit("/", 1)[1])
                if found is None:
                    return 404, {"message": "Dashboard not found"}
                return 200, copy.deepcopy(found)
            if method == "POST" and url.path == "/api/dashboards/db":
                return self._save(json.loads(body))
            if method == "GET" and url.path.startswith("/api/plugins/"):
                plugin = url.path.split("/")[3]
                if plugin in self.plugins:
                    return 200, {"id": plugin, "enabled": True}
                return 404, {"message": "Plugin not found, no installed plugin with that id"}
        return 404, {"message": "Not found"}

    def add_dashboard(
        self,
        uid: str,
        title: str,
        *,
        folder: tuple[str, str] | None = None,
        panels: list[dict[str, Any]] | None = None,
        provisioned: bool = False,
    ) -> None:
        """Add a dashboard at version 1; ``folder`` is ``(uid, title)``, None for General."""
        slug = title.lower().replace(" ", "-")
        folder_uid, folder_title = folder or ("", "General")
        self.dashboards[uid] = {
            "dashboard": {
                "id": len(self.dashboards) + 1, "uid": uid, "title": title, "version": 1,
                "schemaVersion": 39, "panels": panels or [
                    {"id": 1, "type": "timeseries", "title": "Requests",
                     "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}},
                ],
            },
            "meta": {
                "type": "db", "canSave": True, "slug": slug, "url": f"/d/{uid}/{slug}",
                "version": 1, "provisioned": provisioned, "provisionedExternalId": "",
                "folderId": 0 if folder is None else 10 + len(self.dashboards),
                "folderUid": folder_uid, "folderTitle": folder_title,
                "folderUrl": "" if folder is None else f"/dashboards/f/{folder_uid}/",
            },
        }  # fmt: skip

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        if query.get("type", ["dash-db"])[0] != "dash-db":
            return []
        limit = int(query.get("limit", ["1000"])[0])
        page = int(query.get("page", ["1"])[0])
        folders = set(query.get("folderUIDs", [])) or None
        hits = []
        for uid, found in sorted(
            self.dashboards.items(), key=lambda kv: kv[1]["dashboard"]["title"]
        ):
            meta = found["meta"]
            if folders is not None and meta["folderUid"] not in folders:
                continue
            hit: dict[str, Any] = {
                "id": found["dashboard"]["id"], "uid": uid,
                "title": found["dashboard"]["title"], "uri": f"db/{meta['slug']}",
                "url": meta["url"], "slug": "", "type": "dash-db", "tags": [],
                "isStarred": False, "sortMeta": 0,
            }  # fmt: skip
            if meta["folderUid"]:
                hit |= {key: meta[key] for key in ("folderId", "folderUid", "folderTitle",
                                                   "folderUrl")}  # fmt: skip
            hits.append(hit)
        return hits[(page - 1) * limit : page * limit]

    def _save(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        dashboard = body["dashboard"]
        stored = self.dashboards.get(dashboard["uid"])
        if stored is None:
            return 404, {"message": "Dashboard not found"}
        if stored["meta"]["provisioned"]:
            return 400, {"message": "Cannot save provisioned dashboard"}
        if dashboard["uid"] in self.edit_before_save:  # someone saves first
            self.edit_before_save.discard(dashboard["uid"])
            stored["dashboard"]["version"] += 1
            stored["meta"]["version"] += 1
        stale = dashboard.get("version") != stored["dashboard"]["version"]
        if stale and not body.get("overwrite"):
            return 412, {"message": "The dashboard has been changed by someone else",
                         "status": "version-mismatch"}  # fmt: skip
        version = stored["dashboard"]["version"] + 1
        stored["dashboard"] = {**copy.deepcopy(dashboard), "version": version}
        stored["meta"]["version"] = version
        self.saves.append(copy.deepcopy(body))
        meta = stored["meta"]
        return 200, {"id": dashboard.get("id"), "uid": dashboard["uid"], "url": meta["url"],
                     "status": "success", "version": version, "slug": meta["slug"]}  # fmt: skip

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
