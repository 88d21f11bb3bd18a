"""Rebuild the lesson's figures and stats blocks from whatever the tracking store holds.

    python -m src.report          (or: make report)

Seeds of one configuration are aggregated (mean line, min-max band, mean ± std).
Everything is written to a fresh folder that replaces the old one only when complete,
and logged to the "<experiment>-reports" experiment so it never counts as a training run.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import validate
from src.errors import ReportError, UserError


@dataclass
class Section:
    heading: str
    image: str | None = None  # file name inside the report folder
    block: str | None = None  # preformatted text under the image
    text: str | None = None  # markdown paragraph or table


@dataclass
class Report:
    output_dir: Path
    sections: list[Section] = field(default_factory=list)
    n_runs: int = 0
    n_groups: int = 0
    mlflow_run_id: str | None = None

    def section(self, heading: str) -> Section:
        return next(s for s in self.sections if s.heading.endswith(heading))


def without_credentials(uri: str) -> str:
    return re.sub(r"://[^/@]+@", "://***@", uri)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def save(fig, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=100)
    return name


def train_command(inits: list[str], seeds: list[int]) -> str:
    seed_part = f" seed={','.join(map(str, seeds))}" if len(seeds) > 1 else ""
    return f"python -m src.train -m init={','.join(inits)}{seed_part}"


def group_stats(names: list[str], groups) -> str:
    """The lesson's stats block for these groups, one row each."""
    from src.stats import stats_block

    rows = [(n, g.metric("val_accuracy"), g.last_loss()) for n, g in zip(names, groups)]
    return stats_block(groups[0].n_batches, groups[0].epochs, rows)


def comparison_sections(cfg: DictConfig, groups, folder: Path) -> list[Section]:
    from src.figures import loss_figure
    from src.results import labels

    seeds = sorted({run.seed for g in groups for run in g.runs})
    sections = []
    for number, comparison in enumerate(cfg.comparisons, start=1):
        heading = f"{number}. {comparison.title}"
        wanted = list(comparison.lines)
        missing = [init for init in wanted if not any(g.init == init for g in groups)]
        if missing:
            sections.append(Section(
                heading,
                text=f"Skipped: no runs for {', '.join(missing)}. Fill it with `{train_command(missing, seeds)}`",
            ))
            continue
        chosen = sorted((g for g in groups if g.init in wanted), key=lambda g: wanted.index(g.init))
        names = labels(chosen, dict(comparison.lines))
        fig = loss_figure(comparison.title, [(n, g.curves(comparison.batches)) for n, g in zip(names, chosen)])
        sections.append(Section(
            heading,
            image=save(fig, folder, f"{number:02d}_{slug(comparison.title)}.png"),
            block=group_stats(names, chosen),
        ))
    return sections


