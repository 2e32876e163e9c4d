"""Tests for fsad.models: backbone stages, Siamese heads and loss, and the assembled RegAD model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fsad.models import (
    STAGE_CHANNELS,
    FeatureExtractor,
    RegADModel,
    SiameseEncoder,
    SiamesePredictor,
    negative_cosine,
    registration_loss,
)
from fsad.models.stn import invert_theta, params_to_theta, warp


# ---------------------------------------------------------------- backbone
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_feature_extractor_shapes(backbone: str) -> None:
    torch.manual_seed(0)
    fe = FeatureExtractor(backbone).eval()
    feats = fe(torch.randn(2, 3, 64, 64))
    c1, c2, c3 = STAGE_CHANNELS[backbone]
    assert [tuple(f.shape) for f in feats] == [(2, c1, 16, 16), (2, c2, 8, 8), (2, c3, 4, 4)]
    assert fe.channels == (c1, c2, c3)


def _torchvision_stages(model: nn.Module, backbone: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference: run the torchvision model's own modules up to each stage output."""
    if backbone == "resnet18":
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        f1 = model.layer1(x)
        f2 = model.layer2(f1)
        return [f1, f2, model.layer3(f2)]
    outs, idx = [], {3, 6, 13}
    for i, block in enumerate(model.features[:14]):
        x = block(x)
        if i in idx:
            outs.append(x)
    return outs


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_feature_extractor_loads_torchvision_state_dict_strictly(backbone: str) -> None:
    torch.manual_seed(1)
    reference = getattr(torchvision.models, backbone)(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a BN that was not loaded would show
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.manual_seed(2)  # a different random init, so only the load can make them equal
    fe = FeatureExtractor(backbone, state_dict=reference.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(fe(x), _torchvision_stages(reference, backbone, x)):
            torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    keys = fe.state_dict().keys()
    assert not any(k.split(".")[-2] in {"fc", "classifier"} or "layer4" in k for k in keys)
    if backbone == "mobilenet_v2":  # features[14:] dropped, original block indices kept in the names
        assert {k.split(".")[2] for k in keys} == {str(i) for i in range(14)}


def test_feature_extractor_rejects_wrong_state_dicts() -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer2")}
    with pytest.raises(ValueError, match=r"not a torchvision resnet18 state dict: missing keys \['layer2"):
        FeatureExtractor("resnet18", state_dict=partial)
    with pytest.raises(ValueError, match="not a torchvision resnet18 state dict.*load_backbone_weights"):
        FeatureExtractor("resnet18", state_dict=torchvision.models.mobilenet_v2(weights=None).state_dict())
    with pytest.raises(ValueError, match="not a torchvision mobilenet_v2 state dict"):
        FeatureExtractor("mobilenet_v2", state_dict=state)


def test_unknown_backbone_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid backbones: resnet18, mobilenet_v2"):
        FeatureExtractor("resnet50")


# ---------------------------------------------------------------- Siamese heads and loss
def _numpy_negative_cosine(p: np.ndarray, z: np.ndarray) -> float:
    dot = (p * z).sum(axis=1)
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(z, axis=1)
    return float(-(dot / norms).mean())


def test_negative_cosine_and_registration_loss_match_numpy() -> None:
    rng = np.random.default_rng(0)
    p_a, p_b, z_a, z_b = (rng.normal(size=(3, 16, 5, 4)) for _ in range(4))
    t = [torch.from_numpy(a) for a in (p_a, p_b, z_a, z_b)]
    assert negative_cosine(t[0], t[2]).item() == pytest.approx(_numpy_negative_cosine(p_a, z_a), abs=1e-12)
    expected = 0.5 * _numpy_negative_cosine(p_a, z_b) + 0.5 * _numpy_negative_cosine(p_b, z_a)
    assert registration_loss(*t).item() == pytest.approx(expected, abs=1e-12)
    per_position = negative_cosine(t[0], t[2], reduction="none")
    assert per_position.shape == (3, 5, 4)
    np.testing.assert_allclose(
        per_position.numpy(),
        -(p_a * z_a).sum(1) / (np.linalg.norm(p_a, axis=1) * np.linalg.norm(z_a, axis=1)),
        atol=1e-12,
    )
    # Hand-computed extremes: identical -> -1, opposite -> +1, orthogonal -> 0.
    v = torch.tensor([[1.0, 0.0]])
    assert negative_cosine(v, v).item() == pytest.approx(-1.0)
    assert negative_cosine(v, -v).item() == pytest.approx(1.0)
    assert negative_cosine(v, torch.tensor([[0.0, 2.0]])).item() == pytest.approx(0.0)


def test_stop_gradient_on_z() -> None:
    torch.manual_seed(0)
    p_a, p_b, z_a, z_b = (torch.randn(2, 8, 3, 3, requires_grad=True) for _ in range(4))
    registration_loss(p_a, p_b, z_a, z_b).backward()
    assert z_a.grad is None and z_b.grad is None
    assert p_a.grad is not None and p_a.grad.abs().sum() > 0
    assert p_b.grad is not None and p_b.grad.abs().sum() > 0


def test_stop_gradient_through_shared_encoder() -> None:
    # z and p come from the same encoder: the loss still trains it only through the p branch.
    torch.manual_seed(0)
    enc, pred = SiameseEncoder(8), SiamesePredictor(8)
    x_a, x_b = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    z_a, z_b = enc(x_a), enc(x_b)
    loss = registration_loss(pred(z_a), pred(z_b), z_a, z_b)
    loss.backward()
    grad_full = enc.net.conv1.weight.grad.clone()
    enc.zero_grad(), pred.zero_grad()
    # Same gradient when z is explicitly detached by the caller: the loss does it already.
    z_a, z_b = enc(x_a), enc(x_b)
    loss2 = registration_loss(pred(z_a), pred(z_b), z_a.detach(), z_b.detach())
    loss2.backward()
    torch.testing.assert_close(enc.net.conv1.weight.grad, grad_full)


def test_negative_cosine_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        negative_cosine(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))
    with pytest.raises(ValueError, match="valid: 'mean', 'none'"):
        negative_cosine(torch.ones(1, 4), torch.ones(1, 4), reduction="sum")


def test_heads_follow_authors_architecture() -> None:
    enc, pred = SiameseEncoder(256), SiamesePredictor(256)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.bias) for c in convs] == [(256, 256, (1, 1), None)] * 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in SiameseEncoder(256, out_bn=True).modules()) == 3
    assert [(c.in_channels, c.out_channels) for c in pred.modules() if isinstance(c, nn.Conv2d)] == [(256, 256)] * 2
    bottleneck = SiamesePredictor(256, hidden=64)
    assert [(c.in_channels, c.out_channels) for c in bottleneck.modules() if isinstance(c, nn.Conv2d)] == [
        (256, 64),
        (64, 256),
    ]
    x = torch.randn(2, 256, 4, 4)
    assert pred(enc(x)).shape == x.shape


