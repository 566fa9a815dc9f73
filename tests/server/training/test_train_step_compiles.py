"""The trainer's step (backbone + head + loss) traces into one graph: ``device.compile`` breaks nowhere.

A graph break splits the compiled step into pieces with Python in between (and, on a GPU, a
host-device sync for every value read back), so ``torch.compile`` loses most of what it is for.
The breaks are counted by dynamo's own counter under the ``eager`` backend (traced, not compiled,
so these run in seconds on a CPU); ``torch._dynamo.explain`` misses a break at a frame's first
operation and counts one break once per enclosing frame. The whole step is traced once (the
backbone dominates the tracing time); the other heads are traced alone.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from nptface.core.heads import build_head
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.server.training.lazy_sgd import LazyRowSGD
from nptface.server.training.trainer import TrainStep

CLASSES, DIM, BATCH = 20, 32, 4


def _graph_breaks(module: torch.nn.Module, *inputs: torch.Tensor) -> list[str]:
    """The reason of every graph break one compiled call meets, as often as it meets it."""
    torch._dynamo.reset()
    counters.clear()
    torch.compile(module, backend="eager")(*inputs)
    return [reason for reason, count in counters["graph_break"].items() for _ in range(count)]


def test_npt_train_step_traces_without_graph_breaks() -> None:
    torch.manual_seed(0)
    backbone = MobileFaceNet(MobileFaceNetConfig(embedding_dim=DIM, width=0.25, input_size=32))
    step = TrainStep(backbone, build_head("npt", CLASSES, DIM, negatives="semihard"))
    images, labels = torch.randn(BATCH, 3, 32, 32), torch.randint(0, CLASSES, (BATCH,))
    assert _graph_breaks(step, images, labels) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("npt", {"negatives": "hardest"}),
        ("npt", {"negatives": "semihard"}),
        ("arcface", {}),
        ("cosface", {}),
        ("partialfc_arcface", {"sample_rate": 0.5}),
        ("scalable_npt", {"chunk_size": 8}),
        ("scalable_npt", {"chunk_size": 8, "negatives": "semihard"}),
    ],
)
def test_head_loss_traces_without_graph_breaks(name: str, params: dict[str, Any]) -> None:
    torch.manual_seed(0)
    head = build_head(name, CLASSES, DIM, **params)
    embeddings, labels = torch.randn(BATCH, DIM), torch.randint(0, CLASSES, (BATCH,))
    assert _graph_breaks(head, embeddings, labels) == []


def test_eager_loss_still_names_out_of_range_labels() -> None:
    head = build_head("npt", CLASSES, DIM)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 19\]"):
        head(torch.randn(BATCH, DIM), torch.tensor([0, 1, 2, CLASSES]))


@pytest.mark.parametrize("negatives", ["hardest", "semihard"])
def test_streamed_head_reading_lazily_updated_rows_traces_without_graph_breaks(negatives: str) -> None:
    torch.manual_seed(0)
    head = build_head("scalable_npt", CLASSES, DIM, chunk_size=8, negatives=negatives)
    optimizer = LazyRowSGD(head.parameters(), lr=0.1, momentum=0.9)
    head.lazy_rows = optimizer.lazy_rows(head.proxies)
    embeddings, labels = torch.randn(BATCH, DIM), torch.randint(0, CLASSES, (BATCH,))
    head(embeddings, labels).loss.backward()
    optimizer.step()  # rows now owe updates, so the search reads them through the optimiser
    assert _graph_breaks(head, embeddings, labels) == []


def test_candidate_search_breaks_only_where_the_pool_is_deduplicated() -> None:
    torch.manual_seed(0)
    head = build_head("scalable_npt", CLASSES, DIM, chunk_size=8, candidate_rate=0.3)
    embeddings, labels = torch.randn(BATCH, DIM), torch.randint(0, CLASSES, (BATCH,))
    head(embeddings, labels)  # each batch class now has a previous top-k in the pool
    breaks = _graph_breaks(head, embeddings, labels)
    # The pool (drawn classes, batch labels and their previous top-k, deduplicated) has as many
    # rows as there are distinct classes in it, known only once unique() has run, and the search
    # walks it in Python-level chunks: a data-dependent shape, met once in each enclosing frame.
    assert len(breaks) == 3 and all("aten._unique2" in reason for reason in breaks), breaks


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("scalable_npt", {"chunk_size": 8, "negatives": "semihard"}),
        ("scalable_npt", {"chunk_size": 8, "candidate_rate": 0.3}),
        ("partialfc_arcface", {"sample_rate": 0.5}),
    ],
)
def test_compiled_head_gives_the_eager_loss_gradients_and_predictions_bit_for_bit(
    name: str, params: dict[str, Any]
) -> None:
    def two_steps(compiled: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        head = build_head(name, CLASSES, DIM, **params)
        call = torch.compile(head, backend="aot_eager") if compiled else head
        results = []
        for _ in range(2):  # the second step reads the candidate head's remembered top-k
            embeddings = torch.randn(BATCH, DIM, requires_grad=True)
            out = call(embeddings, torch.randint(0, CLASSES, (BATCH,)))
            out.loss.backward()
            results += [out.loss.detach(), out.predictions, embeddings.grad, head.proxies.grad]
            head.proxies.grad = None
        return results

    torch._dynamo.reset()
    for eager, compiled in zip(two_steps(compiled=False), two_steps(compiled=True), strict=True):
        assert torch.equal(eager, compiled)
