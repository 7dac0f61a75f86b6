"""The command's tools for Grafana admins: ``dashboards`` (the usage report) and ``panel``.

``otel-panel-receiver dashboards`` asks a running receiver for its report
(``GET /api/dashboards/usage``) and prints it as a table, CSV or JSON; ``--unused 30d`` lists
the dashboards not opened for 30 days, the never-opened ones first. ``otel-panel-receiver panel
install|remove`` puts the analytics panel on every dashboard of a Grafana, or takes it off
(``panel.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import IO, Any

from otel_panel_receiver.config import PROGRAM, parse_duration
from otel_panel_receiver.panel import PLUGIN_ID, Change, change_dashboards, plugin_installed
from otel_panel_receiver.usage import csv_text

__all__ = ["TOOLS", "run_tool"]

TOOLS = ("dashboards", "panel")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM)
    tools = parser.add_subparsers(dest="tool", required=True)
    report = tools.add_parser("dashboards", help="Print the dashboards' usage.")
    add = report.add_argument
    add(
        "--url",
        default="http://127.0.0.1:8080",
        help="The running receiver, with its --path-prefix (default http://127.0.0.1:8080).",
    )
    add(
        "--token-file",
        default="",
        help="A token of the receiver's --metrics-token-file, when it has one.",
    )
    add(
        "--window",
        type=_duration,
        default=30 * 86_400.0,
        help="Count sessions and viewers over this long (default 30d).",
    )
    add(
        "--unused",
        type=_duration,
        default=None,
        help="Only the dashboards not opened for this long (30d), the never-opened first.",
    )
    add("--format", choices=("table", "csv", "json"), default="table")
    panel = tools.add_parser("panel", help="Put the analytics panel on dashboards, or take it off.")
    add = panel.add_argument
    add("action", choices=("install", "remove"))
    add("--grafana-url", required=True, help="Grafana's URL.")
    add(
        "--grafana-token-file",
        required=True,
        help="A file holding a service-account token that may edit dashboards (Editor).",
    )
    add("--endpoint", default="", help="What the panel posts to, e.g. /usage/write (install).")
    add(
        "--folder",
        action="append",
        default=[],
        help="Only the dashboards of this folder uid (repeatable).",
    )
    add("--dry-run", action="store_true", help="Say what would change, change nothing.")
    return parser  # fmt: skip


def run_tool(argv: Sequence[str], out: IO[str] | None = None) -> int:
    """Run ``dashboards`` or ``panel``; return the exit status."""
    out = out if out is not None else sys.stdout
    args = _parser().parse_args(list(argv))
    from grafana_client.client import GrafanaException

    try:
        if args.tool == "dashboards":
            return _dashboards(args, out)
        return _panel(args, out)
    except (OSError, ValueError) as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
    except GrafanaException as exc:
        print(f"{PROGRAM}: error: cannot reach Grafana: {exc}", file=sys.stderr)
    return 1


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"the token file {path!r} is empty")
    return token


def _dashboards(args: argparse.Namespace, out: IO[str]) -> int:
    query = {"window": f"{args.window:.0f}s"}
    if args.unused is not None:
        query["unused"] = f"{args.unused:.0f}s"
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        raise ValueError(f"--url {args.url!r} is no http or https URL")
    url = f"{args.url.rstrip('/')}/api/dashboards/usage?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    if args.token_file:
        request.add_header("Authorization", f"Bearer {_read_token(args.token_file)}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310  # http(s) only
            report = json.load(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode(errors="replace")
        raise ValueError(f"{url}: HTTP {exc.code}: {text}") from None
    rows: list[dict[str, Any]] = report["dashboards"]
    if args.format == "json":
        json.dump(report, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        out.write(csv_text(rows))
    else:
        inventory = report.get("inventory") or {}
        out.write(_table(rows, inventory=bool(inventory)))
        if inventory and not inventory.get("ok"):
            print(f"note: the dashboard inventory is not current: {inventory.get('error')}",
                  file=sys.stderr)  # fmt: skip
    return 0


def _table(rows: list[dict[str, Any]], *, inventory: bool) -> str:
    """Return the rows as aligned columns; without an inventory, no row is "not in" it."""
    head = ("last view (UTC)", "sessions", "viewers", "dashboard", "folder", "uid", "note")
    lines = [head]
    for row in rows:
        last = row["last_view_iso"] or "never"
        viewers = "" if row["viewers"] is None else str(row["viewers"])
        note = "not in the inventory" if inventory and not row["in_inventory"] else ""
        lines.append((last, str(row["sessions"]), viewers, row["name"], row["folder"],
                      row["uid"], note))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def _panel(args: argparse.Namespace, out: IO[str]) -> int:
    if args.action == "install" and not args.endpoint:
        raise ValueError("panel install needs --endpoint, what the panel posts to (/usage/write)")
    from otel_panel_receiver.grafana_api import grafana_client

    token = _read_token(args.grafana_token_file)
    if not plugin_installed(grafana_client(args.grafana_url, token)):
        print(
            f"{PROGRAM}: the plugin {PLUGIN_ID} is not installed in this Grafana: install it "
            f"(grafana cli plugins install {PLUGIN_ID}, or GF_INSTALL_PLUGINS={PLUGIN_ID}) "
            f"and restart Grafana",
            file=sys.stderr,
        )
        return 1

    def report(i: int, n: int, change: Change) -> None:
        detail = f" ({change.detail})" if change.detail else ""
        out.write(f"[{i}/{n}] {change.outcome}: {change.title} ({change.uid}){detail}\n")
        out.flush()

    changes = change_dashboards(
        args.grafana_url, token, args.action, endpoint=args.endpoint,
        folders=tuple(args.folder), dry_run=args.dry_run, report=report,
    )  # fmt: skip
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.outcome] = counts.get(change.outcome, 0) + 1
    out.write(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + "\n")
    return 1 if counts.get("failed") else 0
