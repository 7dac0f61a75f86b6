"""The baseline: a bare Falcon app that only decodes the body with msgspec and answers 201.

Served by the same servers as the receiver, it measures what the server, Falcon and a JSON
decode cost by themselves; the receiver's figure divided by this one is the receiver's share.
"""

from __future__ import annotations

import falcon
import msgspec

__all__ = ["create_app"]


class _Write:
    """``POST /write``: read and decode the body, answer 201 with an empty body."""

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder()

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Decode the body whatever its Content-Type; a bad one is a 400."""
        try:
            self._decoder.decode(req.bounded_stream.read())
        except msgspec.DecodeError as exc:
            raise falcon.HTTPBadRequest(description=str(exc)) from None
        resp.status = falcon.HTTP_201


class _Health:
    """``GET /healthz``: answer ``ok`` (the harness waits for it)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer ``ok``."""
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    """Return the bare app."""
    app = falcon.App()
    app.add_route("/write", _Write())
    app.add_route("/healthz", _Health())
    return app
