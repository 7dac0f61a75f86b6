"""The HTTP API as ``docs/openapi.yaml`` describes it, attacked by schemathesis.

Schemathesis generates requests from the description (valid and invalid ones) and checks every
answer: never a 5xx, a status the description lists, the content type and shape it declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from otel_panel_receiver import Settings, create_app

REPO = Path(__file__).resolve().parent.parent

EXAMPLE_SCHEMA = REPO / "examples" / "browser-metrics" / "schema.json"
APP = create_app(
    Settings(disable_session_log=True, browser_metrics_schema=str(EXAMPLE_SCHEMA)), environ={}
)
schema = schemathesis.openapi.from_path(REPO / "docs" / "openapi.yaml")
schema.app = APP


@schema.parametrize()
def test_every_answer_conforms_to_the_openapi_description(case: Case[Any]) -> None:
    if case.path in ("/v1/events", "/v1/metrics"):
        # Their items are checked one by one (an invalid one is left out, the rest recorded),
        # so the description leaves them open, and a batch of invalid items only is a 400;
        # which metric points fit is the deployment's schema file, which it cannot list.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
        return
    case.call_and_validate()


def teardown_module() -> None:
    """Close the app the whole module used."""
    APP.close()
