"""The full-integer .tflite writes PReLU so that XNNPACK runs the whole graph: same function, one delegate partition."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch import nn

from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn
from nptface.edge_export.tflite_prelu import IntegerFriendlyPReLU, with_integer_friendly_prelu


def _trained_looking(model: nn.Module) -> nn.Module:
    """Slopes as training leaves them: mostly in (-0.2, 0.9), one channel above 1 (the sign multiply's case)."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.PReLU):
            module.weight.data.uniform_(-0.2, 0.9)
    model.stem[0][2].weight.data[0] = 1.4
    return model.eval()


@pytest.mark.parametrize("slopes", [[0.25, 0.0, 0.9, -0.3], [0.25, 1.5, 0.9, -0.3]], ids=["at most 1", "one above 1"])
def test_the_integer_friendly_form_computes_prelu(slopes):
    prelu = nn.PReLU(4)
    prelu.weight.data = torch.tensor(slopes)
    x = torch.randn(2, 4, 5, 5) * 3

    torch.testing.assert_close(IntegerFriendlyPReLU(prelu)(x), prelu(x), rtol=1e-6, atol=1e-6)


def test_every_prelu_is_replaced_in_a_copy_and_the_model_is_left_as_it_was():
    model = fuse_bn(_trained_looking(MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)))
    rewritten = with_integer_friendly_prelu(model)
    x = torch.randn(3, 3, 32, 32)

    assert not any(isinstance(m, nn.PReLU) for m in rewritten.modules())
    assert sum(isinstance(m, IntegerFriendlyPReLU) for m in rewritten.modules()) == sum(
        isinstance(m, nn.PReLU) for m in model.modules()
    )
    torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)


def _delegate_partitions(path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())["DELEGATE"]


def test_full_integer_tflite_with_the_integer_friendly_prelu_is_one_xnnpack_partition(tmp_path):
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from nptface.edge_export import tflite_export

    model = fuse_bn(_trained_looking(MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    recipe = next(r for r in tflite_export.INT8_RECIPES if r.integer_prelu)
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    tflite_export.export_fp32(model, fp32, 32, integer_prelu=True)
    tflite_export.quantize(fp32, int8, recipe, images)

    assert recipe.activation_bits == 8 and "one XNNPACK partition" in recipe.describe()
    assert _delegate_partitions(int8) == 1
