"""Per-position multivariate Gaussian of support features and its Mahalanobis distance, batched.

RegAD (like PaDiM) models the support features at every spatial position ``p`` with a Gaussian
``N(mu_p, Sigma_p + eps*I)`` and scores a test feature by its Mahalanobis distance. The authors'
code loops over the 56x56 positions in Python; here every position of a chunk is handled by one
batched GEMM / Cholesky / triangular solve, and chunks bound the memory.

Two exact forms of the same distance:

* ``"lowrank"`` (used when ``N < C``, e.g. k*22 = 176 supports < 448 channels): with
  ``A = (X - mu) / sqrt(N-1)`` (``N x C`` per position), ``Sigma = A^T A + eps*I`` is a rank-N update
  of ``eps*I``, so by Woodbury ``d^2(v) = (|v|^2 - |L^{-1} A v|^2) / eps`` where
  ``L L^T = eps*I_N + A A^T`` (``N x N``). The fit is one ``N x N`` Gram GEMM and Cholesky per
  position; no ``C x C`` matrix is ever formed.
* ``"full"`` (``N >= C``): ``Sigma`` (``C x C``) by GEMM, Cholesky ``L``, ``d^2 = |L^{-1} v|^2``
  by triangular solve.

Precision: Grams and Cholesky factors are computed in float64 where the conditioning matters
(``eps`` = 0.01 against feature variances in the hundreds gives condition numbers ~1e5), the
stored factors are kept in the features' dtype, and the low-rank scoring (``A v``, the solve and
the final ``|v|^2 - |w|^2`` subtraction, which cancels) runs in float64.
"""
from __future__ import annotations

import math
from typing import Any

import torch

# Regulariser of the covariance, Sigma + eps*I: RegAD paper Eq. 4 and the authors' test.py
# (``torch.cov(...) + 0.01 * I``), inherited from PaDiM.
GAUSSIAN_EPS = 0.01
# Working-memory budget used to pick chunk_size when it is not given (bytes).
DEFAULT_MEMORY_BUDGET = 1 << 30
METHODS = ("auto", "lowrank", "full")


def random_channel_subset(num_channels: int, d: int, seed: int = 0) -> torch.Tensor:
    """PaDiM's random channel subset: ``d`` distinct channel indices out of ``num_channels``, sorted.

    A speed knob (PaDiM uses d=100 of 448 for ResNet-18); deterministic for a given seed.

    Example:
        >>> random_channel_subset(448, 100, seed=0).shape
        torch.Size([100])
    """
    if not 1 <= d <= num_channels:
        raise ValueError(f"channel subset size d={d} must be between 1 and num_channels={num_channels}.")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_channels, generator=gen)[:d].sort().values


