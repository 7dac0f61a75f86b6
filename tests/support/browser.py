"""Headless Chromium for the end-to-end tests: pages served from their own origin, and a run."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class Serving:
    """A small HTTP server on a free loopback port, in a thread of its own."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def origin(self) -> str:
        """Return the server's origin (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def serve(handler: type[BaseHTTPRequestHandler]) -> Serving:
    """Serve ``handler`` until :func:`shut`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Serving(server, thread)


def shut(serving: Serving) -> None:
    """Stop a server of :func:`serve`."""
    serving.server.shutdown()
    serving.server.server_close()
    serving.thread.join(5)


def run_chromium(chromium: str, profile: Path, url: str) -> str:
    """Load ``url`` in headless Chromium; return the DOM once the page's fetches settled."""
    argv = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode()


def serve_page(page: bytes) -> Serving:
    """Serve ``page`` (HTML) at ``/`` from an origin of its own."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server naming
            if self.path != "/":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return serve(Page)
