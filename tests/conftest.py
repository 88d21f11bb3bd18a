"""Shared fixtures: Hydra composition, the real MNIST split and a throwaway SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.config import PROJECT_ROOT

CONF_DIR = str(PROJECT_ROOT / "conf")
INIT_OPTIONS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "init").glob("*.yaml"))


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_module(module: str, *args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT, timeout: float = 600):
    """`python -m <module> ...` in a real subprocess, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mnist():
    from src.data import lesson_split, load_mnist

    return lesson_split(load_mnist(compose_config().data.cache_dir))


@pytest.fixture
def store_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite store; MLFLOW_* cleared so that the test decides where runs go."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
