"""A newcomer's first hour: a plain install (no extras) runs every documented command, and
the original README's `TestClient(app)` usage works without the ASGI lifespan."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.fixtures.databases import fresh_postgres
from tests.fixtures.servers import REPO, free_port, plain, running

ORIGINAL_POSTS = [
    {"variant_id": "control", "successes": 120},
    {"variant_id": "variant1", "successes": 150},
]
DOCUMENTED = {"control": 2.5, "variant1": 97.5}

# What a user of the original service wrote: no `with` block, so no lifespan.
TESTCLIENT_USER = """
import json
from fastapi.testclient import TestClient
from main import app

client = TestClient(app)
codes = []
for variant, successes in (("control", 120), ("variant1", 150)):
    response = client.post("/metrics/", json={
        "experiment_id": "homepage_test", "variant_id": variant, "date": "2023-07-15",
        "impressions": 1000, "successes": successes})
    codes.append(response.status_code)
answer = client.get("/allocations/homepage_test?for_date=2023-07-16")
assigned = client.post("/experiments/homepage_test/assign", json={"unit_id": "u1"})
again = client.post("/experiments/homepage_test/assign", json={"unit_id": "u1"})
print(json.dumps({"codes": codes, "status": answer.status_code, "body": answer.json(),
                  "assigned": assigned.json(), "again": again.json()}))
"""


def _env(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MABAPI_")}
    env.update({"MABAPI_DATABASE_URL": database, "MABAPI_LOG_LEVEL": "warning"})
    return env


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_testclient_without_lifespan_answers_the_readme_example(
    backend: str, tmp_path: Path
) -> None:
    def run(database: str) -> dict[str, object]:
        env = _env(database)
        init = subprocess.run(
            [sys.executable, "init_db.py"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert init.returncode == 0, init.stderr
        done = subprocess.run(
            [sys.executable, "-c", TESTCLIENT_USER],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    if backend == "sqlite":
        result = run(f"sqlite:///{tmp_path / 'mabapi.db'}")
    else:
        with fresh_postgres("mabapi_first") as url:
            result = run(plain(url))
    assert result["codes"] == [200, 200]
    assert result["status"] == 200
    body = result["body"]
    assert isinstance(body, dict)
    assert body["allocations"] == DOCUMENTED
    assigned, again = result["assigned"], result["again"]
    assert isinstance(assigned, dict)
    assert isinstance(again, dict)
    # Sticky across requests, although each request ran on an event loop of its own.
    assert assigned["variant_id"] == again["variant_id"]


def _readme_client_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python client and command line", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's client example is gone"
    return match.group(1)


def _post_original_example(base: str) -> None:
    for post in ORIGINAL_POSTS:
        response = httpx.post(
            f"{base}/metrics/",
            json={
                "experiment_id": "homepage_test",
                "date": "2023-07-15",
                "impressions": 1000,
                **post,
            },
        )
        assert response.status_code == 200, response.text


# Modules that exist only for an optional extra (and say so when it is missing).
OPTIONAL_MODULES = {"mabapi.openfeature": "openfeature"}


@pytest.mark.slow
def test_plain_install_runs_every_documented_command(tmp_path: Path) -> None:
    """`pip install .` without extras: every module imports, every README command runs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = _env(f"sqlite:///{tmp_path / 'mabapi.db'}")
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    # A dev dependency must not be there to hide a missing runtime one.
    dev_only = subprocess.run(
        [str(python), "-c", "import pytest"], capture_output=True, text=True, env=env
    )
    assert dev_only.returncode != 0

    imports = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib, pkgutil, mabapi\n"
            "names = [m.name for m in pkgutil.walk_packages(mabapi.__path__, 'mabapi.')\n"
            "         if not m.name.endswith('__main__') and m.name not in EXTRAS]\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(len(names))".replace("EXTRAS", repr(OPTIONAL_MODULES)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert imports.returncode == 0, imports.stderr
    assert int(imports.stdout) > 30
    # A module of an optional extra says which extra to install.
    for name, extra in OPTIONAL_MODULES.items():
        optional = subprocess.run(
            [str(python), "-c", f"import {name}"], capture_output=True, text=True, env=env
        )
        assert optional.returncode != 0
        assert f"pip install 'mabapi[{extra}]'" in optional.stderr

    help_text = subprocess.run(
        [str(env_dir / "bin" / "mabapi"), "--help"], capture_output=True, text=True, env=env
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "serve" in help_text.stdout

    init = subprocess.run(
        [str(python), "init_db.py"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert init.returncode == 0, init.stderr

    port = free_port()
    serve = [str(env_dir / "bin" / "mabapi"), "serve", "--port", str(port)]
    with running(serve, env=env, port=port) as base:
        _post_original_example(base)
        snippet = _readme_client_snippet().replace("http://127.0.0.1:8000", base)
        client = subprocess.run(
            [str(python), "-c", snippet], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert client.returncode == 0, client.stderr
        assert "'variant1': 97.5" in client.stdout

    port = free_port()
    uvicorn = [str(python), "-m", "uvicorn", "main:app", "--port", str(port)]
    with running(uvicorn, env=env, port=port) as base:
        answer = httpx.get(f"{base}/allocations/homepage_test?for_date=2023-07-16")
        assert answer.json()["allocations"] == DOCUMENTED

    # The optional `plots` extra is missing: the simulator says which extra to install.
    simulate = subprocess.run(
        [
            str(env_dir / "bin" / "mabapi"),
            "simulate",
            "--days",
            "2",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert simulate.returncode == 0, simulate.stderr
    assert "pip install 'mabapi[plots]'" in simulate.stdout + simulate.stderr
    assert "Traceback" not in simulate.stdout + simulate.stderr
