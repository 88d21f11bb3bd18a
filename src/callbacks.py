"""Hydra callbacks around the training jobs: the store is checked and created once before
any job starts, and a sweep ends by naming every job that failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config import validate
from src.errors import UserError

FAILED_MARKER = "FAILED"  # written into a failed job's output folder by src.train


def prepare_store(config: DictConfig) -> None:
    """Check the store and create it with its experiment, once: parallel jobs then only read it."""
    from src.tracking import check_store, experiment_name, open_experiment, tracking_uri

    if not config.tracking.enabled:
        return
    uri = tracking_uri(config.tracking.uri)
    check_store(uri)
    open_experiment(uri, experiment_name(config.tracking.experiment))


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
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED_MARKER}"), key=lambda p: int(p.parent.name))
        if not failed:
            return
        overrides = {}
        for marker in failed:
            job_overrides = marker.parent / ".hydra" / "overrides.yaml"
            overrides[marker] = " ".join(OmegaConf.load(job_overrides)) if job_overrides.exists() else "?"
        lines = [f"  #{m.parent.name} ({overrides[m]}): {m.read_text().strip()}" for m in failed]
        sys.exit(f"{len(failed)} job(s) of the sweep failed:\n" + "\n".join(lines))
