"""Which sources are URIs read over the network: light enough for the CLI's paths that must not import GDAL."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

# URI scheme → GDAL virtual file system that reads it window by window (range requests)
VSI_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/", "http": "/vsicurl/", "https": "/vsicurl/"}
# what GDAL and boto3 read to reach object stores (forwarded to the workers of a Ray run)
CLOUD_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_NO_SIGN_REQUEST", "AWS_REQUEST_PAYER",
    "AWS_MAX_ATTEMPTS", "GOOGLE_APPLICATION_CREDENTIALS", "GS_NO_SIGN_REQUEST", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN",
)  # fmt: skip


def is_remote(source: str | PurePath) -> bool:
    """Whether a source is a URI GDAL reads over the network (s3://, gs://, az://, http(s)://)."""
    if not isinstance(source, str):
        return False
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in VSI_PREFIXES


def s3_client(max_attempts: int = 4) -> Any:
    """A boto3 S3 client from the usual AWS variables (AWS_ENDPOINT_URL included), making up to ``max_attempts``
    (or $AWS_MAX_ATTEMPTS) tries on throttling, 5xx and dropped connections; unsigned when AWS_NO_SIGN_REQUEST is
    YES, as GDAL."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    retries = {"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or max_attempts), "mode": "standard"}
    unsigned = os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "ON", "1")
    config = Config(signature_version=UNSIGNED, retries=retries) if unsigned else Config(retries=retries)
    return boto3.client("s3", config=config)
