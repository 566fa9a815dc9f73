"""Turning face images into unit-length embeddings with a trained backbone.

Verification compares embeddings by cosine, so they are L2-normalised here, once. The optional
flip test-time augmentation adds the embedding of the mirrored image before normalising (the
insightface convention), which usually buys a few tenths of a point of accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nptface.core.preprocess import normalize


@torch.no_grad()
def embed_batch(model: nn.Module, images: torch.Tensor | np.ndarray, flip: bool = False) -> torch.Tensor:
    """L2-normalised embeddings of a uint8 ``(N, H, W, 3)`` batch; the model must be in eval mode."""
    device = next(model.parameters()).device
    x = normalize(images).to(device)
    features = model(x)
    if flip:
        features = features + model(x.flip(3))
    return F.normalize(features.float(), dim=1)


def embed_dataset(
    model: nn.Module, dataset: Dataset, batch_size: int = 128, flip: bool = False, num_workers: int = 0
) -> np.ndarray:
    """Embeddings ``(len(dataset), d)`` float32 of every item, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        chunks = [embed_batch(model, images, flip).cpu().numpy() for images, _ in loader]
    finally:
        model.train(was_training)
    return np.concatenate(chunks, axis=0)
