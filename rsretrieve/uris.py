"""Which sources are URIs read over the network: light enough for the CLI's paths that must not import GDAL."""

from __future__ import annotations

from pathlib import PurePath

# URI scheme → GDAL virtual file system that reads it window by window (range requests)
VSI_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/", "http": "/vsicurl/", "https": "/vsicurl/"}


def is_remote(source: str | PurePath) -> bool:
    """Whether a source is a URI GDAL reads over the network (s3://, gs://, az://, http(s)://)."""
    if not isinstance(source, str):
        return False
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in VSI_PREFIXES
