"""Leave-one-category-out feature-registration training (RegAD's aggregated training, the 'F' of Table 5).

The model learns to *register*: two normal images of the same category go through the shared backbone,
the per-stage STNs and the SimSiam heads, and the symmetric negative cosine loss pulls their layer-3
registered features together (``fsad.models.siamese.registration_loss``). Training uses the normal
``train/good`` images of every category under the root **except the target**, which is never read: not
its images, not its test split, and no model selection on it (the checkpoint kept is the last epoch).

What the authors' public code does (github.com/MediaBrain-SJTU/RegAD, ``train.py`` and
``datasets/mvtec.py``), and what the kit does instead:

* **Batches.** Each batch holds up to 32 queries of *one* category; each query gets ``shot`` supports drawn
  at random (with replacement, never the query itself) from the same category's ``train/good``. The kit
  builds batches the same way (category-homogeneous, so the heads' BatchNorm sees one category per batch),
  but draws a query's partners *without* replacement, as the few-shot protocol's support sets are drawn.
* **Pairing.** The authors average the k supports' layer-3 *registered* features (the STN-3 output, in the
  warped frame, before the encoder) and compare the query with that mean (``--pairing mean-of-k``,
  k = their ``--shot``, default 2, so :data:`DEFAULT_SUPPORT_K` = 2). The paper's text describes plain pairs
  of two images of a category (``--pairing pair``, the kit's default; each query gets one partner).
* **Augmentation of training pairs:** none in the authors' code (their loader only resizes), none here.
* **Optimiser:** SGD, momentum 0.9, lr 1e-4, no weight decay (the authors pass none; so
  :data:`DEFAULT_WEIGHT_DECAY` = 0), 50 epochs, cosine decay of the lr over the run. The authors set
  ``lr0·½(1+cos(π·e/E))`` *before* epoch e = 1..E, so their first epoch already runs decayed and their last
  at lr 0; the kit uses ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=E)`` stepped after each epoch,
  i.e. the same curve shifted by one epoch (epoch 0 at lr0, no epoch wasted at lr 0).
* **Backbone.** The authors' optimiser holds the whole ResNet-18 (``STN.parameters()`` includes conv1 …
  layer3, BatchNorm in train mode), so their backbone is fine-tuned too. The kit freezes it by default
  (``model.freeze_backbone()``, BatchNorm statistics included) and trains the STNs, the Siamese heads and,
  when enabled, the RCM-FSAD attention/DCN. Why: the normal model at test time is a Gaussian over the
  *backbone's* features of a category never seen in training; keeping the ImageNet features fixed keeps
  that density estimate on the features the 'A' row uses, so the ablation measures what registration
  adds, and it removes the backbone's weight gradients (faster on a CPU). ``--train-backbone`` restores
  the authors' behaviour.
* **Model selection.** The authors evaluate the *target's test set* after every epoch and keep the best
  epoch (an oracle that leaks the test set into model selection). The kit keeps the last epoch.

Resume: every epoch writes ``<out>/last.pt`` atomically (model, optimiser, scheduler, RNG states, config,
history). The order of each epoch's data comes from ``numpy.random.default_rng([seed, epoch])``, not from a
running RNG, so a run killed at any point and resumed with ``--resume`` reaches bit-identical weights to an
uninterrupted one (on the same device and library versions).

Example:
    >>> config = TrainConfig(data_root="data/synthetic", dataset="synthetic", target="washer",
    ...                      out="runs/train/washer", epochs=2, batch_size=4, image_size=64, weights="random")
    >>> last = train(config)          # runs/train/washer/last.pt
    >>> read_checkpoint(last)["epoch"]  # fsad-checkpoint-v2: loaded with torch.load(weights_only=True)
    2
"""

from __future__ import annotations

import csv
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from data_tools.datasets import check_category, image_files, list_categories, load_image
from fsad.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint, save_checkpoint

