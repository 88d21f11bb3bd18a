"""MLflow plumbing: the store, one run per job, metrics buffered into log_batch calls.

A `log_metric` call per batch costs ~8 ms on SQLite, longer than the batch itself,
so metrics wait in a buffer and go out in chunks of at most 1000.
`python -m src.tracking FD` is the helper process that does this for a training
process (see src.tracker); the report uses these functions directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from src.errors import StoreError, UserError
from src.tracker import ending, sqlite_path

# Buffered metrics go out once this many wait (~0.6 s of training): the UI shows progress
# within an epoch, and the end of a run waits for one small write, not a whole epoch's.
# A log_batch call costs ~4.5 ms plus ~0.06 ms per metric on SQLite: 858 batch losses
# take ~85 ms of CPU in chunks of 128, ~65 ms in chunks of 256, ~55 ms in one call.
FLUSH_AT = 256
# The nice value of a run's writer thread in the helper: its writes wait for CPU time that training leaves idle.
WRITER_NICE = 19


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


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """The store, checked, with its experiment created if needed."""
    check_store(uri)
    return open_experiment(uri, experiment)


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

    Metrics are buffered; `flush` hands them to the writer in log_batch chunks, as does `log_metrics` once
    FLUSH_AT wait. `end` waits for every write:
    the run is FINISHED only once all of it is stored.
    """

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> Run:
        return cls(client, client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id)

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
        """Consecutive steps first_step, first_step + 1, ... of one metric; sent once FLUSH_AT wait."""
        now = int(time.time() * 1000)
        self.pending.extend(Metric(key, float(v), now, first_step + i) for i, v in enumerate(values))
        if len(self.pending) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        for chunk in chunks(self.pending, MAX_METRICS_PER_BATCH):
            self.write(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk))
        self.pending = []

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


def start_run(client: MlflowClient, experiment_id: str, run_name: str, tags: Mapping[str, str]):
    """A Run as a context: FINISHED on success, KILLED on Ctrl-C, FAILED with the error otherwise."""
    return ending(Run.create(client, experiment_id, run_name, tags))


def lower_priority() -> None:
    """Called on a writer thread; Linux applies a thread id's nice value to that thread alone."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)


class Session:
    """What the helper process does for its training process: one store, one run at a time.

    A run's writes go out on its writer thread at the lowest priority, so that they only
    take CPU time that training leaves idle. Figures are drawn at once, at normal
    priority, as the training process asks for them just before its step graph is traced
    or its last evaluation, which leave a core free (see src.training.fit).
    A call nobody waits for may fail (e.g. creating the run); its error is kept and
    reported when the run ends, which then ends FAILED.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.experiment_id = ""
        self.store: tuple[str, str] | None = None  # (uri, experiment) of the open store
        self.run: Run | None = None
        self.failed: Exception | None = None
        self.histograms = None  # a WeightHistograms figure, drawn again for every run with as many layers

    def open(self, uri: str, experiment: str) -> None:
        """Each job of a sweep asks; the store is checked and opened for the first one only."""
        if self.store == (uri, experiment):
            return
        self.client, self.experiment_id = open_store(uri, experiment)
        self.store = (uri, experiment)
        self.find_finished("")  # MLflow prepares its query once, while TensorFlow still imports

    def find_finished(self, digest: str) -> str | None:
        return find_finished(self.client, self.experiment_id, digest)

    def start_run(self, run_name: str, tags: dict[str, str]) -> None:
        self.failed = None
        self.run = Run.create(self.client, self.experiment_id, run_name, tags)
        self.run.write(lower_priority)

    def prepare_histograms(self, panels: int) -> None:
        """Sent while the training process imports TensorFlow: the figure is built and warm before training."""
        if self.histograms is None or self.histograms.panels != panels:
            from src.figures import WeightHistograms

            self.histograms = WeightHistograms(panels)
            self.histograms.warm_up()

    def log_weight_histograms(self, weights: dict, title: str, artifact_file: str) -> None:
        self.prepare_histograms(len(weights))
        run = self.run
        run.flush()  # the writer stores the waiting metrics while the figure is drawn: after training, the end waits less
        folder = tempfile.mkdtemp(prefix="weight-histograms-")
        path = os.path.join(folder, os.path.basename(artifact_file))
        self.histograms.save(weights, title, path)

        def upload() -> None:
            try:
                run.client.log_artifact(run.run_id, path, os.path.dirname(artifact_file) or None)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        run.write(upload)

    def end_run(self, status: str, error: str | None) -> None:
        run, self.run, failed = self.run, None, self.failed
        if run is None:  # the run was never created
            raise failed or RuntimeError("no run was started")
        if failed is not None and status == RunStatus.to_string(RunStatus.FINISHED):
            status, error = RunStatus.to_string(RunStatus.FAILED), f"{type(failed).__name__}: {failed}"
        run.end(status, error)
        if failed is not None:
            raise failed

    def call(self, method: str, args: tuple) -> Any:
        if method in ("log_params", "set_tags", "log_metric", "log_metrics", "log_text"):
            if self.run is None:
                return None  # its creation failed: end_run reports why
            return getattr(self.run, method)(*args)
        return getattr(self, method)(*args)


def serve(answers_fd: int) -> None:
    """The helper's loop: requests from stdin, in order; an answer for each one that carries an id.

    Ctrl-C and SIGTERM are for the training process, which then ends its run through
    here; the helper ends when that process closes its end of the pipe, marking a run it
    left open as KILLED.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import src.figures  # noqa: F401  (matplotlib, loaded while the training process imports TensorFlow)

    requests, answers = sys.stdin.buffer, os.fdopen(answers_fd, "wb")
    session = Session()
    while True:
        try:
            request, method, args = pickle.load(requests)
        except EOFError:
            break
        try:
            answer = (request, True, session.call(method, args))
        except Exception as exc:
            answer = (request, False, (isinstance(exc, UserError), str(exc) if isinstance(exc, UserError)
                                       else f"{type(exc).__name__}: {exc}"))
            if not request and session.failed is None:
                session.failed = exc
        if request:
            pickle.dump(answer, answers)
            answers.flush()
    if session.run is not None:
        session.run.end(RunStatus.to_string(RunStatus.KILLED), "the training process ended without ending the run")


if __name__ == "__main__":
    serve(int(sys.argv[1]))
