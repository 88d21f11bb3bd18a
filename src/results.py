"""Training runs read back from MLflow and grouped by configuration, seeds aggregated.

A group is every FINISHED run with the same params except the seed (and the data
source settings, which do not change the numbers). Within a group, a re-run of the
same seed replaces the older run, so running a sweep twice never double counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.tracker import SOURCE_ONLY

NOT_CONFIG = ("seed", SOURCE_ONLY)  # what a group's runs may differ in


@dataclass
class RunRecord:
    run_id: str
    start_time: int
    seed: int
    params: dict[str, str]
    metrics: dict[str, float]
    batch_loss: np.ndarray

    @property
    def config_key(self) -> tuple:
        return tuple(sorted((k, v) for k, v in self.params.items() if not k.startswith(NOT_CONFIG)))


@dataclass
class Group:
    params: dict[str, str]  # the shared params, seed excluded
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def init(self) -> str:
        return self.params["init"]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def epochs(self) -> int:
        return int(self.params["training.epochs"])

    @property
    def n_batches(self) -> int:
        return max(len(run.batch_loss) for run in self.runs)

    def curves(self, batches: int | None = None) -> np.ndarray:
        """(seeds, batches) array of batch_loss; a run stopped early by divergence is padded with NaN."""
        n = self.n_batches if batches is None else min(batches, self.n_batches)
        curves = np.full((self.n, n), np.nan)
        for row, run in zip(curves, self.runs):
            row[: min(n, len(run.batch_loss))] = run.batch_loss[:n]
        return curves

    def metric(self, key: str) -> np.ndarray:
        return np.array([run.metrics.get(key, np.nan) for run in self.runs], dtype=np.float64)

    def last_loss(self) -> np.ndarray:
        """Each run's own last batch, even where it stopped early."""
        return np.array([run.batch_loss[-1] for run in self.runs])

    def tail_loss(self, last: int) -> np.ndarray:
        """Mean loss of the last `last` batches of each run: steadier than the very last batch."""
        return np.array([run.batch_loss[-last:].mean() for run in self.runs])


def search_finished(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def batch_loss_history(client: MlflowClient, run_id: str) -> np.ndarray:
    history = client.get_metric_history(run_id, "batch_loss")
    return np.array([m.value for m in sorted(history, key=lambda m: m.step)], dtype=np.float64)


def load_records(client: MlflowClient, experiment_id: str) -> list[RunRecord]:
    """Every FINISHED training run that logged batch losses."""
    records = []
    for run in search_finished(client, experiment_id):
        if "init" not in run.data.params:
            continue
        records.append(
            RunRecord(
                run_id=run.info.run_id,
                start_time=run.info.start_time,
                seed=int(run.data.params["seed"]),
                params=dict(run.data.params),
                metrics=dict(run.data.metrics),
                batch_loss=batch_loss_history(client, run.info.run_id),
            )
        )
    return [r for r in records if len(r.batch_loss)]


def group_runs(records: Iterable[RunRecord]) -> list[Group]:
    """One group per config; per seed only the newest run counts."""
    groups: dict[tuple, Group] = {}
    seen: set[tuple] = set()
    for record in sorted(records, key=lambda r: r.start_time, reverse=True):
        key = record.config_key
        if (key, record.seed) in seen:
            continue
        seen.add((key, record.seed))
        group = groups.setdefault(key, Group(params=dict(key)))
        group.runs.append(record)
    for group in groups.values():
        group.runs.sort(key=lambda r: r.seed)
    return list(groups.values())


OPTION_GROUPS = ("init", "model", "optimizer")


def distinguishing_keys(groups: list[Group]) -> list[str]:
    """Params that tell these groups apart beyond their init option's name.

    An option's own parameters (init.stddev, optimizer.lr) count only where two groups
    with the same option disagree; otherwise the option's name says it all.
    """
    keys = sorted({k for g in groups for k in g.params if k != "init" and not k.endswith(".name")})
    found = []
    for key in keys:
        owner = key.split(".")[0]
        values_by_option: dict[str | None, set] = {}
        for g in groups:
            option = g.params.get(owner) if owner in OPTION_GROUPS and key != owner else None
            values_by_option.setdefault(option, set()).add(g.params.get(key))
        if any(len(values) > 1 for values in values_by_option.values()):
            found.append(key)
    return found


def labels(groups: list[Group], names: dict[str, str] | None = None) -> list[str]:
    """A label per group: its init's display name, plus whatever else sets it apart."""
    keys = distinguishing_keys(groups)
    names = names or {}
    return [
        names.get(g.init, g.init) + (" (" + ", ".join(f"{k}={g.params.get(k, '-')}" for k in keys) + ")" if keys else "")
        for g in groups
    ]