# The paper's and the authors' defaults (Sec. 5.1, their train.py) live with the training options in
# fsad/config.py; imported here under their old names (fsad.train.DEFAULT_EPOCHS ...).
from fsad.config import (
    DEFAULT_BATCH_SIZE,  # noqa: F401
    DEFAULT_EPOCHS,  # noqa: F401
    DEFAULT_LR,  # noqa: F401
    DEFAULT_MOMENTUM,  # noqa: F401
    DEFAULT_SUPPORT_K,  # noqa: F401
    DEFAULT_WEIGHT_DECAY,  # noqa: F401
    PAIRINGS,
    DataOptions,
    ModelOptions,
    RunOptions,
    TrainingOptions,
)
from fsad.errors import ConfigError, OutputExistsError, TrainingDiverged
from fsad.utils import atomic_write_text, check_output_dir, resolve_device, seed_everything

LAST_CHECKPOINT = "last.pt"
STEP_LOG = "train_log.csv"
EPOCH_LOG = "epochs.csv"

# Fields of TrainConfig that may differ between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = ("out", "resume", "device", "num_workers", "cache_images", "keep_epochs")


@dataclass(kw_only=True)
class TrainConfig(RunOptions, TrainingOptions, ModelOptions, DataOptions):
    """Everything that determines a training run (stored in every checkpoint as ``train_config``).

    Composed of :mod:`fsad.config`'s data, model, training and run groups, plus the fields below.

    Args:
        data_root: dataset root in MVTec layout.
        dataset: ``mvtec``, ``mpdd`` or ``synthetic``.
        target: the category left out (never read).
        out: output folder (``last.pt``, ``train_log.csv``, ``epochs.csv``).
        stn_mode: one of :data:`fsad.models.stn.STN_MODES`, or ``None`` for no STN (``--no-stn``).
        epochs, batch_size, lr, momentum, weight_decay: optimiser settings (paper/authors' defaults).
        image_size: input side S.
        pairing: ``pair`` or ``mean-of-k`` (see the module docstring).
        support_k: k of ``mean-of-k`` (ignored for ``pair``).
        backbone, weights, attention, dcn: model options as in evaluation.
        train_backbone: also fine-tune the backbone (the authors do; the kit freezes it by default).
        train_categories: restrict training to these categories (default: all but the target).
        device, seed: device name for :func:`fsad.utils.resolve_device`; the seed of everything stochastic.
        resume: continue from ``<out>/last.pt`` (a fresh start when it does not exist).
        max_steps_per_epoch: cut every epoch after this many batches (smoke runs).
        keep_epochs: also keep ``epoch_NNN.pt`` for every epoch (default: only ``last.pt``).
        num_workers: DataLoader workers (0: load in the main process, with an in-memory image cache).
        cache_images: keep decoded training images in memory (main process only).
    """

    target: str
    train_categories: list[str] | None = None
    keep_epochs: bool = False
    cache_images: bool = True

    @property
    def partners(self) -> int:
        """Images compared with each query: 1 for ``pair``, k for ``mean-of-k``."""
        return 1 if self.pairing == "pair" else self.support_k

    def resume_key(self) -> dict[str, Any]:
        key = asdict(self)
        for name in _RESUME_FREE_FIELDS:
            key.pop(name)
        return key


class TrainingInterrupted(RuntimeError):
    """Raised by a callback to stop training (tests use it to simulate a kill)."""


# --------------------------------------------------------------------------- data
def validate_config(config: TrainConfig) -> None:
    from fsad.models.stn import STN_MODES

    if config.pairing not in PAIRINGS:
        raise ConfigError(f"Unknown pairing {config.pairing!r}; choose one of {', '.join(PAIRINGS)}.")
    if config.stn_mode is not None and config.stn_mode not in STN_MODES:
        raise ConfigError(
            f"Unknown STN mode {config.stn_mode!r}; choose one of {', '.join(sorted(STN_MODES))} or None (--no-stn)."
        )
    for name in ("epochs", "batch_size", "support_k", "image_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1 (got {getattr(config, name)}).")
    from fsad.models.regad import IMAGE_SIZE_MULTIPLE

    if config.image_size % IMAGE_SIZE_MULTIPLE:
        raise ConfigError(
            f"--image-size must be a multiple of {IMAGE_SIZE_MULTIPLE} (e.g. 224, the paper's size, or "
            f"64 for quick tests); got {config.image_size}."
        )
    if config.lr <= 0:
        raise ConfigError(f"lr must be positive (got {config.lr}).")
    if config.max_steps_per_epoch is not None and config.max_steps_per_epoch < 1:
        raise ConfigError(f"max_steps_per_epoch must be at least 1 or None (got {config.max_steps_per_epoch}).")


