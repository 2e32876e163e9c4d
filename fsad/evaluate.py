"""Few-shot evaluation: for each category, k and run, fit a method on the manifest's supports and score the test set.

One function, :func:`run_evaluation`, serves the CLI (``python -m fsad evaluate``), the notebooks and
the ablation grids. Each finished (method, category, k, run) cell is appended to the results JSON
atomically, so ``resume=True`` skips what a previous, interrupted run already did.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from data_tools.datasets import check_category, load_supports, load_test_set
from data_tools.manifests import check_manifest_files, default_manifest_path, load_manifest, make_manifest, \
    save_manifest, support_files
from fsad.augment import AUGMENT_FAMILIES
from fsad.methods import METHODS, GaussianMethod, maps_and_image_scores
from fsad.metrics import aupro, f1_max, image_auroc, pixel_auroc
from fsad.results import ResultsFile, format_table, summarise
from fsad.utils import environment_info, resolve_device, seed_everything, sha256_file, synchronize

# The paper's default STN mode for MVTec (Table 6: rotation+scale is best there).
DEFAULT_STN_MODE = "rotation_scale"
# Paper: 224x224 inputs (Sec. 5.1).
DEFAULT_IMAGE_SIZE = 224


@dataclass
class EvaluationConfig:
    """Everything that determines an evaluation's numbers (recorded in the results file)."""

    data_root: str
    dataset: str
    categories: list[str]
    ks: list[int] = field(default_factory=lambda: [2, 4, 8])
    runs: int = 10
    out: str = "results/evaluation.json"
    method: str = "regad"
    backbone: str = "resnet18"
    weights: str = "imagenet"
    checkpoint: str | None = None
    stn_mode: str | None = DEFAULT_STN_MODE
    augment_families: list[str] = field(default_factory=lambda: list(AUGMENT_FAMILIES))
    image_size: int = DEFAULT_IMAGE_SIZE
    manifest: str | None = None
    channel_subset: int | None = None
    coreset_ratio: float | None = None
    # PatchCore only (fsad.patchcore.BORDERS / IMAGE_SCORES; defaults: the authors' definitions).
    patchcore_border: str = "include_padding"
    patchcore_image_score: str = "patch_max"
    attention: str = "none"
    dcn: bool = False
    device: str = "auto"
    seed: int = 0
    resume: bool = False

    def resume_key(self) -> dict[str, Any]:
        """The options a resumed file must share with this run (everything but the cell list)."""
        key = dataclasses.asdict(self)
        for name in ("categories", "ks", "runs", "out", "resume", "device", "method"):
            key.pop(name)
        if self.method != "patchcore":  # files of the other methods resume as before these options existed
            key.pop("patchcore_border")
            key.pop("patchcore_image_score")
        return key


def _validate(config: EvaluationConfig) -> None:
    if config.method not in METHODS:
        raise ValueError(f"Unknown method {config.method!r}; choose one of {', '.join(METHODS)}.")
    if config.runs < 1:
        raise ValueError(f"--runs must be at least 1 (got {config.runs}).")
    if not config.categories:
        raise ValueError("No categories given: pass --categories C1 C2 ... (see `python -m data_tools verify`).")
    bad_ks = [k for k in config.ks if k < 1]
    if bad_ks:
        raise ValueError(f"k must be a positive number of supports (got {bad_ks}).")
    from fsad.patchcore import BORDERS, IMAGE_SCORES

    if config.patchcore_border not in BORDERS:
        raise ValueError(f"Unknown --patchcore-border {config.patchcore_border!r}; choose one of {', '.join(BORDERS)}.")
    if config.patchcore_image_score not in IMAGE_SCORES:
        raise ValueError(f"Unknown --patchcore-image-score {config.patchcore_image_score!r}; "
                         f"choose one of {', '.join(IMAGE_SCORES)}.")
    if config.checkpoint and config.method != "regad":
        raise ValueError(f"--checkpoint applies to --method regad only (got --method {config.method}).")


