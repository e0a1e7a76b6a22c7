"""The S3 side of an index on object storage: its URI, the pointer object and the content-addressed blocks.

Every S3 call of ``remote_db`` goes through ``Bucket``, which turns a failure into one ``RemoteDbError`` line naming
the index URI; the layout and the protocol are described in ``rsretrieve.store.remote_db``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rsretrieve.store.errors import StoreError

SCHEMES = ("s3",)  # object stores an index can live on (S3-compatible ones through AWS_ENDPOINT_URL)
POINTER = "_rsretrieve/HEAD.json"
BLOCKS = "_rsretrieve/blocks/"
POINTER_FORMAT = 1


class RemoteDbError(StoreError):
    """An index on object storage that cannot be read or written; one line naming the URI and the reason."""


def block_name(data: bytes) -> str:
    """The content address of a block."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()


@dataclass(frozen=True)
class Location:
    """Bucket and key prefix of an index URI."""

    uri: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        scheme, _, rest = uri.partition("://")
        if scheme.lower() not in SCHEMES:
            raise RemoteDbError(
                f"--db {uri}: an index on object storage must be on s3:// (or an S3-compatible store through "
                "AWS_ENDPOINT_URL); copy it to a local folder for other stores"
            )
        bucket, _, key = rest.partition("/")
        if not bucket or not key.strip("/"):
            raise RemoteDbError(f"--db {uri}: give a bucket and a folder, e.g. s3://bucket/index.lance")
        return cls(uri.rstrip("/"), bucket, key.strip("/") + "/")


class Bucket:
    """The S3 calls of this module, each failure one RemoteDbError line naming the index URI."""

    def __init__(self, location: Location):
        from rsretrieve.uris import s3_client

        self.location = location
        self.client = s3_client()

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise RemoteDbError(
                    f"{self.location.uri}: another writer published a new version while this one ran; "
                    "nothing of theirs is lost, and this run's last batch is not published: run the command again"
                ) from error
            reasons = {"AccessDenied": "access denied (403)", "403": "access denied (403)"}
            reasons |= {"NoSuchBucket": f"no such bucket: {self.location.bucket}"}
            reason = reasons.get(code, f"{code}: {info.get('Message', '')}".strip(": "))
            raise RemoteDbError(f"{self.location.uri}: cannot {what} ({reason})") from error
        except BotoCoreError as error:
            raise RemoteDbError(f"{self.location.uri}: cannot {what} ({error})") from error

    def read_pointer(self, etag: str | None = None) -> tuple[dict[str, Any], str] | bool | None:
        """(pointer, ETag); None when there is none; False when it still has ``etag`` (unchanged)."""
        from botocore.exceptions import ClientError

        key = self.location.prefix + POINTER
        with self._calling("read the index pointer"):
            try:
                extra = {"IfNoneMatch": etag} if etag else {}
                answer = self.client.get_object(Bucket=self.location.bucket, Key=key, **extra)
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                if code in ("304", "NotModified"):
                    return False
                if code in ("NoSuchKey", "404"):
                    return None
                raise
            body = answer["Body"].read()
        try:
            pointer = json.loads(body)
            if pointer.get("format", 0) > POINTER_FORMAT:
                raise RemoteDbError(f"{self.location.uri} was written by a newer rsretrieve (pointer format)")
            return pointer, answer["ETag"]
        except (ValueError, AttributeError) as error:
            raise RemoteDbError(f"{self.location.uri}: unreadable index pointer ({error})") from error

    def write_pointer(self, pointer: dict[str, Any], etag: str | None) -> str:
        """Replace the pointer if it still has ``etag`` (create it if ``etag`` is None); its new ETag."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        body = json.dumps(pointer, indent=1).encode()
        with self._calling("publish the new version"):
            answer = self.client.put_object(
                Bucket=self.location.bucket, Key=self.location.prefix + POINTER, Body=body, **condition
            )
        return answer["ETag"]

    def put_block(self, name: str, data: bytes) -> None:
        with self._calling("upload"):
            self.client.put_object(Bucket=self.location.bucket, Key=self.location.prefix + BLOCKS + name, Body=data)

    def get_block(self, name: str) -> bytes:
        with self._calling("download"):
            data = self.client.get_object(Bucket=self.location.bucket, Key=self.location.prefix + BLOCKS + name)
            data = data["Body"].read()
        if block_name(data) != name:
            raise RemoteDbError(f"{self.location.uri}: block {name} is damaged (checksum mismatch)")
        return data

    def blocks(self) -> dict[str, float]:
        """Every stored block: name → upload time (seconds since the epoch)."""
        prefix = self.location.prefix + BLOCKS
        with self._calling("list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
            return {
                item["Key"][len(prefix) :]: item["LastModified"].timestamp()
                for page in pages
                for item in page.get("Contents", [])
            }

    def delete_blocks(self, names: list[str]) -> None:
        keys = [{"Key": self.location.prefix + BLOCKS + name} for name in names]
        with self._calling("delete old blocks"):
            for start in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": keys[start : start + 1000]})