def training_categories(config: TrainConfig) -> list[str]:
    """The categories trained on: every category under the root except the target (or the given subset).

    Raises:
        DatasetError: root or target category missing / unknown.
        ValueError: the subset names the target or an absent category, or nothing is left to train on.
    """
    check_category(config.data_root, config.dataset, config.target)
    present = list_categories(config.data_root, config.dataset)
    if config.train_categories is not None:
        if config.target in config.train_categories:
            raise ConfigError(
                f"train_categories contains the target {config.target!r}: leave-one-category-out "
                "training must never see the category it will be evaluated on."
            )
        missing = sorted(set(config.train_categories) - set(present))
        if missing:
            raise ConfigError(
                f"train_categories {missing} are not under {config.data_root}; present: {', '.join(present)}."
            )
        categories = sorted(set(config.train_categories))
    else:
        categories = [c for c in present if c != config.target]
    if not categories:
        raise ConfigError(
            f"Nothing to train on: {config.data_root} holds no category besides the target "
            f"{config.target!r}. Leave-one-out training needs at least two categories."
        )
    assert config.target not in categories  # the protocol's one hard rule
    return categories


def training_files(config: TrainConfig, categories: Sequence[str]) -> dict[str, list[Path]]:
    """``train/good`` files per training category; each needs ``partners + 1`` images."""
    files: dict[str, list[Path]] = {}
    needed = config.partners + 1
    problems = []
    for category in categories:
        if category == config.target:  # unreachable by construction; a guard against future edits
            raise AssertionError(f"refusing to read the target category {category!r}")
        folder = Path(config.data_root) / category / "train" / "good"
        found = image_files(folder) if folder.is_dir() else []
        if len(found) < needed:
            problems.append(f"{category}: {len(found)} train/good images in {folder}, {needed} needed")
        files[category] = found
    if problems:
        raise ConfigError(
            "Too few normal training images for the pairing: "
            + "; ".join(problems)
            + ". Use --pairing pair, a smaller --support-k, or leave these categories out "
            "(train_categories)."
        )
    return files