def _auto_chunk(bytes_per_position: int, num_positions: int, budget: int) -> int:
    return int(max(1, min(num_positions, budget // max(1, bytes_per_position))))


class PositionalGaussian:
    """One Gaussian per spatial position over ``C`` channels, fitted and scored in batches.

    Example:
        >>> support = torch.randn(44, 448, 8, 8)           # N=44 augmented supports
        >>> g = PositionalGaussian().fit(support)            # N < C -> exact low-rank form
        >>> g.method_
        'lowrank'
        >>> g.mahalanobis(torch.randn(5, 448, 8, 8)).shape  # [M, H, W]
        torch.Size([5, 8, 8])
    """

    def __init__(self) -> None:
        self.method_: str | None = None
        self.eps: float = GAUSSIAN_EPS
        self.mean: torch.Tensor | None = None        # [P, C']
        self.factor_a: torch.Tensor | None = None    # lowrank: [P, N, C'] centred / sqrt(N-1)
        self.chol: torch.Tensor | None = None        # lowrank: [P, N, N] float64; full: [P, C', C']
        self.channels: torch.Tensor | None = None    # LongTensor of used channels, or None = all
        self.num_channels: int | None = None         # C of the features given to fit (before subset)
        self.spatial: tuple[int, int] | None = None
        self.num_samples: int | None = None
        self.chunk_size: int | None = None
        self.memory_budget: int = DEFAULT_MEMORY_BUDGET

    # ------------------------------------------------------------------ fit
    def fit(self, features: torch.Tensor, eps: float = GAUSSIAN_EPS, method: str = "auto",
            chunk_size: int | None = None, channels: torch.Tensor | None = None,
            memory_budget: int = DEFAULT_MEMORY_BUDGET) -> "PositionalGaussian":
        """Fit mean and (regularised) covariance at every position.

        Args:
            features: ``[N, C, H, W]`` support features (N >= 1; with N = 1 the sample covariance
                is taken as zero, so Sigma = eps*I and the distance is ``|x - mu| / sqrt(eps)``,
                where ``np.cov`` would be undefined).
            eps: diagonal regulariser (paper default :data:`GAUSSIAN_EPS`).
            method: ``"auto"`` (low-rank iff N < C'), ``"lowrank"`` or ``"full"``.
            chunk_size: positions per batch; ``None`` picks it from ``memory_budget`` bytes.
            channels: optional index of channels to use (e.g. :func:`random_channel_subset`);
                stored and applied again by :meth:`mahalanobis`.
            memory_budget: working-memory target (bytes) for the automatic chunk size.

        Returns:
            ``self``.
        """
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; valid choices are {list(METHODS)}.")
        if features.ndim != 4:
            raise ValueError(f"fit expects support features shaped [N, C, H, W], got {tuple(features.shape)}.")
        if features.shape[0] < 1:
            raise ValueError("fit got zero support features; need at least one sample.")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (the covariance needs eps*I to be invertible), got {eps}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of positions or None, got {chunk_size}.")
        n, c, h, w = features.shape
        if channels is not None:
            channels = torch.as_tensor(channels, dtype=torch.long).flatten()
            if channels.numel() == 0 or channels.min() < 0 or channels.max() >= c:
                raise ValueError(f"channels must index the {c} feature channels (0..{c - 1}), "
                                 f"got {channels.numel()} indices in [{channels.min().item() if channels.numel() else '-'}, "
                                 f"{channels.max().item() if channels.numel() else '-'}].")
            channels = channels.to(features.device)
            features = features.index_select(1, channels)
        cd = features.shape[1]
        if method == "auto":
            method = "lowrank" if n < cd else "full"
        dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
        p = h * w
        flat = features.reshape(n, cd, p)
        item = torch.finfo(dtype).bits // 8
        if method == "lowrank":
            # Per position: X/A chunk (2*N*C), A in float64, Gram + its Cholesky (2*N*N*8).
            per_pos = 2 * n * cd * item + n * cd * 8 + 2 * n * n * 8
        else:
            # Per position: A chunk (N*C), covariance + Cholesky in float64 (2*C*C*8), stored factor.
            per_pos = 2 * n * cd * item + n * cd * 8 + 2 * cd * cd * 8 + cd * cd * item
        chunk = chunk_size or _auto_chunk(per_pos, p, memory_budget)

        denom = math.sqrt(max(n - 1, 1))  # N = 1: A = 0, i.e. zero sample covariance
        dev = features.device
        # Outputs are preallocated and filled chunk by chunk (no list + cat, which would hold the
        # factors twice at the end of the fit).
        mean = torch.empty(p, cd, dtype=dtype, device=dev)
        if method == "lowrank":
            factor_a = torch.empty(p, n, cd, dtype=dtype, device=dev)
            chol = torch.empty(p, n, n, dtype=torch.float64, device=dev)
            eye = torch.eye(n, dtype=torch.float64, device=dev)
        else:
            factor_a = None
            chol = torch.empty(p, cd, cd, dtype=dtype, device=dev)
            eye = torch.eye(cd, dtype=torch.float64, device=dev)
        for start in range(0, p, chunk):
            stop = min(start + chunk, p)
            # A contiguous [p, N, C] buffer of our own: batched GEMMs on the strided permuted view
            # are ~5x slower, and owning it lets the centring run in place.
            view = flat[:, :, start:stop].permute(2, 0, 1)
            a = factor_a[start:stop] if factor_a is not None else torch.empty(view.shape, dtype=dtype, device=dev)
            a.copy_(view)
            torch.mean(a, dim=1, out=mean[start:stop])
            a.sub_(mean[start:stop].unsqueeze(1)).mul_(1.0 / denom)
            a64 = a.double()
            if method == "lowrank":
                # Gram in float64: its small eigenvalues sit next to eps and decide the distance.
                chol[start:stop] = torch.linalg.cholesky(a64 @ a64.mT + eps * eye)
            else:
                # Covariance GEMM in float64 too: in float32 it costs ~0.5% relative error in the
                # distances of realistic (low-rank, ReLU) features. The factor is stored in the
                # features' dtype, which costs only ~1e-7 relative.
                chol[start:stop] = torch.linalg.cholesky(a64.mT @ a64 + eps * eye)
            del a64

        self.method_ = method
        self.eps = float(eps)
        self.mean = mean
        self.factor_a = factor_a
        self.chol = chol
        self.channels = channels
        self.num_channels = c
        self.spatial = (h, w)
        self.num_samples = n
        self.chunk_size = chunk
        self.memory_budget = memory_budget
        return self

    # ---------------------------------------------------------------- score
    def mahalanobis(self, features: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Mahalanobis distance of every test feature to its position's Gaussian.

        Args:
            features: ``[M, C, H, W]`` with the same ``C, H, W`` as the fitted supports.
            chunk_size: positions per batch (default: picked from the fit's memory budget).

        Returns:
            ``[M, H, W]`` distances ``sqrt(d^2)`` (``d^2`` clamped at 0), in the features' float dtype.
        """
        if self.mean is None:
            raise RuntimeError("PositionalGaussian.mahalanobis called before fit(); call fit(support_features) first.")
        if features.ndim != 4:
            raise ValueError(f"mahalanobis expects features shaped [M, C, H, W], got {tuple(features.shape)}.")
        m, c, h, w = features.shape
        if c != self.num_channels or (h, w) != self.spatial:
            raise ValueError(
                f"features have C={c}, H×W={h}×{w} but the Gaussian was fitted on "
                f"C={self.num_channels}, H×W={self.spatial[0]}×{self.spatial[1]}; use features from the same extractor."
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of positions or None, got {chunk_size}.")
        device = self.mean.device
        features = features.to(device)
        if self.channels is not None:
            features = features.index_select(1, self.channels.to(device))
        cd = features.shape[1]
        dtype = self.mean.dtype
        p = h * w
        flat = features.reshape(m, cd, p)
        n = self.num_samples
        item = torch.finfo(dtype).bits // 8
        if self.method_ == "lowrank":
            per_pos = m * cd * (item + 16) + n * cd * 8 + 2 * n * m * 8
        else:
            per_pos = m * cd * (2 * item + 8)
        chunk = chunk_size or _auto_chunk(per_pos, p, self.memory_budget)
        out = []
        for start in range(0, p, chunk):
            stop = min(start + chunk, p)
            x = flat[:, :, start:stop].permute(2, 0, 1).contiguous()  # [p, M, C]
            if self.method_ == "lowrank":
                # Everything in float64: |v|^2 and |L^-1 A v|^2 are both ~|v|^2 when v lies near the
                # supports' span, and their difference is then divided by eps, so float32 rounding
                # of A v would be amplified ~|v|^2/(eps d^2) times (4% error for in-sample points).
                v = x.double() - self.mean[start:stop].double().unsqueeze(1)
                u = self.factor_a[start:stop].double() @ v.mT  # [p, N, M]
                wv = torch.linalg.solve_triangular(self.chol[start:stop], u, upper=False)
                d2 = (torch.linalg.vecdot(v, v) - torch.linalg.vecdot(wv, wv, dim=1)) / self.eps
            else:
                v = x.to(dtype) - self.mean[start:stop].unsqueeze(1)
                z = torch.linalg.solve_triangular(self.chol[start:stop], v.mT, upper=False)  # [p, C, M]
                z = z.double()
                d2 = torch.linalg.vecdot(z, z, dim=1)
            out.append(d2)
        d2 = torch.cat(out)  # [P, M]
        return d2.clamp_min(0).sqrt().mT.reshape(m, h, w).to(dtype)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Tensors and settings needed to score again (e.g. to cache a fitted Gaussian with torch.save)."""
        if self.mean is None:
            raise RuntimeError("PositionalGaussian.state_dict called before fit().")
        return {
            "method": self.method_, "eps": self.eps, "mean": self.mean, "factor_a": self.factor_a,
            "chol": self.chol, "channels": self.channels, "num_channels": self.num_channels,
            "spatial": list(self.spatial), "num_samples": self.num_samples,
            "chunk_size": self.chunk_size, "memory_budget": self.memory_budget,
        }

    def load_state_dict(self, state: dict[str, Any]) -> "PositionalGaussian":
        """Restore from :meth:`state_dict`; returns ``self``."""
        missing = {"method", "eps", "mean", "chol", "num_channels", "spatial", "num_samples"} - set(state)
        if missing:
            raise ValueError(f"PositionalGaussian state is missing keys {sorted(missing)}; was it made by state_dict()?")
        if state["method"] not in ("lowrank", "full"):
            raise ValueError(f"PositionalGaussian state has unknown method {state['method']!r}.")
        self.method_ = state["method"]
        self.eps = float(state["eps"])
        self.mean = state["mean"]
        self.factor_a = state.get("factor_a")
        self.chol = state["chol"]
        self.channels = state.get("channels")
        self.num_channels = int(state["num_channels"])
        self.spatial = tuple(state["spatial"])
        self.num_samples = int(state["num_samples"])
        self.chunk_size = state.get("chunk_size")
        self.memory_budget = int(state.get("memory_budget", DEFAULT_MEMORY_BUDGET))
        return self
