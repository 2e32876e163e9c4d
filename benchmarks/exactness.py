"""Exactness of the float32 Gaussian scoring on real features: max relative error vs a float64 reference.

For each (category, backbone, k) the k supports' 22 augmented views are embedded at 224 px exactly as
``fsad.methods.GaussianMethod`` does (``RegADModel.embed``, no STN), a few test images are embedded beside
them, and the last test image *is* support 0 (its feature lies in the supports' span, where the residual is
smallest and the textbook Woodbury form cancels worst). Positions are subsampled every ``--stride`` cells in
both directions (the Gaussian is per position, so any subset of positions is a faithful sample).

Columns
* ``float32``: :class:`fsad.gaussian.PositionalGaussian` on float32 features (what the kit runs), max over
  every test image and position of ``|d32 - d64| / d64`` on the distance ``d``;
* ``at support``: the same, on the test image equal to a support only;
* ``textbook f32``: the cancelling Woodbury form ``(|v|^2 - |L^-1 A v|^2)/eps`` evaluated in float32 (the
  form the kit used in float64 before), for comparison.
The reference ``d64`` solves ``Sigma = A^T A + eps I`` (``C x C``) in float64 with ``torch.linalg.solve``,
independently of the kit's code path.

Usage (real data beside the checkout, ``../shared/data``):
    python benchmarks/exactness.py                       # bottle + metal_plate, both backbones, k = 1 2 8
    python benchmarks/exactness.py --stride 4            # 14x14 positions
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_tools.datasets import image_files, load_supports  # noqa: E402
from fsad.augment import augment_supports, views_per_image  # noqa: E402
from fsad.gaussian import GAUSSIAN_EPS, PositionalGaussian  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# (dataset root under shared/data, category)
CASES = (("mvtec_ad_subset", "bottle"), ("mpdd_subset", "metal_plate"))
# ImageNet weights where the kit ships them (MobileNetV2), ResNet-18 random (the ImageNet file is not shipped).
BACKBONE_WEIGHTS = {"mobilenet_v2": "imagenet", "resnet18": "random"}
KS = (1, 2, 8)
TOLERANCE = 1e-4


def build_model(backbone: str, weights: str, image_size: int = 224, seed: int = 0) -> torch.nn.Module:
    from fsad.models.regad import RegADModel
    from fsad.weights import load_backbone_weights

    torch.manual_seed(seed)
    state_dict, _ = load_backbone_weights(backbone, weights, seed=seed)
    return RegADModel(backbone=backbone, image_size=image_size, stn_mode=None, backbone_state_dict=state_dict).eval()


@torch.no_grad()
def real_features(
    data_root: Path,
    category: str,
    backbone: str,
    weights: str,
    k_max: int = max(KS),
    stride: int = 8,
    test_images: int = 3,
    image_size: int = 224,
    batch: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Embedded support views ``[k_max*V, C, h, w]`` (view-major), test features ``[T+1, C, h, w]`` and V.

    The supports are the first ``k_max`` train/good files; the test images the first ``test_images`` files
    of the first defect folder, then support 0 itself. Rows ``v*k_max + i`` with ``i < k`` are the views of
    the first k supports (``augment_supports`` is view-major and per image), so one embedding serves every k.
    """
    cat_dir = Path(data_root) / category
    train = [str(p.relative_to(cat_dir)) for p in image_files(cat_dir / "train" / "good")][:k_max]
    defect_dirs = sorted(d for d in (cat_dir / "test").iterdir() if d.is_dir() and d.name != "good")
    test = [str(p.relative_to(cat_dir)) for p in image_files(defect_dirs[0])][:test_images]
    model = build_model(backbone, weights, image_size)
    supports = load_supports(data_root, category, train, image_size)
    views = augment_supports(supports)
    picked = (slice(None), slice(None), slice(None, None, stride), slice(None, None, stride))
    sup = torch.cat([model.embed(views[i : i + batch])[picked] for i in range(0, len(views), batch)])
    tst = model.embed(load_supports(data_root, category, test + train[:1], image_size))[picked]
    return sup.contiguous(), tst.contiguous(), views_per_image()


def views_of_first(features: torch.Tensor, k: int, k_max: int, views: int) -> torch.Tensor:
    rows = torch.tensor([v * k_max + i for v in range(views) for i in range(k)])
    return features.index_select(0, rows)