def epoch_plan(
    counts: dict[str, int], epoch: int, seed: int, batch_size: int, partners: int, max_steps: int | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The batches of one epoch: ``(category, query indices [b], partner indices [b, partners])``.

    Every training image is a query once per epoch; its partners are distinct images of the same category,
    never the query itself. The order depends only on ``(seed, epoch)`` so that a resumed run replays it.

    Example:
        >>> plan = epoch_plan({"a": 5, "b": 3}, epoch=0, seed=0, batch_size=2, partners=1)
        >>> sum(len(q) for _, q, _ in plan), plan[0][2].shape[1]
        (8, 1)
    """
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for category in sorted(counts):
        n = counts[category]
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            queries = order[start : start + batch_size]
            # Partners without replacement, excluding the query: rank random keys with the query's key at +inf.
            keys = rng.random((len(queries), n))
            keys[np.arange(len(queries)), queries] = np.inf
            batches.append((category, queries, np.argsort(keys, axis=1)[:, :partners]))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches[:max_steps] if max_steps is not None else batches


class _PairBatches(torch.utils.data.Dataset):
    """One item = one planned batch: ``(queries [b,3,S,S], partners [b,m,3,S,S])``."""

    def __init__(
        self, files: dict[str, list[Path]], plan: list, image_size: int, cache: dict[Path, torch.Tensor] | None
    ) -> None:
        self.files, self.plan, self.image_size, self.cache = files, plan, image_size, cache

    def _image(self, path: Path) -> torch.Tensor:
        if self.cache is None:
            return load_image(path, self.image_size)
        if path not in self.cache:
            self.cache[path] = load_image(path, self.image_size)
        return self.cache[path]

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        category, queries, partners = self.plan[index]
        paths = self.files[category]
        query = torch.stack([self._image(paths[i]) for i in queries])
        partner = torch.stack([torch.stack([self._image(paths[j]) for j in row]) for row in partners])
        return query, partner


# --------------------------------------------------------------------------- model and step
def build_model(config: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The RegAD model to train (seeded) and the provenance of its backbone weights."""
    from fsad.models.regad import RegADModel
    from fsad.weights import load_backbone_weights

    seed_everything(config.seed)
    state_dict, info = load_backbone_weights(config.backbone, config.weights, seed=config.seed)
    model = RegADModel(
        backbone=config.backbone,
        image_size=config.image_size,
        stn_mode=config.stn_mode,
        attention=config.attention,
        dcn=config.dcn,
        backbone_state_dict=state_dict,
        seed=config.seed,
    )
    # Frozen: no gradients and BatchNorm kept in eval mode by RegADModel.train() (see the module docstring).
    model.freeze_backbone(not config.train_backbone)
    return model, info.to_dict()


def registration_step_loss(
    model: torch.nn.Module, query: torch.Tensor, partners: torch.Tensor, pairing: str
) -> torch.Tensor:
    """The SimSiam registration loss of one batch.

    Args:
        model: a RegADModel in train mode.
        query: ``[B,3,S,S]``.
        partners: ``[B,m,3,S,S]``: m = 1 for ``pair``; m = k for ``mean-of-k``.
        pairing: ``pair`` (query vs its partner, both through the full Siamese branch) or ``mean-of-k``
            (query vs the mean of its k partners' layer-3 registered features, which then go through the
            encoder and predictor, as the authors' code does).

    Returns:
        Scalar loss ``½D(p_q, z_s) + ½D(p_s, z_q)`` (stop-gradient on z inside).
    """
    from fsad.models.siamese import registration_loss

    out_q = model(query)
    if pairing == "pair":
        out_s = model(partners[:, 0])
        return registration_loss(out_q.p, out_s.p, out_q.z, out_s.z)
    b, m = partners.shape[:2]
    features = model.registered_features(partners.flatten(0, 1))[0][-1]
    mean = features.view(b, m, *features.shape[1:]).mean(dim=1)
    z_s, p_s = model.heads(mean)
    return registration_loss(out_q.p, p_s, out_q.z, z_s)


# --------------------------------------------------------------------------- checkpoints and logs
def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]  # JSON in the checkpoint turns tuples into lists
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trim_csv(path: Path, header: list[str], keep_epochs: int) -> None:
    """Keep the header and the rows of finished epochs (a killed run may have logged part of an epoch)."""
    rows = []
    if path.exists():
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= keep_epochs]
    buffer = [",".join(header)] + [",".join(row[h] for h in header) for row in rows]
    atomic_write_text(path, "\n".join(buffer) + "\n")


