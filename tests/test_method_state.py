"""Fitted state as nn.Module buffers: the Gaussian methods and PatchCore save, load and move like any module."""

from __future__ import annotations

import pytest
import torch

from fsad.errors import CheckpointError
from fsad.methods import FewShotMethod, GaussianMethod, maps_and_image_scores
from fsad.models.regad import RegADModel
from fsad.patchcore import PatchCoreMethod

SIZE = 32


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _model(seed: int, stn_mode: str | None = None) -> RegADModel:
    return RegADModel("resnet18", image_size=SIZE, stn_mode=stn_mode, seed=seed).eval()


def _methods(model_seed: int) -> dict[str, torch.nn.Module]:
    """A Gaussian method with STNs, one with a channel subset (full form), PatchCore with coreset + Eq. 7."""
    return {
        "regad": GaussianMethod(_model(model_seed, "affine"), augment_families=("flip",)),
        "padim": GaussianMethod(_model(model_seed), augment_families=(), channel_subset=20, seed=3, name="padim"),
        "patchcore": PatchCoreMethod(_model(model_seed).backbone, coreset_ratio=0.5, seed=3, image_score="reweighted"),
    }


def _round_trip(method: torch.nn.Module, fresh: torch.nn.Module, tmp_path) -> dict[str, object]:
    path = tmp_path / "method.pt"
    torch.save(method.state_dict(), path)
    state = torch.load(path, weights_only=True)  # tensors and plain numbers only: nothing is unpickled
    result = fresh.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys
    return state


@pytest.mark.parametrize("name", ["regad", "padim", "patchcore"])
def test_fitted_method_round_trips_through_a_weights_only_file(name, tmp_path) -> None:
    method = _methods(model_seed=0)[name]
    assert isinstance(method, FewShotMethod)
    method.fit(_images(2, seed=1))
    fresh = _methods(model_seed=5)[name]  # other random weights, not fitted
    state = _round_trip(method, fresh, tmp_path)
    # The backbone's weights are in the state once (as the method's model or extractor), beside the fitted state.
    backbone = {k for k in state if ".backbone." in k or k.startswith("extractor.")}
    assert len(backbone) == len(_model(0).backbone.state_dict())
    fitted = {"patchcore": {"bank", "_extra_state"}}.get(name, {f"gaussian.{k}" for k in ("mean", "factor_a")})
    assert fitted <= set(state)
    test = _images(3, seed=2)
    features = method.embed(test)
    assert torch.equal(fresh.embed(test), features)
    assert torch.equal(fresh.score_features(features), method.score_features(features))
    for got, expected in zip(
        maps_and_image_scores(fresh, features, SIZE), maps_and_image_scores(method, features, SIZE)
    ):
        assert torch.equal(got, expected)
    assert fresh.describe() == method.describe()
    assert torch.equal(fresh(test), method.score(test))  # calling the module scores images


def test_patchcore_bank_is_a_buffer_that_loads_strictly() -> None:
    method = PatchCoreMethod(_model(0).backbone)
    assert method.describe()["bank_size"] is None
    method.fit(_images(2, seed=1))
    assert dict(method.named_buffers())["bank"] is method.bank and method.bank.shape == (2 * 4 * 4, 128 + 256)
    state = method.state_dict()
    del state["bank"]
    with pytest.raises(RuntimeError, match="Missing key.*bank"):
        PatchCoreMethod(_model(0).backbone).load_state_dict(state)
    state = method.state_dict()
    state["bank"] = state["bank"].reshape(2, 16, -1)
    with pytest.raises(CheckpointError, match=r"bank of shape \(2, 16, 384\)"):
        PatchCoreMethod(_model(0).backbone).load_state_dict(state)
    state = method.state_dict()
    state["_extra_state"] = {"bank_size": 3}
    with pytest.raises(CheckpointError, match="full_bank_size"):
        PatchCoreMethod(_model(0).backbone).load_state_dict(state)
    unfitted = PatchCoreMethod(_model(0).backbone)
    unfitted.load_state_dict(PatchCoreMethod(_model(0).backbone).state_dict())
    with pytest.raises(RuntimeError, match="before fit"):
        unfitted.score(_images(1, seed=3))


def test_to_moves_the_fitted_state_with_the_model() -> None:
    gaussian = GaussianMethod(_model(0), augment_families=())
    patchcore = PatchCoreMethod(_model(0).backbone)
    for method in (gaussian, patchcore):
        method.fit(_images(2, seed=1))
        method.to(torch.float64)
        assert all(b.dtype == torch.float64 for b in method.buffers() if b.is_floating_point() and b.numel())
        assert all(p.dtype == torch.float64 for p in method.parameters())
    assert gaussian.gaussian.mean.dtype == torch.float64 and gaussian.gaussian.channels.dtype == torch.long
    assert patchcore.bank.dtype == torch.float64
    test = _images(2, seed=2).double()
    assert gaussian.score(test).dtype == torch.float64 and patchcore.score(test).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_fitted_state_and_scores_there() -> None:
    methods = [GaussianMethod(_model(0), augment_families=()), PatchCoreMethod(_model(0).backbone)]
    test = _images(2, seed=2)
    for method in methods:
        method.fit(_images(2, seed=1))
        expected = method.score(test)
        method.to("cuda")
        assert all(b.is_cuda for b in method.buffers()) and all(p.is_cuda for p in method.parameters())
        got = method.score(test.cuda())
        assert got.is_cuda
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-4)
