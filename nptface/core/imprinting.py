"""Proxy rows for identities a head has never trained on: each one's normalised mean embedding.

Imprinting (Qi, Brown & Lowe, 2018) starts a classifier row for a new class where that class's
images already sit under the current backbone, instead of at a random point: the loss then
refines a sensible row rather than dragging a random one across the sphere. A federated client
imprints the identities the bank has never seen; a fine-tuning run imprints every identity when
the model it starts from was trained on others.
"""

from __future__ import annotations

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from nptface.core.embedding import embed_dataset
from nptface.core.verification import unit_rows


def imprint(model: nn.Module, dataset: Dataset, batch_size: int = 64, num_workers: int = 0) -> np.ndarray:
    """Per identity of ``dataset`` (its ``labels`` and ``num_classes``): the normalised mean of its
    normalised embeddings under ``model``, ``[C, d]``; an identity without images is an error."""
    embeddings = embed_dataset(model, dataset, batch_size=batch_size, num_workers=num_workers)
    labels = np.asarray(dataset.labels)
    rows = np.zeros((dataset.num_classes, embeddings.shape[1]), np.float64)
    np.add.at(rows, labels, embeddings)
    missing = np.flatnonzero(~rows.any(axis=1))[:5].tolist()
    if missing:
        raise ValueError(f"identities {missing} have no images to imprint a proxy from")
    return unit_rows(rows, name="imprinted rows")
