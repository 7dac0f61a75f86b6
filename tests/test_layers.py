"""The import layering is checked by a tool, and the check fails when a layer is crossed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import REPO, VENV_BIN

LINT_IMPORTS = str(VENV_BIN / "lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with the project's contracts on the package copy in ``tree``."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Return a copy of the package and its contracts, which a test may then break."""
    shutil.copytree(REPO / "otel_panel_receiver", tmp_path / "otel_panel_receiver")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def insert_import(module: Path, statement: str) -> None:
    """Add ``statement`` after the module's ``from __future__`` import."""
    text = module.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text
    module.write_text(text.replace(marker, f"{marker}\n{statement}\n", 1))


def test_the_package_keeps_every_contract(tree: Path) -> None:
    done = lint_imports(tree)
    assert done.returncode == 0, done.stdout
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("payload/_decode.py", "import falcon",
         "Decoding, session rules and stores know neither HTTP nor OpenTelemetry"),
        ("sessions.py", "import opentelemetry.trace",
         "Decoding, session rules and stores know neither HTTP nor OpenTelemetry"),
        ("recorder.py", "import opentelemetry.sdk.metrics",
         "The recorder, tracer and receiver use the OpenTelemetry API only, never the SDK"),
        ("web.py", "import prometheus_client",
         "The web layer is HTTP only: no OpenTelemetry, no prometheus_client"),
        ("app.py", "import opentelemetry.sdk.trace",
         "Only the export layer imports the OpenTelemetry SDK and prometheus_client"),
        ("receiver.py", "import otel_panel_receiver.web", "Imports point down the layers"),
    ],
)  # fmt: skip
def test_crossing_a_layer_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    insert_import(tree / "otel_panel_receiver" / module, statement)
    done = lint_imports(tree)
    assert done.returncode != 0
    assert re.search(rf"{re.escape(contract)}\s*BROKEN", done.stdout), done.stdout
