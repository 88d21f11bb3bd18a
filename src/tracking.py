"""MLflow plumbing: which store, one run per job, metrics buffered into log_batch calls.

A `log_metric` call per batch costs ~8 ms on SQLite, longer than the batch itself,
so metrics wait in a buffer and go out in chunks of at most 1000.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from src.config import PROJECT_ROOT
from src.errors import StoreError

SQLITE_PREFIX = "sqlite:///"
SOURCE_ONLY = "data."  # params that say where the data came from, not what was trained


def tracking_uri(configured: str | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"{SQLITE_PREFIX}{PROJECT_ROOT / 'mlflow.db'}"


def experiment_name(configured: str) -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or configured


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail in a second, not after two epochs: the server answers, or the SQLite file can be written."""
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder {db.parent} for {uri}: {exc.strerror}; "
                "point MLFLOW_TRACKING_URI at a writable path"
            ) from None
        target = db if db.exists() else db.parent
        if not os.access(target, os.W_OK):
            raise StoreError(f"{target} is not writable; point MLFLOW_TRACKING_URI at a writable path")
    elif uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as exc:
            raise StoreError(
                f"tracking server {uri} does not answer ({type(exc).__name__}): start it or fix MLFLOW_TRACKING_URI"
            ) from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise store creation: processes opening a new SQLite store at once race on its migration."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """Client and experiment id, creating both store and experiment if needed.

    On SQLite the artifacts go next to the database, so `mlflow ui` run from any folder
    finds them (MLflow's default is ./mlruns relative to wherever the job started).
    """
    with store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            db = sqlite_path(uri)
            location = None
            if db is not None:
                location = (db.parent / "mlartifacts" / re.sub(r"[^\w.-]+", "_", name)).as_uri()
            return client, client.create_experiment(name, artifact_location=location)
        if experiment.lifecycle_stage != "active":
            raise StoreError(
                f"experiment {name!r} is deleted in {uri}: restore it in the MLflow UI or set MLFLOW_EXPERIMENT_NAME"
            )
        return client, experiment.experiment_id


def open_store(tracking: Any) -> tuple[MlflowClient, str]:
    """The configured store (environment first), checked, with its experiment created if needed."""
    uri = tracking_uri(tracking.uri)
    check_store(uri)
    return open_experiment(uri, experiment_name(tracking.experiment))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def config_hash(params: Mapping[str, str]) -> str:
    """Identity of a run's config, seed included: equal hashes mean the same numbers."""
    return hashlib.sha256(json.dumps(sorted(params.items())).encode()).hexdigest()[:16]


def find_finished(client: MlflowClient, experiment_id: str, digest: str) -> str | None:
    """The id of a FINISHED run with this config hash, if there is one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.config_hash = '{digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Run:
    """One MLflow run whose writes go out on a background thread, in order, so training never waits on the store.

    Metrics are buffered; `flush` hands them to the writer in log_batch chunks. `end` waits for every write:
    the run is FINISHED only once all of it is stored.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self.pending: list[Metric] = []
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self.writes: list[Future] = []

    def write(self, fn: Callable[[], Any]) -> None:
        self.writes.append(self.writer.submit(fn))

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(key, value) for key, value in params.items()]
        for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.write(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.write(lambda chunk=chunk: self.client.log_batch(self.run_id, tags=chunk))

    def log_metric(self, key: str, value: float, step: int) -> None:
        self.pending.append(Metric(key, float(value), int(time.time() * 1000), step))

    def log_metrics(self, key: str, values, first_step: int) -> None:
        """Consecutive steps first_step, first_step + 1, ... of one metric."""
        now = int(time.time() * 1000)
        self.pending.extend(Metric(key, float(v), now, first_step + i) for i, v in enumerate(values))

    def flush(self) -> None:
        for chunk in chunks(self.pending, MAX_METRICS_PER_BATCH):
            self.write(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk))
        self.pending = []

    def log_figure(self, make_figure: Callable[[], Any], artifact_file: str) -> None:
        """make_figure runs on the writer thread: it must only read data it owns (not live model weights)."""
        self.write(lambda: self.client.log_figure(self.run_id, make_figure(), artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.write(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def end(self, status: str, error: str | None = None) -> None:
        """Wait for every write; a write that failed turns FINISHED into FAILED, with its error.

        The status is set even if the wait is cut short (a second Ctrl-C): no run stays RUNNING.
        """
        failed = None
        try:
            self.flush()
            self.writer.shutdown(wait=True)
            failed = next((w.exception() for w in self.writes if w.exception() is not None), None)
            if failed is not None and status == RunStatus.to_string(RunStatus.FINISHED):
                status, error = RunStatus.to_string(RunStatus.FAILED), f"{type(failed).__name__}: {failed}"
            else:
                failed = None  # the run already ends with its own error
            if error is not None:
                self.client.set_tag(self.run_id, "error", error[:5000])
        finally:
            self.client.set_terminated(self.run_id, status)
        if failed is not None:
            raise failed


class UntrackedRun:
    """Takes the calls a Run takes and stores nothing: tracking.enabled=false."""

    run_id = None

    def log_params(self, params: Mapping[str, str]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metric(self, key: str, value: float, step: int) -> None: ...
    def log_metrics(self, key: str, values, first_step: int) -> None: ...
    def flush(self) -> None: ...
    def log_figure(self, make_figure: Callable[[], Any], artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...


@contextlib.contextmanager
def start_run(
    client: MlflowClient, experiment_id: str, run_name: str, tags: Mapping[str, str]
) -> Iterator[Run]:
    """FINISHED on success, KILLED on Ctrl-C, FAILED with the error on the run otherwise."""
    run = Run(client, client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id)
    try:
        yield run
    except KeyboardInterrupt:
        run.end(RunStatus.to_string(RunStatus.KILLED), error="interrupted")
        raise
    except BaseException as exc:
        run.end(RunStatus.to_string(RunStatus.FAILED), error=f"{type(exc).__name__}: {exc}")
        raise
    run.end(RunStatus.to_string(RunStatus.FINISHED))
