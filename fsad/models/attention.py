"""Triplet attention (TAM) and the RCM-FSAD multidimensional attention module (MAM).

Placement: the RCM-FSAD paper applies MAM to the *input* before feature extraction
("the MAM is firstly utilized to focus more finely on specific regions or features in the
input data to improve the model's ability to perceive key information"), so
:class:`fsad.models.regad.RegADModel` applies ``build_attention(kind, 3)`` to the
ImageNet-normalised image, before the backbone. TAM at the same place is the paper's
"R18+TAM" ablation row (Table 7).

Every module here keeps ``forward`` pure (no stored state): the per-branch sigmoid gates
are exposed by a separate ``gates(x)`` method and by :func:`attention_maps`, which the
notebooks use to draw the attention maps.

Note for users: the gates start near 0.5 (sigmoid of a BN-normalised, randomly
initialised conv), so at initialisation TAM/MAM roughly halve the image the backbone sees
(exactly 0.5·x when the gate convs are zero, see the tests). The paper gives no residual
connection, so none is added here; the attention weights are trained with the rest of the
registration network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Misra et al., WACV 2021 ("Rotate to Attend"), authors' code (landskape-ai/triplet-attention):
# 7x7 conv, 2 -> 1 channels, padding 3, no bias, BatchNorm(eps=1e-5, momentum=0.01, affine).
GATE_KERNEL_SIZE = 7
GATE_BN_EPS = 1e-5
GATE_BN_MOMENTUM = 0.01

ATTENTION_KINDS = ("none", "tam", "mam")


class ZPool(nn.Module):
    """Z-pool: concatenate max- and mean-pooling over one dimension (kept with size 2).

    Misra et al. (2021), eq. (1): reduces the pooled dimension "to two" by concatenating its
    max and average; order (max, mean) follows the authors' code.

    Args:
        dim: dimension to reduce (default 1, the channel axis after the branch's permutation).

    Example:
        >>> ZPool()(torch.randn(2, 5, 8, 9)).shape
        torch.Size([2, 2, 8, 9])
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.amax(dim=self.dim, keepdim=True), x.mean(dim=self.dim, keepdim=True)], dim=self.dim)


class AttentionGate(nn.Module):
    """ZPool over dim 1 -> 7x7 conv (2->1, no bias) -> BN -> sigmoid -> multiply.

    Args:
        kernel_size: conv kernel size (odd; paper/authors' code: 7).

    Example:
        >>> g = AttentionGate()
        >>> x = torch.randn(2, 4, 8, 9)
        >>> g(x).shape, g.gate(x).shape
        (torch.Size([2, 4, 8, 9]), torch.Size([2, 1, 8, 9]))
    """

    def __init__(self, kernel_size: int = GATE_KERNEL_SIZE) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd integer so the gate keeps the size; got {kernel_size}"
            )
        self.pool = ZPool(dim=1)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=GATE_BN_EPS, momentum=GATE_BN_MOMENTUM)

    def gate(self, x: Tensor) -> Tensor:
        """Sigmoid gate ``[N,1,A,B]`` for an input ``[N,C,A,B]``."""
        return torch.sigmoid(self.bn(self.conv(self.pool(x))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class ChannelGate(nn.Module):
    """Channel-interaction gate used by MAM's added branch: a gate over channels only.

    Z-pool over both spatial axes (global max and mean per channel) gives ``[N,2,C]``; a
    1-D conv of length 7 (2->1, padding 3, no bias) slides *along the channel axis*, so each
    channel's weight depends on its neighbouring channels (cross-channel interaction), then
    BN and sigmoid; the result ``[N,C,1,1]`` multiplies the input.

    Example:
        >>> ChannelGate().gate(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 3, 1, 1])
    """

    def __init__(self, kernel_size: int = GATE_KERNEL_SIZE) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd integer so the gate keeps the size; got {kernel_size}"
            )
        self.conv = nn.Conv1d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm1d(1, eps=GATE_BN_EPS, momentum=GATE_BN_MOMENTUM)

    def gate(self, x: Tensor) -> Tensor:
        """Sigmoid gate ``[N,C,1,1]`` for an input ``[N,C,H,W]``."""
        flat = x.flatten(2)  # [N,C,H*W]
        # "Rotating along the C-axis" puts C where the conv slides and pools H and W away.
        z = torch.stack([flat.amax(dim=2), flat.mean(dim=2)], dim=1)  # [N,2,C]
        return torch.sigmoid(self.bn(self.conv(z)))[:, 0, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def _check_input(x: Tensor, channels: int, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D tensor [N,C,H,W]; got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} was built for {channels} channels but got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); build it with channels={x.shape[1]}"
        )


