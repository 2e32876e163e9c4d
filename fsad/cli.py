"""Command line: ``python -m fsad COMMAND``. Every command calls the same library functions as the notebooks.

All argparse code of the kit lives in this module and nothing in ``fsad`` imports it (no import cycle):
the library takes config dataclasses, this module turns arguments into them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from fsad.augment import AUGMENT_FAMILIES
from fsad.errors import ConfigError, FsadError

PROG = "python -m fsad"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (not for flags and options without a default); descriptions and
    examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def add_command(
    commands: Any, name: str, help: str, example: str, description: str | None = None, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand with a one-line help, a description and an example (shown by ``--help``)."""
    return commands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
        **kwargs,
    )


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    """Backbone, weights, input size, device and seed: every command that runs a backbone (evaluate, train,
    ablations, reproduce)."""
    from fsad.models.backbone import backbone_names

    parser.add_argument(
        "--backbone",
        choices=("auto", *backbone_names()),
        default="auto",
        help="feature extractor; auto: resnet18 (the paper's) when its ImageNet file is cached, "
        "else mobilenet_v2 (ImageNet weights ship with the kit); the choice is printed and "
        "recorded",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (torchvision's file / the shipped ONNX), random (explicit), or a state-dict PATH",
    )
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (a multiple of 32)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stochastic step")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that builds a RegAD model (evaluate, train, ablations)."""
    from fsad.models.stn import STN_MODES

    add_backbone_options(parser)
    parser.add_argument(
        "--stn-mode",
        choices=sorted(STN_MODES),
        default="rotation_scale",
        help="STN transformation family (RegAD Table 6)",
    )
    parser.add_argument("--no-stn", action="store_true", help="no STN after the stages (the 'S' ablation off)")
    parser.add_argument(
        "--attention", choices=("none", "tam", "mam"), default="none", help="RCM-FSAD attention on the input image"
    )
    parser.add_argument("--dcn", action="store_true", help="RCM-FSAD: modulated deformable conv in the Siamese encoder")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    from data_tools.constants import DATASETS

    parser.add_argument("--data-root", required=True, help="dataset root in MVTec layout (<root>/<category>/...)")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        required=True,
        help="which dataset the root holds (selects the published support manifests)",
    )


def add_options(parser: argparse.ArgumentParser, options_class: type, skip: set[str] | None = None) -> None:
    """One flag per :func:`fsad.config.option` field of ``options_class``: flag, help, type and choices from the
    field's :class:`fsad.config.CliOption`, the default from the field (a bool field defaulting to False is a
    switch), the field name as ``dest`` (so :func:`config_from_args` finds it). Fields named in ``skip`` are
    left out, and the names added are put in it (an option shared by two classes is added once)."""
    from fsad.config import cli_fields, field_default

    skip = set() if skip is None else skip
    for f, cli in cli_fields(options_class):
        if f.name in skip:
            continue
        skip.add(f.name)
        default = field_default(f)
        if default is False and cli.type is None and cli.choices is None:
            parser.add_argument(cli.flag, dest=f.name, action="store_true", help=cli.help)
            continue
        extra: dict[str, Any] = {"type": cli.type} if cli.type is not None else {}
        if cli.choices is not None:
            extra["choices"] = cli.choices
        parser.add_argument(cli.flag, dest=f.name, default=default, help=cli.help, **extra)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Optimiser/pairing options shared by ``train`` and the ablation grids: the fields of
    :class:`fsad.config.TrainingOptions`."""
    from fsad.config import TrainingOptions

    add_options(parser, TrainingOptions)


def resolve_backbone(args: argparse.Namespace) -> None:
    """``--backbone auto`` becomes the backbone actually used (printed; the results record it)."""
    if getattr(args, "backbone", None) == "auto":
        from fsad.weights import default_backbone

        args.backbone = default_backbone()
        reason = (
            "ResNet-18's ImageNet file is cached"
            if args.backbone == "resnet18"
            else "ResNet-18's ImageNet file is not cached; MobileNetV2's ships with the kit"
        )
        print(f"backbone: auto -> {args.backbone} ({reason})")


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where tasks run (batch, reproduce): here one after another, or as Ray tasks (fsad/ray_executor.py)."""
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: one task after another in this process; ray: one Ray task each (needs the distributed extra)",
    )
    parser.add_argument(
        "--address", help="ray: cluster to join (auto, HOST:PORT); default: start a local Ray for the run"
    )
    parser.add_argument("--gpus-per-job", type=float, default=0, help="ray: GPUs each task reserves")
    parser.add_argument(
        "--cpus-per-job",
        type=float,
        help="CPUs each task reserves on Ray (default 1) and its torch threads (default: Ray's 1, "
        "all cores locally); the same value on both executors gives bit-identical numbers",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="ray: re-runs of a task whose worker died before it is recorded as failed",
    )


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """Every registered method's own options (the fields of its ``MethodSpec.options_class``, see
    :func:`add_options`); an option shared by several methods (RegAD's and PaDiM's ``channel_subset``) is added
    once, and :func:`mark_method_options` names the methods it applies to."""
    from fsad.methods import method_names, method_spec

    added: set[str] = set()
    for name in method_names():
        options_class = method_spec(name).options_class
        if options_class is not None:
            add_options(parser, options_class, skip=added)