def resolve_manifest(config: EvaluationConfig) -> tuple[dict[str, Any], str]:
    """The support manifest: the one given, else the committed one for the dataset when its files exist
    under the root, else one generated from the root with the config's seed (saved beside the results)."""
    if config.manifest:
        manifest = load_manifest(config.manifest)
        check_manifest_files(manifest, config.data_root, config.categories)
        return manifest, str(config.manifest)
    committed = default_manifest_path(config.dataset)
    if committed is not None and Path(committed).is_file():
        manifest = load_manifest(committed)
        try:
            if all(c in manifest["categories"] for c in config.categories):
                check_manifest_files(manifest, config.data_root, config.categories)
                return manifest, str(committed)
        except ValueError:
            pass  # the committed manifest names files this root does not have (e.g. a re-split subset)
    manifest = make_manifest(root=config.data_root, dataset=config.dataset, categories=config.categories,
                             ks=sorted(set(config.ks)), runs=config.runs, seed=config.seed)
    path = Path(config.out).with_suffix(".manifest.json")
    save_manifest(manifest, path)
    return manifest, str(path)


def _check_ks(manifest: dict[str, Any], config: EvaluationConfig) -> None:
    problems = []
    for category in config.categories:
        entry = manifest["categories"].get(category)
        if entry is None:
            problems.append(f"{category}: not in the manifest")
            continue
        pool = entry["n_train_good"]
        for k in config.ks:
            if k > pool:
                problems.append(f"{category}: k={k} but only {pool} train/good images")
            elif str(k) not in entry["supports"]:
                problems.append(f"{category}: the manifest has no support sets for k={k}")
            elif len(entry["supports"][str(k)]) < config.runs:
                problems.append(f"{category}: the manifest has {len(entry['supports'][str(k)])} runs for k={k}, "
                                f"{config.runs} requested")
    if problems:
        raise ValueError("Cannot draw the requested support sets: " + "; ".join(problems) +
                         ". Lower --k/--runs for these categories, or pass a --manifest that has them.")


