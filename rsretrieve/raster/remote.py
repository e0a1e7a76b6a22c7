"""Sources on object storage and web servers: URIs, their GDAL paths, GDAL's settings for remote reads, listing.

A source is a local path or a URI string (``s3://bucket/key``, ``gs://``, ``az://``, ``http(s)://``), kept as given
from the command line to the chip's ``path`` (chip ids hash it). GDAL reads a URI through its virtual file
systems (/vsis3/, /vsigs/, /vsiaz/, /vsicurl/) with HTTP range requests, window by window: nothing is
downloaded whole. ``remote_options`` is the one place for the GDAL settings of those reads; it applies to remote
sources only (local files keep GDAL's defaults, e.g. sidecar files are still found). Settings the user put in the
environment win over these defaults (GDAL reads environment variables as configuration options).

Credentials come from the usual AWS / Google / Azure variables, which GDAL and boto3 read themselves;
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) of an S3-compatible store (MinIO, Ceph, moto...) is mapped to
GDAL's ``AWS_S3_ENDPOINT`` / ``AWS_HTTPS`` / ``AWS_VIRTUAL_HOSTING``.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath, PurePosixPath
from urllib.parse import urlsplit

from rsretrieve.raster.errors import SourceError, source_error
from rsretrieve.uris import VSI_PREFIXES, is_remote, s3_client

# URI scheme -> GDAL virtual file system prefix
LISTABLE_SCHEMES = ("s3",)  # prefixes listed with boto3 (gs://, az:// objects must be named)
IMAGE_EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
LIST_PAGE_SIZE = 1000  # keys per list_objects_v2 page (S3's maximum); every page is followed

# GDAL settings of remote reads (https://gdal.org/en/stable/user/configoptions.html); the environment wins.
REMOTE_DEFAULTS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing to look for sidecar files
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ",".join(e for x in IMAGE_EXTENSIONS for e in (x, x.upper())),
    "VSI_CACHE": "TRUE",  # a per-handle cache of fetched blocks...
    "VSI_CACHE_SIZE": str(16 << 20),  # ...bounded: 16 MiB per open file (a reader keeps at most 8 open)
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),  # the process-wide cache of downloaded regions
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",  # a COG's header and tile index in one request
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MAX_RETRY": "4",  # 429, 5xx and dropped connections: retried with backoff...
    "GDAL_HTTP_RETRY_DELAY": "1",  # ...starting at 1 s
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
}


def vsi_path(source: str | PurePath) -> str | PurePath:
    """The path GDAL opens: /vsis3/bucket/key for s3://bucket/key, /vsicurl/<url> for http(s); local paths as is."""
    if not is_remote(source):
        return source
    assert isinstance(source, str)
    scheme, _, rest = source.partition("://")
    prefix = VSI_PREFIXES[scheme.lower()]
    return prefix + (source if prefix == "/vsicurl/" else rest)


def source_name(source: str | PurePath) -> str:
    """The file name of a source (the last path segment of a URI, without its query)."""
    if is_remote(source):
        return PurePosixPath(urlsplit(str(source)).path).name
    return PurePath(source).name


def _endpoint_options() -> dict[str, str]:
    """GDAL's S3 endpoint settings from AWS_ENDPOINT_URL(_S3), the variable boto3 and the AWS CLI read."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return {}
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "NO" if parts.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",  # path-style requests: what S3-compatible stores answer
    }


def remote_options(source: str | None = None) -> dict[str, str]:
    """GDAL configuration options for reading remote sources (defaults the environment has not set).

    A source whose name has no image extension (``https://host/download?id=42``) is not held to
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS, which would make GDAL refuse it.
    """
    options = {**REMOTE_DEFAULTS, **_endpoint_options()}
    if source is not None and not source_name(source).lower().endswith(IMAGE_EXTENSIONS):
        del options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"]
    return {key: value for key, value in options.items() if key not in os.environ}


# --- listing -------------------------------------------------------------------------------------

_MAGIC = re.compile(r"[*?[]")


def _pattern(glob: str) -> re.Pattern[str]:
    """A regex for a key glob: ``*`` and ``?`` stay within a path segment, ``**/`` spans segments."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := glob.find("]", i + 1)) > i:
            body = glob[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def _is_image_key(key: str) -> bool:
    """An object key with an image extension whose name and folders are not hidden (no "._x.tif")."""
    return key.lower().endswith(IMAGE_EXTENSIONS) and not any(part.startswith(".") for part in key.split("/"))


def _s3_keys(bucket: str, prefix: str) -> list[str]:
    """Every key under a prefix (list_objects_v2, paginated)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
        return [item["Key"] for page in pages for item in page.get("Contents", [])]
    except ClientError as error:
        info = error.response.get("Error", {})
        reason = f"cannot list ({info.get('Code')}: {info.get('Message')})"
        raise source_error(f"s3://{bucket}/{prefix}", reason) from error
    except BotoCoreError as error:
        raise source_error(f"s3://{bucket}/{prefix}", f"cannot list ({error})") from error


def expand_remote(uri: str) -> list[str]:
    """One remote input as object URIs: an object as given; a prefix (ending in "/", or without an image
    extension) or a glob pattern (``s3://b/scenes/**/*.tif``) listed, for s3:// only. Raises SourceError."""
    scheme, _, rest = uri.partition("://")
    scheme = scheme.lower()
    bucket, _, key = rest.partition("/")
    magic = _MAGIC.search(key)
    if not magic and (key.lower().endswith(IMAGE_EXTENSIONS) or (scheme not in LISTABLE_SCHEMES and key)):
        if key.endswith("/"):
            raise source_error(uri, f"cannot list {scheme}:// folders; name the files")
        return [uri]  # a named object: opening it tells whether it exists
    if scheme not in LISTABLE_SCHEMES:
        raise source_error(uri, f"cannot list {scheme}:// folders or patterns; name the files")
    if not bucket:
        raise source_error(uri, "no bucket name")
    prefix = key[: magic.start()] if magic else (key if not key or key.endswith("/") else key + "/")
    keys = [k for k in _s3_keys(bucket, prefix) if _is_image_key(k[len(prefix) :])]
    if magic:
        pattern = _pattern(key)
        keys = [k for k in keys if pattern.fullmatch(k)]
        if not keys:
            raise source_error(uri, "no object matches this pattern")
    return [f"{scheme}://{bucket}/{k}" for k in keys]


__all__ = [
    "SourceError",
    "expand_remote",
    "is_remote",
    "remote_options",
    "source_name",
    "vsi_path",
]
