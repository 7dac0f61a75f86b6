"""Put the analytics panel on every dashboard of a Grafana, or take it off again.

``otel-panel-receiver panel install`` adds one hidden analytics panel (1 unit high, full width,
transparent, no title, no details shown; Post Start, Heartbeat and End on) at the bottom of each
dashboard that has no analytics panel yet; ``panel remove`` takes off the panels it added (they
carry its mark in their description), and leaves any other analytics panel alone. Both go
through Grafana's HTTP API with a service-account token (grafana-client), save each dashboard
with the version they read, so that a concurrent edit is never overwritten (Grafana answers 412,
the dashboard is read again and the change made again, at most three times), and with a commit
message. Both can be run again: a dashboard already in the wanted state is left untouched.
Provisioned dashboards (read-only in Grafana) are reported, not changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from otel_panel_receiver.grafana_api import grafana_client, list_dashboards

__all__ = [
    "MARK",
    "PLUGIN_ID",
    "Change",
    "analytics_panel",
    "change_dashboards",
    "plugin_installed",
]

PLUGIN_ID: Final = "macropower-analytics-panel"
#: What marks a panel this tool added (in its description).
MARK: Final = "Usage analytics, added by otel-panel-receiver panel install."
_TRIES: Final = 3

Action = Literal["install", "remove"]


@dataclass(frozen=True, slots=True)
class Change:
    """What became of one dashboard."""

    uid: str
    title: str
    outcome: Literal["added", "removed", "unchanged", "provisioned", "failed", "would add",
                     "would remove"]  # fmt: skip
    detail: str = ""


def analytics_panel(endpoint: str, y: int, panel_id: int) -> dict[str, Any]:
    """Return the hidden analytics panel posting to ``endpoint``, at row ``y``."""
    return {
        "id": panel_id,
        "type": PLUGIN_ID,
        "title": "",
        "description": MARK,
        "transparent": True,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "options": {
            "analyticsOptions": {
                "server": endpoint,
                "dashboard": "$__dashboard",
                "showDetails": False,
                "postStart": True,
                "postHeartbeat": True,
                "postEnd": True,
                "heartbeatInterval": 60,
                "heartbeatAlways": False,
                "flatten": False,
            }
        },
    }


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, the ones inside collapsed rows included."""
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def _changed(dashboard: dict[str, Any], action: Action, endpoint: str) -> dict[str, Any] | None:
    """Return the dashboard with the change made, or None when none is needed."""
    new = copy.deepcopy(dashboard)
    if action == "install":
        if any(p.get("type") == PLUGIN_ID for p in _panels(new)):
            return None
        panels = new.setdefault("panels", [])
        bottom = max((p.get("gridPos", {}).get("y", 0) + p.get("gridPos", {}).get("h", 0)
                      for p in panels), default=0)  # fmt: skip
        next_id = max((int(p.get("id") or 0) for p in _panels(new)), default=0) + 1
        panels.append(analytics_panel(endpoint, bottom, next_id))
        return new
    if not any(_ours(p) for p in _panels(new)):
        return None
    new["panels"] = [p for p in new.get("panels") or [] if not _ours(p)]
    for row in new["panels"]:
        if row.get("panels"):
            row["panels"] = [p for p in row["panels"] if not _ours(p)]
    return new


def _ours(panel: dict[str, Any]) -> bool:
    return panel.get("type") == PLUGIN_ID and panel.get("description") == MARK


def plugin_installed(api: Any) -> bool:
    """Return whether the analytics panel plugin is installed in Grafana."""
    from grafana_client.client import GrafanaClientError

    try:
        api.client.GET(f"/plugins/{PLUGIN_ID}/settings")
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def change_dashboards(
    url: str,
    token: str,
    action: Action,
    *,
    endpoint: str = "",
    folders: tuple[str, ...] = (),
    dry_run: bool = False,
    report: Callable[[int, int, Change], None] = lambda i, n, c: None,
) -> list[Change]:
    """Install or remove the panel on every dashboard (of ``folders``); report each one."""
    api = grafana_client(url, token)
    hits = list_dashboards(api, folders)
    changes = []
    for i, hit in enumerate(hits, 1):
        change = _change_one(
            api, str(hit["uid"]), str(hit.get("title", "")), action,
            endpoint=endpoint, dry_run=dry_run,
        )  # fmt: skip
        changes.append(change)
        report(i, len(hits), change)
    return changes


def _change_one(
    api: Any, uid: str, title: str, action: Action, *, endpoint: str, dry_run: bool
) -> Change:
    from grafana_client.client import GrafanaClientError, GrafanaException

    done: Literal["added", "removed"] = "added" if action == "install" else "removed"
    for attempt in range(1, _TRIES + 1):
        try:
            found = api.dashboard.get_dashboard(uid)
            dashboard, meta = found["dashboard"], found.get("meta", {})
            new = _changed(dashboard, action, endpoint)
            if new is None:
                return Change(uid, title, "unchanged")
            if meta.get("provisioned"):
                return Change(uid, title, "provisioned",
                              "read-only in Grafana: change its provisioning file")  # fmt: skip
            if dry_run:
                return Change(uid, title, "would add" if action == "install" else "would remove")
            api.dashboard.update_dashboard({
                "dashboard": new,
                "folderUid": meta.get("folderUid", ""),
                "message": f"otel-panel-receiver panel {action}",
                "overwrite": False,
            })  # fmt: skip
            return Change(uid, title, done)
        except GrafanaClientError as exc:
            if exc.status_code == 412 and attempt < _TRIES:
                continue  # changed by someone else meanwhile: read it again
            return Change(uid, title, "failed", f"HTTP {exc.status_code}: {exc.message}")
        except GrafanaException as exc:
            return Change(uid, title, "failed", str(exc))
    return Change(uid, title, "failed", "changed by someone else at every try")
