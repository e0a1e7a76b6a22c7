"""Pixels for the model: decode query/benchmark images and fit them to the model's input size.

``fit_to_model`` reproduces open_clip's evaluation transform (bicubic resize of the short side, centre
crop) on uint8 pixels, so that normalisation can run on the device and both the indexer and queries share
one path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rsretrieve.errors import UserError


class ImageError(UserError):
    """An image file that cannot be decoded; the message is one line."""


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file (JPEG, PNG, TIFF...) with Pillow into (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise ImageError(f"{path}: no such file") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"{path}: cannot decode image ({error})") from error


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shape after resizing the short side to ``size`` (torchvision's rule for ``Resize(int)``)."""
    if height <= width:
        return size, max(1, int(size * width / height))
    return max(1, int(size * height / width)), size


def fit_to_model(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8: bicubic resize of the short side, then centre crop."""
    height, width = pixels.shape[:2]
    if (height, width) != (size, size):
        new_h, new_w = resized_shape(height, width, size)
        if (new_h, new_w) != (height, width):
            image = Image.fromarray(np.ascontiguousarray(pixels)).resize((new_w, new_h), Image.BICUBIC)
            pixels = np.asarray(image)
        top = round((new_h - size) / 2.0)
        left = round((new_w - size) / 2.0)
        pixels = pixels[top : top + size, left : left + size]
    return np.ascontiguousarray(pixels)


def fit_chw_to_model(pixels: np.ndarray, size: int) -> np.ndarray:
    """(3, H, W) uint8 → (3, size, size): ``fit_to_model`` in the model's layout, with no copy when it fits."""
    if pixels.shape[1:] == (size, size):
        return pixels
    return to_chw(fit_to_model(pixels.transpose(1, 2, 0), size))


def to_chw(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (3, H, W), the layout the model takes."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
