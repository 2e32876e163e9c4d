"""Few-shot evaluation: for each category, k and run, fit a method on the manifest's supports and score the test set.

One function, :func:`run_evaluation`, serves the CLI (``python -m fsad evaluate``), the notebooks and
the ablation grids. Each finished (method, category, k, run) cell is appended to the results JSON
atomically, so ``resume=True`` skips what a previous, interrupted run already did.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from tqdm.auto import tqdm

from data_tools.datasets import check_category, load_test_set
from data_tools.manifests import (
    check_manifest_files,
    default_manifest_path,
    load_manifest,
    make_manifest,
    save_manifest,
)
from fsad.config import (
    DataOptions,
    ModelOptions,
    ProtocolOptions,
    RunOptions,
    field_default,
)
from fsad.errors import CheckpointError, ConfigError, OutputExistsError
from fsad.methods import FewShotMethod, find_method_spec, method_names, method_spec
from fsad.methods.patchcore import PatchCoreOptions
from fsad.methods.regad import RegADOptions
from fsad.results import ResultsFile, check_resume, format_table, read_results_for_resume, summarise
from fsad.scoring import cell_metrics, fit_and_score, load_run_supports, timed
from fsad.utils import check_output_file, environment_info, resolve_device, seed_everything, sha256_file


@dataclass(kw_only=True)
class EvaluationConfig(RunOptions, PatchCoreOptions, RegADOptions, ModelOptions, ProtocolOptions, DataOptions):
    """Everything that determines an evaluation's numbers (recorded in the results file).

    Composed of :mod:`fsad.config`'s groups (data, protocol, model, run) and the built-in methods' own options
    (:class:`~fsad.methods.regad.RegADOptions`, :class:`~fsad.methods.patchcore.PatchCoreOptions`), all flat:
    ``config.coreset_ratio``; :func:`dataclasses.asdict` gives the results file's ``config``.
    """

    out: str = "results/evaluation.json"
    method: str = "regad"
    overwrite: bool = False

    def __getattr__(self, name: str) -> Any:
        """An option of a method registered later (not a field of this class) reads as its default, so that
        method's ``build`` works with any EvaluationConfig (a notebook's, the widgets'); a config of
        :func:`evaluation_config_class` holds it as a field (the CLI's)."""
        if not name.startswith("_"):
            for spec_name in method_names():
                options_class = method_spec(spec_name).options_class
                fields = {f.name: f for f in dataclasses.fields(options_class)} if options_class else {}
                if name in fields:
                    return field_default(fields[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def resume_key(self) -> dict[str, Any]:
        """The options a resumed file must share with this run (everything but the cell list and how it runs).

        The method is part of it: resuming with another ``--method`` into the same file would mix methods
        under a header that describes one.
        """
        key = dataclasses.asdict(self)
        for name in ("categories", "ks", "runs", "out", "resume", "overwrite", "device"):
            key.pop(name)
        spec = find_method_spec(self.method)
        owned = spec.option_fields if spec is not None else ()
        # Files of the methods without them resume as before these options existed; the options of a method
        # registered later (a config of evaluation_config_class()) likewise stay out of other methods' keys.
        late = (*_LATE_OPTIONS, *(name for name in key if name not in _BUILT_IN_FIELDS))
        for name in late:
            if name not in owned:
                key.pop(name, None)
        return key


# Options added after results files existed: only a method that owns them puts them in its resume key.
_LATE_OPTIONS = ("patchcore_border", "patchcore_image_score")
_BUILT_IN_FIELDS = frozenset(f.name for f in dataclasses.fields(EvaluationConfig))
_COMPOSED: dict[tuple[type, ...], type] = {}


def evaluation_config_class() -> type[EvaluationConfig]:
    """:class:`EvaluationConfig`, or, when a registered method's options class is not among its bases (a method
    registered by a test or a plugin), a subclass composed with those classes, so their options are fields too.

    Example:
        >>> evaluation_config_class() is EvaluationConfig  # the built-in methods only
        True
    """
    extra = tuple(
        dict.fromkeys(
            cls
            for cls in (method_spec(name).options_class for name in method_names())
            if cls is not None and not issubclass(EvaluationConfig, cls)
        )
    )
    if not extra:
        return EvaluationConfig
    if extra not in _COMPOSED:
        _COMPOSED[extra] = dataclass(kw_only=True)(type("EvaluationConfig", (EvaluationConfig, *extra), {}))
    return _COMPOSED[extra]


class _MethodOptions(Mapping[str, tuple[tuple[str, ...], str]]):
    """Read-only view of the registry's options: config field -> (methods that own it, CLI flag), in
    registration order. Computed on access, so a method registered later (a test's toy) is included."""

    def _table(self) -> dict[str, tuple[tuple[str, ...], str]]:
        table: dict[str, tuple[tuple[str, ...], str]] = {}
        for name in method_names():
            for field_name, flag in method_spec(name).options:
                owners = table[field_name][0] if field_name in table else ()
                table[field_name] = ((*owners, name), flag)
        return table

    def __getitem__(self, key: str) -> tuple[tuple[str, ...], str]:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


#: Options that belong to some methods only: config field -> (methods it applies to, CLI flag), built from the
#: :class:`fsad.methods.MethodSpec` ``options`` of the registered methods (their ``options_class`` fields and
#: ``shared_options``). A field that differs from its default under another method is refused (naming the
#: method it belongs to), never silently ignored and recorded as if it had been used.
METHOD_OPTIONS: Mapping[str, tuple[tuple[str, ...], str]] = _MethodOptions()
# Values a method that lacks the option runs with anyway, so they are not refused: PaDiM and PatchCore have no STN.
_INERT_VALUES: dict[str, tuple[Any, ...]] = {"stn_mode": (None,)}


def _option_field(name: str) -> dataclasses.Field:
    """The declaration of a method option: a field of EvaluationConfig or of a registered method's options class."""
    return {f.name: f for f in dataclasses.fields(evaluation_config_class())}[name]


def _default(name: str) -> Any:
    return field_default(_option_field(name))


def check_method_options(config: EvaluationConfig) -> None:
    """Refuse options that do not apply to ``config.method`` (see :data:`METHOD_OPTIONS`).

    Raises:
        ConfigError: e.g. ``--method patchcore --attention mam``: "--attention applies to --method regad only".
    """
    for name, (methods, flag) in METHOD_OPTIONS.items():
        default = _default(name)
        value = getattr(config, name)
        if config.method in methods or value == default or value in _INERT_VALUES.get(name, ()):
            continue
        raise ConfigError(
            f"{flag} {value!r} applies to --method {' / '.join(methods)} only, not to --method "
            f"{config.method}; drop {flag.split(' / ')[0]} or choose --method {methods[0]}."
        )


def check_option_values(config: EvaluationConfig) -> None:
    """Refuse a method option outside its declared ``choices`` or failing its ``valid`` test (its
    :class:`fsad.config.CliOption`; argparse checks only type and choices, and a config built in Python not even
    those).

    Raises:
        ConfigError: e.g. "Unknown --patchcore-border 'x'; choose one of include_padding, exclude_padding." or
            "--coreset-ratio must be in (0, 1], e.g. 0.1 keeps 10% of the bank (got 2.0)."
    """
    for f in dataclasses.fields(config):
        cli = f.metadata.get("cli")
        problem = cli.problem(getattr(config, f.name)) if cli is not None else None
        if problem:
            raise ConfigError(problem)


def options_for_method(config: EvaluationConfig, method: str) -> EvaluationConfig:
    """``config`` for ``method``, with the options that do not apply to it reset to their defaults.

    Example:
        >>> base = EvaluationConfig(data_root="d", dataset="mvtec", categories=["bottle"], attention="mam")
        >>> options_for_method(base, "patchcore").attention
        'none'
    """
    reset = {
        name: _default(name)
        for name, (methods, _) in METHOD_OPTIONS.items()
        if method not in methods
        and name in {f.name for f in dataclasses.fields(config)}
        and getattr(config, name) not in (_default(name), *_INERT_VALUES.get(name, ()))
    }
    return dataclasses.replace(config, method=method, **reset)


def _validate(config: EvaluationConfig) -> None:
    from fsad.models.regad import IMAGE_SIZE_MULTIPLE

    method_spec(config.method)  # ConfigError naming the registered methods
    if config.runs < 1:
        raise ConfigError(f"--runs must be at least 1 (got {config.runs}).")
    if not config.categories:
        raise ConfigError("No categories given: pass --categories C1 C2 ... (see `python -m data_tools verify`).")
    bad_ks = [k for k in config.ks if k < 1]
    if bad_ks:
        raise ConfigError(f"--k must be a positive number of supports (got {bad_ks}).")
    size = config.image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < IMAGE_SIZE_MULTIPLE or size % IMAGE_SIZE_MULTIPLE:
        raise ConfigError(
            f"--image-size must be a multiple of {IMAGE_SIZE_MULTIPLE} (e.g. 224, the paper's size, "
            f"or 64 for quick tests); got {size!r}."
        )
    check_option_values(config)
    if config.resume and config.overwrite:
        raise ConfigError(
            "--resume and --overwrite exclude each other: --resume keeps the cells in --out, "
            "--overwrite replaces the file."
        )
    check_method_options(config)


def _deduplicated(config: EvaluationConfig) -> EvaluationConfig:
    """The same category or k given twice would compute the same cells again: keep the first of each."""
    categories, ks = list(dict.fromkeys(config.categories)), list(dict.fromkeys(config.ks))
    if len(categories) == len(config.categories) and len(ks) == len(config.ks):
        return config
    warnings.warn(f"duplicate categories or k removed: evaluating categories {categories}, k {ks}", stacklevel=3)
    return dataclasses.replace(config, categories=categories, ks=ks)


def check_output(config: EvaluationConfig) -> None:
    """Before any work: ``--out`` is writable, and an existing results file is resumed or explicitly overwritten.

    Raises:
        OutputError: ``--out`` is a folder, under a file, or not writable; with ``--resume``, an existing file
            that is not a results file, or one written with another configuration (the differing keys named).
        OutputExistsError: ``--out`` exists and neither ``--resume`` nor ``--overwrite`` was given.
    """
    out = check_output_file(config.out, "--out")
    if not out.exists():
        return
    if config.resume:
        check_resume(read_results_for_resume(out), config.resume_key(), out)
    elif not config.overwrite:
        raise OutputExistsError(
            f"--out {out} already exists (an earlier evaluation's results): pass --resume to "
            "compute only its missing cells, --overwrite to replace it, or choose another --out."
        )


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
    manifest = make_manifest(
        root=config.data_root,
        dataset=config.dataset,
        categories=config.categories,
        ks=sorted(set(config.ks)),
        runs=config.runs,
        seed=config.seed,
    )
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
                problems.append(
                    f"{category}: the manifest has {len(entry['supports'][str(k)])} runs for k={k}, "
                    f"{config.runs} requested"
                )
    if problems:
        raise ConfigError(
            "Cannot draw the requested support sets: "
            + "; ".join(problems)
            + ". Lower --k/--runs for these categories, or pass a --manifest that has them."
        )


def build_method(config: EvaluationConfig, device: torch.device) -> tuple[FewShotMethod, dict[str, Any]]:
    """Build the scoring method (its :class:`fsad.methods.MethodSpec` ``build`` on the model built here) and
    return it with the provenance of its weights."""
    from fsad.models.regad import RegADModel
    from fsad.weights import load_backbone_weights

    spec = method_spec(config.method)
    provenance: dict[str, Any] = {}
    if config.checkpoint:
        from fsad.checkpoint import check_compatible, load_model, read_checkpoint

        payload = read_checkpoint(config.checkpoint)
        check_compatible(
            payload,
            config.checkpoint,
            backbone=config.backbone,
            stn_mode=config.stn_mode,
            attention=config.attention,
            dcn=config.dcn,
            image_size=config.image_size,
        )
        # Leave-one-out: a checkpoint has seen every category of its dataset but its target, so on the same
        # dataset it may score only that target (another dataset is entirely unseen and fine).
        if payload.get("dataset") == config.dataset and list(config.categories) != [payload.get("target")]:
            raise CheckpointError(
                f"Checkpoint {config.checkpoint} was trained on {config.dataset} leaving out "
                f"{payload.get('target')!r}; evaluating it on {config.categories} would score "
                "categories it trained on. Evaluate each category with the checkpoint that left it out "
                f"(--categories {payload.get('target')})."
            )
        model = load_model(payload, config.checkpoint)
        provenance["checkpoint"] = {
            "path": str(config.checkpoint),
            "sha256": sha256_file(config.checkpoint),
            "target": payload.get("target"),
            "epoch": payload.get("epoch"),
        }
        provenance["weights"] = payload.get("weights")
    else:
        state_dict, info = load_backbone_weights(config.backbone, config.weights, seed=config.seed)
        stn_mode = config.stn_mode if spec.uses_stn else None
        model = RegADModel(
            backbone=config.backbone,
            image_size=config.image_size,
            stn_mode=stn_mode,
            attention=config.attention,
            dcn=config.dcn,
            backbone_state_dict=state_dict,
        )
        provenance["weights"] = info.to_dict()
    model = model.to(device).eval()
    channels = getattr(model, "embed_channels", None)
    if config.channel_subset is not None and isinstance(channels, int) and config.channel_subset > channels:
        raise ConfigError(
            f"--channel-subset {config.channel_subset} is larger than the {channels} feature channels "
            f"of {config.backbone}; choose at most {channels}."
        )

    method = spec.build(config, model)
    if not isinstance(method, FewShotMethod):
        raise TypeError(
            f"Method {config.method!r}: its MethodSpec.build returned {type(method).__name__}, which lacks "
            "the fsad.methods.FewShotMethod methods (name, embed, fit, score_features, describe)."
        )
    return method, provenance


def run_evaluation(config: EvaluationConfig, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``config.method`` over categories × k × runs and write the results JSON/CSV.

    Returns:
        The results document (also written to ``config.out``).
    """
    _validate(config)
    config = _deduplicated(config)
    check_output(config)
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

    todo = [
        (c, k, r)
        for c in config.categories
        for k in config.ks
        for r in range(config.runs)
        if (config.method, c, k, r) not in done
    ]
    bar = tqdm(total=len(todo), desc=f"{config.method} evaluation", disable=not progress)
    for category in config.categories:
        cells = [(k, r) for (c, k, r) in todo if c == category]
        if not cells:
            continue
        test = load_test_set(config.data_root, category, config.image_size, config.dataset)
        labels, masks, has_masks = test["labels"], test["masks"], test["has_masks"]
        images = test["images"].to(device)
        test_features, embed_seconds = timed(device, method.embed, images)
        for k, run in cells:
            files, supports = load_run_supports(manifest, config.data_root, category, k, run, config.image_size, device)
            scored = fit_and_score(method, supports, test_features, config.image_size, config.seed + run, device)
            cell = {
                "method": config.method,
                "category": category,
                "k": k,
                "run": run,
                "support_files": files,
                "n_test": int(len(labels)),
                "n_defective": int(labels.sum()),
                **cell_metrics(labels, scored.scores, scored.maps, masks if has_masks else None),
                "adaptation_s": scored.adaptation_s,
                "inference_images_per_s": len(labels) / (embed_seconds + scored.score_s),
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
