"""Interactive ablation widgets (ipywidgets) for JupyterLab: an ablation explorer and a map viewer.

The widgets only wire controls to library calls. :class:`ExplorerSession` (no UI) does what one
cell of :func:`fsad.evaluate.run_evaluation` does — build the model (:func:`fsad.evaluate.build_method`),
fit the chosen method (any of :func:`fsad.methods.method_names`, built by its
:class:`fsad.methods.MethodSpec`) on the manifest's run-0 supports and score the test set through the same
:mod:`fsad.scoring` path (:func:`fsad.scoring.fit_and_score`, :func:`fsad.scoring.cell_metrics`) — with
caches so that moving a control costs one fit, not a reload: test images per category and test features per
(category, model) are computed once.

Example (in a notebook):
    >>> explorer = ablation_explorer("data/synthetic", "synthetic", ["washer", "bracket"])  # doctest: +SKIP
    >>> explorer                                       # displays the controls, AUROC line and maps
    >>> explorer.k_slider.value = 4                    # same as moving the slider
    >>> map_viewer(**explorer.result.viewer_args())    # threshold slider over that setting's test maps
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

try:
    import ipywidgets as widgets
except ImportError as error:  # the widgets are in the `lab` extra, not the core install
    raise ImportError(
        "fsad.widgets needs ipywidgets: pip install 'fsad-kit[lab]' (JupyterLab and the widgets)."
    ) from error
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from data_tools.datasets import check_category, load_test_set
from data_tools.manifests import manifest_for
from fsad import viz
from fsad.augment import AUGMENT_FAMILIES, views_per_image
from fsad.evaluate import EvaluationConfig, build_method
from fsad.methods import method_names, method_spec
from fsad.models.stn import STN_MODES
from fsad.scoring import cell_metrics, fit_and_score, load_run_supports
from fsad.utils import resolve_device, seed_everything

# CPU-friendly defaults: one interaction = one Gaussian fit on k x 22 views plus scoring, well under
# a few seconds on a laptop core at 128 px with MobileNetV2 (whose ImageNet weights ship with the kit).
DEFAULT_IMAGE_SIZE = 128
DEFAULT_BACKBONE = "mobilenet_v2"
DEFAULT_KS = (1, 2, 4)
# Test images shown in the explorer's panel: the first good one and the first of each defect type.
PANEL_MAX_ROWS = 4
PANEL_DPI = 72
NO_STN_LABEL = "none"
DEFAULT_METHOD = "regad"
# fsad.ablation writes leave-one-out checkpoints as <out>/checkpoints/<setting>/<target>/last.pt,
# setting = "no_stn" or the STN mode.
CHECKPOINT_NO_STN = "no_stn"
CHECKPOINT_FILE = "last.pt"

STN_HELP = (
    "<b>STN mode</b>: an untrained spatial transformer is the identity (RegAD initialises it so), "
    "so without a trained checkpoint every STN mode gives the same numbers as 'none'. STN modes "
    "matter only with <code>checkpoint_dir</code> pointing at trained checkpoints "
    "(<code>python -m fsad table6 --out DIR</code> writes <code>DIR/checkpoints/&lt;mode&gt;/&lt;category&gt;/last.pt</code>; "
    "pass <code>DIR/checkpoints</code>)."
)


def _figure_png(fig: plt.Figure, dpi: int = PANEL_DPI) -> bytes:
    """Render a figure to PNG bytes (for an ipywidgets.Image) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


@dataclass
class ExplorerResult:
    """One explored setting: its metrics and the arrays behind its maps (CPU)."""

    category: str
    k: int
    augment_families: tuple[str, ...]
    stn_mode: str | None
    checkpoint: str | None
    support_files: list[str]
    image_auroc: float
    pixel_auroc: float | None
    images: torch.Tensor  # [N,3,S,S] ImageNet-normalised
    masks: np.ndarray | None  # [N,S,S] bool, None when the category has no masks
    maps: np.ndarray  # [N,S,S]
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N]
    defect_types: list[str] = field(default_factory=list)
    seconds: float = 0.0
    method: str = DEFAULT_METHOD

    def summary(self) -> str:
        pixel = "n/a (no masks)" if self.pixel_auroc is None else f"{self.pixel_auroc:.3f}"
        return (
            f"image AUROC {self.image_auroc:.3f} · pixel AUROC {pixel} "
            f"({self.method}, category {self.category}, k = {self.k}, run 0, {self.k * views_per_image(self.augment_families)} "
            f"support views, STN {self.stn_mode or NO_STN_LABEL}"
            f"{', trained checkpoint' if self.checkpoint else ', untrained'}; {self.seconds:.2f} s)"
        )

    def viewer_args(self) -> dict[str, Any]:
        """Keyword arguments for :func:`map_viewer`."""
        return {
            "images": self.images,
            "masks": self.masks,
            "maps": self.maps,
            "scores": self.scores,
            "labels": self.labels,
        }