def reference_distances(support: torch.Tensor, test: torch.Tensor, eps: float = GAUSSIAN_EPS) -> torch.Tensor:
    """float64 ``sqrt(v^T Sigma^-1 v)`` by a dense ``C x C`` solve per position: ``[M, h, w]``."""
    n, c, h, w = support.shape
    x = support.double().reshape(n, c, -1).permute(2, 0, 1)  # [P, N, C]
    mu = x.mean(1, keepdim=True)
    a = (x - mu) / math.sqrt(max(n - 1, 1))
    sigma = a.mT @ a + eps * torch.eye(c, dtype=torch.float64)
    v = test.double().reshape(test.shape[0], c, -1).permute(2, 0, 1) - mu  # [P, M, C]
    d2 = (v * torch.linalg.solve(sigma, v.mT).mT).sum(-1)  # [P, M]
    return d2.sqrt().mT.reshape(test.shape[0], h, w)


def textbook_float32(support: torch.Tensor, test: torch.Tensor, eps: float = GAUSSIAN_EPS) -> torch.Tensor:
    """The cancelling Woodbury form ``(|v|^2 - |L^-1 A v|^2)/eps`` in float32 (L from a float64 Cholesky)."""
    n, c, h, w = support.shape
    x = support.reshape(n, c, -1).permute(2, 0, 1)
    mu = x.mean(1, keepdim=True)
    a = (x - mu) / math.sqrt(max(n - 1, 1))
    gram = a.double() @ a.double().mT + eps * torch.eye(n, dtype=torch.float64)
    chol = torch.linalg.cholesky(gram).float()
    v = test.reshape(test.shape[0], c, -1).permute(2, 0, 1) - mu
    wv = torch.linalg.solve_triangular(chol, a @ v.mT, upper=False)
    d2 = ((v * v).sum(-1) - (wv * wv).sum(1)) / eps
    return d2.clamp_min(0).sqrt().mT.reshape(test.shape[0], h, w)


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (got.double() - reference).abs() / reference


def exactness_rows(
    support_views: torch.Tensor, test: torch.Tensor, k_max: int, views: int, ks: tuple[int, ...] = KS
) -> list[dict]:
    rows = []
    for k in ks:
        support = views_of_first(support_views, k, k_max, views)
        gaussian = PositionalGaussian().fit(support)
        got = gaussian.mahalanobis(test)
        reference = reference_distances(support, test)
        err = relative_error(got, reference)
        rows.append(
            {
                "k": k,
                "n": support.shape[0],
                "c": support.shape[1],
                "form": gaussian.method_,
                "dtype": str(got.dtype).replace("torch.", ""),
                "max_rel": err.max().item(),
                "at_support": err[-1].max().item(),
                "textbook_f32": relative_error(textbook_float32(support, test), reference).max().item(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder holding mvtec_ad_subset/ and mpdd_subset/")
    parser.add_argument("--stride", type=int, default=8, help="keep every stride-th position in both directions")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONE_WEIGHTS), choices=list(BACKBONE_WEIGHTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = []
    print(
        f"{'category':<12} {'backbone':<13} {'weights':<8} {'k':>2} {'N':>4} {'C':>4} {'form':<8} "
        f"{'float32':>9} {'at support':>11} {'textbook f32':>13}"
    )
    for root, category in CASES:
        for backbone in args.backbones:
            weights = BACKBONE_WEIGHTS[backbone]
            sup, tst, views = real_features(Path(args.data) / root, category, backbone, weights, stride=args.stride)
            for row in exactness_rows(sup, tst, max(KS), views):
                row.update(category=category, backbone=backbone, weights=weights)
                table.append(row)
                print(
                    f"{category:<12} {backbone:<13} {weights:<8} {row['k']:>2} {row['n']:>4} {row['c']:>4} "
                    f"{row['form']:<8} {row['max_rel']:>9.1e} {row['at_support']:>11.1e} "
                    f"{row['textbook_f32']:>13.1e}",
                    flush=True,
                )
    worst = max(row["max_rel"] for row in table)
    print(
        f"max relative error of the float32 distances: {worst:.1e} (goal <= {TOLERANCE:.0e}: "
        f"{'met' if worst <= TOLERANCE else 'MISSED'})"
    )
    return table


if __name__ == "__main__":
    main()
