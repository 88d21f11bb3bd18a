"""Train the lesson's network once per Hydra job and track it in MLflow.

    python -m src.train -m init=zeros,ones,uniform01,trunc_normal

TensorFlow is imported only once the config has been checked, so that a typo is
answered at once instead of after the several seconds its import takes; then it is
imported while the tracking helper (src.tracker) starts and opens the store.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.callbacks import FAILED_MARKER, runs_jobs_here
from src.config import validate
from src.errors import StoreError, UserError

log = logging.getLogger(__name__)


def config_tree(cfg: DictConfig) -> dict:
    """The composed config without what does not change the numbers or may hold credentials."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in ("tracking", "force"):
        tree.pop(key)
    return tree


def run_params(tree: dict) -> dict[str, str]:
    """The config tree flattened, plus the option names of the three main groups."""
    from src.tracker import flatten

    params = flatten(tree)
    params.update(init=tree["init"]["name"], model=tree["model"]["name"], optimizer=tree["optimizer"]["name"])
    return params


def weight_matrix_count(model_cfg: DictConfig) -> int:
    """The Dense layers src.model.build_model makes: one per hidden size, plus the logits."""
    return len(model_cfg.hidden_sizes) + 1


def train(cfg: DictConfig, tags: dict[str, str] | None = None) -> dict[str, float] | None:
    """One tracked training run; returns its final metrics, or None if it was already done."""
    validate(cfg)

    label = f"{cfg.init.name} seed={cfg.seed}"
    tree = config_tree(cfg)
    params = run_params(tree)
    if cfg.tracking.enabled:
        from src.tracker import SOURCE_ONLY, config_hash, experiment_name, helper, start_run, tracking_uri

        store = helper()
        # TensorFlow (~6 s) imports while the helper imports MLflow and opens the store (~2.5 s);
        # a job that is skipped does not wait for it.
        threading.Thread(target=importlib.import_module, args=("src.training",), daemon=True).start()
        store.ask("open", tracking_uri(cfg.tracking.uri), experiment_name(cfg.tracking.experiment))
        digest = config_hash({k: v for k, v in params.items() if not k.startswith(SOURCE_ONLY)})
        done = None if cfg.force else store.ask("find_finished", digest)
        if done is not None:
            print(f"skip {label}: this exact config already FINISHED as run {done} (force=true retrains)")
            return None
        store.send("prepare_histograms", weight_matrix_count(cfg.model))
        run_tags = {"init": cfg.init.name, "seed": str(cfg.seed), "config_hash": digest, **(tags or {})}
        tracked = start_run(store, f"{cfg.init.name}-s{cfg.seed}", run_tags)
    else:
        from src.tracker import UntrackedRun

        tracked = contextlib.nullcontext(UntrackedRun())

    import keras
    import tensorflow as tf

    from src.data import load_split
    from src.model import build_model, build_optimizer, weight_matrices
    from src.stats import stats_block
    from src.training import evaluate, fit, gc_paused

    with gc_paused(), tracked as run:
        run.log_params(params)
        run.log_text(OmegaConf.to_yaml(tree), "config.yaml")
        split = load_split(cfg.data.cache_dir, cfg.data.download, cfg.data.timeout)

        run.set_tags({"tf_intra_op_threads": str(apply_thread_limit(tf))})  # before TensorFlow starts its runtime
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
        model = build_model(cfg.model, cfg.init, cfg.seed)
        initial = weight_matrices(model)  # a copy: the figure is drawn while training changes the model

        started = time.perf_counter()
        val: dict[str, float] = {}

        def log_final_weights() -> None:  # as soon as training ends: drawn while the model is evaluated
            run.log_weight_histograms(weight_matrices(model), f"Final weights: {label}", "histograms/final_weights.png")

        def on_epoch_end(epoch: int, metrics: dict) -> None:
            val.update(metrics)
            for key, value in metrics.items():
                run.log_metric(key, value, step=epoch)
            log.info(
                "%s: epoch %d/%d val_accuracy %.3f%% val_loss %.4f (%.1f s)",
                label, epoch, cfg.training.epochs, metrics["val_accuracy"] * 100, metrics["val_loss"],
                time.perf_counter() - started,
            )

        result = fit(
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
            stop_on_divergence=cfg.training.stop_on_divergence,
            on_losses=lambda first_step, values: run.log_metrics("batch_loss", values, first_step),
            on_epoch_end=on_epoch_end,
            on_start=lambda: run.log_weight_histograms(
                initial, f"Initial weights: {label}", "histograms/initial_weights.png"
            ),
            on_trained=log_final_weights,
        )
        losses = result.losses
        if result.diverged_at is not None:
            run.set_tags({"diverged": "true", "diverged_at_batch": str(result.diverged_at)})
            log.warning("%s: loss not finite at batch %d", label, result.diverged_at)
            if not val:  # stopped before the first epoch ended
                metrics = evaluate(model, split.x_val, split.y_val)
                on_epoch_end(0, {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]})

        test = evaluate(model, split.x_test, split.y_test)
        final = {**val, "test_accuracy": test["accuracy"], "test_loss": test["loss"], "last_batch_loss": float(losses[-1])}
        for key in ("test_accuracy", "test_loss", "last_batch_loss"):
            run.log_metric(key, final[key], step=len(losses))

    print(stats_block(len(losses), cfg.training.epochs, [(label, [val["val_accuracy"]], [losses[-1]])]))
    return final