class ExplorerSession:
    """The explorer's computations, without UI: evaluate one (category, k, families, STN mode, method) setting.

    Args:
        data_root: dataset root (MVTec layout).
        dataset: "mvtec", "mpdd" or "synthetic".
        categories: categories to offer.
        ks: support sizes to offer (run 0 of the manifest from :func:`data_tools.manifests.manifest_for`).
        image_size, backbone, weights, device, seed: as for :class:`fsad.evaluate.EvaluationConfig`.
        checkpoint_dir: folder with ``<no_stn|mode>/<category>/last.pt`` checkpoints (fsad.ablation's
            ``<out>/checkpoints``); a setting without one uses the untrained model.

    Example:
        >>> session = ExplorerSession(root, "synthetic", ["washer"], ks=(1, 2), image_size=64)  # doctest: +SKIP
        >>> session.evaluate("washer", 2, ("flip",), None).image_auroc                         # doctest: +SKIP
        0.875
    """

    def __init__(
        self,
        data_root: str | Path,
        dataset: str,
        categories: Sequence[str],
        ks: Sequence[int] = DEFAULT_KS,
        image_size: int = DEFAULT_IMAGE_SIZE,
        backbone: str = DEFAULT_BACKBONE,
        weights: str = "imagenet",
        device: str = "auto",
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if not categories:
            raise ValueError("ablation_explorer needs at least one category (e.g. categories=['washer']).")
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty list of positive support sizes, got {list(ks)}.")
        self.data_root = Path(data_root)
        self.dataset = dataset
        self.categories = list(categories)
        for category in self.categories:
            check_category(self.data_root, dataset, category)
        self.ks = sorted({int(k) for k in ks})
        self.image_size = int(image_size)
        self.backbone = backbone
        self.weights = weights
        self.device = resolve_device(device)
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        if self.checkpoint_dir is not None and not self.checkpoint_dir.is_dir():
            raise FileNotFoundError(
                f"checkpoint_dir {self.checkpoint_dir} does not exist; pass the 'checkpoints' "
                "folder of an ablation run (python -m fsad table6 --out DIR -> DIR/checkpoints) "
                "or None for untrained models."
            )
        # Run 0 of the published/generated support sets, as run_evaluation uses for run 0.
        self.manifest = manifest_for(self.data_root, dataset, ks=self.ks, runs=1, seed=seed, categories=self.categories)
        self._models: dict[tuple[str | None, str | None], torch.nn.Module] = {}
        self._tests: dict[tuple[str, int], dict[str, Any]] = {}
        self._features: dict[tuple[str, str, int, str | None, str | None], torch.Tensor] = {}

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods the explorer offers: every registered one (:func:`fsad.methods.method_names`)."""
        return method_names()

    def checkpoint_for(self, category: str, stn_mode: str | None) -> Path | None:
        """The trained leave-one-out checkpoint for this setting, if ``checkpoint_dir`` has one."""
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / (stn_mode or CHECKPOINT_NO_STN) / category / CHECKPOINT_FILE
        return path if path.is_file() else None

    def _model(self, category: str, stn_mode: str | None, checkpoint: Path | None) -> torch.nn.Module:
        key = (stn_mode, str(checkpoint) if checkpoint else None)
        if key not in self._models:
            config = EvaluationConfig(
                data_root=str(self.data_root),
                dataset=self.dataset,
                categories=[category],
                backbone=self.backbone,
                weights=self.weights,
                checkpoint=str(checkpoint) if checkpoint else None,
                stn_mode=stn_mode,
                image_size=self.image_size,
                seed=self.seed,
            )
            # Seeded as run_evaluation seeds before build_method, so weights="random" gives its backbone.
            seed_everything(self.seed)
            method, _ = build_method(config, self.device)
            self._models[key] = method.model
        return self._models[key]

    def test_set(self, category: str) -> dict[str, Any]:
        """Test images, masks and labels of a category, loaded once per (category, image_size)."""
        key = (category, self.image_size)
        if key not in self._tests:
            self._tests[key] = load_test_set(self.data_root, category, self.image_size, self.dataset)
        return self._tests[key]

    @torch.no_grad()
    def evaluate(
        self,
        category: str,
        k: int,
        augment_families: Sequence[str],
        stn_mode: str | None,
        method: str = DEFAULT_METHOD,
    ) -> ExplorerResult:
        """Fit ``method`` on run-0 supports of ``(category, k)`` and score the category's test set (a method
        without STNs ignores ``stn_mode``; only one that accepts checkpoints uses ``checkpoint_dir``)."""
        spec = method_spec(method)
        if not spec.uses_stn:
            stn_mode = None
        if category not in self.categories:
            raise ValueError(f"Unknown category {category!r}; this explorer offers {', '.join(self.categories)}.")
        if stn_mode is not None and stn_mode not in STN_MODES:
            raise ValueError(f"Unknown STN mode {stn_mode!r}; choose None or one of {', '.join(STN_MODES)}.")
        start = time.perf_counter()
        checkpoint = self.checkpoint_for(category, stn_mode) if spec.accepts_checkpoint else None
        model = self._model(category, stn_mode, checkpoint)
        config = EvaluationConfig(
            data_root=str(self.data_root),
            dataset=self.dataset,
            categories=[category],
            method=method,
            augment_families=list(augment_families),
            stn_mode=stn_mode,
            image_size=self.image_size,
            seed=self.seed,
        )
        scorer = spec.build(config, model)
        test = self.test_set(category)
        feature_key = (method, category, self.image_size, stn_mode, str(checkpoint) if checkpoint else None)
        if feature_key not in self._features:
            self._features[feature_key] = scorer.embed(test["images"].to(self.device))
        # Run 0 of the manifest, scored as run_evaluation scores it (seed + run, run = 0).
        files, supports = load_run_supports(
            self.manifest, self.data_root, category, int(k), 0, self.image_size, self.device
        )
        scored = fit_and_score(scorer, supports, self._features[feature_key], self.image_size, self.seed, self.device)
        maps, scores = scored.maps, scored.scores
        masks = test["masks"] if test["has_masks"] else None
        metrics = cell_metrics(test["labels"], scores, maps, masks, names=("image_auroc", "pixel_auroc"))
        return ExplorerResult(
            category=category,
            k=int(k),
            augment_families=tuple(augment_families),
            stn_mode=stn_mode,
            checkpoint=str(checkpoint) if checkpoint else None,
            support_files=list(files),
            image_auroc=metrics["image_auroc"],
            pixel_auroc=metrics["pixel_auroc"],
            images=test["images"],
            masks=masks,
            maps=maps,
            scores=scores,
            labels=test["labels"],
            defect_types=test["defect_types"],
            seconds=time.perf_counter() - start,
            method=method,
        )


def panel_rows(defect_types: Sequence[str], max_rows: int = PANEL_MAX_ROWS) -> list[int]:
    """Indices shown in the explorer's panel: the first good image, then the first image of each defect type
    (fixed per category, so the rows stay the same while the settings change)."""
    first: dict[str, int] = {}
    for index, defect in enumerate(defect_types):
        first.setdefault(defect, index)
    good = [first["good"]] if "good" in first else []
    return (good + [i for d, i in first.items() if d != "good"])[:max_rows]


def explorer_figure(result: ExplorerResult) -> plt.Figure:
    """The explorer's panel for a result: :func:`fsad.viz.localisation_panel` on the fixed rows."""
    rows = panel_rows(result.defect_types)
    masks = result.masks[rows] if result.masks is not None else None
    titles = [f"{result.defect_types[i]} · score {result.scores[i]:.2f}" for i in rows]
    return viz.localisation_panel(result.images[rows], masks, result.maps[rows], titles=titles)