# ---------------------------------------------------------------- RegAD model
@pytest.mark.parametrize(("backbone", "channels"), [("resnet18", (64, 128, 256)), ("mobilenet_v2", (24, 32, 96))])
@pytest.mark.parametrize(("size", "batch"), [(224, 1), (64, 2)])
def test_regad_shapes(backbone: str, channels: tuple[int, int, int], size: int, batch: int) -> None:
    model = RegADModel(backbone, image_size=size, seed=0).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        out = model(x)
    sides = (size // 4, size // 8, size // 16)
    assert [tuple(f.shape) for f in out.features] == [(batch, c, s, s) for c, s in zip(channels, sides)]
    assert [tuple(t.shape) for t in out.thetas] == [(batch, 2, 3)] * 3
    assert out.z.shape == out.p.shape == (batch, channels[2], sides[2], sides[2])
    assert model.embed(x).shape == (batch, sum(channels), sides[0], sides[0])
    assert model.embed_channels == sum(channels)


def _plain_embedding(model: RegADModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f1, f2, f3 = model.backbone(x)
    size = f1.shape[-2:]
    return torch.cat([f1] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in (f2, f3)], 1)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_identity_stn_embed_equals_plain_backbone_features(backbone: str) -> None:
    model = RegADModel(backbone, image_size=64, seed=0)
    x = torch.randn(2, 3, 64, 64)
    emb = model.embed(x)  # model is in train mode: embed must switch to eval itself and restore
    assert model.training
    model.eval()
    torch.testing.assert_close(emb, _plain_embedding(model, x), atol=1e-5, rtol=0)
    # The 'S' ablation off: same backbone (same seed), no STNs, same embedding.
    no_stn = RegADModel(backbone, image_size=64, stn_mode=None, seed=0).eval()
    assert no_stn.stns is None
    out = no_stn(x)
    assert out.thetas == [None, None, None]
    torch.testing.assert_close(no_stn.embed(x), emb, atol=1e-5, rtol=0)


def _set_stn_bias(model: RegADModel, params: list[list[float]]) -> None:
    with torch.no_grad():
        for stn, p in zip(model.stns, params):
            stn.fc[-1].bias.copy_(torch.tensor(p))


def _smooth_field(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    freq, phase = torch.rand(3, 4, 2, generator=g) + 0.5, 6.28 * torch.rand(3, 4, generator=g)
    waves = [
        torch.sin(3.14 * (f[:, 0, None, None] * xs + f[:, 1, None, None] * ys) + ph[:, None, None])
        for f, ph in zip(freq, phase)
    ]
    return (sum(waves) / 3)[None]  # [1, 4, size, size]


def test_back_warp_undoes_all_earlier_stns_like_the_authors() -> None:
    # Simulate the forward pass on a smooth input-frame field F: each stage sees the map already warped by all
    # earlier STNs (a pointwise stage commutes with warping), then its own STN warps it again.
    field = _smooth_field(64, seed=0)
    thetas = [
        params_to_theta(torch.tensor([p]), "rotation_scale")
        for p in ([0.3, 1.1, 0.9], [-0.2, 0.95, 1.05], [0.25, 1.0, 1.1])
    ]
    registered, current = [], field
    for theta in thetas:
        current = warp(current, theta)
        registered.append(current)
    back = RegADModel.back_warp(registered, thetas)
    crop = slice(20, 44)
    for i, restored in enumerate(back):
        error = (restored - field)[..., crop, crop].abs().max().item()
        assert error < 0.05, f"stage {i + 1}: back-warped map differs from the input frame by {error}"
    # Undoing only a stage's own θ (not the earlier ones) would leave stage 3 misregistered.
    own_only = warp(registered[2], invert_theta(thetas[2]))
    assert (own_only - field)[..., crop, crop].abs().max() > 0.2  # measured 0.34 vs <= 0.01 above
    # Authors' sequential fix(fix(fix(f3, θ3⁻¹), θ2⁻¹), θ1⁻¹) is the same composition (interpolated 3×).
    inv = [invert_theta(t) for t in thetas]
    sequential = warp(warp(warp(registered[2], inv[2]), inv[1]), inv[0])
    assert (sequential - back[2])[..., crop, crop].abs().max() < 0.05


def test_embed_concatenates_back_warped_stages() -> None:
    model = RegADModel("resnet18", image_size=64, stn_mode="rotation_scale", seed=0).eval()
    _set_stn_bias(model, [[0.3, 1.1, 0.9], [-0.2, 0.95, 1.05], [0.25, 1.0, 1.1]])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        back = model.back_warp(*model.registered_features(x))
    emb = model.embed(x)
    torch.testing.assert_close(emb[:, :64], back[0])
    torch.testing.assert_close(
        emb[:, 64:192], F.interpolate(back[1], size=(16, 16), mode="bilinear", align_corners=False)
    )
    torch.testing.assert_close(
        emb[:, 192:], F.interpolate(back[2], size=(16, 16), mode="bilinear", align_corners=False)
    )
    assert not torch.allclose(emb, _plain_embedding(model, x), atol=1e-2), "non-identity STNs must change embed"


def test_stn_thetas_have_the_mode_structure() -> None:
    model = RegADModel("mobilenet_v2", image_size=64, stn_mode="translation", seed=0).eval()
    _set_stn_bias(model, [[0.1, -0.1]] * 3)
    thetas = model(torch.randn(2, 3, 64, 64)).thetas
    expected = params_to_theta(torch.tensor([[0.1, -0.1]] * 2), "translation")
    for theta in thetas:
        torch.testing.assert_close(theta, expected)


def test_regad_gradients_and_pair_loss() -> None:
    model = RegADModel("mobilenet_v2", image_size=64, seed=0)
    x_a, x_b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    loss = model.pair_loss(x_a, x_b)
    assert -1.0 <= loss.item() <= 1.0
    loss.backward()
    for part in (model.stns[2].fc[-1], model.encoder, model.predictor, model.backbone.stages[0]):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_freeze_backbone_keeps_bn_statistics_and_blocks_gradients() -> None:
    model = RegADModel("resnet18", image_size=64, seed=0).freeze_backbone(True)
    assert model.backbone_frozen
    model.train()
    assert not any(m.training for m in model.backbone.modules())
    assert model.stns.training and model.encoder.training
    bn = model.backbone.stages[0].bn1
    before = bn.running_mean.clone()
    model.pair_loss(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)).backward()
    torch.testing.assert_close(bn.running_mean, before, atol=0, rtol=0)
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert model.encoder.net.conv1.weight.grad is not None
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.backbone.parameters()) and model.backbone.training


