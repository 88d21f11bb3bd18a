"""The user's command, end to end: a real Hydra multirun on real MNIST into a real store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_multirun_zeros_and_trunc_normal(tmp_path, store_uri):
    done = run_cli(
        "-m", "init=zeros,trunc_normal", f"hydra.sweep.dir={tmp_path}/sweep",
        env={"MLFLOW_TRACKING_URI": store_uri, "MLFLOW_EXPERIMENT_NAME": "e2e"},
    )
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