def mark_method_options(parser: argparse.ArgumentParser) -> None:
    """Append to each method-owned flag's help the methods it applies to (from the method registry)."""
    from fsad.evaluate import METHOD_OPTIONS

    owners = {flag: methods for methods, flags in METHOD_OPTIONS.values() for flag in flags.split(" / ")}
    for action in parser._actions:
        methods = next((owners[o] for o in action.option_strings if o in owners), None)
        if methods and action.help:
            action.help = f"{action.help} [--method {' / '.join(methods)} only]"


def build_parser() -> argparse.ArgumentParser:
    from fsad.checkpoint import CHECKPOINT_FORMAT, LEGACY_FORMATS
    from fsad.methods import method_names, method_spec

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog=f"run '{PROG} COMMAND --help' for a command's options and an example",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = add_command(
        commands,
        "evaluate",
        "few-shot evaluation over categories x k x runs (RegAD, PaDiM-k, PatchCore-k)",
        f"{PROG} evaluate --data-root data/mvtec --dataset mvtec --categories bottle --k 2 4 8 --out runs/bottle.json",
        description="Fit each method on k support images (published manifests), score the test set, write image "
        "AUROC, pixel AUROC, AUPRO and timings per (category, k, run) to a results JSON and a CSV "
        "summary beside it. An existing --out is refused unless --resume or --overwrite is given.",
    )
    add_data_options(evaluate)
    evaluate.add_argument("--categories", nargs="+", required=True, help="categories to evaluate")
    evaluate.add_argument("--k", nargs="+", type=int, default=[2, 4, 8], help="support-set sizes")
    evaluate.add_argument("--runs", type=int, default=10, help="support sets per k (the paper: 10)")
    evaluate.add_argument(
        "--method",
        choices=method_names(),
        default="regad",
        help="; ".join(f"{name} ({method_spec(name).description or name})" for name in method_names()),
    )
    evaluate.add_argument("--manifest", help="support-set manifest JSON (default: committed one, else from the root)")
    evaluate.add_argument("--no-augment", action="store_true", help="no support augmentation (the 'none' row)")
    evaluate.add_argument(
        "--augment",
        nargs="+",
        choices=AUGMENT_FAMILIES + ("all",),
        help=f"augmentation families ({', '.join(AUGMENT_FAMILIES)}, or all); default: all for "
        f"{'/'.join(n for n in method_names() if method_spec(n).augments_by_default)}, none for "
        f"{'/'.join(n for n in method_names() if not method_spec(n).augments_by_default)}",
    )
    add_method_options(evaluate)
    evaluate.add_argument("--out", required=True, help="results JSON (a CSV summary is written beside it)")
    evaluate.add_argument("--resume", action="store_true", help="skip cells already in --out (same options)")
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (without it, or --resume, an existing file is refused)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(evaluate)
    mark_method_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    train = add_command(
        commands,
        "train",
        "leave-one-category-out registration training (SimSiam + STNs, RegAD Sec. 4.1)",
        f"{PROG} train --data-root data/mvtec --dataset mvtec --target bottle --epochs 50 --out runs/train/bottle",
    )
    add_data_options(train)
    train.add_argument("--target", required=True, help="the category left out (evaluate it with the checkpoint)")
    train.add_argument("--train-categories", nargs="+", help="train on these only (default: all but --target)")
    add_train_options(train)
    train.add_argument("--keep-epochs", action="store_true", help="keep epoch_NNN.pt for every epoch")
    train.add_argument("--out", required=True, help="output folder (last.pt, train_log.csv, epochs.csv)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(train)
    train.set_defaults(func=cmd_train)

    _add_ablation(commands)

    checkpoint = add_command(
        commands,
        "checkpoint",
        "checkpoint utilities (convert old checkpoints)",
        f"{PROG} checkpoint convert runs/train/bottle/last.pt runs/train/bottle/last_v2.pt",
    )
    actions = checkpoint.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = add_command(
        actions,
        "convert",
        f"convert a {', '.join(LEGACY_FORMATS)} checkpoint to {CHECKPOINT_FORMAT}",
        f"{PROG} checkpoint convert runs/train/bottle/last.pt runs/train/bottle/last_v2.pt",
        description=f"Convert an older fsad checkpoint ({', '.join(LEGACY_FORMATS)}, a pickled dict) into the safe "
        f"{CHECKPOINT_FORMAT} format that evaluate/train read. OLD is read with "
        "torch.load(weights_only=True), allowing only the NumPy array types v1 stored its RNG state in: "
        "no other pickled object is rebuilt, so a file that needs more is refused, never run. "
        "Convert only files you asked to convert.",
    )
    convert.add_argument("old", help=f"the {', '.join(LEGACY_FORMATS)} checkpoint (e.g. runs/train/weave/last.pt)")
    convert.add_argument("new", help=f"where to write the {CHECKPOINT_FORMAT} checkpoint")
    convert.add_argument("--overwrite", action="store_true", help="replace NEW if it exists")
    convert.set_defaults(func=cmd_checkpoint_convert)

    batch = add_command(
        commands,
        "batch",
        "run notebooks over a parameter grid with papermill",
        f"{PROG} batch notebooks/grids/table5.yaml --resume --set device=cuda",
    )
    batch.add_argument("grid", help="grid YAML (see notebooks/grids/)")
    batch.add_argument("--resume", action="store_true", help="skip executions that already finished")
    batch.add_argument(
        "--runs-dir",
        help="results go to RUNS_DIR/<grid name>/ (default: $FSAD_RUNS_DIR, else runs/ "
        "in a source checkout, else ./runs)",
    )
    # One KEY=VALUE per --set (repeat the flag): nargs="*" would swallow a grid path written after it.
    batch.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter in every execution (value parsed as YAML); repeat for several",
    )
    add_executor_options(batch)
    batch.set_defaults(func=cmd_batch)

    _add_reproduce(commands)

    report = add_command(
        commands,
        "report",
        "markdown tables of results files (methods side by side, paper beside)",
        f"{PROG} report figures/results/mobilenet_v2 --macro",
    )
    report.add_argument("sources", nargs="+", help="results JSON files or folders (searched recursively)")
    report.add_argument(
        "--metrics",
        nargs="+",
        default=["image_auroc", "pixel_auroc", "aupro"],
        choices=("image_auroc", "pixel_auroc", "aupro", "f1_max"),
        help="metric columns",
    )
    report.add_argument("--methods", nargs="+", help="column order (default: as found)")
    report.add_argument("--macro", action="store_true", help="add macro-average rows (for whole datasets)")
    report.set_defaults(func=cmd_report)

    demo = add_command(
        commands,
        "demo",
        "every notebook in smoke mode on the embedded synthetic set (make demo)",
        f"{PROG} demo --resume",
    )
    demo.add_argument(
        "--runs-dir",
        help="outputs go to RUNS_DIR/smoke/ (default: $FSAD_RUNS_DIR, else runs/ in a source checkout, else ./runs)",
    )
    demo.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    demo.add_argument("--resume", action="store_true", help="skip notebooks that already ran")
    demo.set_defaults(func=cmd_demo)

    notebooks = add_command(
        commands,
        "notebooks",
        "copy the tutorials (and grids/) to a folder of your own, outputs cleared",
        f"{PROG} notebooks --student course/",
        description="Copy the kit's notebooks and grids/ to DIR with outputs cleared; --student also drops the "
        "cells tagged 'solution'. An installed kit keeps its notebooks inside the package: run them "
        "from such a copy.",
    )
    notebooks.add_argument("dir", metavar="DIR", help="destination folder (created if missing)")
    notebooks.add_argument("--student", action="store_true", help="leave out the exercise solutions")
    notebooks.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    notebooks.set_defaults(func=cmd_notebooks)
    return parser