def test_config_round_trip_and_seed() -> None:
    model = RegADModel("mobilenet_v2", image_size=64, stn_mode="affine", seed=3, predictor_hidden=24)
    config = model.config
    assert config == {
        "backbone": "mobilenet_v2",
        "image_size": 64,
        "stn_mode": "affine",
        "attention": "none",
        "dcn": False,
        "seed": 3,
        "encoder_out_bn": False,
        "predictor_hidden": 24,
    }
    state = torch.get_rng_state()
    clone = RegADModel(**config)
    assert torch.equal(torch.get_rng_state(), state), "a seeded build must not touch the global RNG"
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name
    other = RegADModel(**{**config, "seed": 4})
    assert not torch.equal(other.encoder.net.conv1.weight, model.encoder.net.conv1.weight)


def test_attention_and_dcn_are_wired() -> None:
    from fsad.models.attention import MultidimensionalAttention, TripletAttention
    from fsad.models.deform import ModulatedDeformConv2d

    model = RegADModel("mobilenet_v2", image_size=64, attention="mam", dcn=True, seed=0).eval()
    assert isinstance(model.attention, MultidimensionalAttention)
    assert isinstance(model.encoder.net.conv1, ModulatedDeformConv2d)
    assert isinstance(RegADModel("mobilenet_v2", image_size=64, attention="tam", seed=0).attention, TripletAttention)
    seen = []
    model.attention.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape, out)))
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert seen[0][0] == (2, 3, 64, 64), "attention must see the input image"
    with torch.no_grad():  # the backbone is fed the attention's output
        torch.testing.assert_close(model.backbone.stages[0](seen[0][1]), out.features[0], atol=1e-5, rtol=0)
    assert out.p.shape == (2, 96, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "vgg16"}, "valid backbones: resnet18, mobilenet_v2"),
        ({"image_size": 100}, "multiple of 32"),
        ({"image_size": 16}, "multiple of 32 and >= 32"),
        ({"image_size": 224.0}, "multiple of 32"),
        ({"stn_mode": "rotation+scale"}, "valid modes: translation, rotation, scale, shear, rotation_scale"),
        ({"attention": "cbam"}, "valid kinds: none, tam, mam"),
        ({"dcn": "yes"}, "dcn must be True or False"),
    ],
)
def test_regad_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegADModel(**{"image_size": 64, **kwargs})


