"""The training process's side of tracking: MLflow runs in a helper process, not here.

The helper (`python -m src.tracking`, started by the first run of a process and shared by
the runs after it) imports MLflow and our figures, opens the store and does every write.
So the training process imports neither: the helper's ~2.5 s of imports overlap
TensorFlow's, and its SQLite writes and weight figures run under its own interpreter
lock at low priority, on the CPU time that training leaves idle, instead of pausing
training. Calls go out in order from a sender thread; only `open`, `find_finished` and
the end of a run wait for the helper's answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

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


class Helper:
    """The helper process and the pipes to it: requests on its stdin, answers on a pipe of their own
    (its stdout and stderr stay the terminal's, for MLflow's own messages)."""

    def __init__(self) -> None:
        answers, helper_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "src.tracking", str(helper_end)],
            stdin=subprocess.PIPE, cwd=PROJECT_ROOT, pass_fds=(helper_end,),
        )
        os.close(helper_end)
        self.answers = os.fdopen(answers, "rb")
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.ids = itertools.count(1)
        threading.Thread(target=self.send_all, name="tracker-sender", daemon=True).start()

    def send_all(self) -> None:
        """Pickling and pipe writes happen here, so a call never blocks training, even with a full pipe."""
        while True:
            message = self.outbox.get()
            try:
                pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.process.stdin.flush()
            except OSError:  # the helper is gone: the next `ask` says so
                return

    def send(self, method: str, *args: Any) -> None:
        self.outbox.put((0, method, args))

    def ask(self, method: str, *args: Any) -> Any:
        """Send and wait for the answer; the helper's error comes back as StoreError or RuntimeError."""
        request = next(self.ids)
        self.outbox.put((request, method, args))
        while True:
            try:
                answered, ok, value = pickle.load(self.answers)
            except EOFError:
                raise RuntimeError(f"the tracking helper process ended (exit code {self.process.wait()})") from None
            if answered == request:  # older answers belong to a wait that Ctrl-C cut short
                break
        if ok:
            return value
        is_store_error, message = value
        raise StoreError(message) if is_store_error else RuntimeError(message)


_helper: Helper | None = None


def helper() -> Helper:
    """This process's helper, started on first use (again if it died)."""
    global _helper
    if _helper is None or _helper.process.poll() is not None:
        _helper = Helper()
    return _helper


class TrackedRun:
    """One run in the store; every call returns at once, the helper does the work in order."""

    def __init__(self, to: Helper):
        self.helper = to

    def log_params(self, params: Mapping[str, str]) -> None:
        self.helper.send("log_params", dict(params))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.helper.send("set_tags", {key: str(value) for key, value in tags.items()})

    def log_metric(self, key: str, value: float, step: int) -> None:
        self.helper.send("log_metric", key, float(value), step)

    def log_metrics(self, key: str, values, first_step: int) -> None:
        """Consecutive steps first_step, first_step + 1, ... of one metric."""
        self.helper.send("log_metrics", key, np.asarray(values, dtype=np.float64).tolist(), first_step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.helper.send("log_text", text, artifact_file)

    def log_weight_histograms(self, weights: dict[str, np.ndarray], title: str, artifact_file: str) -> None:
        """The helper draws them (src.figures.WeightHistograms); `weights` must be a copy, not live."""
        self.helper.send("log_weight_histograms", weights, title, artifact_file)

    def end(self, status: str, error: str | None = None) -> None:
        """Waits until everything is stored; a write that failed turns FINISHED into FAILED, and raises."""
        self.helper.ask("end_run", status, error)


class UntrackedRun:
    """Takes the calls a TrackedRun takes and stores nothing: tracking.enabled=false."""

    def log_params(self, params: Mapping[str, str]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metric(self, key: str, value: float, step: int) -> None: ...
    def log_metrics(self, key: str, values, first_step: int) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_weight_histograms(self, weights: dict[str, np.ndarray], title: str, artifact_file: str) -> None: ...


@contextlib.contextmanager
def ending(run) -> Iterator:
    """FINISHED on success, KILLED on Ctrl-C, FAILED with the error on the run otherwise."""
    try:
        yield run
    except KeyboardInterrupt:
        run.end("KILLED", error="interrupted")
        raise
    except BaseException as exc:
        run.end("FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    run.end("FINISHED")


def start_run(to: Helper, run_name: str, tags: Mapping[str, str]):
    to.send("start_run", run_name, dict(tags))
    return ending(TrackedRun(to))