def _add_ablation(commands: Any) -> None:
    """``python -m fsad ablation {table5,table6,table7}``."""
    from fsad.ablation import TABLE5_KS, TABLE6_KS

    ablation = add_command(
        commands,
        "ablation",
        "ablation grids: RegAD Table 5 (A/F/S), Table 6 (STN modes), RCM-FSAD Table 7",
        f"{PROG} ablation table5 --data-root data/mvtec --dataset mvtec --out runs/table5",
    )
    tables = ablation.add_subparsers(dest="table", required=True, metavar="TABLE")
    for name, ks, help_text in (
        ("table5", TABLE5_KS, "RegAD Table 5: rows none, A, F, F+S, A+F, A+F+S for each k"),
        ("table6", TABLE6_KS, "RegAD Table 6: A+F with no STN and each of the 9 STN modes"),
        ("table7", TABLE5_KS, "RCM-FSAD Table 7: A+F+S with R18, +TAM, +MAM, +DCNv2, +MAM+DCNv2"),
    ):
        table = add_command(
            tables, name, help_text, f"{PROG} ablation {name} --data-root data/mvtec --dataset mvtec --out runs/{name}"
        )
        add_data_options(table)
        table.add_argument("--categories", nargs="+", help="evaluated (left-out) categories; default: all present")
        table.add_argument("--k", nargs="+", type=int, default=list(ks), help="support-set sizes")
        table.add_argument("--runs", type=int, default=10, help="support sets per k")
        table.add_argument("--manifest", help="support-set manifest JSON (default as in `evaluate`)")
        add_train_options(table)
        table.add_argument("--out", required=True, help="folder for checkpoints/, cells/ and the table files")
        table.add_argument("--resume", action="store_true", help="reuse finished checkpoints and cells in --out")
        table.add_argument("--quiet", action="store_true", help="no progress bars")
        add_model_options(table)
        table.set_defaults(func=cmd_ablation)