class AblationExplorer(widgets.VBox):
    """The ablation explorer widget (see :func:`ablation_explorer`). Controls are attributes for tests:
    ``method_dropdown`` (the registered methods), ``category_dropdown``, ``k_slider``, ``family_boxes``
    (family -> Checkbox), ``stn_dropdown``,
    ``auroc_label``, ``maps_image``, ``output``; ``result`` is the latest :class:`ExplorerResult` and
    ``n_updates`` counts finished refreshes."""

    def __init__(self, session: ExplorerSession, families: Sequence[str] = AUGMENT_FAMILIES) -> None:
        self.session = session
        self.result: ExplorerResult | None = None
        self.n_updates = 0
        style = {"description_width": "initial"}
        methods = list(session.methods)
        self.method_dropdown = widgets.Dropdown(
            options=methods,
            value=DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0],
            description="method",
            style=style,
        )
        self.category_dropdown = widgets.Dropdown(
            options=session.categories, value=session.categories[0], description="category", style=style
        )
        self.k_slider = widgets.SelectionSlider(
            options=session.ks, value=session.ks[0], description="k (shots)", continuous_update=False, style=style
        )
        self.family_boxes = {
            family: widgets.Checkbox(
                value=family in families, description=family, indent=False, layout=widgets.Layout(width="auto")
            )
            for family in AUGMENT_FAMILIES
        }
        # Option values are strings: a Dropdown whose value is None shows no selection at all.
        self.stn_dropdown = widgets.Dropdown(
            options=[NO_STN_LABEL, *STN_MODES], value=NO_STN_LABEL, description="STN mode", style=style
        )
        self.help = widgets.HTML(
            "<div style='font-size:90%;line-height:1.3'><b>Augmentation families</b> (the paper's 'A', RegAD Sec. 4.2): "
            "each ticked family adds its views of every support image before the Gaussian is fitted. "
            + STN_HELP
            + (f" Checkpoints from <code>{session.checkpoint_dir}</code>." if session.checkpoint_dir else "")
            + "</div>"
        )
        self.auroc_label = widgets.HTML("computing…")
        self.status = widgets.HTML("")
        self.maps_image = widgets.Image(format="png", layout=widgets.Layout(max_width="640px"))
        self.output = widgets.Output()
        for name, widget in (
            ("method", self.method_dropdown),
            ("category", self.category_dropdown),
            ("k", self.k_slider),
            ("stn", self.stn_dropdown),
            ("auroc", self.auroc_label),
            ("maps", self.maps_image),
        ):
            widget.add_class(f"fsad-{name}")
        controls = widgets.VBox(
            [
                widgets.HBox([self.method_dropdown, self.category_dropdown, self.stn_dropdown]),
                self.k_slider,
                widgets.HBox([widgets.Label("augmentation:")] + list(self.family_boxes.values())),
                self.help,
            ]
        )
        super().__init__([controls, self.auroc_label, self.status, self.maps_image, self.output])
        self.add_class("fsad-explorer")
        for control in (
            self.method_dropdown,
            self.category_dropdown,
            self.k_slider,
            self.stn_dropdown,
            *self.family_boxes.values(),
        ):
            control.observe(self._on_change, names="value")
        self.refresh()

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(f for f, box in self.family_boxes.items() if box.value)

    @property
    def stn_mode(self) -> str | None:
        return None if self.stn_dropdown.value == NO_STN_LABEL else self.stn_dropdown.value

    def _on_change(self, change: dict[str, Any]) -> None:
        self.refresh()

    def refresh(self) -> ExplorerResult | None:
        """Recompute for the controls' current values and update the label and maps."""
        self.status.value = "<i>computing…</i>"
        self.output.clear_output()
        try:
            result = self.session.evaluate(
                self.category_dropdown.value,
                self.k_slider.value,
                self.families,
                self.stn_mode,
                method=self.method_dropdown.value,
            )
            png = _figure_png(explorer_figure(result))
        except Exception as error:  # noqa: BLE001 - shown in the widget instead of vanishing in a comm handler
            self.status.value = ""
            self.auroc_label.value = f"<span style='color:#b00'>error: {type(error).__name__}: {error}</span>"
            with self.output:
                print(f"{type(error).__name__}: {error}")
            return None
        self.result = result
        self.maps_image.value = png
        self.auroc_label.value = f"<b>{result.summary()}</b>"
        self.status.value = ""
        self.n_updates += 1
        return result

    def figure(self) -> plt.Figure:
        """The current panel as a matplotlib figure (for :func:`fsad.viz.savefig`)."""
        if self.result is None:
            raise RuntimeError("The explorer has no result yet (the last refresh failed; see its output).")
        return explorer_figure(self.result)


