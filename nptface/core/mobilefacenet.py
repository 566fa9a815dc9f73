"""MobileFaceNet (Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", 2018), the backbone the NPT paper trains on CASIA.

At width 1.0 and 112x112 input it has ~1.0M parameters and ~0.22 GMACs, the paper's size
(insightface's "mbf" is about twice as wide). The embedding comes from a global depthwise
convolution (GDC) over the last 7x7 map, a linear 1x1 convolution and BatchNorm, without
ReLU: the embedding is used on the hypersphere, so its sign pattern must not be clipped.

Export-friendliness is a design constraint, not an afterthought: the GDC output is indexed
``x[:, :, 0, 0]`` rather than flattened (litert-torch fails on ``flatten`` there), every
BatchNorm follows a convolution so :func:`fuse_bn` can fold it away for inference.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) from Table 1 of the paper.
BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


@dataclass(frozen=True)
class MobileFaceNetConfig:
    """Everything needed to rebuild the architecture; stored with every checkpoint."""

    embedding_dim: int = 256
    width: float = 1.0
    input_size: int = 112

    def __post_init__(self) -> None:
        if self.input_size % 16 or self.input_size < 16:
            raise ValueError(
                f"input_size must be a positive multiple of 16 (four stride-2 stages), got {self.input_size}"
            )
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _scaled(channels: int, width: float) -> int:
    """Channels at a width multiplier, rounded to a multiple of 8 (fast kernels on every runtime)."""
    return max(8, int(round(channels * width / 8)) * 8)


class ConvBN(nn.Sequential):
    """Conv -> BatchNorm -> optional PReLU: the only building block, so BN folding is uniform."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
        padding: int | None = None,
    ) -> None:
        padding = (kernel - 1) // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if activation:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual if same shape."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBN(cin, hidden, 1),
            ConvBN(hidden, hidden, 3, stride, groups=hidden),
            ConvBN(hidden, cout, 1, activation=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """Face images ``[B, 3, S, S]`` in [-1, 1] -> embeddings ``[B, embedding_dim]`` (not normalised)."""

    def __init__(self, config: MobileFaceNetConfig | None = None, **overrides: float | int) -> None:
        super().__init__()
        config = config or MobileFaceNetConfig(**overrides)  # type: ignore[arg-type]
        self.config = config
        c64, c512 = _scaled(64, config.width), _scaled(512, config.width)
        self.stem = nn.Sequential(ConvBN(3, c64, 3, 2), ConvBN(c64, c64, 3, 1, groups=c64))
        blocks: list[nn.Module] = []
        cin = c64
        for expansion, channels, repeats, stride in BOTTLENECKS:
            cout = _scaled(channels, config.width)
            for i in range(repeats):
                blocks.append(Bottleneck(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_expand = ConvBN(cin, c512, 1)
        # The global depthwise conv spans the whole last map (7x7 at 112x112 input).
        self.gdc = ConvBN(c512, c512, config.input_size // 16, groups=c512, activation=False, padding=0)
        self.embedding = ConvBN(c512, config.embedding_dim, 1, activation=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.conv_expand(x)
        x = self.gdc(x)
        x = self.embedding(x)
        return x[:, :, 0, 0]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The final linear embedding layer, which the paper's recipe decays at 1e-4."""
        return list(self.embedding.parameters())


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias that computes ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_bn(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every Conv->BatchNorm pair folded into one conv.

    The original is untouched. Folding removes a third of the ops and is what every runtime
    does anyway; doing it here lets export and the parity gate compare like with like.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBN):
            conv, bn = module[0], module[1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[0] = _fold(conv, bn)
                module[1] = nn.Identity()
    return fused
