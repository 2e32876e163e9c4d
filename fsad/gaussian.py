"""Per-position multivariate Gaussian of support features and its Mahalanobis distance, batched.

RegAD (like PaDiM) models the support features at every spatial position ``p`` with a Gaussian
``N(mu_p, Sigma_p + eps*I)`` and scores a test feature by its Mahalanobis distance. The authors'
code loops over the 56x56 positions in Python; here every position of a chunk is handled by one
batched GEMM / Cholesky / triangular solve, and chunks bound the memory.

Notation (per position): ``X`` the ``N x C`` supports, ``mu`` their mean, ``A = (X - mu) / sqrt(N-1)``
so that ``Sigma = A^T A + eps*I``, and ``v = x - mu`` for a test feature ``x``.

Two exact forms of the same distance ``d^2(v) = v^T Sigma^{-1} v``:

* ``"lowrank"`` (used when ``N < C``, e.g. k*22 = 176 supports < 448 channels). Fit: the ``N x N``
  Gram ``G = A A^T`` and the Cholesky factor ``L L^T = G + eps*I_N``; no ``C x C`` matrix is ever
  formed. Score, the *residual form*: with ``y = (G + eps*I)^{-1} A v`` (``N``-vector; two triangular
  solves with ``L``) and the explicit residual ``r = v - A^T y`` (``C``-vector),

      d^2 = |r|^2 / eps + |y|^2.                                            (1)

  Derivation: Woodbury gives ``Sigma^{-1} v = (v - A^T y) / eps = r / eps``, so
  ``d^2 = v^T r / eps``. Write ``v = r + A^T y``: ``v^T r = |r|^2 + y^T A r`` and
  ``A r = A v - G y = eps*y`` (definition of ``y``), hence ``v^T r / eps = |r|^2/eps + |y|^2``.
  Both terms are sums of squares: nothing cancels. The textbook Woodbury form
  ``(|v|^2 - |L^{-1} A v|^2) / eps`` subtracts two numbers that are both ~``|v|^2`` when ``v`` lies
  near the supports' span (a test image equal to a support) and divides the difference by eps;
  in float32 it is off by up to 3.6e-4 relative on the distance for real features
  (``benchmarks/exactness.py``), which is why the kit used to run it in float64.
  (1) is moreover *variational*: ``f(y') = |v - A^T y'|^2/eps + |y'|^2`` is the ridge-regression
  objective whose minimiser is ``y``, so ``f`` is stationary there and an error ``dy`` in ``y``
  (rounding of ``G``, ``L`` or the solves, all float32) changes ``d^2`` only by
  ``dy^T (G + eps*I) dy / eps``, second order. Only the float32 rounding of ``A v``, ``A^T y``
  and of ``A`` itself enters to first order, each ~1e-7 relative to ``|v|``, not ``|v|^2/eps``.
  Measured on real features (bottle and metal_plate, ResNet-18 and MobileNetV2, k = 1, 2, 8,
  test images equal to a support included): float32 fit + scoring within 2.2e-6 relative of a
  float64 reference on ``d`` (``benchmarks/exactness.py``), against 1e-4 required.
* ``"full"`` (``N >= C``). Fit: the float32 QR factorisation of the stacked ``(N + C) x C`` matrix
  ``[A; sqrt(eps)*I]``, whose ``R`` satisfies ``R^T R = A^T A + eps*I = Sigma`` without ever forming
  ``A^T A`` (forming it in float32 squares the condition number: 4e-5 relative error on real
  features; the QR route measured 2e-6). Stored as ``L = R^T``. Score: ``d^2 = |L^{-1} v|^2`` by
  triangular solve (a sum of squares, float32).

Precision: everything is float32 (the features' dtype), on every device. The one exception is a
fallback: a position whose float32 ``G + eps*I`` is not numerically positive definite (possible
only when the features' scale makes float32 rounding of ``G`` comparable to eps, never seen on
real features) has its small ``N x N`` Gram and Cholesky redone in float64 and stored in float32.
float64 runs at 1/32 of the float32 rate or less on the GPUs a course has, and the residual form
makes it unnecessary.

Speed on CPU (same numbers; measured on 2 shared cores, k=8, C=448, 56x56, see benchmarks/README.md):

* Chunks are small (a few tens of positions, :data:`CPU_CHUNK_BYTES` of temporaries) and their
  buffers are reused: large temporaries are fresh ``mmap`` pages every time, and the page faults
  cost more than the arithmetic.
* Support features are copied to the position-major ``[P, N, C]`` layout through a small staging
  buffer (or directly when they are ``channels_last``, as :meth:`fsad.models.regad.RegADModel.embed`
  returns them): gathering ``[N, C, P]`` straight into ``[P, N, C]`` is ~4-30x slower.
* The per-position linear algebra runs with one thread (:func:`single_thread_cpu`): torch loops
  over the batch calling BLAS/LAPACK once per small matrix, and oneMKL's threading of each small
  call makes every call synchronise its threads, which costs far more than it gains on a busy
  machine (Cholesky 25x and the scoring GEMMs 4x slower with 2 threads on a loaded 2-core box).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fsad.errors import CheckpointError
from fsad.utils import adopt_buffer_shapes

# Regulariser of the covariance, Sigma + eps*I: RegAD paper Eq. 4 and the authors' test.py
# (``torch.cov(...) + 0.01 * I``), inherited from PaDiM.
GAUSSIAN_EPS = 0.01
# Working-memory budget used to pick chunk_size when it is not given (bytes).
DEFAULT_MEMORY_BUDGET = 1 << 30
METHODS = ("auto", "lowrank", "full")
# CPU only: cap on the per-chunk temporaries (bytes) when chunk_size is automatic. Keeps them in
# cache and below glibc's mmap threshold (32 MiB), so buffers are not re-faulted chunk after chunk.
CPU_CHUNK_BYTES = 24 << 20


# Intra-op threads for the per-position loops on CPU (see single_thread_cpu); None = torch's setting.
CPU_LINALG_THREADS: int | None = 1


@contextlib.contextmanager
def single_thread_cpu(device: torch.device | str) -> Iterator[None]:
    """Run the enclosed torch ops with :data:`CPU_LINALG_THREADS` intra-op threads on CPU.

    Batched ``matmul`` / ``cholesky`` / ``solve_triangular`` on CPU call BLAS/LAPACK once per small
    matrix (176x176 or 448x448 here); letting oneMKL thread each call makes every call synchronise
    its threads. Measured on a loaded 2-core machine (k=8, C=448): Cholesky 25x, scoring 4x and the
    whole fit 2x slower with 2 threads than with 1. Set ``fsad.gaussian.CPU_LINALG_THREADS = None``
    to use torch's thread count instead (e.g. on an idle many-core workstation). No-op off CPU.
    Changes torch's global thread setting while active (not thread-safe across Python threads).
    """
    threads = CPU_LINALG_THREADS
    if torch.device(device).type != "cpu" or threads is None or torch.get_num_threads() == threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _position_major(flat: torch.Tensor, start: int, stop: int, out: torch.Tensor, staging: torch.Tensor | None) -> None:
    """Copy positions ``start:stop`` of ``flat`` ``[N, C, P]`` into ``out`` ``[stop-start, N, C]``.

    If ``flat`` is channel-contiguous (``channels_last`` features), the copy reads whole channel
    vectors. Otherwise it goes through ``staging`` ``[N, C, chunk]``: a contiguous slab first
    (rows of positions), then a transpose inside cache — ~4x faster than the direct strided gather.
    """
    view = flat[:, :, start:stop]
    if staging is None or flat.stride(1) == 1:
        out.copy_(view.permute(2, 0, 1))
        return
    slab = staging[:, :, : stop - start]
    slab.copy_(view)
    out.copy_(slab.permute(2, 0, 1))


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


# CPU only: rows per block of the lower-triangular Gram (see _lower_gram).
GRAM_BLOCK = 44


def _lower_gram(x: torch.Tensor, out: torch.Tensor, transpose: bool) -> None:
    """Lower triangle (block-wise) of ``x @ x^T`` (or ``x^T @ x`` if ``transpose``) into ``out``.

    ``torch.linalg.cholesky`` reads only the lower triangle, so on CPU the strictly-upper blocks are
    skipped: with 44-row blocks the GEMM does ~60% of the full product's work (measured in float64
    1.7 s vs 2.1 s for k=8, C=448). Entries of the strict upper triangle outside the diagonal
    blocks are left as they were. On other devices the whole product is one batched GEMM.
    """
    rows = x.mT if transpose else x  # [b, R, K]: out = rows @ rows^T
    if x.device.type != "cpu":
        torch.matmul(rows, rows.mT, out=out)
        return
    size = rows.shape[1]
    for i in range(0, size, GRAM_BLOCK):
        j = min(i + GRAM_BLOCK, size)
        torch.matmul(rows[:, i:j], rows[:, :j].mT, out=out[:, i:j, :j])


def _auto_chunk(bytes_per_position: int, num_positions: int, budget: int) -> int:
    return int(max(1, min(num_positions, budget // max(1, bytes_per_position))))


def _pick_chunk(
    per_position: int, temp_per_position: int, num_positions: int, budget: int, device: torch.device
) -> int:
    chunk = _auto_chunk(per_position, num_positions, budget)
    if device.type == "cpu":  # small, cache-resident, reused temporaries (see CPU_CHUNK_BYTES)
        chunk = min(chunk, _auto_chunk(temp_per_position, num_positions, CPU_CHUNK_BYTES))
    return chunk


def _float64_fallback(a: torch.Tensor, gram: torch.Tensor, info: torch.Tensor, eps: float) -> None:
    """Redo, in float64, the Cholesky of the positions whose float32 ``A A^T + eps*I`` failed.

    Only when float32 rounding of the Gram (~6e-8 * its largest entry) reaches eps can the
    regularised Gram lose positive definiteness in float32; the ``N x N`` Gram and its Cholesky of
    just those positions are then recomputed in float64 and stored back in ``gram``'s dtype. Never
    triggered on real features (see the module docstring); costs nothing when ``info`` is all 0.
    """
    failed = torch.nonzero(info).flatten()
    if failed.numel() == 0:
        return
    a64 = a[failed].double()
    g64 = a64 @ a64.mT
    g64.diagonal(dim1=-2, dim2=-1).add_(eps)
    gram[failed] = torch.linalg.cholesky(g64).to(gram.dtype)


class PositionalGaussian(nn.Module):
    """One Gaussian per spatial position over ``C`` channels, fitted and scored in batches.

    An ``nn.Module`` whose fitted state is its buffers, so ``.to(device)``, ``state_dict()`` /
    ``load_state_dict()`` (strict key checking) and ``torch.save`` + ``torch.load(weights_only=True)``
    are torch's own: ``mean`` ``[P, C']``; ``factor_a`` ``[P, N, C']`` (low-rank form: the centred
    supports / sqrt(N-1); empty in the full form); ``chol`` (low-rank: ``[P, N, N]`` Cholesky factor of
    ``A A^T + eps*I``; full: ``[P, C', C']``, ``R^T`` of the QR); ``channels`` (the channel subset's
    indices; empty = all channels). All are empty before :meth:`fit`. The settings that are not tensors
    (``method_``, ``eps``, ``num_channels``, ``spatial``, ``num_samples``, ``chunk_size``,
    ``memory_budget``) travel as the module's extra state, a dict of plain numbers and strings that
    ``torch.load(weights_only=True)`` reads. Calling the module is :meth:`mahalanobis`.

    Example:
        >>> support = torch.randn(44, 448, 8, 8)           # N=44 augmented supports
        >>> g = PositionalGaussian().fit(support)            # N < C -> exact low-rank form
        >>> g.method_
        'lowrank'
        >>> g.mahalanobis(torch.randn(5, 448, 8, 8)).shape  # [M, H, W]
        torch.Size([5, 8, 8])
        >>> h = PositionalGaussian()
        >>> h.load_state_dict(g.state_dict())
        <All keys matched successfully>
    """

    mean: torch.Tensor
    factor_a: torch.Tensor
    chol: torch.Tensor
    channels: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.method_: str | None = None  # "lowrank" or "full" once fitted
        self.eps: float = GAUSSIAN_EPS
        self.num_channels: int | None = None  # C of the features given to fit (before subset)
        self.spatial: tuple[int, int] | None = None
        self.num_samples: int | None = None
        self.chunk_size: int | None = None
        self.memory_budget: int = DEFAULT_MEMORY_BUDGET
        for name in _FLOAT_BUFFERS:
            self.register_buffer(name, torch.empty(0))
        self.register_buffer("channels", torch.empty(0, dtype=torch.long))
        self.register_load_state_dict_pre_hook(_check_and_adopt_state)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        features: torch.Tensor,
        eps: float = GAUSSIAN_EPS,
        method: str = "auto",
        chunk_size: int | None = None,
        channels: torch.Tensor | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        *,
        overwrite_features: bool = False,
    ) -> "PositionalGaussian":
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
            overwrite_features: allow the low-rank fit to keep ``features``' memory as its factor
                ``A`` (centred in place, so the tensor's values are overwritten), saving a copy of
                the whole feature tensor. Used only when the storage is already position-major,
                i.e. ``features.permute(2, 3, 0, 1)`` is contiguous (what
                :meth:`position_major_buffer` gives) and no channel subset is taken; ignored
                otherwise.

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
                raise ValueError(
                    f"channels must index the {c} feature channels (0..{c - 1}), "
                    f"got {channels.numel()} indices in [{channels.min().item() if channels.numel() else '-'}, "
                    f"{channels.max().item() if channels.numel() else '-'}]."
                )
            channels = channels.to(features.device)
            features = features.index_select(1, channels)
        cd = features.shape[1]
        if method == "auto":
            method = "lowrank" if n < cd else "full"
        dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
        p = h * w
        flat = features.reshape(n, cd, p)
        item = torch.finfo(dtype).bits // 8
        dev = features.device
        # Temporaries per position: staging slab (N*C), then lowrank: Gram (N*N); full: the stacked
        # [A; sqrt(eps) I] ((N+C)*C) and QR's R and workspace (~2*C*C).
        temp = n * cd * item + (n * n * item if method == "lowrank" else ((n + cd) * cd + 2 * cd * cd) * item)
        stored = n * cd * item + n * n * item if method == "lowrank" else cd * cd * item
        chunk = chunk_size or _pick_chunk(temp + stored, temp, p, memory_budget, dev)

        denom = math.sqrt(max(n - 1, 1))  # N = 1: A = 0, i.e. zero sample covariance
        # Outputs are preallocated and filled chunk by chunk (no list + cat, which would hold the
        # factors twice at the end of the fit); temporaries are allocated once and reused.
        mean = torch.empty(p, cd, dtype=dtype, device=dev)
        k = min(chunk, p)
        staging = torch.empty(n, cd, k, dtype=dtype, device=dev) if flat.stride(1) != 1 else None
        in_place = (
            overwrite_features
            and method == "lowrank"
            and channels is None
            and features.dtype == dtype
            and features.permute(2, 3, 0, 1).is_contiguous()
        )
        if in_place:
            staging = None
        if method == "lowrank":
            factor_a = (
                features.permute(2, 3, 0, 1).reshape(p, n, cd)
                if in_place
                else torch.empty(p, n, cd, dtype=dtype, device=dev)
            )
            chol = torch.empty(p, n, n, dtype=dtype, device=dev)
            stacked = None
        else:
            factor_a = None
            chol = torch.empty(p, cd, cd, dtype=dtype, device=dev)
            # [A; sqrt(eps) I] per position: A is written into the top N rows chunk by chunk, the
            # bottom block is set once (torch.linalg.qr does not overwrite its input).
            stacked = torch.zeros(k, n + cd, cd, dtype=dtype, device=dev)
            stacked[:, n:].diagonal(dim1=-2, dim2=-1).fill_(math.sqrt(eps))
        with single_thread_cpu(dev):
            for start in range(0, p, chunk):
                stop = min(start + chunk, p)
                m = stop - start
                # A contiguous [p, N, C] block of our own: batched GEMMs on the strided permuted view
                # are ~5x slower, and owning it lets the centring run in place.
                a = factor_a[start:stop] if factor_a is not None else stacked[:m, :n]
                if not in_place:
                    _position_major(flat, start, stop, a, staging)
                torch.mean(a, dim=1, out=mean[start:stop])
                a.sub_(mean[start:stop].unsqueeze(1)).mul_(1.0 / denom)
                if method == "lowrank":
                    gram = chol[start:stop]  # the Gram is factorised in place (lower triangle)
                    _lower_gram(a, gram, transpose=False)
                    gram.diagonal(dim1=-2, dim2=-1).add_(eps)
                    _, info = torch.linalg.cholesky_ex(gram, out=(gram, torch.empty(0, dtype=torch.int32, device=dev)))
                    _float64_fallback(a, gram, info, eps)
                else:
                    r = torch.linalg.qr(stacked[:m], mode="r").R  # [m, C, C], R^T R = A^T A + eps I
                    chol[start:stop].copy_(r.mT)

        self.method_ = method
        self.eps = float(eps)
        self.mean = mean
        self.factor_a = factor_a if factor_a is not None else mean.new_empty(0)
        self.chol = chol
        self.channels = channels if channels is not None else torch.empty(0, dtype=torch.long, device=dev)
        self.num_channels = c
        self.spatial = (h, w)
        self.num_samples = n
        self.chunk_size = chunk
        self.memory_budget = memory_budget
        return self

    @staticmethod
    def position_major_buffer(
        n: int, c: int, h: int, w: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """An empty ``[N, C, H, W]`` tensor stored position-major (``[H, W, N, C]`` in memory).

        Fill it with support features (e.g. ``RegADModel.embed(x, out=buffer[i:j])``) and pass it to
        ``fit(buffer, overwrite_features=True)``: the low-rank fit then uses it as its factor in place
        instead of copying 1 GiB (k=8, C=448, 56x56) into a new one.
        """
        return torch.empty(h, w, n, c, dtype=dtype, device=device).permute(2, 3, 0, 1)

    # ---------------------------------------------------------------- score
    def mahalanobis(self, features: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Mahalanobis distance of every test feature to its position's Gaussian.

        Args:
            features: ``[M, C, H, W]`` with the same ``C, H, W`` as the fitted supports.
            chunk_size: positions per batch (default: picked from the fit's memory budget).

        Returns:
            ``[M, H, W]`` distances ``sqrt(d^2)`` (``d^2`` clamped at 0), in the features' float dtype.
        """
        if self.method_ is None:
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
        mean, factor_a, chol = self.mean, self.factor_a, self.chol
        device = mean.device
        features = features.to(device)
        if self.channels.numel():
            features = features.index_select(1, self.channels.to(device))
        cd = features.shape[1]
        dtype = mean.dtype
        p = h * w
        flat = features.reshape(m, cd, p)
        n = self.num_samples
        item = torch.finfo(dtype).bits // 8
        # staging + v (2*M*C), lowrank: A v and y (2*N*M); full: the solve's output (M*C).
        temp = 2 * m * cd * item + (2 * n * m * item if self.method_ == "lowrank" else m * cd * item)
        chunk = chunk_size or _pick_chunk(temp, temp, p, self.memory_budget, device)
        k = min(chunk, p)
        x_buf = torch.empty(k, m, cd, dtype=dtype, device=device)
        staging = torch.empty(m, cd, k, dtype=features.dtype, device=device) if flat.stride(1) != 1 else None
        d2 = torch.empty(p, m, dtype=dtype, device=device)
        chol = chol if chol.dtype == dtype else chol.to(dtype)  # states saved by older versions
        with single_thread_cpu(device):
            for start in range(0, p, chunk):
                stop = min(start + chunk, p)
                v = x_buf[: stop - start]
                _position_major(flat, start, stop, v, staging)  # [p, M, C]
                v.sub_(mean[start:stop].unsqueeze(1))
                if self.method_ == "lowrank":
                    # Residual form (1) of the module docstring: d^2 = |v - A^T y|^2 / eps + |y|^2.
                    a = factor_a[start:stop]  # [p, N, C]
                    y = torch.cholesky_solve(torch.matmul(a, v.mT), chol[start:stop])  # [p, N, M]
                    v.baddbmm_(y.mT, a, alpha=-1.0)  # r = v - A^T y, in place
                    torch.linalg.vecdot(v, v, out=d2[start:stop])
                    d2[start:stop].div_(self.eps).add_(torch.linalg.vecdot(y, y, dim=1))
                else:
                    z = torch.linalg.solve_triangular(chol[start:stop], v.mT, upper=False)  # [p, C, M]
                    torch.linalg.vecdot(z, z, dim=1, out=d2[start:stop])

        return d2.clamp_min(0).sqrt().mT.reshape(m, h, w)

    def forward(self, features: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """:meth:`mahalanobis`."""
        return self.mahalanobis(features, chunk_size)

    def extra_repr(self) -> str:
        if self.method_ is None:
            return "not fitted"
        h, w = self.spatial
        return f"method={self.method_!r}, N={self.num_samples}, C={self.mean.shape[1]}, H×W={h}×{w}, eps={self.eps}"

    # ---------------------------------------------------------------- state
    # The tensors are buffers (saved and loaded by nn.Module); only the settings need these two hooks.
    def get_extra_state(self) -> dict[str, Any]:
        """The non-tensor settings, saved by ``state_dict()`` beside the buffers."""
        spatial = None if self.spatial is None else list(self.spatial)
        return {key: getattr(self, key) for key in _SETTINGS} | {"spatial": spatial}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the settings of :meth:`get_extra_state` (``load_state_dict`` calls it)."""
        _check_settings(state)
        for key in _SETTINGS:
            setattr(self, key, state[key])
        self.spatial = None if state["spatial"] is None else tuple(state["spatial"])


# Buffers of PositionalGaussian: the float ones (empty until fit) and `channels` (empty = all channels).
_FLOAT_BUFFERS = ("mean", "factor_a", "chol")
# Settings saved as its extra state besides "spatial".
_SETTINGS = ("method_", "eps", "num_channels", "num_samples", "chunk_size", "memory_budget")


def _check_settings(state: Any) -> None:
    if not isinstance(state, dict) or set(state) != {*_SETTINGS, "spatial"}:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"PositionalGaussian state has settings {keys}, expected {sorted({*_SETTINGS, 'spatial'})}; "
            "was it made by PositionalGaussian.state_dict()?"
        )
    if state["method_"] not in (None, "lowrank", "full"):
        raise CheckpointError(f"PositionalGaussian state has unknown method {state['method_']!r}.")


def _check_and_adopt_state(module: PositionalGaussian, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Before ``load_state_dict`` copies anything: refuse a state of the wrong form, then size the buffers."""
    settings = state_dict.get(prefix + "_extra_state")
    if settings is None and prefix + "method" in state_dict:
        raise CheckpointError(
            "This PositionalGaussian state has the layout of fsad before the Gaussian became an nn.Module "
            "(keys 'method', 'eps', ...); fit the Gaussian again and save its state_dict()."
        )
    if settings is not None:
        _check_settings(settings)
        method, (h, w) = settings["method_"], settings["spatial"] or (0, 0)
        mean, factor_a = state_dict.get(prefix + "mean"), state_dict.get(prefix + "factor_a")
        if (method is not None and isinstance(mean, torch.Tensor)) and (
            mean.dim() != 2 or mean.shape[0] != h * w or (method == "lowrank" and getattr(factor_a, "ndim", 0) != 3)
        ):
            raise CheckpointError(
                f"PositionalGaussian state does not fit together: method {method!r}, spatial {h}x{w}, mean "
                f"{tuple(mean.shape)}, factor_a {tuple(getattr(factor_a, 'shape', ()))}; was it edited by hand?"
            )
    adopt_buffer_shapes(module, state_dict, prefix)
