"""Artifact storage over any S3-compatible server (MinIO here), behind a small typed facade.

Every failure of the store is translated into ``StorageUnavailable``: to the control plane it is
an infrastructure failure, which is retried without spending a step's retry budget.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from pipeorch.errors import PipeorchError

_CHUNK = 1024 * 1024


class StorageUnavailable(PipeorchError):
    """The object store could not be reached or refused the operation."""


class ArtifactCorrupt(PipeorchError):
    """A downloaded artifact's size or checksum differs from what its producer committed."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(total=2, backoff_factor=0.2),
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe to call from every worker at once)."""
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageUnavailable(f"bucket {self.bucket!r}: {e.code}") from e
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"object store {self.endpoint}: {_reason(e)}") from e

    def put_file(self, key: str, path: Path) -> StoredObject:
        checksum = sha256_of(path)
        size = path.stat().st_size
        try:
            self._client.fput_object(self.bucket, key, str(path))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"upload of {key} failed: {_reason(e)}") from e
        return StoredObject(key, size, checksum)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        try:
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"upload of {key} failed: {_reason(e)}") from e
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def get_file(self, key: str, path: Path, size: int | None = None, sha256: str = "") -> None:
        """Download ``key`` to ``path`` and check it against what its producer committed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.fget_object(self.bucket, key, str(path))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"download of {key} failed: {_reason(e)}") from e
        if size is not None and path.stat().st_size != size:
            raise ArtifactCorrupt(f"{key}: {path.stat().st_size} bytes, expected {size}")
        if sha256 and sha256_of(path) != sha256:
            raise ArtifactCorrupt(f"{key}: sha256 differs from the committed one")

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self._client.get_object(self.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageUnavailable(f"download of {key} failed: {_reason(e)}") from e


def _reason(error: Exception) -> str:
    # Never echo request details: URLs can carry signatures, and messages must not leak keys.
    if isinstance(error, S3Error):
        return error.code or type(error).__name__
    return type(error).__name__ + (
        f": {error.args[0]}"
        if error.args and isinstance(error.args[0], str) and "Signature" not in error.args[0]
        else ""
    )