def _add_reproduce(commands: Any) -> None:
    """``python -m fsad reproduce``: the paper's protocol as a task graph (fsad/reproduce.py)."""
    parser = add_command(
        commands,
        "reproduce",
        "the paper's full protocol: leave-one-out trainings, evaluations, tables",
        f"{PROG} reproduce --dataset mvtec --data-root data/mvtec_ad --out runs/reproduce_mvtec --executor ray --dry-run",
        description="One leave-one-out training per target category, each target's evaluation as soon as its model "
        "is ready, then the tables beside the paper's numbers. Resumable task by task; --dry-run prints "
        "the plan and its estimated cost.",
    )
    add_data_options(parser)
    parser.add_argument("--targets", nargs="+", help="target categories (default: every category under the root)")
    add_backbone_options(parser)
    parser.add_argument("--epochs", type=int, default=50, help="registration training epochs (paper: 50)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    parser.add_argument("--max-steps-per-epoch", type=int, help="cut each epoch after N batches (smoke runs)")
    parser.add_argument("--k", nargs="+", type=int, default=[2, 4, 8], help="support-set sizes")
    parser.add_argument("--runs", type=int, default=10, help="support sets per k")
    parser.add_argument("--out", help="output folder (default: <runs>/reproduce, see fsad.paths.runs_dir)")
    parser.add_argument("--resume", action="store_true", help="skip tasks already done")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_executor_options(parser)
    parser.set_defaults(func=cmd_reproduce)


# --------------------------------------------------------------------------- arguments -> configs
def config_from_args(config_class: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """A config dataclass from parsed arguments: each field takes the argument of the same name (fields without
    one keep their default), then ``overrides`` for the few whose CLI spelling differs (``--k`` -> ``ks``).
    One mapping for every command, so a new option is a dataclass field plus its ``add_argument``."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}
    return config_class(**{**values, **overrides})


def evaluation_config(args: argparse.Namespace) -> Any:
    """``evaluate``'s arguments as an :class:`fsad.evaluate.EvaluationConfig`."""
    if args.backbone == "auto" and args.checkpoint:
        # A trained checkpoint fixes the backbone: auto takes it from the checkpoint's own metadata.
        from fsad.checkpoint import read_checkpoint

        try:
            args.backbone = read_checkpoint(args.checkpoint)["model_config"]["backbone"]
            print(f"backbone: auto -> {args.backbone} (from --checkpoint)")
        except (FsadError, KeyError, TypeError):
            pass  # evaluate reports what is wrong with the checkpoint, naming the file
    resolve_backbone(args)
    from fsad.evaluate import evaluation_config_class

    # RegAD/PaDiM augment supports by default (the paper's 'A'); PatchCore's bank is plain unless asked,
    # since 22 views multiply its nearest-neighbour search by 22 (MethodSpec.augments_by_default).
    from fsad.methods import method_spec

    if args.no_augment:
        families: Sequence[str] = []
    elif args.augment:
        families = list(AUGMENT_FAMILIES) if "all" in args.augment else list(dict.fromkeys(args.augment))
    else:
        families = list(AUGMENT_FAMILIES) if method_spec(args.method).augments_by_default else []
    stn_mode = None if getattr(args, "no_stn", False) else args.stn_mode
    return config_from_args(
        evaluation_config_class(),  # EvaluationConfig, composed with a later-registered method's options
        args,
        categories=list(args.categories),
        ks=list(args.k),
        stn_mode=stn_mode,
        augment_families=list(families),
    )


def train_config(args: argparse.Namespace) -> Any:
    """``train``'s arguments as a :class:`fsad.train.TrainConfig`."""
    resolve_backbone(args)
    from fsad.train import TrainConfig

    return config_from_args(TrainConfig, args, stn_mode=None if args.no_stn else args.stn_mode)


def ablation_config(args: argparse.Namespace) -> Any:
    """``ablation TABLE``'s arguments as an :class:`fsad.ablation.AblationConfig`."""
    resolve_backbone(args)
    from fsad.ablation import AblationConfig
    from fsad.errors import ConfigError

    if getattr(args, "no_stn", False):
        raise ConfigError(
            "--no-stn does not apply to the ablation grids: they contain the no-STN rows already. "
            "Use --stn-mode to choose the STN of Table 5's 'S' rows."
        )
    return config_from_args(AblationConfig, args, ks=list(args.k))


def reproduce_config(args: argparse.Namespace) -> Any:
    """``reproduce``'s arguments as a :class:`fsad.reproduce.ReproduceConfig`."""
    from fsad.paths import runs_dir
    from fsad.reproduce import ReproduceConfig

    resolve_backbone(args)
    if args.out is None:
        args.out = str(runs_dir() / "reproduce")
    threads = max(1, int(args.cpus_per_job)) if args.cpus_per_job else None
    return config_from_args(ReproduceConfig, args, ks=list(args.k), threads=threads)


# --------------------------------------------------------------------------- commands
def cmd_reproduce(args: argparse.Namespace) -> int:
    from fsad.ray_executor import RayOptions
    from fsad.reproduce import dry_run_plan, format_plan, reproduce

    if args.executor == "local" and args.address:
        raise ConfigError("--address needs --executor ray (the local executor runs everything in this process).")
    config = reproduce_config(args)
    if args.dry_run:
        print(format_plan(dry_run_plan(config, gpus_per_job=args.gpus_per_job or 1)))
        return 0
    options = RayOptions(
        address=args.address, num_cpus=args.cpus_per_job or 1, num_gpus=args.gpus_per_job, max_retries=args.max_retries
    )
    summary = reproduce(config, resume=args.resume, executor=args.executor, options=options, progress=not args.quiet)
    failed = [s for s in summary["statuses"].values() if s["status"] == "failed"]
    for status in failed:
        print(f"failed: {status['task']}: {status['error']}")
    print(
        f"reproduction: {len(summary['statuses'])} tasks, {len(failed)} failed; report {Path(args.out) / 'report.md'}"
        f", tables {Path(args.out) / 'tables'}"
    )
    return 1 if failed or summary["report"]["status"] != "done" else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fsad.evaluate import print_summary, run_evaluation

    document = run_evaluation(evaluation_config(args), progress=not args.quiet)
    print_summary(document)
    print(f"results: {args.out} (summary: {Path(args.out).with_suffix('.csv')})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fsad.checkpoint import read_checkpoint
    from fsad.train import train

    last = train(train_config(args), progress=not args.quiet)
    payload = read_checkpoint(last)
    history = payload["history"]
    print(
        f"trained {payload['epoch']} epochs on {', '.join(payload['train_categories'])} "
        f"(left out {payload['target']}); final mean loss {history[-1]['mean_loss']:.4f}, "
        f"{sum(h['seconds'] for h in history):.1f} s in all"
    )
    print(
        f"checkpoint: {last}  (evaluate with: python -m fsad evaluate --checkpoint {last} "
        f"--categories {payload['target']} ...)"
    )
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from fsad.ablation import format_ablation, table5, table6, table7

    config = ablation_config(args)
    document = {"table5": table5, "table6": table6, "table7": table7}[args.table](config, progress=not args.quiet)
    print(format_ablation(document))
    print(f"results: {Path(config.out) / (args.table + '.json')} and .csv")
    return 0


def cmd_checkpoint_convert(args: argparse.Namespace) -> int:
    from fsad.checkpoint import CHECKPOINT_FORMAT, convert_checkpoint

    new = convert_checkpoint(args.old, args.new, overwrite=args.overwrite)
    print(f"converted {args.old} -> {new} ({CHECKPOINT_FORMAT})")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from fsad.course import copy_notebooks

    written = copy_notebooks(args.dir, student=args.student, force=args.force)
    kind = "student copies (no solutions)" if args.student else "copies"
    print(
        f"{len(written)} notebooks written as {kind} to {Path(args.dir).resolve()}; "
        f"run them with: jupyter lab {args.dir}"
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from fsad.runner import format_statuses, parse_overrides, run_batch

    overrides = parse_overrides(args.set)
    if args.executor == "local" and args.address:
        raise ConfigError("--address needs --executor ray (the local executor runs everything in this process).")
    statuses, csv_path = run_batch(
        args.grid,
        args.runs_dir,
        resume=args.resume,
        overrides=overrides,
        executor=args.executor,
        address=args.address,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job or 1,
        max_retries=args.max_retries,
    )
    print(format_statuses(statuses))
    print(f"collected results: {csv_path}")
    return 1 if any(s["status"] == "failed" for s in statuses) else 0


def cmd_report(args: argparse.Namespace) -> int:
    from fsad.figures import load_cells, markdown_report

    cells = load_cells(args.sources)
    if not cells:
        raise FsadError(f"No evaluation cells found in {args.sources}.")
    print(markdown_report(cells, metrics=args.metrics, methods=args.methods, macro=args.macro), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every notebook in smoke mode on the synthetic set (generated if missing), as a papermill batch."""
    from fsad.paths import notebooks_dir, runs_dir
    from fsad.runner import format_statuses, run_batch
    from fsad.utils import check_output_dir

    root = Path(args.runs_dir).resolve() if args.runs_dir else runs_dir()
    check_output_dir(root, "--runs-dir")  # before any notebook runs
    overrides = {"device": args.device} if args.device != "auto" else None
    statuses, csv_path = run_batch(
        notebooks_dir() / "grids" / "smoke.yaml", root, resume=args.resume, overrides=overrides
    )
    print(format_statuses(statuses))
    print(f"demo: executed notebooks, figures and results are under {root / 'smoke'} (summary: {csv_path})")
    return 1 if any(s["status"] == "failed" for s in statuses) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FsadError as error:
        # Bad input: one clear line, no traceback, exit 2 (argparse's convention for usage errors). Anything
        # else (CUDA out of memory, a shape bug) is not the user's input and keeps its traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
