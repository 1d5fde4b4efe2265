"""file:// store: a directory tree on this machine (the embedded default backend).

Writes go to a hidden temporary file next to the target and are renamed into place, so a crash
never leaves a partial object under its real name. Engine metadata is kept in `user.` xattrs
where the filesystem supports them (best effort: checksums are always recomputable from content).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import google_crc32c

from .base import (
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    StorageError,
    Store,
    normalize_metadata,
)

_TMP_MARK = ".sky-tmp-"
_XATTR = "user.sky_meta"  # "<etag when written>\n<json metadata>"


def _file_etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class FileStore(Store):
    """Objects are files under `root`; key `a/b/c` is `<root>/a/b/c`."""

    scheme = "file"

    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root)
        self.bucket = ""

    def uri(self, key: str = "") -> str:
        return "file://" + os.path.join(self.root, key)

    def endpoint_identity(self) -> tuple:
        return ("file",)

    def _path(self, key: str) -> str:
        path = os.path.normpath(os.path.join(self.root, key))
        if path != self.root and not path.startswith(self.root.rstrip(os.sep) + os.sep):
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return path

    def _key(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return rel.replace(os.sep, "/")

    # ---- listing
    def list(self, prefix: str = "", hidden: bool = False) -> Iterator[ObjectInfo]:
        if prefix.endswith("/") or not prefix:
            top = self._path(prefix) if prefix else self.root
        else:
            top = os.path.dirname(self._path(prefix))
        if not os.path.isdir(top):
            return
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                if _TMP_MARK in name:
                    continue
                path = os.path.join(dirpath, name)
                key = self._key(path)
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(
                    key=key, size=st.st_size, etag=_file_etag(st), mtime=st.st_mtime, metadata_loaded=False
                )

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(path):
            return None
        meta: dict[str, str] = {}
        try:
            stamp, _, payload = os.getxattr(path, _XATTR).decode().partition("\n")
            # Metadata is only trusted while the file is unchanged since the engine wrote it.
            if stamp == _file_etag(st):
                meta = json.loads(payload)
        except (OSError, AttributeError, ValueError):
            meta = {}
        info = ObjectInfo(key=key, size=st.st_size, etag=_file_etag(st), mtime=st.st_mtime, metadata=meta)
        return info

    # ---- reading
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                fh.seek(start)
                return fh.read() if end is None else fh.read(max(0, end - start))
        except FileNotFoundError as exc:
            raise NotFound(self.uri(key)) from exc

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(self.uri(key)) from exc

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError as exc:
            raise NotFound(self.uri(key)) from exc
        fh.seek(start)
        return fh  # the engine reads exactly end - start bytes

    # ---- writing
    def _tmp_path(self, key: str) -> str:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{_TMP_MARK}{uuid.uuid4().hex}")

    def _finish(self, tmp: str, key: str, metadata: Mapping[str, str] | None) -> ObjectInfo:
        path = self._path(key)
        os.replace(tmp, path)
        meta = normalize_metadata(metadata)
        if meta:
            payload = _file_etag(os.stat(path)) + "\n" + json.dumps(meta)
            with contextlib.suppress(OSError, AttributeError):
                os.setxattr(path, _XATTR, payload.encode())
        st = os.stat(path)
        return ObjectInfo(key=key, size=st.st_size, etag=_file_etag(st), mtime=st.st_mtime, metadata=meta)

    def write(
        self,
        key: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
        crc32c: int | None = None,
    ) -> ObjectInfo:
        tmp = self._tmp_path(key)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            return self._finish(tmp, key, metadata)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def begin_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartUpload:
        return _FileMultipart(self, key)

    def copy_from(
        self, source: Store, src_key: str, dst_key: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        if not isinstance(source, FileStore):
            raise StorageError("server-side copy needs two file stores")
        tmp = self._tmp_path(dst_key)
        try:
            shutil.copyfile(source._path(src_key), tmp)
            return self._finish(tmp, dst_key, metadata)
        except FileNotFoundError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise NotFound(source.uri(src_key)) from exc

    def compute_checksums(self, key: str) -> tuple[str, int]:
        md5 = hashlib.md5()
        crc = 0
        with open(self._path(key), "rb") as fh:
            while chunk := fh.read(8 << 20):
                md5.update(chunk)
                crc = google_crc32c.extend(crc, chunk)
        return md5.hexdigest(), crc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    # ---- "buckets"
    def bucket_exists(self) -> bool:
        return os.path.isdir(self.root)

    def create_bucket(self, region: str | None = None, exist_ok: bool = True) -> None:
        if os.path.isdir(self.root) and not exist_ok:
            raise StorageError(f"{self.root} already exists")
        os.makedirs(self.root, exist_ok=True)

    def region(self) -> str | None:
        return "local"


class _FileMultipart(MultipartUpload):
    """Parts are written at their offsets into one temporary file, renamed on completion."""

    def __init__(self, store: FileStore, key: str):
        self.store = store
        self.key = key
        self.tmp = store._tmp_path(key)
        with open(self.tmp, "wb"):
            pass

    def upload_part(self, number: int, data: bytes, md5: bytes, offset: int) -> str:
        fd = os.open(self.tmp, os.O_WRONLY)
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        finally:
            os.close(fd)
        return str(offset)

    def complete(self, parts: list[PartResult], metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        total = sum(p.size for p in parts)
        if os.path.getsize(self.tmp) != total:
            os.truncate(self.tmp, total)
        return self.store._finish(self.tmp, self.key, metadata)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
