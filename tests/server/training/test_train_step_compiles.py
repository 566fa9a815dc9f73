"""The trainer's step (backbone + head + loss) traces into one graph: ``device.compile`` breaks nowhere.

A graph break splits the compiled step into pieces with Python in between (and, on a GPU, a
host-device sync for every value read back), so ``torch.compile`` loses most of what it is for.
``torch._dynamo.explain`` traces without compiling, so these run in seconds on a CPU. The whole
step is traced once (the backbone dominates the tracing time); the other heads are traced alone.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from nptface.core.heads import build_head
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.server.training.trainer import TrainStep

CLASSES, DIM, BATCH = 20, 32, 4


def _graph_breaks(module: torch.nn.Module, *inputs: torch.Tensor) -> list[str]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*inputs)
    return [reason.reason for reason in explanation.break_reasons]


def test_npt_train_step_traces_without_graph_breaks() -> None:
    torch.manual_seed(0)
    backbone = MobileFaceNet(MobileFaceNetConfig(embedding_dim=DIM, width=0.25, input_size=32))
    step = TrainStep(backbone, build_head("npt", CLASSES, DIM, negatives="semihard"))
    images, labels = torch.randn(BATCH, 3, 32, 32), torch.randint(0, CLASSES, (BATCH,))
    assert _graph_breaks(step, images, labels) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [("npt", {"negatives": "hardest"}), ("npt", {"negatives": "semihard"}), ("arcface", {}), ("cosface", {})],
)
def test_head_loss_traces_without_graph_breaks(name: str, params: dict[str, str]) -> None:
    torch.manual_seed(0)
    head = build_head(name, CLASSES, DIM, **params)
    embeddings, labels = torch.randn(BATCH, DIM), torch.randint(0, CLASSES, (BATCH,))
    assert _graph_breaks(head, embeddings, labels) == []


def test_eager_loss_still_names_out_of_range_labels() -> None:
    head = build_head("npt", CLASSES, DIM)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 19\]"):
        head(torch.randn(BATCH, DIM), torch.tensor([0, 1, 2, CLASSES]))
