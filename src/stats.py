"""The lesson's stats block, in its exact text format, extended to several seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spread(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)


def format_value(values: Sequence[float], unit: str = "") -> str:
    """'97.020%' for one run, '97.020 ± 0.215% (n=3)' for several; 7.3f as in the lesson."""
    mean, std, n = spread(values)
    if n == 1:
        return f"{mean:7.3f}{unit}"
    return f"{mean:7.3f} ± {std:.3f}{unit} (n={n})"


def stats_block(n_batches: int, epochs: int, rows: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> str:
    """rows: (label, validation accuracies as fractions, last-batch losses), one value per seed."""
    lines = [f"After {n_batches} Batches ({epochs} Epochs):", "Validation Accuracy"]
    lines += [f"  {format_value(np.asarray(acc) * 100, '%')} -- {label}" for label, acc, _ in rows]
    lines += ["Loss"]
    lines += [f"  {format_value(loss)} -- {label}" for label, _, loss in rows]
    return "\n".join(lines)
