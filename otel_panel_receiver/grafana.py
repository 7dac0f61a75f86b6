"""Ask Grafana who a browser's session belongs to: ``GET /api/user`` and ``/api/user/orgs``.

Used by ``--auth grafana``. The cookie goes to Grafana as the browser sent it, and nowhere
else. Grafana's answer gives the viewer's login, name, id, e-mail, server-admin flag and, from
the orgs list, the role in the current organisation; a payload's own ``user`` fields are then
ignored, so a viewer cannot pose as someone else. A Grafana that cannot be reached, is slow or
answers 5xx raises :class:`~otel_panel_receiver.access.GrafanaUnavailable`: the check fails
closed.
"""

from __future__ import annotations

from typing import Any, Final

import requests

from otel_panel_receiver.access import GrafanaUnavailable
from otel_panel_receiver.model import Viewer

__all__ = ["GrafanaUsers"]

_EDIT_ROLES: Final = frozenset({"Admin", "Editor"})


class GrafanaUsers:
    """Look up session cookies with the Grafana at ``url`` (its root, with any sub-path)."""

    def __init__(
        self, url: str, *, cookie_name: str = "grafana_session", timeout: float = 2.0
    ) -> None:
        self.url = url.rstrip("/")
        self.cookie_name = cookie_name
        self._timeout = timeout
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy settings from the environment for this call

    def viewer(self, cookie: str) -> Viewer | None:
        """Return the session's viewer, ``None`` when Grafana says the session is not valid."""
        user = self._get("/api/user", cookie)
        if user is None:
            return None
        orgs = self._get("/api/user/orgs", cookie) or []
        org_id = int(user.get("orgId") or 0)
        role = next(
            (str(o.get("role", "")) for o in orgs if int(o.get("orgId") or 0) == org_id), ""
        )
        org = next((str(o.get("name", "")) for o in orgs if int(o.get("orgId") or 0) == org_id), "")
        return Viewer(
            is_signed_in=True,
            id=int(user.get("id") or 0),
            login=str(user.get("login") or ""),
            email=str(user.get("email") or ""),
            name=str(user.get("name") or ""),
            org_count=len(orgs),
            org_id=org_id,
            org_name=org,
            org_role=role,
            is_grafana_admin=bool(user.get("isGrafanaAdmin")),
            has_edit_permission_in_folders=role in _EDIT_ROLES,
        )

    def _get(self, path: str, cookie: str) -> Any:
        try:
            resp = self._http.get(
                self.url + path,
                cookies={self.cookie_name: cookie},
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise GrafanaUnavailable(f"{type(exc).__name__} from {self.url}") from None
        if resp.status_code in (401, 403):
            return None
        if resp.status_code != 200:
            raise GrafanaUnavailable(f"{self.url}{path} answered {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise GrafanaUnavailable(f"{self.url}{path} did not answer JSON") from None

    def close(self) -> None:
        """Close the connections to Grafana."""
        self._http.close()
