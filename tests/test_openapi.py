"""The HTTP API as ``docs/openapi.yaml`` describes it, attacked by schemathesis.

Schemathesis generates requests from the description (valid and invalid ones) and checks every
answer: never a 5xx, a status the description lists, the content type and shape it declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.generation.case import Case

from otel_panel_receiver import Settings, create_app

REPO = Path(__file__).resolve().parent.parent

APP = create_app(Settings(disable_session_log=True), environ={})
schema = schemathesis.openapi.from_path(REPO / "docs" / "openapi.yaml")
schema.app = APP


@schema.parametrize()
def test_every_answer_conforms_to_the_openapi_description(case: Case[Any]) -> None:
    case.call_and_validate()


def teardown_module() -> None:
    """Close the app the whole module used."""
    APP.close()
