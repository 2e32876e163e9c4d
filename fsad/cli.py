"""Command line: ``python -m fsad {evaluate,demo,...}``; every command calls the same library functions as the notebooks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fsad.augment import AUGMENT_FAMILIES
from fsad.errors import FsadError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that builds a model (evaluate, train, ablations)."""
    from fsad.models.stn import STN_MODES
    from fsad.models.backbone import backbone_names

    parser.add_argument("--backbone", choices=backbone_names(), default="resnet18",
                        help="feature extractor; resnet18 is the paper's, mobilenet_v2 ships offline ImageNet weights")
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet (torchvision's file / the shipped ONNX), random (explicit), or a state-dict PATH")
    parser.add_argument("--stn-mode", choices=sorted(STN_MODES), default="rotation_scale")
    parser.add_argument("--no-stn", action="store_true", help="no STN after the stages (the 'S' ablation off)")
    parser.add_argument("--attention", choices=("none", "tam", "mam"), default="none",
                        help="RCM-FSAD attention on the input image")
    parser.add_argument("--dcn", action="store_true", help="RCM-FSAD: modulated deformable conv in the Siamese encoder")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int, default=0)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", required=True, help="dataset root in MVTec layout (<root>/<category>/...)")
    parser.add_argument("--dataset", choices=("mvtec", "mpdd", "synthetic"), required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fsad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="few-shot evaluation over categories x k x runs")
    add_data_options(evaluate)
    evaluate.add_argument("--categories", nargs="+", required=True)
    evaluate.add_argument("--k", nargs="+", type=int, default=[2, 4, 8])
    evaluate.add_argument("--runs", type=int, default=10)
    evaluate.add_argument("--method", choices=("regad", "padim", "patchcore"), default="regad")
    evaluate.add_argument("--manifest", help="support-set manifest JSON (default: committed one, else from the root)")
    evaluate.add_argument("--checkpoint", help="registration-trained checkpoint (default: untrained, the 'A' row)")
    evaluate.add_argument("--no-augment", action="store_true", help="no support augmentation (the 'none' row)")
    evaluate.add_argument("--augment", nargs="+", choices=AUGMENT_FAMILIES + ("all",),
                          help=f"augmentation families ({', '.join(AUGMENT_FAMILIES)}, or all); default: all for "
                               "regad/padim, none for patchcore")
    evaluate.add_argument("--channel-subset", type=int, help="PaDiM's random channel subset size d")
    evaluate.add_argument("--coreset-ratio", type=float, help="PatchCore greedy coreset ratio (default: full bank)")
    from fsad.patchcore import BORDERS, IMAGE_SCORES

    evaluate.add_argument("--patchcore-border", choices=BORDERS, default=BORDERS[0],
                          help="PatchCore 3x3 average at the border: zero padding counted (the authors', default) "
                               "or only the existing neighbours")
    evaluate.add_argument("--patchcore-image-score", choices=IMAGE_SCORES, default=IMAGE_SCORES[0],
                          help="PatchCore image score: max of the raw patch scores (the paper's, default), max of "
                               "the blurred map, or Eq. 7 reweighting")
    evaluate.add_argument("--out", required=True, help="results JSON (a CSV summary is written beside it)")
    evaluate.add_argument("--resume", action="store_true", help="skip cells already in --out (same options)")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="replace an existing --out (without it, or --resume, an existing file is refused)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    from fsad.ablation import register_ablation_cli
    from fsad.checkpoint import register_checkpoint_cli
    from fsad.train import register_train_cli

    register_train_cli(commands)
    register_ablation_cli(commands)
    register_checkpoint_cli(commands)

    batch = commands.add_parser("batch", help="run notebooks over a parameter grid with papermill")
    batch.add_argument("grid", help="grid YAML (see notebooks/grids/)")
    batch.add_argument("--resume", action="store_true", help="skip executions that already finished")
    batch.add_argument("--runs-dir", help="results go to RUNS_DIR/<grid name>/ (default: $FSAD_RUNS_DIR, else runs/ "
                       "in a source checkout, else ./runs)")
    batch.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override a parameter in every execution (value parsed as YAML)")
    batch.set_defaults(func=cmd_batch)

    report = commands.add_parser("report", help="markdown tables of results files (methods side by side, paper beside)")
    report.add_argument("sources", nargs="+", help="results JSON files or folders (searched recursively)")
    report.add_argument("--metrics", nargs="+", default=["image_auroc", "pixel_auroc", "aupro"],
                        choices=("image_auroc", "pixel_auroc", "aupro", "f1_max"))
    report.add_argument("--methods", nargs="+", help="column order (default: as found)")
    report.add_argument("--macro", action="store_true", help="add macro-average rows (for whole datasets)")
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser("demo", help="every notebook in smoke mode on the embedded synthetic set (make demo)")
    demo.add_argument("--runs-dir", help="outputs go to RUNS_DIR/smoke/ (default: $FSAD_RUNS_DIR, else runs/ in a source "
                      "checkout, else ./runs)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--resume", action="store_true", help="skip notebooks that already ran")
    demo.set_defaults(func=cmd_demo)

    notebooks = commands.add_parser(
        "notebooks", help="copy the tutorials (and grids/) to a folder of your own, outputs cleared",
        description="Copy the kit's notebooks and grids/ to DIR with outputs cleared; --student also drops the "
                    "cells tagged 'solution'. An installed kit keeps its notebooks inside the package: run them "
                    "from such a copy. Example: python -m fsad notebooks --student course/")
    notebooks.add_argument("dir", metavar="DIR", help="destination folder (created if missing)")
    notebooks.add_argument("--student", action="store_true", help="leave out the exercise solutions")
    notebooks.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    notebooks.set_defaults(func=cmd_notebooks)
    return parser


def cmd_notebooks(args: argparse.Namespace) -> int:
    from fsad.course import copy_notebooks

    written = copy_notebooks(args.dir, student=args.student, force=args.force)
    kind = "student copies (no solutions)" if args.student else "copies"
    print(f"{len(written)} notebooks written as {kind} to {Path(args.dir).resolve()}; "
          f"run them with: jupyter lab {args.dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fsad.evaluate import config_from_args, print_summary, run_evaluation

    document = run_evaluation(config_from_args(args), progress=not args.quiet)
    print_summary(document)
    print(f"results: {args.out} (summary: {Path(args.out).with_suffix('.csv')})")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from fsad.runner import format_statuses, parse_overrides, run_batch

    overrides = parse_overrides(args.set)
    statuses, csv_path = run_batch(args.grid, args.runs_dir, resume=args.resume, overrides=overrides)
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

    check_output_dir(args.runs_dir, "--runs-dir")
    overrides = {"device": args.device} if args.device != "auto" else None
    root = Path(args.runs_dir).resolve() if args.runs_dir else runs_dir()
    statuses, csv_path = run_batch(notebooks_dir() / "grids" / "smoke.yaml", root,
                                   resume=args.resume, overrides=overrides)
    print(format_statuses(statuses))
    print(f"demo: executed notebooks, figures and results are under {root / 'smoke'} "
          f"(summary: {csv_path})")
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
