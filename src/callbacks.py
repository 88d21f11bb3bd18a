"""Hydra callbacks around the training jobs: for jobs in other processes (joblib, submitit)
the store is checked and created once before any starts, and a sweep ends by naming every
job that failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config import validate
from src.errors import UserError

FAILED_MARKER = "FAILED"  # written into a failed job's output folder by src.train


def runs_jobs_here(launcher: DictConfig) -> bool:
    """Hydra's basic launcher runs the jobs one after another in this process."""
    return launcher.get("_target_", "").endswith(".BasicLauncher")


def prepare_store(config: DictConfig) -> None:
    """Check the store and create it with its experiment, once: parallel jobs then only read it.

    Jobs run here open it themselves through the tracking helper, sequentially, so this
    process does not import MLflow while it could be importing TensorFlow.
    """
    if config.tracking.enabled and not runs_jobs_here(config.hydra.launcher):
        from src.tracker import experiment_name, tracking_uri
        from src.tracking import open_store

        open_store(tracking_uri(config.tracking.uri), experiment_name(config.tracking.experiment))


class TrackingCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(OmegaConf.masked_copy(config, [key for key in config if key != "hydra"]))
            prepare_store(config)
        except UserError as exc:
            sys.exit(exc.report())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            prepare_store(config)
        except UserError as exc:
            sys.exit(exc.report())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # job folders are numbered: sort 2 before 10
        failed = sorted(
            Path(config.hydra.sweep.dir).glob(f"*/{FAILED_MARKER}"), key=lambda p: (len(p.parent.name), p.parent.name)
        )
        if not failed:
            return
        lines = []
        for marker in failed:
            job_overrides = marker.parent / ".hydra" / "overrides.yaml"
            overrides = " ".join(OmegaConf.load(job_overrides)) if job_overrides.exists() else "?"
            lines.append(f"  #{marker.parent.name} ({overrides}): {marker.read_text().strip()}")
        sys.exit(f"{len(failed)} job(s) of the sweep failed:\n" + "\n".join(lines))