def test_regad_rejects_wrong_input_size() -> None:
    model = RegADModel("mobilenet_v2", image_size=64, seed=0)
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\].*image_size=96"):
        model(torch.randn(1, 3, 96, 96))


# ---------------------------------------------------------------- evaluation fast paths (exact)
def test_untrained_stn_skips_localisation_only_without_autograd() -> None:
    from fsad.models.stn import SpatialTransformer, is_identity_theta, warp_if_needed

    torch.manual_seed(0)
    stn = SpatialTransformer(8, 16, "rotation_scale").eval()
    x = torch.randn(3, 8, 16, 16)
    calls = []
    hook = stn.localization.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        warped, theta = stn(x)
    assert calls == [] and warped is x and is_identity_theta(theta)  # exact identity: no net, no warp
    warped, theta = stn(x)  # autograd on: the net runs (the zero weights still get a gradient)
    assert calls == [1] and is_identity_theta(theta) and warped is not x
    with torch.no_grad():
        stn.fc[-1].weight.fill_(1e-3)  # "trained": θ depends on the input, the net must run
        _, theta = stn(x)
    assert calls == [1, 1] and not is_identity_theta(theta)
    hook.remove()
    # warp_if_needed runs the warp whenever a gradient is needed or θ is not exactly the identity.
    eye = params_to_theta(torch.tensor([[0.0, 1.0, 1.0]] * 3), "rotation_scale")
    xg = x.clone().requires_grad_()
    assert warp_if_needed(xg, eye).grad_fn is not None
    assert not torch.equal(warp_if_needed(x, eye + 1e-3), x)
    torch.testing.assert_close(warp_if_needed(x, eye), warp(x, eye), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_embed_out_buffer_and_channels_last_are_the_same_numbers(backbone: str) -> None:
    model = RegADModel(backbone, image_size=64, seed=0).eval()
    _set_stn_bias(model, [[0.3, 1.1, 0.9], [-0.2, 0.95, 1.05], [0.25, 1.0, 1.1]])
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():  # reference: NCHW input, plain warps / upsampling / concatenation
        feats, thetas = model.registered_features(x)
        back = model.back_warp(feats, thetas)
        ref = torch.cat(
            [back[0]] + [F.interpolate(f, size=(16, 16), mode="bilinear", align_corners=False) for f in back[1:]], 1
        )
    emb = model.embed(x)
    assert emb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-5)
    buffer = torch.full((5, model.embed_channels, 16, 16), float("nan"))
    returned = model.embed(x, out=buffer[1:4])
    assert returned.data_ptr() == buffer[1:4].data_ptr()
    torch.testing.assert_close(buffer[1:4], emb, atol=0, rtol=0)
    assert buffer[0].isnan().all() and buffer[4].isnan().all()
    with pytest.raises(ValueError, match="out must have shape"):
        model.embed(x, out=buffer[:2])