def ablation_explorer(
    data_root: str | Path,
    dataset: str,
    categories: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    device: str = "auto",
    checkpoint_dir: str | Path | None = None,
    seed: int = 0,
    families: Sequence[str] = AUGMENT_FAMILIES,
) -> AblationExplorer:
    """Controls for augmentation families, STN mode, k and category; AUROC and maps refresh on change.

    Args:
        data_root, dataset, categories: the data to explore.
        ks: support sizes on the k slider.
        image_size, backbone, weights, device, seed: model settings (CPU-friendly defaults).
        checkpoint_dir: ``<out>/checkpoints`` of an ablation run (trained STNs); None = untrained model,
            where every STN mode is the identity.
        families: augmentation families ticked at start.

    Returns:
        An :class:`AblationExplorer` (an ``ipywidgets.VBox``), already showing the first setting.

    Example:
        >>> explorer = ablation_explorer(root, "synthetic", ["washer"], ks=(1, 2), image_size=64)  # doctest: +SKIP
        >>> explorer.k_slider.value = 2; explorer.auroc_label.value                             # doctest: +SKIP
        '<b>image AUROC 0.917 · pixel AUROC 0.953 (category washer, k = 2, ...)</b>'
    """
    session = ExplorerSession(
        data_root,
        dataset,
        categories,
        ks=ks,
        image_size=image_size,
        backbone=backbone,
        weights=weights,
        device=device,
        checkpoint_dir=checkpoint_dir,
        seed=seed,
    )
    return AblationExplorer(session, families=families)


