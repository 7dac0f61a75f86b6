"""Grafana's HTTP API for the inventory and the panel tool, through grafana-client.

grafana-client is imported when first used: a receiver without ``--grafana-url`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["grafana_client", "list_dashboards"]

_PAGE: Final = 5000  # Grafana's search answers at most 5,000 hits per page
_MAX_DASHBOARDS: Final = 100_000


def grafana_client(url: str, token: str, timeout: float = 10.0) -> Any:
    """Return a grafana-client API object for ``url`` with a service-account ``token``."""
    from grafana_client.api import GrafanaApi

    return GrafanaApi.from_url(url, credential=token, timeout=timeout)


def list_dashboards(api: Any, folders: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Return the search hits of every dashboard (in ``folders`` when given), page by page."""
    hits: list[dict[str, Any]] = []
    page = 1
    while True:
        batch = api.search.search_dashboards(
            type_="dash-db", limit=_PAGE, page=page, folder_uids=list(folders) or None
        )
        hits += batch
        if len(batch) < _PAGE or len(hits) >= _MAX_DASHBOARDS:
            return hits
        page += 1
