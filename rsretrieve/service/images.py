"""Uploaded query images: base64 decoding and a size check on the header, before any pixel is decoded.

JPEG, PNG and most TIFFs are measured by Pillow, which reads only the header; other rasters (e.g. BigTIFF) by
GDAL through rasterio, which reads only the header too. An image over ``MAX_IMAGE_PIXELS`` (a decompression bomb:
a small file declaring huge dimensions) is refused with 413; undecodable bytes with 400. Pixels are then read
decimated exactly as ``rsretrieve query --image`` reads them (``search.query_pixels``).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from rsretrieve.service.guard import ApiError

MAX_IMAGE_PIXELS = 100_000_000  # 10,000²: a query image is read decimated to 1024 px, but PNGs decode in full


def decode_base64(text: str, what: str = "image") -> bytes:
    """Bytes of a base64 string (a ``data:...;base64,`` prefix and whitespace allowed) → 400 when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, f"{what} must be a non-empty base64 string")
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} is not valid base64") from None
    if not data:
        raise ApiError(400, f"{what} is empty")
    return data


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header; 400 when neither Pillow nor GDAL recognises it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:  # lazy: the header only
                return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass
    try:
        import rasterio
        from rasterio.io import MemoryFile

        from rsretrieve.raster.dataset import quiet

        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with MemoryFile(data) as memory, memory.open() as dataset:
                return dataset.width, dataset.height
    except (rasterio.errors.RasterioError, OSError, ValueError):
        raise ApiError(400, "the image is not a readable JPEG, PNG or GeoTIFF") from None


def checked_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """The image bytes, once their header shows a readable image of at most ``max_pixels`` (413 over)."""
    width, height = image_size(data)
    if width < 1 or height < 1:
        raise ApiError(400, "the image has no pixels")
    if width * height > max_pixels:
        raise ApiError(413, f"image of {width}×{height} pixels is over the limit of {max_pixels:,} pixels")
    return data