def _append_csv(path: Path, rows: list[list[Any]]) -> None:
    with path.open("a", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def _check_resume(payload: dict[str, Any], config: TrainConfig, path: Path) -> None:
    saved = TrainConfig(**payload["train_config"]).resume_key()
    wanted = config.resume_key()
    diff = {k: (saved.get(k), wanted.get(k)) for k in wanted if saved.get(k) != wanted.get(k)}
    if diff:
        details = "; ".join(f"{k}: checkpoint {a!r}, requested {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"--resume: {path} was trained with other settings ({details}). "
            "Resume with the same options, or pass another --out."
        )


def checkpoint_complete(path: str | Path, config: TrainConfig) -> bool:
    """True when ``path`` is a finished checkpoint of exactly this training configuration."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        payload = read_checkpoint(path)
        _check_resume(payload, config, path)
    except (CheckpointError, TypeError):
        return False
    return int(payload.get("epoch", 0)) >= config.epochs


# --------------------------------------------------------------------------- training
def train(
    config: TrainConfig, progress: bool = True, callback: Callable[[int, int | None], None] | None = None
) -> Path:
    """Train on every category but ``config.target`` and return the path of the last checkpoint.

    Args:
        config: the run's settings.
        progress: show tqdm progress bars (loss in the postfix).
        callback: called as ``callback(epoch, step)`` after every step and as ``callback(epoch, None)`` after
            each epoch's checkpoint is written (1-based epoch). Raising from it stops training, like a kill.

    Returns:
        ``<out>/last.pt``.

    Raises:
        DatasetError / ConfigError (FsadError): bad root, target, categories or options (clear message).
        CheckpointError: ``--resume`` with a checkpoint of other settings.
        OutputExistsError (a FileExistsError): ``<out>/last.pt`` exists and ``resume`` is False.
    """
    validate_config(config)
    out = check_output_dir(config.out, "--out")
    last = out / LAST_CHECKPOINT
    categories = training_categories(config)
    files = training_files(config, categories)
    device = resolve_device(config.device)

    payload = None
    if last.exists():
        if not config.resume:
            raise OutputExistsError(
                f"{last} exists (an earlier training run): pass --resume to continue it, or choose another --out."
            )
        payload = read_checkpoint(last)
        _check_resume(payload, config, last)
        if int(payload["epoch"]) >= config.epochs:
            return last

    model, weights_info = build_model(config)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if payload is not None:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        history = list(payload.get("history", []))
        start_epoch = int(payload["epoch"])
        _set_rng_state(payload["rng"])

    out.mkdir(parents=True, exist_ok=True)
    step_log, epoch_log = out / STEP_LOG, out / EPOCH_LOG
    _trim_csv(step_log, ["epoch", "step", "loss", "lr"], start_epoch)
    _trim_csv(epoch_log, ["epoch", "mean_loss", "lr", "steps", "seconds"], start_epoch)

    counts = {c: len(f) for c, f in files.items()}
    cache: dict[Path, torch.Tensor] | None = {} if config.cache_images and config.num_workers == 0 else None
    epochs_bar = tqdm(
        range(start_epoch, config.epochs),
        desc=f"train (target {config.target})",
        initial=start_epoch,
        total=config.epochs,
        disable=not progress,
    )
    for epoch in epochs_bar:  # 0-based here; 1-based in files and checkpoints
        plan = epoch_plan(counts, epoch, config.seed, config.batch_size, config.partners, config.max_steps_per_epoch)
        loader = torch.utils.data.DataLoader(
            _PairBatches(files, plan, config.image_size, cache),
            batch_size=None,
            shuffle=False,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )
        model.train()  # a frozen backbone stays in eval mode (RegADModel.train)
        lr = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        losses = torch.zeros(len(plan), dtype=torch.float64, device=device)
        steps_bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
        for step, (query, partners) in enumerate(steps_bar):
            query = query.to(device, non_blocking=True)
            partners = partners.to(device, non_blocking=True)
            loss = registration_step_loss(model, query, partners, config.pairing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[step] = loss.detach()
            if progress:  # float() syncs the device: only when a bar shows it
                steps_bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if callback is not None:
                callback(epoch + 1, step)
        seconds = time.perf_counter() - started
        values = losses.cpu().tolist()
        if not all(np.isfinite(values)):
            raise TrainingDiverged(f"Training diverged at epoch {epoch + 1} (loss {values}); lower --lr.")
        scheduler.step()
        mean_loss = float(np.mean(values))
        history.append({"epoch": epoch + 1, "mean_loss": mean_loss, "lr": lr, "steps": len(plan), "seconds": seconds})
        state = {
            "format": CHECKPOINT_FORMAT,
            "model_config": dict(model.config),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "target": config.target,
            "dataset": config.dataset,
            "train_categories": list(categories),
            "n_train_images": counts,
            "epoch": epoch + 1,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "train_config": asdict(config),
            "weights": weights_info,
            "history": history,
            "model_selection": "last epoch (no look at the target category)",
        }
        save_checkpoint(state, last)
        if config.keep_epochs:
            save_checkpoint(state, out / f"epoch_{epoch + 1:03d}.pt")
        _append_csv(step_log, [[epoch + 1, s, f"{v:.6f}", f"{lr:.6g}"] for s, v in enumerate(values)])
        _append_csv(epoch_log, [[epoch + 1, f"{mean_loss:.6f}", f"{lr:.6g}", len(plan), f"{seconds:.3f}"]])
        epochs_bar.set_postfix(loss=f"{mean_loss:.4f}", s_per_epoch=f"{seconds:.1f}")
        if callback is not None:
            callback(epoch + 1, None)
    epochs_bar.close()
    return last