def test_gaussian_method_batched_embed_matches_one_batch() -> None:
    from fsad.methods import GaussianMethod, batched_embed

    model = RegADModel("resnet18", image_size=32, stn_mode=None, seed=0)
    x = torch.randn(7, 3, 32, 32)
    whole = model.embed(x)
    method = GaussianMethod(model, augment_families=(), feature_batch=3)
    got = method.embed(x)  # written batch by batch into one buffer
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-5)
    generic = batched_embed(lambda b: b * 2, x, batch_size=3)  # any embed function, any batch split
    torch.testing.assert_close(generic, x * 2, atol=0, rtol=0)


def test_gaussian_method_fit_in_place_equals_fit_on_embeddings() -> None:
    from fsad.gaussian import PositionalGaussian
    from fsad.methods import GaussianMethod

    model = RegADModel("resnet18", image_size=32, seed=0)
    _set_stn_bias(model, [[0.1, 1.05, 0.95]] * 3)
    supports, test = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    method = GaussianMethod(model, augment_families=("flip", "gray"), feature_batch=4)  # N=6 < C=448
    method.fit(supports)
    assert method.gaussian.method_ == "lowrank"
    from fsad.augment import augment_supports

    ref = PositionalGaussian().fit(method.embed(augment_supports(supports, ("flip", "gray"))))
    features = method.embed(test)
    torch.testing.assert_close(method.score_features(features), ref.mahalanobis(features), rtol=0, atol=0)
