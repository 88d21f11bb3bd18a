"""Bad input, failed and interrupted jobs, divergence, resuming, store problems, parallel writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from src.train import train
from tests.conftest import PROJECT_ROOT, compose_config, run_module

SHORT = "training.batches_per_epoch=20"


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def imported_tensorflow(stderr: str) -> bool:
    """From `python -X importtime` output."""
    return any(line.startswith("import time:") and line.rstrip().endswith("| tensorflow") for line in stderr.splitlines())


def user_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not line.startswith("import time:")]


# 1. Bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["init=nope"], "Config error: no option 'nope' in 'init': choose one of general_rule, glorot_normal"),
        (["init=uniform01", "init.minval=1", "init.maxval=0"], "Config error: init.minval (1.0) must be < init.maxval (0.0)"),
        (["init=normal", "init.stddev=-1"], "Config error: init.stddev must be > 0, got -1.0"),
        (["training.batch_size=0"], "Config error: training.batch_size must be > 0, got 0"),
        (["optimizer.lr=abc"], "Config error: Error merging override optimizer.lr=abc: Value 'abc' of type 'str' could not be converted to Float"),
        (["model.activation=relux"], "Config error: model.activation must be one of relu, tanh"),
        (["-m", "init=zeros", "training.epochs=0"], "Config error: training.epochs must be > 0, got 0"),
    ],
)
def test_bad_input_is_one_line_before_any_run_or_tensorflow(tmp_path, args, expected):
    db = tmp_path / "mlflow.db"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.train", *args,
         f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "MLFLOW_EXPERIMENT_NAME": "bad"},
    )
    assert done.returncode != 0
    lines = [line for line in user_lines(done.stderr) if "INFO mlflow" not in line]
    assert expected in lines[-1], done.stderr[-2000:]  # in a sweep, the summary's line for the job
    assert all("Traceback" not in line for line in lines)
    assert not imported_tensorflow(done.stderr)
    assert runs_of(f"sqlite:///{db}", "bad") == []


# 2 + 5. A failing job, the rest of the sweep, and resuming ----------------------------

FAULT = textwrap.dedent(
    """
    import runpy
    import sys

    from hydra.core.hydra_config import HydraConfig
    import src.training as training

    real = training.make_train_steps

    def make_train_steps(*args):
        # Fault injection: job #1 of the sweep crashes in epoch 2, after the 20 batches of epoch 1.
        steps, calls = real(*args), [0]
        def faulty(batches):
            calls[0] += 1
            if HydraConfig.get().job.num == 1 and calls[0] == 2:
                raise RuntimeError("injected fault in epoch 2")
            return steps(batches)
        return faulty

    training.make_train_steps = make_train_steps
    sys.argv = ["src/train.py", *sys.argv[1:]]
    runpy.run_module("src.train", run_name="__main__")
    """
)


@pytest.mark.e2e
def test_failed_job_is_recorded_the_sweep_goes_on_and_a_rerun_resumes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    sweep = ["-m", "init=zeros,ones,trunc_normal", SHORT, f"tracking.uri={uri}", "tracking.experiment=faults"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", FAULT, *sweep, f"hydra.sweep.dir={tmp_path}/first"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode != 0
    assert "1 job(s) of the sweep failed:" in done.stderr
    assert "#1 (init=ones " in done.stderr and "RuntimeError: injected fault in epoch 2" in done.stderr

    runs = {r.data.params["init"]: r for r in runs_of(uri, "faults")}
    assert {i: r.info.status for i, r in runs.items()} == {"zeros": "FINISHED", "ones": "FAILED", "trunc_normal": "FINISHED"}
    assert runs["ones"].data.tags["error"] == "RuntimeError: injected fault in epoch 2"
    history = MlflowClient(uri).get_metric_history(runs["ones"].info.run_id, "batch_loss")
    assert sorted(m.step for m in history) == list(range(1, 21))  # all of epoch 1
    # no credentials-bearing setting is logged: the store URI appears in no param or tag
    for run in runs.values():
        assert not any("mlflow.db" in v for v in [*run.data.params.values(), *run.data.tags.values()])

    again = run_module("src.train", *sweep, f"hydra.sweep.dir={tmp_path}/again", env={"MLFLOW_TRACKING_URI": ""})
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skip zeros seed=42: this exact config already FINISHED" in again.stdout
    assert "skip trunc_normal seed=42: this exact config already FINISHED" in again.stdout
    statuses = sorted((r.data.params["init"], r.info.status) for r in runs_of(uri, "faults"))
    assert statuses == [("ones", "FAILED"), ("ones", "FINISHED"), ("trunc_normal", "FINISHED"), ("zeros", "FINISHED")]


def test_rerun_skips_finished_config_unless_forced(store_uri):
    cfg = compose_config("init=zeros", "training.batches_per_epoch=2", f"tracking.uri={store_uri}", "tracking.experiment=resume")
    assert train(cfg) is not None
    assert train(cfg) is None
    assert train(compose_config("init=zeros", "training.batches_per_epoch=2", "seed=7", f"tracking.uri={store_uri}",
                                "tracking.experiment=resume")) is not None  # another seed is another config
    assert train(compose_config("init=zeros", "training.batches_per_epoch=2", "force=true", f"tracking.uri={store_uri}",
                                "tracking.experiment=resume")) is not None
    runs = runs_of(store_uri, "resume")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert not any("force" in r.data.params for r in runs)


# 3. Interrupted ------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_ends_the_run_killed_with_its_metrics_and_exits_promptly(tmp_path, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", "init=trunc_normal,zeros", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "interrupt", "PYTHONUNBUFFERED": "1"},
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if "epoch 1/2" in line:
            break
    time.sleep(0.5)  # well into epoch 2
    process.send_signal(sig)
    sent = time.monotonic()
    output.append(process.communicate(timeout=60)[0])
    assert time.monotonic() - sent < 10
    assert process.returncode == 130, "".join(output)[-2000:]

    runs = runs_of(uri, "interrupt")
    assert [r.info.status for r in runs] == ["KILLED"]  # the second job never started
    history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "batch_loss")
    steps = sorted(m.step for m in history)
    assert 429 < len(steps) < 858 and steps == list(range(1, len(steps) + 1))


# 4. Divergence -------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [True, False])
def test_divergence_is_tagged_and_stops_or_continues(store_uri, stop, tmp_path):
    cfg = compose_config(
        "init=normal", "optimizer.lr=1e12", "training.batches_per_epoch=10", f"training.stop_on_divergence={stop}",
        f"tracking.uri={store_uri}", "tracking.experiment=diverge",
    )
    train(cfg)
    (run,) = runs_of(store_uri, "diverge")
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true"
    at = int(run.data.tags["diverged_at_batch"])
    history = sorted(MlflowClient(store_uri).get_metric_history(run.info.run_id, "batch_loss"), key=lambda m: m.step)
    assert np.isfinite(history[at - 2].value) and not np.isfinite(history[at - 1].value)
    assert len(history) == (at if stop else 20)

    from hydra import compose, initialize_config_dir

    from src.report import build_report
    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        report_cfg = compose("report", overrides=[f"tracking.uri={store_uri}", "tracking.experiment=diverge",
                                                  f"output_dir={tmp_path}/report", "log_to_mlflow=false"])
    report = build_report(report_cfg)  # a diverged run must not break the report
    assert "nan -- normal" in report.section("Every initializer").block


# 6. Store problems, found before training ----------------------------------------------


def test_unreachable_server_fails_fast(tmp_path):
    started = time.monotonic()
    done = run_module("src.train", f"hydra.run.dir={tmp_path}/run", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert done.returncode != 0 and time.monotonic() - started < 30
    assert done.stderr.strip().splitlines()[-1] == (
        "Tracking error: tracking server http://127.0.0.1:9 does not answer (ConnectionError): "
        "start it or fix MLFLOW_TRACKING_URI"
    )
    assert "Traceback" not in done.stderr


def test_unwritable_sqlite_path_fails_fast(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_module("src.train", f"hydra.run.dir={tmp_path}/run", env={"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith(f"Tracking error: cannot create the folder {blocker}")
    assert "Traceback" not in done.stderr


# 7. Parallel writers -------------------------------------------------------------------


@pytest.mark.e2e
def test_parallel_jobs_on_a_new_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    done = run_module(
        "src.train", "-m", "init=zeros,ones,uniform01,trunc_normal", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
        f"hydra.sweep.dir={tmp_path}/sweep",
        env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "parallel"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(uri, "parallel")
    assert sorted(r.data.params["init"] for r in runs) == ["ones", "trunc_normal", "uniform01", "zeros"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["tf_intra_op_threads"] for r in runs} == {str(max(1, os.cpu_count() // 4))}  # a share each
    for run in runs:
        steps = [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "batch_loss")]
        assert sorted(steps) == list(range(1, 859))


# 9. Safety -----------------------------------------------------------------------------


def test_make_ui_binds_to_loopback_only():
    done = subprocess.run(["make", "-n", "ui"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    (command,) = [line for line in done.stdout.splitlines() if "mlflow ui" in line]
    assert "--host 127.0.0.1" in command and "0.0.0.0" not in command
