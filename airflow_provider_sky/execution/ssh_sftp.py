"""SFTP file operations of the SSH runner: mkdir -p, ranged reads, atomic writes, tree sync."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import uuid
from pathlib import Path

import paramiko

from airflow_provider_sky.execution.sync import SyncFilter, iter_sync_files


def _stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.lstat(path)
    except FileNotFoundError:
        return None


def mkdirs(sftp: paramiko.SFTPClient, path: str, mode: int = 0o700) -> None:
    """``mkdir -p`` (new directories get `mode`)."""
    missing = []
    cur = path.rstrip("/") or "/"
    while cur not in ("/", "") and _stat(sftp, cur) is None:
        missing.append(cur)
        cur = posixpath.dirname(cur)
    for d in reversed(missing):
        try:
            sftp.mkdir(d, mode)
        except OSError:
            if _stat(sftp, d) is None:  # not a lost race with another writer
                raise


def _replace(sftp: paramiko.SFTPClient, tmp: str, dst: str) -> None:
    try:
        sftp.posix_rename(tmp, dst)  # OpenSSH extension: atomic replace
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(dst)
        sftp.rename(tmp, dst)


def write_atomic(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a temp file (chmod before any byte lands), then rename it over `path`."""
    parent = posixpath.dirname(path) or "."
    mkdirs(sftp, parent)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    try:
        with sftp.open(tmp, "wb") as f:
            f.chmod(mode)
            f.set_pipelined(True)
            f.write(data)
        _replace(sftp, tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(tmp)
        raise


def read_range(sftp: paramiko.SFTPClient, path: str, offset: int, max_bytes: int) -> bytes:
    """Up to `max_bytes` from `offset` (negative: from the end); FileNotFoundError when missing."""
    try:
        with sftp.open(path, "rb") as f:
            if offset < 0:
                offset = max(0, f.stat().st_size + offset)  # type: ignore[operator]
            f.seek(offset)
            return f.read(max_bytes)
    except OSError as exc:
        if exc.errno == errno.ENOENT or isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(errno.ENOENT, f"no such file on the node: {path}") from None
        raise


def _unchanged(remote: paramiko.SFTPAttributes | None, local: os.stat_result) -> bool:
    return (
        remote is not None
        and stat.S_ISREG(remote.st_mode or 0)
        and remote.st_size == local.st_size
        and remote.st_mtime == int(local.st_mtime)
    )


def upload_file(
    sftp: paramiko.SFTPClient, src: Path, dst: str, remote: paramiko.SFTPAttributes | None
) -> bool:
    """Copy one file (temp + rename, mode and mtime kept) unless size and mtime match; True if copied."""
    st = src.stat()
    if _unchanged(remote, st):
        return False
    if remote is not None and stat.S_ISDIR(remote.st_mode or 0):
        raise IsADirectoryError(f"cannot replace directory {dst} on the node with file {src}")
    tmp = f"{posixpath.dirname(dst)}/.tmp-{uuid.uuid4().hex}"
    try:
        sftp.put(str(src), tmp, confirm=False)
        sftp.chmod(tmp, stat.S_IMODE(st.st_mode))
        sftp.utime(tmp, (int(st.st_atime), int(st.st_mtime)))
        _replace(sftp, tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(tmp)
        raise
    return True


class _Listing:
    """Remote directory attributes, fetched once per directory (no stat per file)."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self._dirs: dict[str, dict[str, paramiko.SFTPAttributes]] = {}

    def get(self, path: str) -> paramiko.SFTPAttributes | None:
        parent, name = posixpath.split(path)
        if parent not in self._dirs:
            try:
                self._dirs[parent] = {a.filename: a for a in self.sftp.listdir_attr(parent)}
            except FileNotFoundError:
                self._dirs[parent] = {}
        return self._dirs[parent].get(name)


def sync(sftp: paramiko.SFTPClient, src: Path, dst: str) -> int:
    """Sync a file or a directory tree (`sync.py` ignore rules, no deletions); files copied."""
    if not src.exists():
        raise FileNotFoundError(f"cannot sync {src}: no such file or directory")
    if src.is_file():
        remote = _stat(sftp, dst)
        if remote is not None and stat.S_ISDIR(remote.st_mode or 0):
            dst = f"{dst.rstrip('/')}/{src.name}"
            remote = _stat(sftp, dst)
        mkdirs(sftp, posixpath.dirname(dst) or "/")
        return int(upload_file(sftp, src, dst, remote))
    mkdirs(sftp, dst)
    listing = _Listing(sftp)
    copied = 0
    for rel in iter_sync_files(src, SyncFilter.from_dir(src)):
        local = src / rel
        target = f"{dst.rstrip('/')}/{rel.as_posix()}"
        remote = listing.get(target)
        if local.is_symlink():
            link = os.readlink(local)
            if remote is not None:
                if stat.S_ISLNK(remote.st_mode or 0) and sftp.readlink(target) == link:
                    continue
                sftp.remove(target)
            sftp.symlink(link, target)
        elif local.is_dir():
            if remote is None:
                sftp.mkdir(target, stat.S_IMODE(local.stat().st_mode) | 0o700)
        else:
            copied += upload_file(sftp, local, target, remote)
    return copied
