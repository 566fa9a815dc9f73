"""The one image preprocessing used by training, evaluation, export and the demo.

A face model is only as good as the agreement between how its training images and its
deployment images were prepared, so there is exactly one definition here: RGB uint8 images of
the model's input size, scaled to [-1, 1] with ``(x - 127.5) / 127.5`` (the insightface
convention, so models and thresholds transfer between the two).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MEAN = 127.5
STD = 127.5


def to_rgb_array(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array of ``size`` (H, W, 3).

    Grey images are replicated to three channels; images of another size are resized with
    bilinear filtering (faces are expected to be aligned crops already).
    """
    height, width = (size, size) if isinstance(size, int) else size
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays


def normalize(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Map uint8 images (N, H, W, 3) or (H, W, 3) to float32 NCHW / CHW tensors in [-1, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor.permute(2, 0, 1)
    elif tensor.ndim == 4:
        tensor = tensor.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"normalize expects (H, W, 3) or (N, H, W, 3), got shape {tuple(tensor.shape)}")
    return (tensor.float() - MEAN) / STD