class TripletAttention(nn.Module):
    """Triplet attention (Misra et al., WACV 2021, "Rotate to Attend").

    Three branches, each an :class:`AttentionGate` applied to a rotated (permuted) view:

    * ``"cw"``: permute to ``[N,H,C,W]``, Z-pool over H -> 7x7 conv on the C×W plane
      (channel–width interaction); the gate, permuted back, is ``[N,C,1,W]``.
    * ``"hc"``: permute to ``[N,W,H,C]``, Z-pool over W -> conv on the H×C plane
      (channel–height interaction); gate back in the input frame is ``[N,C,H,1]``.
    * ``"hw"``: no permutation, Z-pool over C -> spatial H×W gate ``[N,1,H,W]``.

    Output = (x·g_cw + x·g_hc + x·g_hw) / 3 (the authors' 1/3 average).

    Args:
        channels: number of input channels (the gates do not depend on it; it is checked in
            ``forward`` so a mis-placed module fails with a clear message).

    Example:
        >>> tam = TripletAttention(3)
        >>> tam(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
        >>> {k: tuple(v.shape) for k, v in tam.gates(torch.randn(2, 3, 32, 32)).items()}
        {'cw': (2, 3, 1, 32), 'hc': (2, 3, 32, 1), 'hw': (2, 1, 32, 32)}
    """

    branch_names: tuple[str, ...] = ("cw", "hc", "hw")

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1; got {channels}")
        self.channels = channels
        self.cw = AttentionGate()
        self.hc = AttentionGate()
        self.hw = AttentionGate()

    def gates(self, x: Tensor) -> dict[str, Tensor]:
        """Each branch's sigmoid gate, permuted back to the input frame (broadcastable to x).

        Args:
            x: ``[N,C,H,W]``.

        Returns:
            dict ``{"cw": [N,C,1,W], "hc": [N,C,H,1], "hw": [N,1,H,W]}``; branch output = x * gate.
        """
        _check_input(x, self.channels, type(self).__name__)
        # permute(0,2,1,3) and permute(0,3,2,1) are their own inverses ("rotate in, rotate back").
        g_cw = self.cw.gate(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        g_hc = self.hc.gate(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        g_hw = self.hw.gate(x)
        return {"cw": g_cw, "hc": g_hc, "hw": g_hw}

    def forward(self, x: Tensor) -> Tensor:
        gates = self.gates(x)
        return sum(x * g for g in gates.values()) / len(gates)


class MultidimensionalAttention(TripletAttention):
    """RCM-FSAD's multidimensional attention module (MAM): TAM plus a channel branch.

    The paper's description (Xie et al., RCM-FSAD) is short and our copy of the text is cut
    off mid-sentence, so these choices are ours; each cites the sentence it rests on.

    1. *What is added.* "since TAM only focuses on the interaction between spatial width
       and height in practice ... it ... fails to adequately capture the complex
       dependencies between different channels" and "Based on TAM, MAM constructs
       interactions between channel dimensions". We keep TAM's three branches unchanged
       (same :class:`AttentionGate` modules, same names ``cw``, ``hc``, ``hw``) and add a
       fourth branch ``"c"``: a pure channel gate :class:`ChannelGate`.
    2. *How the channel branch gates.* "... with the input X of the first branch rotated
       counterclockwise along the C-axis" (the sentence ends there). We read the rotation
       as bringing C to the axis the conv slides along while both spatial axes are
       Z-pooled (global max + mean per channel); the gate is then a 7-tap conv along C,
       BN and sigmoid -> one weight per channel ``[N,C,1,1]``, so each channel's weight
       depends on its neighbours (an ECA-style cross-channel interaction, built from the
       same Z-pool/conv/BN/sigmoid parts as TAM). Kernel 7 with padding 3 mirrors TAM's
       7×7 gates; on a 3-channel image it spans all channels.
    3. *How branches are combined.* TAM averages its branches ("1/3" in Misra et al.);
       nothing in the RCM text introduces learned weights, so MAM averages its four
       branches uniformly (1/4). Consequence (tested): with the same three TAM gates and
       the channel gate forced to 1, ``MAM(x) = 3/4·TAM(x) + 1/4·x``.
    4. *Where it sits.* Before the backbone, on the image (see the module docstring).

    Args:
        channels: number of input channels (3 for the image).

    Example:
        >>> mam = MultidimensionalAttention(3)
        >>> mam(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
        >>> sorted(mam.gates(torch.randn(2, 3, 32, 32)))
        ['c', 'cw', 'hc', 'hw']
    """

    branch_names: tuple[str, ...] = ("c", "cw", "hc", "hw")

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.c = ChannelGate()

    def gates(self, x: Tensor) -> dict[str, Tensor]:
        """TAM's three gates plus ``"c"``: ``[N,C,1,1]``; all broadcastable to x."""
        tam_gates = super().gates(x)
        return {"c": self.c.gate(x), **tam_gates}


def build_attention(kind: str, channels: int) -> nn.Module:
    """Attention module for the RCM-FSAD ablation switch ``--attention``.

    Args:
        kind: ``"none"`` (``nn.Identity``), ``"tam"`` (:class:`TripletAttention`) or
            ``"mam"`` (:class:`MultidimensionalAttention`).
        channels: input channels (3 when applied to the image, as in RCM-FSAD).

    Returns:
        the module; output shape equals input shape.

    Raises:
        ValueError: unknown kind (lists the valid ones) or channels < 1.

    Example:
        >>> build_attention("mam", 3)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 3, 64, 64])
    """
    if kind == "none":
        return nn.Identity()
    if kind == "tam":
        return TripletAttention(channels)
    if kind == "mam":
        return MultidimensionalAttention(channels)
    raise ValueError(f"unknown attention kind {kind!r}; valid kinds: {', '.join(ATTENTION_KINDS)}")


@torch.no_grad()
def attention_maps(module: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Each branch's sigmoid gate for input ``x`` (for drawing attention maps).

    Gates are returned in the input frame and broadcastable to ``x``: ``"hw"`` ``[N,1,H,W]``
    (spatial map), ``"cw"`` ``[N,C,1,W]``, ``"hc"`` ``[N,C,H,1]`` and, for MAM, ``"c"``
    ``[N,C,1,1]``. Uses the module's current mode (call ``module.eval()`` first to use BN
    running statistics). ``nn.Identity`` (kind "none") gives ``{}``.

    Args:
        module: a module from :func:`build_attention`.
        x: ``[N,C,H,W]`` input.

    Returns:
        dict branch name -> gate tensor (detached, values in (0, 1)).

    Raises:
        TypeError: module is not an attention module from this file.

    Example:
        >>> attention_maps(TripletAttention(3).eval(), torch.randn(1, 3, 16, 16))["hw"].shape
        torch.Size([1, 1, 16, 16])
    """
    if isinstance(module, nn.Identity):
        return {}
    if not isinstance(module, TripletAttention):
        raise TypeError(
            f"attention_maps needs a TripletAttention/MultidimensionalAttention or nn.Identity "
            f"(from build_attention); got {type(module).__name__}"
        )
    return {name: g.detach() for name, g in module.gates(x).items()}
