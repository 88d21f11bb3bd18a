"""The tracking helper process: real subprocesses, real SQLite stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from src.tracker import Helper, helper, start_run
from tests.conftest import PROJECT_ROOT


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def imported(stderr: str, module: str) -> bool:
    """From `python -X importtime` output: was this package imported, by anything?"""
    return any(line.startswith("import time:") and line.rsplit("|", 1)[1].strip() == module for line in stderr.splitlines())


def test_the_training_process_never_imports_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.train", "training.batches_per_epoch=3", f"hydra.run.dir={tmp_path}/run"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "imports"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert imported(done.stderr, "tensorflow")
    assert not imported(done.stderr, "mlflow") and not imported(done.stderr, "src.figures")
    # nor what Keras would import only because MLflow needs it installed (src.train.UNUSED_BY_TRAINING);
    # the refused imports themselves are listed, so look for what they would have loaded
    assert imported(done.stderr, "sklearn") and not imported(done.stderr, "sklearn.base")
    assert imported(done.stderr, "matplotlib.pyplot") and not imported(done.stderr, "matplotlib.figure")
    run = only_run(uri, "imports")  # ... and yet everything is stored
    assert run.info.status == "FINISHED"
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "batch_loss")) == 6
    assert {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "histograms")} == {
        "histograms/initial_weights.png", "histograms/final_weights.png"}


def test_a_write_the_store_refuses_fails_the_run_and_keeps_the_rest(store_uri):
    to = Helper()
    to.ask("open", store_uri, "refused")
    with pytest.raises(RuntimeError, match="MlflowException"):
        with start_run(to, "refused", {}) as run:
            run.log_metrics("batch_loss", [3.0, 2.0], first_step=1)
            run.log_params({"bad!key": "v"})  # MLflow refuses names with "!"
    stored = only_run(store_uri, "refused")
    assert stored.info.status == "FAILED" and stored.data.tags["error"].startswith("MlflowException")
    assert len(MlflowClient(store_uri).get_metric_history(stored.info.run_id, "batch_loss")) == 2


def test_a_store_error_comes_back_as_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from src.errors import StoreError

    with pytest.raises(StoreError, match=f"cannot create the folder {blocker}"):
        Helper().ask("open", f"sqlite:///{blocker}/mlflow.db", "nowhere")


def test_one_helper_per_process_started_again_if_it_died():
    first = helper()
    assert helper() is first
    first.process.kill()
    first.process.wait()
    assert helper() is not first and helper().process.poll() is None


def test_a_run_left_open_by_a_killed_training_process_ends_killed(tmp_path):
    """SIGKILL cannot be caught by the training process; the helper sees its pipe close."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", "training.epochs=50", "training.batches_per_epoch=20",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "sigkill", "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:
        if "epoch 2/50" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (run := only_run(uri, "sigkill")).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "the training process ended without ending the run"
    steps = sorted(m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "batch_loss"))
    assert len(steps) >= 40 and steps == list(range(1, len(steps) + 1))  # two epochs of 20, at least
