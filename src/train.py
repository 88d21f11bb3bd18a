"""Train the lesson's network once per Hydra job and track it in MLflow.

    python -m src.train -m init=zeros,ones,uniform01,trunc_normal

TensorFlow is imported only once the config has been checked, so that a typo is
answered at once instead of after the several seconds its import takes.
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, validate

log = logging.getLogger(__name__)


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The composed config, flattened, without tracking settings (URIs may carry credentials)."""
    from src.tracking import flatten

    tree = OmegaConf.to_container(cfg, resolve=True)
    tree.pop("tracking")
    params = flatten(tree)
    params.update(init=cfg.init.name, model=cfg.model.name, optimizer=cfg.optimizer.name)
    return params


def train(cfg: DictConfig, tags: dict[str, str] | None = None) -> dict[str, float]:
    """One tracked training run; returns its final metrics."""
    validate(cfg)

    import keras
    import tensorflow as tf

    from src.data import lesson_split, load_mnist
    from src.figures import weight_histograms
    from src.model import build_model, build_optimizer, weight_matrices
    from src.stats import stats_block
    from src.tracking import experiment_name, open_experiment, start_run, tracking_uri
    from src.training import evaluate, fit

    uri = tracking_uri(cfg.tracking.uri)
    client, experiment_id = open_experiment(uri, experiment_name(cfg.tracking.experiment))
    split = lesson_split(load_mnist(cfg.data.cache_dir, cfg.data.download, cfg.data.timeout))

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    label = f"{cfg.init.name} seed={cfg.seed}"
    run_tags = {"init": cfg.init.name, "seed": str(cfg.seed), **(tags or {})}

    with start_run(client, experiment_id, f"{cfg.init.name}-s{cfg.seed}", run_tags) as run:
        run.log_params(run_params(cfg))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        model = build_model(cfg.model, cfg.init, cfg.seed)
        run.log_figure(weight_histograms(weight_matrices(model), f"Initial weights: {label}"), "histograms/initial_weights.png")

        started = time.perf_counter()
        val: dict[str, float] = {}

        def on_epoch_end(epoch: int, metrics: dict) -> None:
            val.update(metrics)
            for key, value in metrics.items():
                run.log_metric(key, value, step=epoch)
            run.flush()
            log.info(
                "%s: epoch %d/%d val_accuracy %.3f%% val_loss %.4f (%.1f s)",
                label, epoch, cfg.training.epochs, metrics["val_accuracy"] * 100, metrics["val_loss"],
                time.perf_counter() - started,
            )

        losses = fit(
            model,
            build_optimizer(cfg.optimizer),
            split.x_train,
            split.y_train,
            split.x_val,
            split.y_val,
            batch_size=cfg.training.batch_size,
            epochs=cfg.training.epochs,
            seed=cfg.seed,
            max_batches_per_epoch=cfg.training.batches_per_epoch,
            on_losses=lambda first_step, values: run.log_metrics("batch_loss", values, first_step),
            on_epoch_end=on_epoch_end,
        )

        test = evaluate(model, split.x_test, split.y_test)
        final = {
            **val,
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "last_batch_loss": float(losses[-1]),
        }
        for key in ("test_accuracy", "test_loss", "last_batch_loss"):
            run.log_metric(key, final[key], step=len(losses))
        run.log_figure(weight_histograms(weight_matrices(model), f"Final weights: {label}"), "histograms/final_weights.png")

    print(stats_block(len(losses), cfg.training.epochs, [(label, [val["val_accuracy"]], [losses[-1]])]))
    return final


def hydra_tags() -> dict[str, str]:
    """Which sweep (or single run) a job belongs to, from Hydra's runtime config."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    tags = {
        "sweep_id": hc.sweep.dir if multirun else hc.run.dir,
        "hydra_output_dir": hc.runtime.output_dir,
        "hydra_overrides": " ".join(hc.overrides.task),
    }
    if multirun:
        tags["hydra_job_num"] = str(hc.job.num)
    return tags


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from src.data import DataError

    try:
        train(cfg, tags=hydra_tags())
    except ConfigError as exc:
        sys.exit(f"Config error: {exc}")
    except DataError as exc:
        sys.exit(f"Data error: {exc}")


if __name__ == "__main__":
    main()
