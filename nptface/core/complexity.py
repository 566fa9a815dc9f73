"""Counting a model's parameters and multiply-accumulates (MACs), by running it once.

Counting beats quoting: a width multiplier, an input size or an embedding size changes both
numbers, and papers disagree on what they count. Here a MAC is one multiply-add of a
convolution or linear layer (the convention of the MobileFaceNet paper); BatchNorm, PReLU and
additions are not counted (they fold away or are negligible).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    parameters: int
    macs: int
    input_shape: tuple[int, ...]

    def summary(self) -> str:
        return (
            f"parameters: {self.parameters:,} ({self.parameters / 1e6:.3f} M)\n"
            f"MACs per image: {self.macs:,} ({self.macs / 1e9:.3f} G) at input {self.input_shape}"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on a single input of ``input_shape`` (without the batch dim)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Complexity:
    return Complexity(count_parameters(model), count_macs(model, input_shape), tuple(input_shape))
