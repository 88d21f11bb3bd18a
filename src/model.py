"""The lesson's MLP and its optimizer, built from their config groups."""

from __future__ import annotations

import keras
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.initializers import build_initializer, layer_seeds


def build_model(model_cfg: DictConfig, init_cfg: DictConfig, seed: int) -> keras.Sequential:
    """Dense layers with the configured activation, logits out; biases start at zero."""
    sizes = [*model_cfg.hidden_sizes, model_cfg.num_classes]
    layers: list = [keras.Input(shape=(model_cfg.input_dim,))]
    for i, (size, layer_seed) in enumerate(zip(sizes, layer_seeds(seed, len(sizes)))):
        last = i == len(sizes) - 1
        layers.append(
            keras.layers.Dense(
                size,
                activation=None if last else model_cfg.activation,
                kernel_initializer=build_initializer(init_cfg, layer_seed),
                bias_initializer="zeros",
                name="logits" if last else f"hidden{i + 1}",
            )
        )
    return keras.Sequential(layers, name=model_cfg.name)


def build_optimizer(optimizer_cfg: DictConfig) -> keras.optimizers.Optimizer:
    params = OmegaConf.to_container(optimizer_cfg, resolve=True)
    params.pop("name")
    params["learning_rate"] = params.pop("lr")
    return instantiate(params)


def weight_matrices(model: keras.Model) -> dict[str, np.ndarray]:
    """A copy of each kernel, safe to read while training goes on."""
    return {layer.name: np.array(layer.kernel, copy=True) for layer in model.layers}
