"""MobileFaceNet: the paper's size, export-friendly structure, and exact BatchNorm folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nptface.core.complexity import count_macs, count_parameters, measure
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig, fuse_bn


def test_paper_width_has_about_one_million_parameters_and_022_gmacs():
    # Chen et al. 2018 report 0.99M parameters and 221M MACs for the 128-d model.
    chen = measure(MobileFaceNet(embedding_dim=128), (3, 112, 112))
    assert 0.95e6 < chen.parameters < 1.05e6
    assert 0.21e9 < chen.macs < 0.23e9
    npt = measure(MobileFaceNet(), (3, 112, 112))  # the NPT paper's 256-d embedding
    assert npt.parameters - chen.parameters == 512 * 128 + 2 * 128  # a wider 1x1 conv and its BN


def test_default_model_maps_112px_faces_to_256d_embeddings():
    model = MobileFaceNet().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 256)


@pytest.mark.parametrize("width,size", [(0.25, 32), (0.5, 64), (0.75, 96)])
def test_width_and_input_size_options_give_tiny_variants(width, size):
    model = MobileFaceNet(width=width, input_size=size, embedding_dim=32).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, size, size)).shape == (3, 32)
    assert count_parameters(model) < count_parameters(MobileFaceNet(embedding_dim=32))


def test_gdc_output_is_indexed_not_flattened():
    """litert-torch fails on flatten after the GDC; the graph must contain no flatten/view op."""
    traced = torch.fx.symbolic_trace(MobileFaceNet(width=0.25, input_size=32, embedding_dim=16))
    targets = {str(node.target) for node in traced.graph.nodes}
    assert not any("flatten" in t or t in ("view", "reshape") for t in targets)
    assert any("getitem" in t for t in targets)


def test_fuse_bn_matches_eval_model_and_removes_batchnorm():
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    model.eval()
    fused = fuse_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must be untouched"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-4)


def test_prelu_and_embedding_layer_are_identifiable_for_the_optimiser_recipe():
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    assert any(isinstance(m, nn.PReLU) for m in model.modules())
    embedding = model.embedding_parameters()
    assert embedding and embedding[0].shape[0] == 16


def test_count_macs_matches_hand_count_for_one_conv_and_linear():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    # output 6 x 5 x 5, each output a 3x3 window over 4/2 input channels
    assert count_macs(conv, (4, 10, 10)) == 6 * 5 * 5 * 2 * 3 * 3
    assert count_macs(nn.Linear(7, 3), (7,)) == 21


@pytest.mark.parametrize(
    "kwargs,message",
    [({"input_size": 100}, "multiple of 16"), ({"width": 0}, "width"), ({"embedding_dim": 0}, "embedding_dim")],
)
def test_bad_config_raises_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileFaceNetConfig(**kwargs)
