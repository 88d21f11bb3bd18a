"""Keras initializers from the `init` config group, one independently seeded instance per weight matrix."""

from __future__ import annotations

import inspect

import keras
import numpy as np
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf


def layer_seeds(seed: int, n_layers: int) -> list[int]:
    """Independent seeds per layer: a shared Keras initializer would give same-shaped layers equal weights."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_layers)]


def build_initializer(init_cfg: DictConfig, seed: int) -> keras.initializers.Initializer:
    params = OmegaConf.to_container(init_cfg, resolve=True)
    params.pop("name")
    if "seed" in inspect.signature(get_class(params["_target_"])).parameters:
        params["seed"] = seed
    return instantiate(params)
