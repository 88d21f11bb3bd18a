"""Composition of every option, and one-line errors for values that make no sense."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from src.config import ConfigError, validate
from tests.conftest import INIT_OPTIONS, compose_config, run_module

LESSON_INITS = {
    "zeros", "ones", "uniform01", "uniform_neg1to1", "uniform_neg01to01", "uniform_neg001to001",
    "uniform_neg0001to0001", "general_rule", "normal", "trunc_normal",
}
STANDARD_INITS = {"glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal", "orthogonal"}


def test_init_group_has_exactly_the_lesson_and_standard_options():
    assert set(INIT_OPTIONS) == LESSON_INITS | STANDARD_INITS


@pytest.mark.parametrize("init", INIT_OPTIONS)
@pytest.mark.parametrize("model", ["mlp", "mlp_deep"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_every_option_composes_and_validates(init, model, optimizer):
    cfg = compose_config(f"init={init}", f"model={model}", f"optimizer={optimizer}")
    validate(cfg)
    assert (cfg.init.name, cfg.model.name, cfg.optimizer.name) == (init, model, optimizer)
    assert cfg.init._target_.startswith("keras.initializers.")


def test_defaults_are_the_lessons():
    cfg = compose_config()
    assert cfg.model.hidden_sizes == [256, 128] and cfg.model.activation == "relu"
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.001
    assert (cfg.training.batch_size, cfg.training.epochs) == (128, 2)
    assert cfg.tracking.experiment == "weight-init"
    assert isinstance(cfg.seed, int)


def test_init_is_parametric():
    cfg = compose_config("init=normal", "init.stddev=0.01")
    assert cfg.init.stddev == 0.01 and cfg.init.name == "normal"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["init=uniform01", "init.minval=1", "init.maxval=0"], "init.minval"),
        (["init=uniform_neg1to1", "init.minval=0.5", "init.maxval=0.5"], "init.minval"),
        (["init=normal", "init.stddev=-1"], "init.stddev"),
        (["init=trunc_normal", "init.stddev=0"], "init.stddev"),
        (["init=he_normal", "init.mode=fan_sideways"], "init.mode"),
        (["init=general_rule", "init.scale=0"], "init.scale"),
        (["init=orthogonal", "init.gain=-2"], "init.gain"),
        (["training.batch_size=0"], "training.batch_size"),
        (["training.epochs=0"], "training.epochs"),
        (["model.activation=nope"], "model.activation"),
        (["model.hidden_sizes=[256,0]"], "model.hidden_sizes"),
        (["optimizer.lr=-0.1"], "optimizer.lr"),
        (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize("override", ["optimizer.lr=abc", "training.batch_size=1.5", "init.nokey=1"])
def test_wrong_types_and_unknown_keys_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config(override)


def test_cli_config_error_is_one_line_and_logs_nothing(tmp_path):
    db = tmp_path / "mlflow.db"
    done = run_module("src.train", "init=normal", "init.stddev=-1", f"hydra.run.dir={tmp_path}/out", env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert done.returncode != 0
    assert done.stderr.strip() == "Config error: init.stddev must be > 0, got -1.0"
    assert "Traceback" not in done.stderr + done.stdout
    assert not db.exists()


def test_data_cache_defaults_to_the_project_folder_wherever_the_job_starts():
    from src.config import PROJECT_ROOT

    tree = OmegaConf.to_container(compose_config(), resolve=True)
    assert tree["data"]["cache_dir"] == f"{PROJECT_ROOT}/data"