def hydra_tags() -> dict[str, str]:
    """Which sweep (or single run) a job belongs to, from Hydra's runtime config."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    tags = {
        "sweep_id": hc.sweep.dir if multirun else hc.run.dir,
        "hydra_output_dir": hc.runtime.output_dir,
        # tracking.* overrides are left out: a URI may carry credentials
        "hydra_overrides": " ".join(o for o in hc.overrides.task if not o.lstrip("+~").startswith("tracking.")),
    }
    if multirun:
        tags["hydra_job_num"] = str(hc.job.num)
    return tags


def share_cores_between_workers(launcher: DictConfig) -> None:
    """Parallel workers on one machine each get their share of the cores, not all of them.

    The variables reach the worker processes; `apply_thread_limit` hands them to
    TensorFlow before its runtime starts. The thread count changes how sums are split,
    so results match other runs with the same count (tagged as tf_intra_op_threads).
    """
    if "joblib" not in launcher.get("_target_", "").lower():
        return
    cores = os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs") or -1
    workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores, -2 = all but one
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, cores // workers)))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def apply_thread_limit(tf) -> int:
    """TF_NUM_INTRAOP_THREADS, if set, applied through TensorFlow's API; returns the thread count in use."""
    wanted = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    if wanted and tf.config.threading.get_intra_op_parallelism_threads() != wanted:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS", "0")))
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


# Keras imports these when they are installed (MLflow requires both), for its scikit-learn
# wrapper and its image-gallery plots; a training process uses neither, and they cost
# ~1.3 s of its start. A None entry in sys.modules makes `import` fail, which Keras expects.
UNUSED_BY_TRAINING = ("sklearn", "matplotlib.pyplot")


def skip_unused_imports() -> None:
    for name in UNUSED_BY_TRAINING:
        sys.modules.setdefault(name, None)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One job. In a sweep a failed job is recorded and the next one runs; the summary comes at the end.

    A store that cannot be used stops a sweep whose jobs run in this process at its first
    job: every other job would fail the same way (other launchers check it up front).
    """
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # end the run as KILLED, as Ctrl-C does
    skip_unused_imports()
    hc = HydraConfig.get()
    share_cores_between_workers(hc.launcher)
    marker = Path(hc.runtime.output_dir, FAILED_MARKER)
    marker.unlink(missing_ok=True)  # a job folder may be reused by a later sweep
    fatal = hc.mode != RunMode.MULTIRUN
    try:
        train(cfg, tags=hydra_tags())
    except UserError as exc:
        message = exc.report()
        fatal = fatal or isinstance(exc, StoreError) and runs_jobs_here(hc.launcher)
    except Exception as exc:
        log.exception("%s seed=%s failed", cfg.init.name, cfg.seed)
        message = f"{type(exc).__name__}: {exc}"
    else:
        return
    if fatal:
        sys.exit(message)
    print(message, file=sys.stderr)
    marker.write_text(message + "\n")


if __name__ == "__main__":
    from src.cli import run

    run(main)
