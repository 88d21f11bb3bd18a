"""MLflow round trips on a real SQLite store in a temp dir."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from src.tracker import experiment_name, flatten, tracking_uri
from src.tracking import FLUSH_AT, Run, Session, open_experiment, start_run
from src.train import train
from tests.conftest import compose_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_env_wins_over_config(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert tracking_uri(None).startswith("sqlite:////") and tracking_uri(None).endswith("/mlflow.db")
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert experiment_name("weight-init") == "weight-init"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "elsewhere")
    assert tracking_uri("sqlite:///x.db") == "http://127.0.0.1:1"
    assert experiment_name("weight-init") == "elsewhere"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_train_round_trip(store_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "round-trip")
    cfg = compose_config("init=trunc_normal", "seed=3", "training.batches_per_epoch=6", "tracking.uri=sqlite:///nowhere.db")

    final = train(cfg, tags={"sweep_id": "sweep-xyz"})

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("round-trip")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "trunc_normal-s3"
    assert run.data.tags["sweep_id"] == "sweep-xyz"

    params = run.data.params
    assert (params["init"], params["model"], params["optimizer"]) == ("trunc_normal", "mlp", "adam")
    assert params["init.stddev"] == "0.1" and params["training.batch_size"] == "128" and params["seed"] == "3"
    assert params["init._target_"] == "keras.initializers.TruncatedNormal"
    assert not any(key.startswith("tracking") for key in params)

    history = client.get_metric_history(run.info.run_id, "batch_loss")
    assert sorted(m.step for m in history) == list(range(1, 13))
    by_step = {m.step: m.value for m in history}
    assert by_step[12] == pytest.approx(final["last_batch_loss"], rel=1e-12)
    val = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in val) == [1, 2]
    assert max(val, key=lambda m: m.step).value == pytest.approx(final["val_accuracy"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(final["test_accuracy"])
    assert 0.5 < final["test_accuracy"] <= 1  # 12 batches of Adam already learn something

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "histograms"}
    out = tmp_path / "artifacts"
    for name in ("initial_weights.png", "final_weights.png"):
        path = client.download_artifacts(run.info.run_id, f"histograms/{name}", str(out))
        assert open(path, "rb").read(8) == PNG_MAGIC
    config_text = open(client.download_artifacts(run.info.run_id, "config.yaml", str(out))).read()
    assert "name: trunc_normal" in config_text and "seed: 3" in config_text
    # artifacts live next to the SQLite file, not in the current directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_metrics_are_sent_in_chunks_of_at_most_1000(store_uri):
    client, experiment_id = open_experiment(store_uri, "chunks")
    calls = []
    with start_run(client, experiment_id, "chunks", {}) as run:
        original = run.client.log_batch
        run.client.log_batch = lambda run_id, **kw: calls.append(len(kw.get("metrics", ()))) or original(run_id, **kw)
        values = np.linspace(0, 1, 2500)
        run.log_metrics("batch_loss", values, first_step=1)
        run.flush()
    history = MlflowClient(store_uri).get_metric_history(run.run_id, "batch_loss")
    assert calls[:3] == [1000, 1000, 500]
    assert sorted((m.step, m.value) for m in history) == list(zip(range(1, 2501), values))


def test_a_failure_ends_the_run_failed_with_its_metrics_and_error(store_uri):
    client, experiment_id = open_experiment(store_uri, "fails")
    with pytest.raises(RuntimeError):
        with start_run(client, experiment_id, "fails", {}) as run:
            run.log_metrics("batch_loss", [3.0, 2.0], first_step=1)
            raise RuntimeError("boom")
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["error"] == "RuntimeError: boom"
    assert len(client.get_metric_history(run.run_id, "batch_loss")) == 2


def test_open_experiment_reuses_the_existing_one(store_uri):
    _, first = open_experiment(store_uri, "same")
    _, again = open_experiment(store_uri, "same")
    assert first == again


def test_run_buffers_metrics_until_flush_and_ends_after_every_write(store_uri):
    client, experiment_id = open_experiment(store_uri, "buffer")
    run = Run(client, client.create_run(experiment_id).info.run_id)
    run.log_metric("val_accuracy", 0.5, step=1)
    assert run.writes == [] and client.get_metric_history(run.run_id, "val_accuracy") == []
    run.flush()
    assert len(run.writes) == 1
    run.log_metrics("batch_loss", np.ones(FLUSH_AT - 1), first_step=1)
    assert len(run.writes) == 1  # still buffered
    run.log_metrics("batch_loss", [2.0], first_step=FLUSH_AT)
    assert len(run.writes) == 2 and run.pending == []  # a full buffer goes out without waiting for a flush
    run.end("FINISHED")
    assert [m.value for m in client.get_metric_history(run.run_id, "val_accuracy")] == [0.5]
    assert len(client.get_metric_history(run.run_id, "batch_loss")) == FLUSH_AT
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_failed_write_fails_the_run_and_keeps_the_rest(store_uri):
    client, experiment_id = open_experiment(store_uri, "write-fails")
    threads = []

    def broken_write():
        threads.append(threading.current_thread().name)
        raise ValueError("cannot draw")

    with pytest.raises(ValueError, match="cannot draw"):
        with start_run(client, experiment_id, "write-fails", {}) as run:
            run.write(broken_write)
            run.log_metrics("batch_loss", [3.0, 2.0], first_step=1)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FAILED" and stored.data.tags["error"] == "ValueError: cannot draw"
    assert len(client.get_metric_history(run.run_id, "batch_loss")) == 2
    assert threads[0].startswith("mlflow-writer")  # the caller (training) never waits on a write


def test_the_prepared_figure_draws_every_run_with_as_many_layers(store_uri, tmp_path):
    session = Session()
    session.open(store_uri, "figures")
    session.prepare_histograms(3)
    prepared = session.histograms
    rng = np.random.default_rng(0)
    for run_name, shapes in (("first", [(784, 256), (256, 128), (128, 10)]), ("deeper", [(4, 4)] * 6)):
        session.start_run(run_name, {})
        run_id = session.run.run_id
        session.log_weight_histograms({f"w{i}": rng.normal(size=s) for i, s in enumerate(shapes)}, run_name, "h/w.png")
        session.end_run("FINISHED", None)
        path = MlflowClient(store_uri).download_artifacts(run_id, "h/w.png", str(tmp_path))
        assert open(path, "rb").read(8) == PNG_MAGIC
        assert session.histograms.panels == len(shapes)
        assert (session.histograms is prepared) == (run_name == "first")  # same count: reused, not rebuilt


def test_tracking_off_trains_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    final = train(compose_config("training.batches_per_epoch=3", "tracking.enabled=false"))
    assert 0 <= final["val_accuracy"] <= 1 and final["last_batch_loss"] > 0
    assert list(tmp_path.iterdir()) == []
