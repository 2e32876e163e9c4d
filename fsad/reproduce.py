"""The full RegAD reproduction as one command (``python -m fsad reproduce``): a graph of tasks.

The paper's protocol (Sec. 5.1): for every target category, a registration model trained on all the
*other* categories of the dataset (leave-one-out), then the target's few-shot evaluation with that model over
k × runs, then the per-category tables beside the paper's numbers (:mod:`fsad.paper`). As a graph::

    train/<target>  ->  evaluate/<target>      (one pair per target category)
    evaluate/*      ->  report                 (tables, figure, markdown)

Each target's evaluation starts as soon as its model is ready. Tasks run one after another here
(``--executor local``) or as Ray tasks (``--executor ray``; Ray starts an evaluation when its training
finished, and re-runs a task whose worker died). Every task resumes inside itself (training from its last
epoch, evaluation from its last cell) and marks itself done with ``<out>/tasks/<task>.json``, written
atomically when it finished; ``--resume`` skips done tasks, so a killed reproduction continues where it stopped
whichever executor ran it. ``--dry-run`` prints the plan and its cost from a short measured step, running
nothing else.

Outputs under ``--out``: ``checkpoints/<target>/last.pt``, ``results/<target>.json`` (+ CSV summary),
``tables/*.csv``, ``figures/*.png``, ``report.md`` and ``tasks/``.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fsad.config import derive
from fsad.errors import ConfigError, MissingFileError
from fsad.utils import atomic_write_json, atomic_write_text

METRICS = ("image_auroc", "pixel_auroc", "aupro")


@dataclass
class ReproduceConfig:
    """Everything that determines a reproduction.

    Attributes:
        data_root, dataset: the dataset (MVTec layout).
        out: output folder.
        targets: target categories (default: every category under the root).
        epochs, batch_size, max_steps_per_epoch, lr: registration training (paper: 50 epochs).
        ks, runs: the evaluation grid (paper: k = 2, 4, 8; 10 runs).
        backbone, weights, image_size, device, seed: as in ``train`` / ``evaluate``.
        threads: torch threads per task (None: torch's default); the same count on every executor gives the
            same numbers, since a float reduction's order depends on it.
    """

    data_root: str
    dataset: str
    out: str
    targets: list[str] | None = None
    epochs: int = 50
    batch_size: int = 32
    max_steps_per_epoch: int | None = None
    lr: float = 1e-4
    ks: list[int] = field(default_factory=lambda: [2, 4, 8])
    runs: int = 10
    backbone: str = "resnet18"
    weights: str = "imagenet"
    image_size: int = 224
    device: str = "auto"
    seed: int = 0
    threads: int | None = None


@dataclass
class Task:
    name: str  # "train/<target>", "evaluate/<target>" or "report"
    kind: str  # "train", "evaluate", "report"
    target: str | None
    depends: list[str]


# --------------------------------------------------------------------------- the graph
def targets_of(config: ReproduceConfig) -> list[str]:
    from data_tools.datasets import check_category, list_categories

    present = list_categories(config.data_root, config.dataset)
    if config.targets is None:
        if len(present) < 2:
            raise ConfigError(
                f"{config.data_root} holds {len(present)} {config.dataset} categories; leave-one-out "
                "training needs at least two (see `python -m data_tools verify`)."
            )
        return present
    for target in config.targets:
        check_category(config.data_root, config.dataset, target)
    return list(config.targets)


def plan_tasks(config: ReproduceConfig) -> list[Task]:
    """The task graph in a valid execution order (each evaluation right after its training)."""
    tasks = []
    for target in targets_of(config):
        tasks.append(Task(f"train/{target}", "train", target, []))
        tasks.append(Task(f"evaluate/{target}", "evaluate", target, [f"train/{target}"]))
    tasks.append(Task("report", "report", None, [t.name for t in tasks if t.kind == "evaluate"]))
    return tasks


def train_config(config: ReproduceConfig, target: str):
    """The leave-``target``-out training (every option the two configs share, by name, from ``config``)."""
    from fsad.train import TrainConfig

    return derive(TrainConfig, config, target=target, out=str(Path(config.out) / "checkpoints" / target), resume=True)


def evaluation_config(config: ReproduceConfig, target: str):
    from fsad.evaluate import EvaluationConfig
    from fsad.train import LAST_CHECKPOINT

    return derive(
        EvaluationConfig,
        config,
        categories=[target],
        out=str(Path(config.out) / "results" / f"{target}.json"),
        checkpoint=str(Path(config.out) / "checkpoints" / target / LAST_CHECKPOINT),
        resume=True,
    )


def marker_path(config: ReproduceConfig, task: Task) -> Path:
    return Path(config.out) / "tasks" / f"{task.name.replace('/', '-')}.json"


def task_done(config: ReproduceConfig, task: Task) -> bool:
    try:
        return json.loads(marker_path(config, task).read_text()).get("status") == "done"
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def run_task(config: ReproduceConfig, task: Task, *upstream: Any) -> dict[str, Any]:
    """Run one train/evaluate task (resuming inside itself) and commit its done marker; raises on failure.

    ``upstream`` are the results of the tasks it depends on (Ray passes them, so it waits for them).
    """
    import torch

    if config.threads:
        torch.set_num_threads(int(config.threads))
    start = time.perf_counter()
    if task.kind == "train":
        from fsad.train import train

        path = train(train_config(config, task.target), progress=False)
        detail = {"checkpoint": str(path)}
    elif task.kind == "evaluate":
        from fsad.evaluate import run_evaluation

        document = run_evaluation(evaluation_config(config, task.target), progress=False)
        detail = {"results": evaluation_config(config, task.target).out, "cells": len(document["cells"])}
    else:
        raise ValueError(f"run_task runs train/evaluate tasks, not {task.kind!r}")
    record = {"task": task.name, "status": "done", "seconds": round(time.perf_counter() - start, 2), **detail}
    atomic_write_json(marker_path(config, task), record)
    return record


def write_report(config: ReproduceConfig) -> dict[str, Any]:
    """Tables (CSV, %) per metric beside the paper's values, a figure and ``report.md`` from every results file."""
    from fsad.figures import comparison_figure, load_cells, markdown_report, per_category_table, save_figure, save_table

    out = Path(config.out)
    results = out / "results"
    cells = load_cells(results) if results.is_dir() else []
    if not cells:
        raise MissingFileError(f"No evaluation results under {results}: every evaluation task failed or none ran.")
    paper = config.dataset if config.dataset in ("mvtec", "mpdd") else None
    tables = {}
    for metric in METRICS:
        rows = per_category_table(cells, dataset=config.dataset, metric=metric, paper_dataset=paper)
        tables[metric] = str(save_table(rows, metric, out))
        if metric == "image_auroc":
            save_figure(
                comparison_figure(rows, title=f"RegAD reproduction on {config.dataset}"), "image_auroc", out / "figures"
            )
    atomic_write_text(out / "report.md", markdown_report(cells, metrics=METRICS, macro=True))
    return {"task": "report", "status": "done", "tables": tables, "cells": len(cells)}


# --------------------------------------------------------------------------- execution
def _failed(task: Task, reason: str) -> dict[str, Any]:
    return {"task": task.name, "status": "failed", "error": reason}


def _prepare(config: ReproduceConfig, resume: bool) -> list[Task]:
    tasks = plan_tasks(config)
    markers = Path(config.out) / "tasks"
    if not resume and markers.is_dir() and any(markers.iterdir()):
        raise FileExistsError(
            f"{config.out} holds a previous reproduction ({markers}). Pass --resume to continue "
            "it, or choose another --out."
        )
    atomic_write_json(
        Path(config.out) / "reproduce.json", {"config": asdict(config), "tasks": [asdict(t) for t in tasks]}
    )
    return tasks


def _run_local(config: ReproduceConfig, tasks: list[Task], resume: bool, progress: bool) -> dict[str, dict]:
    from tqdm.auto import tqdm

    statuses: dict[str, dict] = {}
    for task in tqdm([t for t in tasks if t.kind != "report"], desc="reproduce", disable=not progress):
        if resume and task_done(config, task):
            statuses[task.name] = {"task": task.name, "status": "skipped"}
            continue
        failed_deps = [d for d in task.depends if statuses.get(d, {}).get("status") == "failed"]
        if failed_deps:
            statuses[task.name] = _failed(task, f"not run: {', '.join(failed_deps)} failed")
            continue
        try:
            statuses[task.name] = run_task(config, task)
        except Exception as error:  # noqa: BLE001 - one target's failure is recorded, the others go on
            statuses[task.name] = {
                **_failed(task, f"{type(error).__name__}: {error}"),
                "traceback": traceback.format_exc(limit=3),
            }
    return statuses


def _run_ray(config: ReproduceConfig, tasks: list[Task], resume: bool, options, progress: bool) -> dict[str, dict]:
    from fsad.ray_executor import failure_reason, ray_session, remote, wait_all

    statuses: dict[str, dict] = {}
    with ray_session(options):
        task_fn = remote(run_task, options)
        refs: dict[str, Any] = {}
        for task in tasks:
            if task.kind == "report":
                continue
            if resume and task_done(config, task):
                statuses[task.name] = {"task": task.name, "status": "skipped"}
                continue
            # Passing the training's reference makes Ray start this evaluation as soon as that training is done.
            upstream = [refs[d] for d in task.depends if d in refs]
            refs[task.name] = task_fn.remote(config, task, *upstream)
        names = list(refs)
        by_name = {t.name: t for t in tasks}
        results = wait_all(
            [refs[n] for n in names],
            on_result=lambda i, value: value,
            on_error=lambda i, error: _failed(by_name[names[i]], failure_reason(error, options.max_retries)),
            desc="reproduce",
            progress=progress,
        )
    statuses.update(zip(names, results))
    return statuses


def reproduce(
    config: ReproduceConfig, resume: bool = False, executor: str = "local", options=None, progress: bool = True
) -> dict[str, Any]:
    """Run the graph; returns ``{"statuses": {task: status}, "report": ...}`` (also in ``<out>/run.json``)."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"Unknown executor {executor!r}; choose local or ray.")
    tasks = _prepare(config, resume)
    if executor == "local":
        statuses = _run_local(config, tasks, resume, progress)
    else:
        from fsad.ray_executor import RayOptions

        statuses = _run_ray(config, tasks, resume, options or RayOptions(), progress)
    try:
        report = write_report(config)
    except ValueError as error:
        report = _failed(tasks[-1], str(error))
    summary = {"executor": executor, "statuses": statuses, "report": report}
    atomic_write_json(Path(config.out) / "run.json", summary)
    return summary


# --------------------------------------------------------------------------- dry run
def measure_step(config: ReproduceConfig, target: str, steps: int = 2) -> dict[str, float]:
    """Seconds of one training step (batch of ``batch_size`` pairs) and of embedding one image, measured.

    The first step is a warm-up and not counted; the images are random (the cost does not depend on them).
    """
    import torch

    from fsad.evaluate import build_method
    from fsad.train import build_model, registration_step_loss
    from fsad.utils import resolve_device, synchronize

    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = resolve_device(config.device)
    tc = train_config(config, target)
    model, _ = build_model(tc)
    model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=tc.lr)
    generator = torch.Generator().manual_seed(0)
    shape = (tc.batch_size, 3, tc.image_size, tc.image_size)
    query = torch.rand(shape, generator=generator).to(device)
    partners = torch.rand((tc.batch_size, 1, *shape[1:]), generator=generator).to(device)
    seconds = []
    for _ in range(steps + 1):
        synchronize(device)
        start = time.perf_counter()
        loss = registration_step_loss(model, query, partners, "pair")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    ec = evaluation_config(config, target)
    ec.checkpoint = None  # no trained model yet; the embedding cost is the same
    method, _ = build_method(ec, device)
    images = torch.rand((4, 3, ec.image_size, ec.image_size), generator=generator).to(device)
    embeds = []
    with torch.no_grad():
        for _ in range(steps + 1):
            synchronize(device)
            start = time.perf_counter()
            method.embed(images)
            synchronize(device)
            embeds.append((time.perf_counter() - start) / len(images))
    return {
        "train_step_s": float(sum(seconds[1:]) / steps),
        "embed_image_s": float(sum(embeds[1:]) / steps),
        "device": str(device),
    }


def dry_run_plan(config: ReproduceConfig, gpus_per_job: float = 1, measure: bool = True) -> dict[str, Any]:
    """The plan: tasks, dependencies and estimated seconds each, from :func:`measure_step` (nothing is written).

    Estimates: training = epochs × steps per epoch (every normal training image of the other categories is a
    query once per epoch) × one measured step; evaluation = (test images + runs × Σk × support views) × one
    measured image embedding (fitting the Gaussian embeds every augmented support view).
    """
    from data_tools.datasets import image_files
    from fsad.augment import AUGMENT_FAMILIES, views_per_image
    from fsad.train import epoch_plan, training_categories

    tasks = plan_tasks(config)
    targets = [t.target for t in tasks if t.kind == "train"]
    step = (
        measure_step(config, targets[0])
        if measure
        else {"train_step_s": 0.0, "embed_image_s": 0.0, "device": "unmeasured"}
    )
    views = views_per_image(AUGMENT_FAMILIES)
    rows = []
    for task in tasks:
        row = {"task": task.name, "depends": task.depends, "seconds": None, "detail": ""}
        if task.kind == "train":
            tc = train_config(config, task.target)
            counts = {
                c: len(image_files(Path(config.data_root) / c / "train" / "good")) for c in training_categories(tc)
            }
            steps = len(epoch_plan(counts, 0, tc.seed, tc.batch_size, tc.partners, tc.max_steps_per_epoch))
            row["seconds"] = config.epochs * steps * step["train_step_s"]
            row["detail"] = f"{config.epochs} epochs x {steps} steps"
        elif task.kind == "evaluate":
            n_test = len([p for p in (Path(config.data_root) / task.target / "test").rglob("*") if p.is_file()])
            images = n_test + config.runs * sum(config.ks) * views
            row["seconds"] = images * step["embed_image_s"]
            row["detail"] = f"{n_test} test images + {config.runs} runs x k {config.ks} x {views} views"
        rows.append(row)
    total = sum(r["seconds"] or 0.0 for r in rows)
    on_gpu = step["device"].startswith("cuda")
    return {
        "tasks": rows,
        "n_train": sum(t.kind == "train" for t in tasks),
        "n_evaluate": sum(t.kind == "evaluate" for t in tasks),
        "measured": step,
        "total_seconds": total,
        "device_hours": total / 3600 * (gpus_per_job if on_gpu else 1),
        "unit": "GPU-hours" if on_gpu else f"{step['device']}-hours (one task at a time)",
    }


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a markdown table (task, dependencies, estimated seconds and hours) and a total line."""
    lines = ["| task | depends on | est. s | est. h | work |", "|---|---|---|---|---|"]
    for row in plan["tasks"]:
        depends = ", ".join(row["depends"]) if len(row["depends"]) <= 1 else f"{len(row['depends'])} evaluations"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        hours = "" if row["seconds"] is None else f"{row['seconds'] / 3600:.2f}"
        lines.append(f"| {row['task']} | {depends or '-'} | {seconds} | {hours} | {row['detail']} |")
    measured = plan["measured"]
    lines.append("")
    lines.append(
        f"{plan['n_train']} training tasks, {plan['n_evaluate']} evaluation tasks, 1 report; "
        f"estimated {plan['device_hours']:.2f} {plan['unit']} in all"
    )
    lines.append(
        f"measured on {measured['device']}: {measured['train_step_s']:.3f} s per training step, "
        f"{measured['embed_image_s'] * 1000:.1f} ms per embedded image"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
