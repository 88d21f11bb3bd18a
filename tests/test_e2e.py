"""The user's commands, end to end: a real Hydra multirun on real MNIST into a real store, then the report."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_module

pytestmark = pytest.mark.e2e


def test_multirun_zeros_and_trunc_normal(tmp_path, store_uri):
    env = {"MLFLOW_TRACKING_URI": store_uri, "MLFLOW_EXPERIMENT_NAME": "e2e"}
    done = run_module(
        "src.train", "-m", "init=zeros,trunc_normal", f"hydra.sweep.dir={tmp_path}/sweep", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "   11.260% -- zeros seed=42" in done.stdout

    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert len(runs) == 2
    by_init = {run.data.params["init"]: run for run in runs}
    assert set(by_init) == {"zeros", "trunc_normal"}
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "batch_loss")
        assert sorted(m.step for m in history) == list(range(1, 859))
    assert by_init["zeros"].data.metrics["val_accuracy"] == 0.1126
    assert by_init["trunc_normal"].data.metrics["val_accuracy"] > 0.96
    assert len({run.data.tags["sweep_id"] for run in runs}) == 1
    assert {run.data.tags["hydra_job_num"] for run in runs} == {"0", "1"}
    # the process skips Python's teardown after success: each job's log file must still be complete
    for job in ("0", "1"):
        assert "epoch 2/2 val_accuracy" in (tmp_path / "sweep" / job / "train.log").read_text()

    report = run_module("src.report", f"output_dir={tmp_path}/report", env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "   11.260% -- zeros\n" in report.stdout
    assert "Skipped: no runs for ones." in report.stdout
    assert (tmp_path / "report" / "report.md").is_file()
