"""A 2-job sweep against a real `mlflow server` over HTTP, checked through its REST API.

Backend stores: SQLite in a temp dir, and PostgreSQL where one is available
(`TEST_POSTGRES_URI`, an admin URI; .ci/run starts one, so CI always runs that variant).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import run_module

pytestmark = pytest.mark.e2e

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path):
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def sweep_and_check(url: str, tmp_path: Path) -> None:
    done = run_module(
        "src.train", "-m", "init=zeros,trunc_normal", f"hydra.sweep.dir={tmp_path}/sweep",
        env={"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "shared"},
    )
    assert done.returncode == 0, done.stderr[-3000:]

    api = f"{url}/api/2.0/mlflow"
    experiment = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "shared"}, timeout=30).json()
    runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment["experiment"]["experiment_id"]]},
                         timeout=30).json()["runs"]
    assert len(runs) == 2 and {r["info"]["status"] for r in runs} == {"FINISHED"}
    for run in runs:
        history = requests.get(f"{api}/metrics/get-history", timeout=30,
                               params={"run_id": run["info"]["run_id"], "metric_key": "batch_loss", "max_results": 5000}).json()
        assert sorted(m["step"] for m in history["metrics"]) == list(range(1, 859))
        files = requests.get(f"{api}/artifacts/list", timeout=30,
                             params={"run_id": run["info"]["run_id"], "path": "histograms"}).json()["files"]
        assert {f["path"] for f in files} == {"histograms/initial_weights.png", "histograms/final_weights.png"}


def test_sweep_against_a_server_with_sqlite_backend(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log") as url:
        sweep_and_check(url, tmp_path)


@pytest.fixture
def postgres_database():
    admin = os.environ.get("TEST_POSTGRES_URI")
    if not admin:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide a PostgreSQL server: .ci/run starts one and sets TEST_POSTGRES_URI")
        pytest.skip("no PostgreSQL server: set TEST_POSTGRES_URI=postgresql://user:pass@127.0.0.1:5432/postgres")
    import psycopg2

    name = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    connection.cursor().execute(f"CREATE DATABASE {name}")
    try:
        # SQLAlchemy's default PostgreSQL driver is psycopg 3; the pinned one is psycopg2
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1) + f"/{name}"
    finally:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


def test_sweep_against_a_server_with_postgresql_backend(tmp_path, postgres_database):
    with mlflow_server(postgres_database, tmp_path / "artifacts", tmp_path / "server.log") as url:
        sweep_and_check(url, tmp_path)
