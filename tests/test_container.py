"""The Dockerfile's steps, run in a fresh environment: the file cannot rot unseen.

No image builder can run here (Docker's client is on this machine but no daemon, and the
base image would come from a registry this machine does not reach; podman and buildah need the
same). So this test reads the Dockerfile and does what it says, outside a container: the build
stage's ``COPY`` into a scratch source directory and its ``RUN`` steps (a venv at the image's
path, moved under a temporary directory; the packages at the versions of constraints.txt);
then the runtime stage's ``ENV`` and ``ENTRYPOINT``, serving with the embedded defaults, and
its ``HEALTHCHECK`` command against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_panel_receiver.version import __version__
from tests.support.procs import free_port, running

REPO = Path(__file__).resolve().parents[1]
VENV = "/opt/otel-panel-receiver"


def stages() -> list[list[tuple[str, str]]]:
    """Return the Dockerfile's stages, each a list of (instruction, argument)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    out: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        op, arg = line.split(None, 1)
        if op.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append((op.upper(), arg.strip()))
    return out


@pytest.mark.slow
def test_the_dockerfiles_steps_install_a_receiver_that_serves_and_passes_its_healthcheck(
    tmp_path: Path,
) -> None:
    build, runtime = stages()
    root = tmp_path / "root"
    workdir = root / "src"
    workdir.mkdir(parents=True)
    env = {**os.environ}
    for op, arg in build:
        if op == "WORKDIR":
            assert arg == "/src"
        elif op == "ENV":
            env |= dict(pair.split("=", 1) for pair in arg.split())
        elif op == "COPY":
            *sources, target = arg.split()
            for source in sources:
                path = REPO / source
                dest = workdir / target / path.name if target.endswith("/") else workdir / target
                if path.is_dir():
                    shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, dest)
        elif op == "RUN":
            command = arg.replace(VENV, f"{root}{VENV}")
            command = re.sub(r"^python ", f"{sys.executable} ", command)
            env.pop("PIP_NO_CACHE_DIR", None)  # the image keeps no cache; a test run may
            done = subprocess.run(command, shell=True, cwd=workdir, env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            assert done.returncode == 0, f"RUN {arg}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    image_env = {**os.environ}
    entrypoint: list[str] = []
    health: list[str] = []
    for op, arg in runtime:
        if op == "ENV":
            pairs = dict(pair.split("=", 1) for pair in arg.split())
            image_env |= {k: v.replace(VENV, f"{root}{VENV}").replace("$PATH", os.environ["PATH"])
                          for k, v in pairs.items()}  # fmt: skip
        elif op == "ENTRYPOINT":
            entrypoint = json.loads(arg)  # the exec form: a JSON array
        elif op == "HEALTHCHECK":
            health = json.loads(arg.split("CMD", 1)[1].strip())
    assert entrypoint == ["otel-panel-receiver"] and health
    binary = shutil.which(entrypoint[0], path=image_env["PATH"])
    assert binary is not None and binary.startswith(str(root))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             env=image_env, check=True)  # fmt: skip
    assert version.stdout.strip().endswith(__version__)
    port = free_port()
    image_env |= {"HTTP_ADDRESS": f"127.0.0.1:{port}", "DATA_DIR": str(tmp_path / "data")}
    healthcheck = [shutil.which(health[0], path=image_env["PATH"]) or health[0], *health[1:]]
    healthcheck = [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in healthcheck]
    with running([binary], ready_url=f"http://127.0.0.1:{port}/healthz", env=image_env,
                 log=tmp_path / "receiver.log"):  # fmt: skip
        checked = subprocess.run(healthcheck, env=image_env, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
