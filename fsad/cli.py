"""Command line: ``python -m fsad {evaluate,demo,...}``; every command calls the same library functions as the notebooks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fsad.augment import AUGMENT_FAMILIES

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where tasks run (batch, reproduce): here one after another, or as Ray tasks (fsad/ray_executor.py)."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: one task after another in this process; ray: one Ray task each (needs the "
                             "distributed extra)")
    parser.add_argument("--address", help="ray: cluster to join (auto, HOST:PORT); default: start a local Ray "
                                          "for the run")
    parser.add_argument("--gpus-per-job", type=float, default=0, help="ray: GPUs each task reserves")
    parser.add_argument("--cpus-per-job", type=float,
                        help="CPUs each task reserves on Ray (default 1) and its torch threads (default: Ray's 1, "
                             "all cores locally); the same value on both executors gives bit-identical numbers")
    parser.add_argument("--max-retries", type=int, default=2,
                        help="ray: re-runs of a task whose worker died before it is recorded as failed")


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
    evaluate.add_argument("--out", required=True, help="results JSON (a CSV summary is written beside it)")
    evaluate.add_argument("--resume", action="store_true", help="skip cells already in --out")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    from fsad.ablation import register_ablation_cli
    from fsad.train import register_train_cli

    register_train_cli(commands)
    register_ablation_cli(commands)

    batch = commands.add_parser("batch", help="run notebooks over a parameter grid with papermill")
    batch.add_argument("grid", help="grid YAML (see notebooks/grids/)")
    batch.add_argument("--resume", action="store_true", help="skip executions that already finished")
    batch.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="results go to RUNS_DIR/<grid name>/")
    # One KEY=VALUE per --set (repeat the flag): nargs="*" would swallow a grid path written after it.
    batch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter in every execution (value parsed as YAML); repeat for several")
    add_executor_options(batch)
    batch.set_defaults(func=cmd_batch)

    from fsad.reproduce import register_reproduce_cli

    register_reproduce_cli(commands)

    report = commands.add_parser("report", help="markdown tables of results files (methods side by side, paper beside)")
    report.add_argument("sources", nargs="+", help="results JSON files or folders (searched recursively)")
    report.add_argument("--metrics", nargs="+", default=["image_auroc", "pixel_auroc", "aupro"],
                        choices=("image_auroc", "pixel_auroc", "aupro", "f1_max"))
    report.add_argument("--methods", nargs="+", help="column order (default: as found)")
    report.add_argument("--macro", action="store_true", help="add macro-average rows (for whole datasets)")
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser("demo", help="every notebook in smoke mode on the embedded synthetic set (make demo)")
    demo.add_argument("--runs-dir", default=str(REPO_ROOT / "runs"), help="outputs go to RUNS_DIR/smoke/")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--resume", action="store_true", help="skip notebooks that already ran")
    demo.set_defaults(func=cmd_demo)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fsad.evaluate import config_from_args, print_summary, run_evaluation

    document = run_evaluation(config_from_args(args), progress=not args.quiet)
    print_summary(document)
    print(f"results: {args.out} (summary: {Path(args.out).with_suffix('.csv')})")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    import yaml

    from fsad.runner import format_statuses, run_batch

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    if args.executor == "local" and args.address:
        raise ValueError("--address needs --executor ray (the local executor runs everything in this process).")
    statuses, csv_path = run_batch(args.grid, args.runs_dir, resume=args.resume, overrides=overrides,
                                   executor=args.executor, address=args.address, gpus_per_job=args.gpus_per_job,
                                   cpus_per_job=args.cpus_per_job or 1, max_retries=args.max_retries)
    print(format_statuses(statuses))
    print(f"collected results: {csv_path}")
    return 1 if any(s["status"] == "failed" for s in statuses) else 0


def cmd_report(args: argparse.Namespace) -> int:
    from fsad.figures import load_cells, markdown_report

    cells = load_cells(args.sources)
    if not cells:
        raise ValueError(f"No evaluation cells found in {args.sources}.")
    print(markdown_report(cells, metrics=args.metrics, methods=args.methods, macro=args.macro), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every notebook in smoke mode on the synthetic set (generated if missing), as a papermill batch."""
    from fsad.runner import format_statuses, run_batch

    overrides = {"device": args.device} if args.device != "auto" else None
    statuses, csv_path = run_batch(REPO_ROOT / "notebooks" / "grids" / "smoke.yaml", args.runs_dir,
                                   resume=args.resume, overrides=overrides)
    print(format_statuses(statuses))
    print(f"demo: executed notebooks, figures and results are under {Path(args.runs_dir) / 'smoke'} "
          f"(summary: {csv_path})")
    return 1 if any(s["status"] == "failed" for s in statuses) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Bad input: one clear line, no traceback, exit 2 (argparse's convention for usage errors).
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
