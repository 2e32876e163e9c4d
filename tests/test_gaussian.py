"""Per-position Gaussian: both exact forms against a plain NumPy reference (the authors' recipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsad.gaussian import GAUSSIAN_EPS, PositionalGaussian, random_channel_subset


def _features(n: int, c: int, h: int, w: int, seed: int, rank: int | None = None) -> torch.Tensor:
    """Random features; with `rank`, ReLU of a low-rank mix with spread channel scales (like CNN features)."""
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(n, c, h, w, generator=gen)
    basis = torch.randn(rank, c, generator=torch.Generator().manual_seed(99)) * torch.logspace(0, 1, c)
    z = torch.randn(n, h * w, rank, generator=gen) @ basis + 0.1 * torch.randn(n, h * w, c, generator=gen)
    return torch.relu(z).permute(0, 2, 1).reshape(n, c, h, w).contiguous()


def _numpy_reference(support: torch.Tensor, test: torch.Tensor, eps: float = GAUSSIAN_EPS) -> np.ndarray:
    """The authors' per-position loop: np.cov + eps*I, np.linalg.inv, sqrt((x-mu)^T S^-1 (x-mu))."""
    s = support.double().numpy()
    t = test.double().numpy()
    n, c, h, w = s.shape
    out = np.zeros((t.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            x = s[:, :, i, j]
            mu = x.mean(0)
            cov = np.cov(x, rowvar=False) + eps * np.eye(c)
            inv = np.linalg.inv(cov)
            for m in range(t.shape[0]):
                v = t[m, :, i, j] - mu
                out[m, i, j] = np.sqrt(v @ inv @ v)
    return out


@pytest.mark.parametrize("n, method", [(12, "lowrank"), (12, "auto"), (80, "full"), (80, "auto")])
def test_matches_numpy_reference(n, method):
    support = _features(n, 32, 3, 4, seed=1)
    test = _features(5, 32, 3, 4, seed=2)
    g = PositionalGaussian().fit(support, method=method)
    assert g.method_ == ("lowrank" if n < 32 else "full")
    got = g.mahalanobis(test).double().numpy()
    ref = _numpy_reference(support, test)
    assert got.shape == (5, 3, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_lowrank_and_full_agree_at_realistic_conditioning():
    # N=20 < C=96 on ReLU low-rank features: condition numbers far above random data's.
    support = _features(20, 96, 4, 4, seed=3, rank=8)
    test = torch.cat([_features(6, 96, 4, 4, seed=4, rank=8), support[:3]])  # incl. in-sample points
    low = PositionalGaussian().fit(support, method="lowrank").mahalanobis(test)
    full = PositionalGaussian().fit(support, method="full").mahalanobis(test)
    torch.testing.assert_close(low, full, rtol=1e-4, atol=0)
    ref = _numpy_reference(support, test[:2])
    np.testing.assert_allclose(low[:2].double().numpy(), ref, rtol=1e-4)


@pytest.mark.parametrize("method", ["lowrank", "full"])
def test_chunking_gives_identical_results(method):
    support = _features(24, 16, 5, 3, seed=5)
    test = _features(4, 16, 5, 3, seed=6)
    whole = PositionalGaussian().fit(support, method=method, chunk_size=10_000)
    parts = PositionalGaussian().fit(support, method=method, chunk_size=4)
    assert parts.chunk_size == 4
    torch.testing.assert_close(parts.mean, whole.mean, rtol=0, atol=0)
    a = whole.mahalanobis(test, chunk_size=10_000)
    b = parts.mahalanobis(test, chunk_size=4)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    # A tiny memory budget forces one position per chunk, with the same answer.
    tiny = PositionalGaussian().fit(support, method=method, memory_budget=1)
    assert tiny.chunk_size == 1
    torch.testing.assert_close(tiny.mahalanobis(test), a, rtol=1e-6, atol=0)


def test_channel_subset_equals_reference_on_the_subset():
    idx = random_channel_subset(40, 10, seed=7)
    assert idx.dtype == torch.long and idx.numel() == 10 and idx.unique().numel() == 10
    assert torch.equal(idx, random_channel_subset(40, 10, seed=7))
    assert not torch.equal(idx, random_channel_subset(40, 10, seed=8))
    support = _features(30, 40, 2, 2, seed=9)
    test = _features(3, 40, 2, 2, seed=10)
    g = PositionalGaussian().fit(support, channels=idx)
    assert g.method_ == "full"  # N=30 >= d=10
    got = g.mahalanobis(test)  # the stored subset is applied to full-channel test features
    ref = _numpy_reference(support[:, idx], test[:, idx])
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-4)


def test_single_support_uses_eps_identity():
    # One sample: np.cov is undefined; we take the sample covariance as 0, so Sigma = eps*I.
    support = _features(1, 8, 2, 2, seed=11)
    test = _features(2, 8, 2, 2, seed=12)
    g = PositionalGaussian().fit(support)
    assert g.method_ == "lowrank"
    expected = (test - support).pow(2).sum(1).sqrt() / GAUSSIAN_EPS**0.5
    torch.testing.assert_close(g.mahalanobis(test), expected, rtol=1e-5, atol=0)
    assert torch.all(g.mahalanobis(support) == 0)


@pytest.mark.parametrize("n, channels", [(6, torch.arange(0, 12, 2)), (6, None), (40, None)])  # lowrank, full
def test_state_dict_round_trip(tmp_path, n, channels):
    # fit -> state_dict -> torch.save -> torch.load(weights_only=True) -> load_state_dict into a fresh module.
    support = _features(n, 12, 2, 3, seed=13)
    test = _features(2, 12, 2, 3, seed=14)
    g = PositionalGaussian().fit(support, eps=0.1, channels=channels, chunk_size=4)
    path = tmp_path / "gauss.pt"
    torch.save(g.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"mean", "factor_a", "chol", "channels", "_extra_state"}
    h = PositionalGaussian()
    assert repr(h) == "PositionalGaussian(not fitted)"
    with pytest.raises(RuntimeError, match="before fit"):
        h.mahalanobis(test)
    assert not h.load_state_dict(state).missing_keys
    assert repr(h) == f"PositionalGaussian(method={g.method_!r}, N={n}, C={g.mean.shape[1]}, H×W=2×3, eps=0.1)"
    assert (h.eps, h.method_, h.spatial, h.num_samples, h.num_channels, h.chunk_size) == (
        0.1,
        g.method_,
        (2, 3),
        n,
        12,
        4,
    )
    for name, buffer in g.named_buffers():
        assert torch.equal(h.get_buffer(name), buffer) and h.get_buffer(name).dtype == buffer.dtype
    assert torch.equal(h.mahalanobis(test), g.mahalanobis(test)) and torch.equal(h(test), g(test))
    # Loading into a module fitted on other data replaces every tensor and setting.
    other = PositionalGaussian().fit(_features(30, 12, 4, 4, seed=15))
    other.load_state_dict(state)
    assert torch.equal(other.mahalanobis(test), g.mahalanobis(test))


def test_unfitted_state_round_trips_as_unfitted():
    h = PositionalGaussian()
    h.load_state_dict(PositionalGaussian().state_dict())
    assert h.method_ is None and h.mean.numel() == 0
    with pytest.raises(RuntimeError, match="before fit"):
        h.mahalanobis(_features(1, 4, 2, 2, seed=0))


def test_strict_loading_refuses_states_of_the_wrong_form():
    from fsad.errors import CheckpointError

    g = PositionalGaussian().fit(_features(6, 12, 2, 3, seed=13))
    for missing in ("chol", "_extra_state"):
        state = g.state_dict()
        del state[missing]
        with pytest.raises(RuntimeError, match=f"Missing key.*{missing}"):
            PositionalGaussian().load_state_dict(state)
    with pytest.raises(RuntimeError, match="Unexpected key.*extra"):
        PositionalGaussian().load_state_dict(g.state_dict() | {"extra": torch.zeros(1)})
    state = g.state_dict()
    state["_extra_state"] = state["_extra_state"] | {"method_": "cholesky"}
    with pytest.raises(CheckpointError, match="unknown method 'cholesky'"):
        PositionalGaussian().load_state_dict(state)
    state = g.state_dict()
    state["_extra_state"] = {"method_": "lowrank"}
    with pytest.raises(CheckpointError, match="expected .*'eps'"):
        PositionalGaussian().load_state_dict(state)
    state = g.state_dict()
    state["mean"] = state["mean"][:2]
    with pytest.raises(CheckpointError, match=r"spatial 2x3, mean \(2, 12\)"):
        PositionalGaussian().load_state_dict(state)
    legacy = {"method": "lowrank", "eps": 0.01, "mean": g.mean, "chol": g.chol}  # the former hand-written layout
    with pytest.raises(CheckpointError, match="fit the Gaussian again"):
        PositionalGaussian().load_state_dict(legacy)
    h = PositionalGaussian()  # a refused state leaves the module as it was
    assert h.method_ is None and h.mean.numel() == 0


def test_to_moves_and_casts_the_fitted_state():
    support, test = _features(6, 12, 2, 3, seed=13), _features(2, 12, 2, 3, seed=14)
    g = PositionalGaussian().fit(support, channels=torch.arange(0, 12, 3))
    d32 = g.mahalanobis(test)
    before = {name: buffer.clone() for name, buffer in g.named_buffers()}
    assert g.to(torch.float64) is g
    for name in ("mean", "factor_a", "chol"):
        assert getattr(g, name).dtype == torch.float64
        assert torch.equal(getattr(g, name), before[name].double())
    assert g.channels.dtype == torch.long  # indices are not cast
    assert g.mahalanobis(test).dtype == torch.float64
    torch.testing.assert_close(g.mahalanobis(test).float(), d32, rtol=1e-6, atol=0)
    assert g.to("meta").mean.device.type == "meta" and g.channels.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_fitted_state_and_scores_there():
    support, test = _features(6, 12, 2, 3, seed=13), _features(2, 12, 2, 3, seed=14)
    g = PositionalGaussian().fit(support, channels=torch.arange(0, 12, 3))
    expected = g.mahalanobis(test)
    g.to("cuda")
    assert all(buffer.is_cuda for buffer in g.buffers())
    got = g.mahalanobis(test)  # CPU features are moved to the Gaussian's device
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-6)
    h = PositionalGaussian().to("cuda")
    h.load_state_dict(g.cpu().state_dict())  # loads onto the module's device, as nn.Module does
    assert all(buffer.is_cuda for buffer in h.buffers())


def test_distance_is_nonnegative_and_zero_at_the_mean():
    support = _features(10, 20, 2, 2, seed=15)
    g = PositionalGaussian().fit(support)
    at_mean = g.mahalanobis(support.mean(0, keepdim=True))
    assert torch.all(at_mean >= 0) and at_mean.max() < 1e-3


def test_bad_inputs_raise_clear_errors():
    support = _features(5, 8, 2, 2, seed=16)
    g = PositionalGaussian()
    with pytest.raises(RuntimeError, match="before fit"):
        g.mahalanobis(support)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        g.fit(support[0])
    with pytest.raises(ValueError, match="valid choices"):
        g.fit(support, method="cholesky")
    with pytest.raises(ValueError, match="eps must be > 0"):
        g.fit(support, eps=0.0)
    with pytest.raises(ValueError, match="at least one"):
        g.fit(support[:0])
    with pytest.raises(ValueError, match="chunk_size"):
        g.fit(support, chunk_size=0)
    with pytest.raises(ValueError, match="channels must index"):
        g.fit(support, channels=torch.tensor([0, 8]))
    g.fit(support)
    with pytest.raises(ValueError, match=r"C=9.*C=8"):
        g.mahalanobis(_features(2, 9, 2, 2, seed=17))
    with pytest.raises(ValueError, match="H×W=3×2"):
        g.mahalanobis(_features(2, 8, 3, 2, seed=17))
    with pytest.raises(ValueError, match=r"\[M, C, H, W\]"):
        g.mahalanobis(support[0])
    with pytest.raises(ValueError, match="between 1 and"):
        random_channel_subset(8, 9, seed=0)


@pytest.mark.parametrize("n", [12, 40])  # lowrank (N < C) and full (N >= C)
def test_memory_layout_and_threads_do_not_change_the_numbers(n, monkeypatch):
    import fsad.gaussian as gaussian

    support = _features(n, 24, 5, 6, seed=20)
    test = _features(4, 24, 5, 6, seed=21)
    ref = PositionalGaussian().fit(support, chunk_size=7)
    d_ref = ref.mahalanobis(test, chunk_size=7)
    # channels_last features (what RegADModel.embed returns) take the direct copy, NCHW the staging
    # buffer; the per-position arithmetic is the same, so the results are bitwise equal.
    cl = support.contiguous(memory_format=torch.channels_last)
    got = PositionalGaussian().fit(cl, chunk_size=7)
    for name in ("mean", "chol", "factor_a"):
        if getattr(ref, name) is not None:
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=0)
    torch.testing.assert_close(
        got.mahalanobis(test.contiguous(memory_format=torch.channels_last), chunk_size=7), d_ref, rtol=0, atol=0
    )
    # torch's own thread count instead of one thread: same numbers up to BLAS summation order.
    monkeypatch.setattr(gaussian, "CPU_LINALG_THREADS", None)
    threaded = PositionalGaussian().fit(support, chunk_size=7).mahalanobis(test, chunk_size=7)
    torch.testing.assert_close(threaded, d_ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(d_ref.double().numpy(), _numpy_reference(support, test), rtol=1e-4)


def test_single_thread_cpu_restores_the_thread_count():
    from fsad.gaussian import single_thread_cpu

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_thread_cpu("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="boom"):
            with single_thread_cpu(torch.device("cpu")):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
        with single_thread_cpu("meta"):  # other devices: untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_overwrite_features_fits_in_place_with_the_same_numbers():
    support = _features(10, 24, 3, 5, seed=22)
    test = _features(3, 24, 3, 5, seed=23)
    ref = PositionalGaussian().fit(support, chunk_size=4)
    buffer = PositionalGaussian.position_major_buffer(10, 24, 3, 5)
    assert buffer.shape == (10, 24, 3, 5) and buffer.permute(2, 3, 0, 1).is_contiguous()
    buffer.copy_(support)
    g = PositionalGaussian().fit(buffer, chunk_size=4, overwrite_features=True)
    assert g.factor_a.data_ptr() == buffer.data_ptr()  # no copy: the buffer became the factor
    for name in ("mean", "factor_a", "chol"):
        torch.testing.assert_close(getattr(g, name), getattr(ref, name), rtol=0, atol=0)
    torch.testing.assert_close(g.mahalanobis(test), ref.mahalanobis(test), rtol=0, atol=0)
    # Any other layout, the full form or a channel subset: the input is left untouched.
    for kwargs in ({}, {"channels": torch.arange(0, 24, 2)}):
        kept = support.clone()
        PositionalGaussian().fit(kept, overwrite_features=True, **kwargs)
        assert torch.equal(kept, support)
    full_input = PositionalGaussian.position_major_buffer(30, 8, 3, 5)
    full_input.copy_(_features(30, 8, 3, 5, seed=24))
    before = full_input.clone()
    assert PositionalGaussian().fit(full_input, overwrite_features=True).method_ == "full"
    assert torch.equal(full_input, before)


def test_float64_fallback_for_positions_whose_float32_cholesky_fails(monkeypatch):
    # Force the float32 Cholesky to report failure at every other position: those positions are refactorised
    # in float64 and the distances equal the normal fit's (and the NumPy reference).
    from fsad import gaussian

    support = _features(12, 32, 2, 3, seed=5)
    test = torch.cat([_features(3, 32, 2, 3, seed=6), support[:1]])
    expected = PositionalGaussian().fit(support).mahalanobis(test)
    real = torch.linalg.cholesky_ex
    failed_batches = []

    def failing(matrix, *, out=None):
        result = real(matrix, out=out)
        info = result[1]
        info[::2] = 1
        failed_batches.append(int((info > 0).sum()))
        return result

    monkeypatch.setattr(gaussian.torch.linalg, "cholesky_ex", failing)
    got = PositionalGaussian().fit(support).mahalanobis(test)
    assert sum(failed_batches) == 3  # half of the 6 positions went through the fallback
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    np.testing.assert_allclose(got.double().numpy(), _numpy_reference(support, test), rtol=1e-4)


def test_scoring_is_float32_throughout_and_old_float64_states_still_score():
    support = _features(12, 32, 2, 3, seed=7)
    g = PositionalGaussian().fit(support)
    assert g.chol.dtype == torch.float32 and g.factor_a.dtype == torch.float32
    state = g.state_dict()
    state["chol"] = state["chol"].double()  # a state saved when the factor was float64
    old = PositionalGaussian()
    old.load_state_dict(state)
    assert old.chol.dtype == torch.float64  # loaded as saved
    torch.testing.assert_close(old.mahalanobis(support), g.mahalanobis(support), rtol=1e-6, atol=1e-6)
    assert old.mahalanobis(support).dtype == torch.float32