# ------------------------------------------------------------------------------------------- map viewer
def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def threshold_overlay(prediction: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """RGB ``[H,W,3]`` of a thresholded map against the ground truth: green = hit, red = false alarm,
    blue = missed defect (white = prediction alone when there is no ground truth)."""
    rgb = np.zeros(prediction.shape + (3,))
    if truth is None:
        rgb[prediction] = 1.0
        return rgb
    rgb[prediction & truth] = (0.1, 0.8, 0.1)
    rgb[prediction & ~truth] = (0.9, 0.1, 0.1)
    rgb[~prediction & truth] = (0.2, 0.4, 1.0)
    return rgb


class MapViewer(widgets.VBox):
    """Threshold slider over test maps (see :func:`map_viewer`). Attributes: ``index_slider``,
    ``threshold_slider``, ``decision_label``, ``image``."""

    def __init__(
        self, images: Any, masks: Any, maps: Any, scores: Any, labels: Any, threshold: float | None = None
    ) -> None:
        self.images = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        self.maps = _as_numpy(maps).astype(np.float64)
        self.scores = _as_numpy(scores).astype(np.float64)
        self.labels = _as_numpy(labels).astype(int)
        self.masks = None if masks is None else _as_numpy(masks).astype(bool)
        n = len(self.maps)
        lengths = {"images": len(self.images), "maps": n, "scores": len(self.scores), "labels": len(self.labels)}
        if self.masks is not None:
            lengths["masks"] = len(self.masks)
        if n == 0 or len(set(lengths.values())) != 1:
            raise ValueError(
                f"map_viewer needs the same non-zero number of images, maps, scores and labels; got {lengths}."
            )
        if self.masks is not None and self.masks.shape != self.maps.shape:
            raise ValueError(f"masks {self.masks.shape} and maps {self.maps.shape} must have the same shape.")
        low, high = float(self.maps.min()), float(self.maps.max())
        self.range = (low, high if high > low else low + 1.0)
        # Start between the two classes' median scores: a sensible threshold to move from.
        start = (
            threshold
            if threshold is not None
            else float(
                (np.median(self.scores[self.labels == 0]) + np.median(self.scores[self.labels == 1])) / 2
                if 0 < self.labels.sum() < n
                else np.median(self.scores)
            )
        )
        self.index_slider = widgets.IntSlider(
            value=0,
            min=0,
            max=n - 1,
            description="test image",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.threshold_slider = widgets.FloatSlider(
            value=float(np.clip(start, *self.range)),
            min=self.range[0],
            max=self.range[1],
            step=(self.range[1] - self.range[0]) / 200,
            readout_format=".3f",
            description="threshold",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.decision_label = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="640px"))
        self.index_slider.add_class("fsad-index")
        self.threshold_slider.add_class("fsad-threshold")
        self.decision_label.add_class("fsad-decision")
        super().__init__([widgets.HBox([self.index_slider, self.threshold_slider]), self.decision_label, self.image])
        self.add_class("fsad-viewer")
        self.index_slider.observe(lambda _: self.refresh(), names="value")
        self.threshold_slider.observe(lambda _: self.refresh(), names="value")
        self.refresh()

    def decision(self, index: int, threshold: float) -> dict[str, Any]:
        """Image ``index`` at ``threshold``: the decision (score >= threshold, the same rule as 'any pixel of the
        map above threshold' since the score is the map's maximum), and set-wide error counts."""
        predicted = self.scores >= threshold
        truth = self.labels == 1
        return {
            "defective": bool(predicted[index]),
            "correct": bool(predicted[index] == truth[index]),
            "n_correct": int((predicted == truth).sum()),
            "missed": int((~predicted & truth).sum()),
            "false_alarms": int((predicted & ~truth).sum()),
        }

    def refresh(self) -> None:
        index, threshold = int(self.index_slider.value), float(self.threshold_slider.value)
        d = self.decision(index, threshold)
        prediction = self.maps[index] >= threshold
        truth = self.masks[index] if self.masks is not None else None
        colormap = matplotlib.colormaps["jet"]
        scaled = (self.maps[index] - self.range[0]) / (self.range[1] - self.range[0])
        panels = [self.images[index], colormap(scaled)[..., :3], threshold_overlay(prediction, truth)]
        titles = ["image", "anomaly map (shared scale)", "map ≥ threshold vs truth"]
        if truth is not None:
            panels.append(np.repeat(truth[..., None].astype(float), 3, axis=2))
            titles.append("ground truth")
        self.image.value = _figure_png(viz.image_grid(panels, titles=titles, ncols=len(panels), size=2.2))
        truth_text = "defective" if self.labels[index] == 1 else "good"
        verdict = "✓ correct" if d["correct"] else "✗ wrong"
        pixel_text = ""
        if truth is not None and truth.any():
            iou = float((prediction & truth).sum() / max((prediction | truth).sum(), 1))
            pixel_text = f"; pixels above threshold {int(prediction.sum())}, IoU with ground truth {iou:.2f}"
        self.decision_label.value = (
            f"<b>image {index}: score {self.scores[index]:.3f} {'≥' if d['defective'] else '<'} threshold "
            f"{threshold:.3f} → {'DEFECTIVE' if d['defective'] else 'GOOD'}</b> (truth: {truth_text}, {verdict})"
            f"{pixel_text}<br>all {len(self.scores)} test images at this threshold: {d['n_correct']} correct, "
            f"{d['missed']} missed defects, {d['false_alarms']} false alarms"
        )


def map_viewer(
    images: Any, masks: Any, maps: Any, scores: Any, labels: Any, threshold: float | None = None
) -> MapViewer:
    """Browse test images with a threshold slider: image, map, thresholded map vs ground truth, decision.

    Args:
        images: ``[N,3,S,S]`` ImageNet-normalised test images.
        masks: ``[N,S,S]`` ground-truth masks, or None (image-level labels only).
        maps: ``[N,S,S]`` anomaly maps; scores: ``[N]`` image scores (map maxima); labels: ``[N]`` 0/1.
        threshold: starting threshold (default: midway between the classes' median scores).

    Returns:
        A :class:`MapViewer` (an ``ipywidgets.VBox``).

    Example:
        >>> viewer = map_viewer(**explorer.result.viewer_args())      # doctest: +SKIP
        >>> viewer.threshold_slider.value = 3.0; viewer.decision_label.value  # doctest: +SKIP
    """
    return MapViewer(images, masks, maps, scores, labels, threshold=threshold)


__all__ = [
    "AblationExplorer",
    "ExplorerResult",
    "ExplorerSession",
    "MapViewer",
    "ablation_explorer",
    "explorer_figure",
    "map_viewer",
    "panel_rows",
    "threshold_overlay",
]
