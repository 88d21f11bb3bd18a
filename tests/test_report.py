"""The report, on a store filled by real short training runs of real MNIST."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from src.report import build_report
from src.results import group_runs, labels, load_records
from src.stats import format_value, stats_block
from src.tracking import open_experiment, start_run
from src.train import train
from tests.conftest import CONF_DIR, compose_config, run_module

EXPERIMENT = "report-test"
SHORT = ["training.batches_per_epoch=3"]
RUNS = [
    ["init=zeros", "seed=1"],
    ["init=zeros", "seed=2"],
    ["init=ones", "seed=1"],
    ["init=trunc_normal", "seed=1"],
    ["init=trunc_normal", "seed=2"],
    ["init=trunc_normal", "seed=3"],
    ["init=trunc_normal", "seed=1", "force=true"],  # a re-run: must replace the first, not add a fourth seed
    ["init=normal", "seed=1"],
    ["init=normal", "seed=1", "optimizer=sgd"],  # another optimizer: its own line, never mixed in
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        run_ids = []
        for overrides in RUNS:
            cfg = compose_config(*overrides, *SHORT, f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}")
            train(cfg)
            run_ids.append(MlflowClient(uri).search_runs(
                [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id],
                order_by=["attributes.start_time DESC"], max_results=1,
            )[0].info.run_id)
        client, experiment_id = open_experiment(uri, EXPERIMENT)
        with pytest.raises(RuntimeError):  # a failed run must never show up in the report
            with start_run(client, experiment_id, "broken", {}) as run:
                run.log_params({"init": "uniform01", "seed": "1"})
                run.log_metrics("batch_loss", [1.0, 2.0], first_step=1)
                raise RuntimeError("boom")
        yield uri, run_ids


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    uri, _ = store
    out = tmp_path_factory.mktemp("out") / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("report", overrides=[f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}", f"output_dir={out}"])
        first = build_report(cfg)
        second = build_report(cfg)  # the first report's own MLflow run must not be read back
    return first, second


def finished_runs(uri, **params):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    return [r for r in runs if all(r.data.params.get(k) == v for k, v in params.items())]


def test_stats_block_matches_the_lesson_format_exactly():
    rows = [("Normal", [0.9702], [0.088]), ("Truncated Normal", [0.9748], [0.034])]
    assert stats_block(858, 2, rows) == (
        "After 858 Batches (2 Epochs):\n"
        "Validation Accuracy\n"
        "   97.020% -- Normal\n"
        "   97.480% -- Truncated Normal\n"
        "Loss\n"
        "    0.088 -- Normal\n"
        "    0.034 -- Truncated Normal"
    )


def test_several_seeds_read_mean_std_n():
    assert format_value([1.0, 2.0, 4.0]) == f"{7 / 3:7.3f} ± {np.std([1, 2, 4], ddof=1):.3f} (n=3)"


def test_figures_are_valid_pngs(report):
    first, _ = report
    images = [s.image for s in first.sections if s.image]
    assert {"01_all_zeros_vs_all_ones.png", "all_inits.png", "all_inits_log.png", "sample_uniform.png",
            "sample_normal.png", "initial_weights.png"} <= set(images)
    for name in images:
        data = (first.output_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(first.output_dir / name).shape[0] > 100
    markdown = (first.output_dir / "report.md").read_text()
    positions = [markdown.index(f"]({name})") for name in images]
    assert positions == sorted(positions)  # in reading order


def test_stats_blocks_hold_the_values_in_mlflow_aggregated_over_seeds(store, report):
    uri, _ = store
    first, _ = report
    block = first.section("All Zeros vs All Ones").block
    zeros = finished_runs(uri, init="zeros")
    assert len(zeros) == 2
    accuracies = [r.data.metrics["val_accuracy"] * 100 for r in zeros]
    last_losses = [r.data.metrics["last_batch_loss"] for r in zeros]
    assert f"  {format_value(accuracies, '%')} -- All Zeros" in block.splitlines()
    assert f"  {format_value(last_losses)} -- All Zeros" in block.splitlines()
    assert f"{np.mean(accuracies):7.3f} ± {np.std(accuracies, ddof=1):.3f}% (n=2) -- All Zeros" in block
    (ones,) = finished_runs(uri, init="ones")
    assert f"  {ones.data.metrics['val_accuracy'] * 100:7.3f}% -- All Ones" in block.splitlines()
    assert block.startswith("After 6 Batches (2 Epochs):")


def test_a_rerun_replaces_the_older_run(store, report):
    uri, run_ids = store
    first, _ = report
    assert "(n=3) -- Truncated Normal" in first.section("Normal vs Truncated Normal").block
    groups = group_runs(load_records(MlflowClient(uri), MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id))
    (trunc,) = [g for g in groups if g.init == "trunc_normal"]
    assert [r.seed for r in trunc.runs] == [1, 2, 3]
    assert run_ids[6] in {r.run_id for r in trunc.runs} and run_ids[3] not in {r.run_id for r in trunc.runs}
    curves = trunc.curves()
    histories = [
        [m.value for m in sorted(MlflowClient(uri).get_metric_history(r.run_id, "batch_loss"), key=lambda m: m.step)]
        for r in trunc.runs
    ]
    np.testing.assert_array_equal(curves, np.array(histories))


def test_other_optimizer_is_its_own_line(report):
    first, _ = report
    lines = first.section("Normal vs Truncated Normal").block.splitlines()
    assert any(line.endswith("-- Normal (optimizer=adam)") for line in lines)
    assert any(line.endswith("-- Normal (optimizer=sgd)") for line in lines)


def test_missing_init_is_skipped_with_the_command_that_fills_it(report):
    first, _ = report
    baseline = first.section("2. Baseline")
    assert baseline.image is None and baseline.block is None
    assert baseline.text == "Skipped: no runs for uniform01. Fill it with `python -m src.train -m init=uniform01 seed=1,2,3`"
    assert not (first.output_dir / "02_baseline.png").exists()


def test_the_report_is_logged_but_never_read_back_as_a_training_run(store, report):
    uri, _ = store
    first, second = report
    assert first.n_runs == second.n_runs == 8 and first.n_groups == 5
    client = MlflowClient(uri)
    training = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert all(r.info.run_name != "report" for r in training)
    reports = client.search_runs([client.get_experiment_by_name(f"{EXPERIMENT}-reports").experiment_id])
    assert {r.info.run_id for r in reports} == {first.mlflow_run_id, second.mlflow_run_id}
    logged = {a.path for a in client.list_artifacts(first.mlflow_run_id)}
    assert {"report.md", "all_inits.png", "01_all_zeros_vs_all_ones.png"} <= logged


def test_labels_only_name_what_differs(store):
    uri, _ = store
    client = MlflowClient(uri)
    groups = group_runs(load_records(client, client.get_experiment_by_name(EXPERIMENT).experiment_id))
    named = dict(zip(labels(groups), groups))
    assert set(named) == {f"{init} (optimizer=adam)" for init in ("zeros", "ones", "trunc_normal", "normal")} | {
        "normal (optimizer=sgd)"
    }
    same_optimizer = [g for g in groups if g.params["optimizer"] == "adam"]
    assert set(labels(same_optimizer)) == {"zeros", "ones", "trunc_normal", "normal"}


def test_nothing_to_report_is_one_clear_line(store, tmp_path):
    uri, _ = store
    missing = run_module("src.report", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/none.db"})
    assert missing.returncode != 0
    assert missing.stderr.strip() == f"Report error: no store at {tmp_path}/none.db: train first (make run) or set MLFLOW_TRACKING_URI"
    assert not (tmp_path / "none.db").exists()
    other = run_module("src.report", f"output_dir={tmp_path}/r", env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "nope"})
    assert other.returncode != 0 and "no experiment 'nope'" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "r").exists()