def build_method(config: EvaluationConfig, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """Build the scoring method and return it with the provenance of its weights."""
    from fsad.models.regad import RegADModel
    from fsad.weights import load_backbone_weights

    provenance: dict[str, Any] = {}
    if config.checkpoint:
        from fsad.checkpoint import check_compatible, load_model, read_checkpoint

        payload = read_checkpoint(config.checkpoint)
        check_compatible(payload, config.checkpoint, backbone=config.backbone, stn_mode=config.stn_mode,
                         attention=config.attention, dcn=config.dcn, image_size=config.image_size)
        # Leave-one-out: a checkpoint has seen every category of its dataset but its target, so on the same
        # dataset it may score only that target (another dataset is entirely unseen and fine).
        if payload.get("dataset") == config.dataset and list(config.categories) != [payload.get("target")]:
            raise ValueError(f"Checkpoint {config.checkpoint} was trained on {config.dataset} leaving out "
                             f"{payload.get('target')!r}; evaluating it on {config.categories} would score categories "
                             "it trained on. Evaluate each category with the checkpoint that left it out "
                             f"(--categories {payload.get('target')}).")
        model = load_model(payload)
        provenance["checkpoint"] = {"path": str(config.checkpoint), "sha256": sha256_file(config.checkpoint),
                                    "target": payload.get("target"), "epoch": payload.get("epoch")}
        provenance["weights"] = payload.get("weights")
    else:
        state_dict, info = load_backbone_weights(config.backbone, config.weights, seed=config.seed)
        stn_mode = None if config.method in ("padim", "patchcore") else config.stn_mode
        model = RegADModel(backbone=config.backbone, image_size=config.image_size, stn_mode=stn_mode,
                           attention=config.attention, dcn=config.dcn, backbone_state_dict=state_dict)
        provenance["weights"] = info.to_dict()
    model = model.to(device).eval()

    if config.method == "patchcore":
        from fsad.patchcore import PatchCoreMethod

        method = PatchCoreMethod(model.backbone, augment_families=config.augment_families,
                                 coreset_ratio=config.coreset_ratio, seed=config.seed,
                                 image_score=config.patchcore_image_score, border=config.patchcore_border)
    else:
        method = GaussianMethod(model, augment_families=config.augment_families,
                                channel_subset=config.channel_subset, seed=config.seed, name=config.method)
    return method, provenance


def _timed(device: torch.device, fn, *args):
    synchronize(device)
    start = time.perf_counter()
    value = fn(*args)
    synchronize(device)
    return value, time.perf_counter() - start


def run_evaluation(config: EvaluationConfig, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``config.method`` over categories × k × runs and write the results JSON/CSV.

    Returns:
        The results document (also written to ``config.out``).
    """
    _validate(config)
    device = resolve_device(config.device)
    for category in config.categories:
        check_category(config.data_root, config.dataset, category)
    manifest, manifest_path = resolve_manifest(config)
    _check_ks(manifest, config)

    seed_everything(config.seed)
    method, provenance = build_method(config, device)
    header = {
        "config": dataclasses.asdict(config),
        "resume_key": config.resume_key(),
        "method_options": method.describe(),
        "manifest": {"path": manifest_path, "version": manifest.get("version"), "seed": manifest.get("seed")},
        "environment": environment_info(device),
        **provenance,
    }
    results = ResultsFile(config.out, header, resume=config.resume)
    done = results.done()

    todo = [(c, k, r) for c in config.categories for k in config.ks for r in range(config.runs)
            if (config.method, c, k, r) not in done]
    bar = tqdm(total=len(todo), desc=f"{config.method} evaluation", disable=not progress)
    for category in config.categories:
        cells = [(k, r) for (c, k, r) in todo if c == category]
        if not cells:
            continue
        test = load_test_set(config.data_root, category, config.image_size, config.dataset)
        labels, masks, has_masks = test["labels"], test["masks"], test["has_masks"]
        images = test["images"].to(device)
        test_features, embed_seconds = _timed(device, method.embed, images)
        for k, run in cells:
            files = support_files(manifest, category, k, run)
            supports = load_supports(config.data_root, category, files, config.image_size).to(device)
            seed_everything(config.seed + run)
            _, adaptation_s = _timed(device, method.fit, supports)
            (maps_tensor, scores_tensor), score_s = _timed(device, maps_and_image_scores, method, test_features,
                                                           config.image_size)
            maps = maps_tensor.cpu().numpy()
            scores = scores_tensor.cpu().numpy()
            cell = {
                "method": config.method, "category": category, "k": k, "run": run,
                "support_files": files,
                "n_test": int(len(labels)), "n_defective": int(labels.sum()),
                "image_auroc": image_auroc(labels, scores),
                "f1_max": f1_max(labels, scores),
                "pixel_auroc": pixel_auroc(masks, maps) if has_masks else None,
                "aupro": aupro(masks, maps) if has_masks else None,
                "adaptation_s": adaptation_s,
                "inference_images_per_s": len(labels) / (embed_seconds + score_s),
            }
            results.add(cell)
            bar.update(1)
            bar.set_postfix(category=category, k=k, auroc=f"{cell['image_auroc']:.3f}")
    bar.close()
    results.write()
    return results.document()


def print_summary(document: dict[str, Any]) -> str:
    table = format_table(summarise(document["cells"]))
    print(table)
    return table


def config_from_args(args: Any) -> EvaluationConfig:
    # RegAD/PaDiM augment supports by default (the paper's 'A'); PatchCore's bank is plain unless asked,
    # since 22 views multiply its nearest-neighbour search by 22.
    if args.no_augment:
        families: Sequence[str] = []
    elif args.augment:
        families = list(AUGMENT_FAMILIES) if "all" in args.augment else list(dict.fromkeys(args.augment))
    else:
        families = [] if args.method == "patchcore" else list(AUGMENT_FAMILIES)
    stn_mode = None if getattr(args, "no_stn", False) else args.stn_mode
    return EvaluationConfig(
        data_root=args.data_root, dataset=args.dataset, categories=list(args.categories), ks=list(args.k),
        runs=args.runs, out=args.out, method=args.method, backbone=args.backbone, weights=args.weights,
        checkpoint=args.checkpoint, stn_mode=stn_mode, augment_families=list(families),
        image_size=args.image_size, manifest=args.manifest, channel_subset=args.channel_subset,
        coreset_ratio=args.coreset_ratio,
        patchcore_border=getattr(args, "patchcore_border", "include_padding"),
        patchcore_image_score=getattr(args, "patchcore_image_score", "patch_max"), attention=args.attention, dcn=args.dcn, device=args.device,
        seed=args.seed, resume=args.resume,
    )
