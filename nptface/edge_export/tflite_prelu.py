"""PReLU written for a full-integer .tflite that XNNPACK (and phone NPUs) run in one piece.

litert-torch lowers ``nn.PReLU`` to ``relu(x) - a*(relu(x) - x)``: a standalone RELU, two MULs and
a SUB. Quantised full-integer, that RELU gets an output scale of its own (calibrated on its
non-negative range), and XNNPACK delegates int8 RELU only when input and output share one scale:
each of MobileFaceNet's 33 PReLUs left one op on the reference kernels and cut the graph into 34
XNNPACK partitions, slower than fp32. Written as ``a*x + s*relu(|1-a|*x)`` (``s`` the sign of
``1-a``, per channel) the converter fuses each ReLU into the multiply before it, and the int8
graph is MUL/ADD only: one XNNPACK partition. The sign multiply is emitted only in layers with a
slope above 1. Same function up to float rounding; only the 8-bit-activation TFLite variants use
it (``tflite_export.TFLiteRecipe.integer_prelu``); fp32, fp16 and int16-activation files keep the
exporter's form. ``onnx_prelu.decompose_prelu`` uses the same identity on ONNX graphs, for a
different end (fp32 speed in onnxruntime, slopes above 1 handled by keeping the ReLU unscaled).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class IntegerFriendlyPReLU(nn.Module):
    """``nn.PReLU`` with per-channel slope ``a`` as ``a*x + s*relu(|1-a|*x)``, ``s = sign(1-a)``, on (N, C, H, W) maps."""

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        slope = prelu.weight.detach().clone().view(1, -1, 1, 1)
        self.register_buffer("slope", slope)
        self.register_buffer("relu_scale", (1 - slope).abs())
        self.register_buffer("relu_sign", torch.where(slope > 1, -1.0, 1.0))
        self.has_negative_sign = bool((slope > 1).any())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu_part = torch.relu(self.relu_scale * x)
        if self.has_negative_sign:
            relu_part = self.relu_sign * relu_part
        return self.slope * x + relu_part


def with_integer_friendly_prelu(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.PReLU`` replaced by :class:`IntegerFriendlyPReLU`."""
    rewritten = copy.deepcopy(model)
    for parent in list(rewritten.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, IntegerFriendlyPReLU(child))
    return rewritten.eval()
