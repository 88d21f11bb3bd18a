"""Structured config schemas: Hydra checks types when composing, `validate` checks values.

Nothing here imports TensorFlow, so a bad value is reported in well under a second.
The YAML files under conf/ pick a schema through their defaults list and fill it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from src.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "leaky_relu", "softplus", "linear")
VARIANCE_MODES = ("fan_in", "fan_out", "fan_avg")
VARIANCE_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# --- init: one schema per family of keras.initializers --------------------------------


@dataclass
class ConstantInit:
    name: str = MISSING
    _target_: str = "keras.initializers.Constant"
    value: float = 0.0


@dataclass
class UniformInit:
    name: str = MISSING
    _target_: str = "keras.initializers.RandomUniform"
    minval: float = -0.05
    maxval: float = 0.05

    def __post_init__(self) -> None:
        require(self.minval < self.maxval, f"init.minval ({self.minval}) must be < init.maxval ({self.maxval})")


@dataclass
class NormalInit:
    """RandomNormal, or TruncatedNormal (re-draws values beyond 2 stddev) via _target_."""

    name: str = MISSING
    _target_: str = "keras.initializers.RandomNormal"
    mean: float = 0.0
    stddev: float = 0.05

    def __post_init__(self) -> None:
        require(self.stddev > 0, f"init.stddev must be > 0, got {self.stddev}")


@dataclass
class VarianceScalingInit:
    """Keras' Glorot, He and LeCun initializers are VarianceScaling with these three knobs."""

    name: str = MISSING
    _target_: str = "keras.initializers.VarianceScaling"
    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self) -> None:
        require(self.scale > 0, f"init.scale must be > 0, got {self.scale}")
        require(self.mode in VARIANCE_MODES, f"init.mode must be one of {', '.join(VARIANCE_MODES)}; got {self.mode!r}")
        require(
            self.distribution in VARIANCE_DISTRIBUTIONS,
            f"init.distribution must be one of {', '.join(VARIANCE_DISTRIBUTIONS)}; got {self.distribution!r}",
        )


@dataclass
class OrthogonalInit:
    name: str = MISSING
    _target_: str = "keras.initializers.Orthogonal"
    gain: float = 1.0

    def __post_init__(self) -> None:
        require(self.gain > 0, f"init.gain must be > 0, got {self.gain}")


# --- model, optimizer -----------------------------------------------------------------


@dataclass
class ModelConfig:
    name: str = MISSING
    input_dim: int = 784
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 128])
    activation: str = "relu"
    num_classes: int = 10

    def __post_init__(self) -> None:
        require(self.input_dim > 0, f"model.input_dim must be > 0, got {self.input_dim}")
        require(
            len(self.hidden_sizes) > 0 and all(size > 0 for size in self.hidden_sizes),
            f"model.hidden_sizes must be a non-empty list of positive sizes, got {list(self.hidden_sizes)}",
        )
        require(
            self.activation in ACTIVATIONS,
            f"model.activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}",
        )
        require(self.num_classes > 1, f"model.num_classes must be > 1, got {self.num_classes}")


@dataclass
class OptimizerConfig:
    """`lr` is passed to Keras as learning_rate; any other field goes through as named."""

    name: str = MISSING
    _target_: str = MISSING
    lr: float = 0.001

    def __post_init__(self) -> None:
        require(self.lr > 0, f"optimizer.lr must be > 0, got {self.lr}")


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "keras.optimizers.Adam"
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("beta_1", "beta_2"):
            value = getattr(self, key)
            require(0 <= value < 1, f"optimizer.{key} must be in [0, 1), got {value}")
        require(self.epsilon > 0, f"optimizer.epsilon must be > 0, got {self.epsilon}")


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "keras.optimizers.SGD"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.momentum < 1, f"optimizer.momentum must be in [0, 1), got {self.momentum}")


@dataclass
class RMSpropConfig(OptimizerConfig):
    _target_: str = "keras.optimizers.RMSprop"
    rho: float = 0.9
    momentum: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.rho < 1, f"optimizer.rho must be in (0, 1), got {self.rho}")
        require(0 <= self.momentum < 1, f"optimizer.momentum must be in [0, 1), got {self.momentum}")


# --- the rest -------------------------------------------------------------------------


@dataclass
class DataConfig:
    cache_dir: str = "${project_root:}/data"
    download: bool = True  # false: only the two local caches are tried
    timeout: float = 120.0  # seconds, for each network source


@dataclass
class TrainingConfig:
    batch_size: int = 128
    epochs: int = 2
    # None trains full epochs (55000 // batch_size); a number caps them, for quick tests.
    batches_per_epoch: Optional[int] = None
    # A non-finite loss tags the run as diverged; true ends its training there.
    stop_on_divergence: bool = True

    def __post_init__(self) -> None:
        require(self.batch_size > 0, f"training.batch_size must be > 0, got {self.batch_size}")
        require(self.epochs > 0, f"training.epochs must be > 0, got {self.epochs}")
        require(
            self.batches_per_epoch is None or self.batches_per_epoch > 0,
            f"training.batches_per_epoch must be > 0 or null, got {self.batches_per_epoch}",
        )


@dataclass
class TrackingConfig:
    """MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME, when set, win over these."""

    uri: Optional[str] = None  # None: sqlite:///<project root>/mlflow.db
    experiment: str = "weight-init"
    enabled: bool = True  # false: train and print only, nothing logged (used by the benchmark)


@dataclass
class Comparison:
    """One of the lesson's figures: a line per init option, labelled as in the lesson."""

    title: str = MISSING
    lines: dict[str, str] = MISSING  # init option -> label
    batches: Optional[int] = None  # plot only the first N batches; None: all

    def __post_init__(self) -> None:
        require(len(self.lines) > 0, f"comparison {self.title!r} needs at least one line")
        require(self.batches is None or self.batches > 0, f"comparison {self.title!r}: batches must be > 0 or null")


@dataclass
class ReportConfig:
    comparisons: list[Comparison] = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "${project_root:}/multirun_outputs/report"
    tail_batches: int = 50  # the summary's "mean loss of the last N batches"
    log_to_mlflow: bool = True
    sample_seed: int = 0  # for the raw-sample histograms

    def __post_init__(self) -> None:
        require(self.tail_batches > 0, f"tail_batches must be > 0, got {self.tail_batches}")


@dataclass
class Config:
    init: Any = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 42
    force: bool = False  # retrain even if this exact config already FINISHED in the store


SCHEMAS = {
    "init": {
        "constant": ConstantInit,
        "uniform": UniformInit,
        "normal": NormalInit,
        "variance_scaling": VarianceScalingInit,
        "orthogonal": OrthogonalInit,
    },
    "model": {"mlp": ModelConfig},
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSpropConfig},
}


def register_configs() -> None:
    """Schemas live under schema/ so that they are not offered as options of the real groups."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(name="report_schema", node=ReportConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the key if any value is out of range (runs each schema's checks)."""
    OmegaConf.to_object(cfg)


register_configs()
