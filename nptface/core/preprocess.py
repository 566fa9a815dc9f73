"""The one image preprocessing used by training, evaluation, export and the demo.

A face model is only as good as the agreement between how its training images and its
deployment images were prepared, so there is exactly one definition here: RGB uint8 images of
the model's input size, scaled to [-1, 1] with ``(x - 127.5) / 127.5`` (the insightface
convention, so models and thresholds transfer between the two). Greyscale images of 16 bits
(Pillow modes ``I;16*``, and ``I`` holding 16-bit values, as 16-bit PNGs decode) are scaled to
8 bits first: Pillow's own conversion clips them to 255 and a face would become a white square.
Float images (mode ``F``) have no agreed range and are refused.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MEAN = 127.5
STD = 127.5

SIXTEEN_BIT_MODES: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N")


class UnsupportedImageModeError(ValueError):
    """An image whose pixel values have no unambiguous 8-bit reading."""


def check_image_mode(mode: str) -> None:
    """Refuse, from the header, a Pillow mode :func:`to_rgb_array` cannot read faithfully."""
    if mode == "F":
        raise UnsupportedImageModeError(
            "32-bit float pixels (Pillow mode F) have no agreed range; save the image with 8 or 16 bits per channel"
        )


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8-bit greyscale (65535 -> 255); any other mode unchanged."""
    check_image_mode(image.mode)
    if image.mode not in (*SIXTEEN_BIT_MODES, "I"):
        return image
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise UnsupportedImageModeError(
            f"32-bit integer pixels (Pillow mode I) in [{values.min()}, {values.max()}] "
            "are outside the 16-bit range [0, 65535]; save the image with 8 or 16 bits"
        )
    return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")


def to_rgb_array(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array of ``size`` (H, W, 3).

    Grey images are replicated to three channels (16-bit grey scaled to 8 bits first); images of
    another size are resized with bilinear filtering (faces are expected to be aligned crops
    already). Raises :class:`UnsupportedImageModeError` for float images.
    """
    height, width = (size, size) if isinstance(size, int) else size
    image = _eight_bit(image)
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
