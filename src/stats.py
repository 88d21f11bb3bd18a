"""The lesson's stats block, in its exact text format."""

from __future__ import annotations


def stats_block(n_batches: int, epochs: int, rows: list[tuple[str, str, str]]) -> str:
    """rows: (label, accuracy text, loss text), e.g. ("Normal", "97.020", "0.088")."""
    lines = [f"After {n_batches} Batches ({epochs} Epochs):", "Validation Accuracy"]
    lines += [f"  {accuracy:>7}% -- {label}" for label, accuracy, _ in rows]
    lines += ["Loss"]
    lines += [f"  {loss:>7} -- {label}" for label, _, loss in rows]
    return "\n".join(lines)


def single_run_block(label: str, n_batches: int, epochs: int, val_accuracy: float, last_loss: float) -> str:
    return stats_block(n_batches, epochs, [(label, f"{val_accuracy * 100:.3f}", f"{last_loss:.3f}")])
