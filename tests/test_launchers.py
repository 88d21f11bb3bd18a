"""Cluster launchers: the submitit code path with real subprocesses, and the SLURM preset."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_module


@pytest.mark.e2e
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path, store_uri):
    done = run_module(
        "src.train", "-m", "init=zeros,trunc_normal", "training.batches_per_epoch=5", "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path}/sweep", env={"MLFLOW_TRACKING_URI": store_uri, "MLFLOW_EXPERIMENT_NAME": "submitit"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("submitit").experiment_id])
    assert sorted((r.data.params["init"], r.info.status) for r in runs) == [("trunc_normal", "FINISHED"), ("zeros", "FINISHED")]
    jobs = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2  # one submitit job (a process of its own) each


def test_slurm_preset_composes_onto_the_submitit_plugin(tmp_path):
    done = run_module("src.train", "hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher")
    assert done.returncode == 0, done.stderr
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in done.stdout
    assert "cpus_per_task: 2" in done.stdout and "TF_NUM_INTRAOP_THREADS" in done.stdout


def test_parallel_preset_composes_onto_the_joblib_plugin():
    done = run_module("src.train", "hydra/launcher=parallel", "--cfg", "hydra", "-p", "hydra.launcher")
    assert done.returncode == 0, done.stderr
    assert "_target_: hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher" in done.stdout
    assert "n_jobs: -1" in done.stdout