def summary_table(groups, names: list[str], tail: int) -> str:
    from src.stats import format_value

    def cell(values, unit=""):
        return format_value(values, unit).strip()

    rows = sorted(zip(names, groups), key=lambda pair: -pair[1].metric("val_accuracy").mean())
    lines = [
        f"| config | seeds | validation accuracy | test accuracy | last-batch loss | mean loss, last {tail} batches |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in rows:
        lines.append(
            f"| {name} | {g.n} | {cell(g.metric('val_accuracy') * 100, '%')} | {cell(g.metric('test_accuracy') * 100, '%')} "
            f"| {cell(g.last_loss())} | {cell(g.tail_loss(tail))} |"
        )
    return "\n".join(lines)


def overview_sections(cfg: DictConfig, groups, client, folder: Path) -> list[Section]:
    import numpy as np
    from matplotlib.image import imread

    from src.figures import image_grid, loss_figure, sample_histogram
    from src.results import labels

    ordered = sorted(groups, key=lambda g: (g.init, labels([g])[0]))
    names = labels(ordered)
    lines = [(n, g.curves()) for n, g in zip(names, ordered)]
    sections = [
        Section(
            "Every initializer",
            image=save(loss_figure("Every initializer", lines), folder, "all_inits.png"),
            block=group_stats(names, ordered),
        ),
        Section(
            "Every initializer, log scale",
            image=save(loss_figure("Every initializer (log scale)", lines, log_scale=True), folder, "all_inits_log.png"),
        ),
        Section("Summary", text=summary_table(ordered, names, cfg.tail_batches)),
    ]

    rng = np.random.default_rng(cfg.sample_seed)
    for title, values, name in [
        ("Random Uniform (minval=-3, maxval=3)", rng.uniform(-3, 3, 1000), "sample_uniform.png"),
        ("Random Normal (mean=0.0, stddev=1.0)", rng.normal(0.0, 1.0, 1000), "sample_normal.png"),
    ]:
        sections.append(Section(title, image=save(sample_histogram(values, title), folder, name)))

    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, g in zip(names, ordered):
            run = g.runs[0]
            try:
                path = client.download_artifacts(run.run_id, "histograms/initial_weights.png", tmp)
            except Exception:  # a run without the artifact is left out of the grid, not fatal
                continue
            images.append((f"{name} (seed {run.seed})", imread(path)))
    if images:
        sections.append(Section(
            "Initial weights, as logged", image=save(image_grid(images), folder, "initial_weights.png")
        ))
    return sections


def markdown(report: Report, header: str) -> str:
    parts = ["# Weight initialization on MNIST: report", "", header, ""]
    for s in report.sections:
        parts += [f"## {s.heading}", ""]
        if s.image:
            parts += [f"![{s.heading}]({s.image})", ""]
        if s.block:
            parts += ["```", s.block, "```", ""]
        if s.text:
            parts += [s.text, ""]
    return "\n".join(parts)


def replace_folder(new: Path, target: Path) -> None:
    """Swap the finished folder in; the old report stays until the new one is complete."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def build_report(cfg: DictConfig) -> Report:
    validate(cfg)
    from mlflow.tracking import MlflowClient

    from src.results import group_runs, load_records
    from src.tracker import experiment_name, sqlite_path, tracking_uri
    from src.tracking import open_experiment, start_run

    uri, name = tracking_uri(cfg.tracking.uri), experiment_name(cfg.tracking.experiment)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ReportError(f"no store at {db}: train first (make run) or set MLFLOW_TRACKING_URI")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise ReportError(f"no experiment {name!r} in {uri}: train first (make run) or set MLFLOW_EXPERIMENT_NAME")
    records = load_records(client, experiment.experiment_id)
    groups = group_runs(records)
    if not groups:
        raise ReportError(f"no FINISHED training runs in experiment {name!r} of {uri}: train first (make run)")

    target = Path(cfg.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        report = Report(output_dir=target, n_runs=sum(g.n for g in groups), n_groups=len(groups))
        report.sections = comparison_sections(cfg, groups, folder) + overview_sections(cfg, groups, client, folder)
        header = (
            f"Store `{without_credentials(uri)}`, experiment `{name}`: {report.n_runs} FINISHED runs in {report.n_groups} configurations "
            f"(seeds aggregated: lines are means, bands min to max, stats mean ± sample std). "
            f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
        )
        (folder / "report.md").write_text(markdown(report, header))
        replace_folder(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    if cfg.log_to_mlflow:
        reports_client, reports_id = open_experiment(uri, f"{name}-reports")
        tags = {"source_experiment": name, "source_experiment_id": experiment.experiment_id,
                "n_runs": str(report.n_runs), "n_groups": str(report.n_groups)}
        with start_run(reports_client, reports_id, "report", tags) as run:
            reports_client.log_artifacts(run.run_id, str(target))
        report.mlflow_run_id = run.run_id
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    try:
        report = build_report(cfg)
    except UserError as exc:
        sys.exit(exc.report())
    for s in report.sections:
        if s.block or (s.text and s.text.startswith("Skipped")):
            print(f"== {s.heading}\n{s.block or s.text}\n")
    print(
        f"Report: {report.output_dir / 'report.md'} ({report.n_runs} runs in {report.n_groups} configurations, "
        f"{time.perf_counter() - started:.1f} s)"
    )


if __name__ == "__main__":
    from src.cli import run

    run(main)
