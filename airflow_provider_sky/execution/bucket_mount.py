"""FUSE bucket mounts on a node with `rclone mount`: detect the tool, mount, unmount.

Everything on the node runs through the runner as a small stdlib-only Python helper (the node's
interpreter is already needed by the job driver). Credentials never travel on a command line:
the mount request (rclone's `RCLONE_CONFIG_<REMOTE>_*` variables included) is written as a 0600
file with `write_text`, read and deleted by the helper, and handed to the rclone process through
its environment only. rclone logs (NOTICE level, no credentials) go to `~/.sky/mounts/<key>.log`.

Every mount leaves a `<key>.path` marker so `unmount_all` finds it on teardown; it also unmounts
any FUSE file system left under the node's home (the local backend's node directories), so
deleting a node directory never walks into a live bucket.

Before anything is copied to or mounted at a file-mount destination, `check_destinations` lists
the live FUSE mounts at, above or beneath it (ours by marker, or anyone's from /proc/self/mounts)
and `release` unmounts ours that the new task does not want, so nothing is written through a mount
a previous task left on a reused cluster.

`copy` is the node-side COPY: the node itself runs `rclone copy` (same request file, same
credential handling) so bucket data goes straight from the store to the node, and reports what it
moved from rclone's final stats (`copy-<key>.log`, JSON lines).

`push_rclone` uploads the Airflow worker's own rclone into a node's ~/.sky/bin (where `detect` looks)
when the node has none; `provision.file_mounts` decides when.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from airflow_provider_sky.execution.runner import CommandRunner, RunResult

MOUNT_DIR = ".sky/mounts"
#: rclone VFS cache mode per file-mount mode: MOUNT streams (sequential writes, uploaded on close),
#: MOUNT_CACHED keeps a local cache (random writes, uploaded when the file is closed).
CACHE_MODES = {"MOUNT": "off", "MOUNT_CACHED": "full"}

_HELPER = r"""
import json, os, shutil, subprocess, sys, time

def esc(p):
    return p.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")

def unesc(p):
    for a, b in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        p = p.replace(a, b)
    return p

def mounts():
    try:
        with open("/proc/self/mounts") as fh:
            return [(unesc(f[1]), f[2]) for f in (line.split() for line in fh) if len(f) > 2]
    except OSError:
        return []

def mounted(path):
    return any(p == path for p, _ in mounts())

def which(name, home):
    extra = [os.path.join(home, ".sky", "bin"), os.path.expanduser("~/.local/bin")]
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", "")] + extra))

def mount_pids(path):
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if len(argv) > 3 and os.path.basename(argv[0]).startswith("rclone") and argv[1] == "mount" and argv[3] == path:
            pids.append(pid)
    return pids

def umount(path, drain=300.0, started_as=None):
    pids = mount_pids(started_as or path)
    tools = [t for t in (shutil.which("fusermount3"), shutil.which("fusermount")) if t]
    for argv in [[t, "-u", path] for t in tools] + [["umount", path]]:
        if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            break
    deadline = time.monotonic() + 10
    while mounted(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if mounted(path):  # busy: detach it now, the kernel drops it when the last user goes
        for argv in [[t, "-uz", path] for t in tools] + [["umount", "-l", path]]:
            if subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
    # rclone uploads what its cache still holds after the unmount, then exits: wait for that.
    deadline = time.monotonic() + drain
    while any(os.path.exists("/proc/" + p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not mounted(path)

def detect(home):
    fuse = os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK)
    out = {"rclone": which("rclone", home), "fuse": fuse,
           "fusermount": shutil.which("fusermount3") or shutil.which("fusermount"),
           "system": os.uname().sysname, "machine": os.uname().machine}
    print(json.dumps(out))

def mount(req_path, home):
    with open(req_path) as fh:
        req = json.load(fh)
    os.remove(req_path)
    path, mdir, key = req["path"], req["dir"], req["key"]
    fp_file = os.path.join(mdir, key + ".fp")
    if mounted(path):
        try:
            same = open(fp_file).read() == req["fingerprint"]
        except OSError:
            same = False
        if same and os.path.isdir(path):
            print("reused")
            return 0
        if not umount(path):
            print("cannot unmount the earlier mount at " + path, file=sys.stderr)
            return 3
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(mdir, key + ".path"), "w") as fh:
        fh.write(path)
    log = os.path.join(mdir, key + ".log")
    env = dict(os.environ)
    env.update(req["env"])
    argv = [req["rclone"] or which("rclone", home), "mount", req["remote"], path, "--daemon",
            "--daemon-wait", "60s", "--config", os.path.join(mdir, "rclone.conf"), "--log-file", log,
            "--log-level", "NOTICE", "--cache-dir", os.path.join(mdir, "cache-" + key)] + req["args"]
    open(os.path.join(mdir, "rclone.conf"), "a").close()
    try:
        rc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=mdir).returncode
    except OSError as exc:
        print("cannot run %s: %s" % (argv[0], exc.strerror), file=sys.stderr)
        return 4
    deadline = time.monotonic() + 10
    while rc == 0 and not mounted(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if rc != 0 or not mounted(path):
        try:
            tail = open(log, errors="replace").read()[-1500:]
        except OSError:
            tail = ""
        print("rclone mount exited with %d: %s" % (rc, tail.strip()), file=sys.stderr)
        return 4
    with open(fp_file, "w") as fh:
        fh.write(req["fingerprint"])
    print("mounted")
    return 0

def unmount_all(home):
    mdir = os.path.join(home, ".sky", "mounts")
    paths = []
    if os.path.isdir(mdir):
        for name in sorted(os.listdir(mdir)):
            if name.endswith(".path"):
                try:
                    paths.append(open(os.path.join(mdir, name)).read())
                except OSError:
                    pass
    under = home.rstrip("/") + "/"
    paths += [p for p, kind in mounts() if kind.startswith("fuse") and p.startswith(under)]
    done, failed = [], []
    for path in dict.fromkeys(paths):
        if not mounted(path):
            continue
        (done if umount(path) else failed).append(path)
    if os.path.isdir(mdir):
        for name in os.listdir(mdir):
            if name.endswith((".path", ".fp")):
                os.remove(os.path.join(mdir, name))
    print(json.dumps({"unmounted": done, "failed": failed}))
    return 1 if failed else 0

def copy(req_path, home):
    with open(req_path) as fh:
        req = json.load(fh)
    os.remove(req_path)
    path, mdir, key = req["path"], req["dir"], req["key"]
    os.makedirs(path, exist_ok=True)
    log = os.path.join(mdir, "copy-" + key + ".log")
    differ = os.path.join(mdir, "copy-" + key + ".differ")  # changed files: checked, then transferred
    conf = os.path.join(mdir, "rclone.conf")
    open(conf, "a").close()
    open(log, "w").close()  # this run's lines only
    env = dict(os.environ)
    env.update(req["env"])
    argv = [req["rclone"] or which("rclone", home), "copy", req["remote"], path, "--config", conf,
            "--log-file", log, "--use-json-log", "--log-level", "NOTICE", "--stats", "1h",
            "--stats-log-level", "NOTICE", "--differ", differ] + req["args"]
    start = time.monotonic()
    try:
        rc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=mdir).returncode
    except OSError as exc:
        print("cannot run %s: %s" % (argv[0], exc.strerror), file=sys.stderr)
        return 4
    seconds = time.monotonic() - start
    stats, errors = {}, []
    with open(log, errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec.get("stats"), dict):
                stats = rec["stats"]
            if rec.get("level") in ("error", "critical", "fatal"):
                obj = rec.get("object")
                errors.append(("%s: %s" % (obj, rec.get("msg")) if obj else str(rec.get("msg"))).strip())
    try:
        with open(differ, errors="replace") as fh:
            changed = sum(1 for line in fh if line.strip())
        os.remove(differ)
    except OSError:
        changed = 0
    transfers, checks = int(stats.get("transfers") or 0), int(stats.get("checks") or 0)
    unchanged = max(checks - changed, 0)
    if rc != 0 and not errors and stats.get("lastError"):
        errors.append(str(stats["lastError"]))
    print(json.dumps({"rc": rc, "files": transfers + unchanged, "copied": transfers, "unchanged": unchanged,
                      "bytes": int(stats.get("bytes") or 0), "seconds": round(seconds, 3),
                      "errors": errors[-5:]}))
    return 0 if rc == 0 else 5

LOCAL_FUSE = ("fuse.fuse-overlayfs", "fuse.lxcfs")  # local file systems served through FUSE

def is_remote_fuse(kind):
    return (kind == "fuse" or kind.startswith("fuse.")) and kind not in LOCAL_FUSE

def related(a, b):
    # a and b are the same path, or one lies beneath the other.
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

def markers(mdir):
    # Our live-or-stale mounts: canonical path -> (key, path as mounted, fingerprint).
    out = {}
    if os.path.isdir(mdir):
        for name in sorted(os.listdir(mdir)):
            if not name.endswith(".path"):
                continue
            key = name[:-5]
            try:
                path = open(os.path.join(mdir, name)).read()
            except OSError:
                continue
            try:
                fp = open(os.path.join(mdir, key + ".fp")).read()
            except OSError:
                fp = None
            out[os.path.realpath(path)] = (key, path, fp)
    return out

def check(spec, home):
    # Live FUSE mounts at, above or beneath each destination: ours (marker) or foreign.
    targets = json.loads(spec)
    mdir = os.path.join(home, ".sky", "mounts")
    ours = markers(mdir)
    root = os.path.realpath(home)
    live = [(p, kind) for p, kind in mounts() if is_remote_fuse(kind)]
    wanted = {}
    for t in targets:
        if t.get("fingerprint"):
            wanted[os.path.realpath(t["path"])] = t["fingerprint"]
    out = []
    for t in targets:
        path = os.path.realpath(t["path"])
        for mp, kind in live:
            if not related(path, mp):
                continue
            mine = ours.get(mp)
            above = path != mp and path.startswith(mp.rstrip("/") + "/")
            holds_home = root == mp or root.startswith(mp.rstrip("/") + "/")
            if mine is None and above and holds_home:
                continue  # the file system the node itself lives on (root or home): not made there
            out.append({"dst": t["dst"], "path": t["path"], "mount": mp, "kind": kind,
                        "ours": mine is not None,
                        "fingerprint": mine[2] if mine else None,
                        "keep": mine is not None and mine[2] is not None and wanted.get(mp) == mine[2]})
    print(json.dumps({"conflicts": out}))
    return 0

def release(spec, home):
    # Unmount these mounts of ours (deepest first; cached uploads drain) and drop their markers.
    paths = json.loads(spec)
    mdir = os.path.join(home, ".sky", "mounts")
    ours = markers(mdir)
    done, failed = [], []
    for path in sorted(paths, key=len, reverse=True):
        mine = ours.get(os.path.realpath(path))
        if mine is None:
            failed.append(path)
            continue
        key, as_mounted, _ = mine
        if mounted(path) and not umount(path, started_as=as_mounted):
            failed.append(path)
            continue
        for ext in (".path", ".fp"):
            try:
                os.remove(os.path.join(mdir, key + ext))
            except OSError:
                pass
        done.append(path)
    print(json.dumps({"unmounted": done, "failed": failed}))
    return 1 if failed else 0

cmd, home = sys.argv[1], sys.argv[2]
if cmd == "detect":
    detect(home)
elif cmd == "mount":
    sys.exit(mount(sys.argv[3], home))
elif cmd == "unmount-all":
    sys.exit(unmount_all(home))
elif cmd == "copy":
    sys.exit(copy(sys.argv[3], home))
elif cmd == "check":
    sys.exit(check(sys.argv[3], home))
elif cmd == "release":
    sys.exit(release(sys.argv[3], home))
"""


class MountError(RuntimeError):
    """A mount could not be set up on a node (the message holds rclone's own reason)."""


@dataclass(frozen=True)
class MountTools:
    """What a node offers for FUSE mounts."""

    rclone: str | None
    fuse: bool
    fusermount: str | None
    #: The node's `uname -s` / `uname -m` (None when not known).
    system: str | None = None
    machine: str | None = None

    @property
    def usable(self) -> bool:
        return bool(self.rclone and self.fuse and self.fusermount)

    @property
    def can_copy(self) -> bool:
        """A node-side COPY needs rclone only (no FUSE)."""
        return bool(self.rclone)

    def missing(self) -> list[str]:
        """Human-readable list of what is missing (empty when usable)."""
        out = []
        if not self.rclone:
            out.append("rclone")
        if not self.fuse:
            out.append("a usable /dev/fuse")
        if not self.fusermount:
            out.append("fusermount3 (fuse3)")
        return out


@dataclass(frozen=True)
class MountRequest:
    """One bucket to mount at an absolute node path; `env` holds rclone's remote config (secret)."""

    path: str
    remote: str
    env: Mapping[str, str] = field(repr=False)
    mode: str = "MOUNT"
    read_only: bool = False

    @property
    def key(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """Identity of what is mounted (no secret in it): remote, mode and access."""
        return f"{self.remote}|{self.mode}|{'ro' if self.read_only else 'rw'}"

    def rclone_args(self) -> list[str]:
        args = ["--vfs-cache-mode", CACHE_MODES.get(self.mode, "off"), "--dir-cache-time", "10s"]
        if self.mode == "MOUNT_CACHED":
            args += ["--vfs-write-back", "0s"]
        if self.read_only:
            args.append("--read-only")
        return args


#: `rclone copy` flags of a node-side COPY: compare by size and hash (`--checksum`; rclone also
#: verifies each transferred file's hash when both sides have one), list in one pass, and move many
#: objects at once; large objects are fetched in parallel chunks (rclone's multi-thread default).
COPY_ARGS: tuple[str, ...] = (
    "--checksum",
    "--fast-list",
    "--transfers", "16",
    "--checkers", "16",
    "--retries", "3",
    "--low-level-retries", "10",
)  # fmt: skip


class CopyError(MountError):
    """A node-side `rclone copy` failed (the message holds rclone's errors, credentials redacted)."""


@dataclass(frozen=True)
class CopyRequest:
    """Copy the objects under `remote` into the absolute node directory `path`; `env` is secret."""

    path: str
    remote: str
    env: Mapping[str, str] = field(repr=False)
    args: tuple[str, ...] = COPY_ARGS

    @property
    def key(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CopyResult:
    """What one node-side copy did, from rclone's final stats: objects seen (`files` = `copied` +
    `unchanged`), bytes transferred and the wall time on the node."""

    files: int
    copied: int
    unchanged: int
    bytes: int
    seconds: float


def _helper(runner: CommandRunner, cmd: str, *extra: str, timeout: float | None) -> RunResult:
    """Run the helper's `cmd` on the node: argv is [cmd, node home, *extra]."""
    return runner.run([runner.python, "-I", "-S", "-c", _HELPER, cmd, runner.home, *extra], timeout=timeout)


def detect_tools(runner: CommandRunner, timeout: float = 30) -> MountTools:
    """rclone on the node's PATH (or ~/.sky/bin), /dev/fuse usable and fusermount present."""
    result = _helper(runner, "detect", timeout=timeout)
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return MountTools(None, False, None)
    return MountTools(
        data.get("rclone"), bool(data.get("fuse")), data.get("fusermount"), data.get("system"), data.get("machine")
    )


#: Where `detect` looks for rclone besides PATH, relative to the node's home; `push_rclone` puts it there.
SKY_BIN = ".sky/bin"

#: `uname -m` / `platform.machine()` spellings of the same architecture.
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "x64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_platform(system: str | None, machine: str | None) -> tuple[str, str]:
    """(`linux`, `amd64`) from ("Linux", "x86_64"): x86_64 == amd64, aarch64 == arm64."""
    m = (machine or "").strip().lower()
    return (system or "").strip().lower(), _MACHINES.get(m, m)


def push_rclone(runner: CommandRunner, binary: str, timeout: float = 120) -> str:
    """Upload the local rclone `binary` into the node's ~/.sky/bin (0755) and return its version
    as the node reports it (`v1.66.0`). Raises MountError (the upload is removed) when it does
    not run there."""
    bin_dir = f"{runner.home.rstrip('/')}/{SKY_BIN}"
    target = f"{bin_dir}/rclone"
    partial = f"{bin_dir}/.rclone-{secrets.token_hex(6)}"  # never a half-written `rclone` for detect
    runner.run(["mkdir", "-p", bin_dir], timeout=30).check(f"creating {bin_dir}")
    try:
        runner.put(binary, partial)
        runner.run(["chmod", "0755", partial], timeout=30).check("chmod 0755 on the uploaded rclone")
        result = runner.run([partial, "version"], timeout=timeout)
        first = (result.stdout.strip().splitlines() or [""])[0]
        if result.returncode != 0 or not first.startswith("rclone "):
            detail = (result.stderr or result.stdout).strip()[-300:] or f"exit {result.returncode}"
            raise MountError(f"the uploaded rclone does not run on the node: {detail}")
        runner.run(["mv", "-f", partial, target], timeout=30).check("moving rclone into place")
    except BaseException:
        with contextlib.suppress(Exception):
            runner.run(["rm", "-f", "--", partial], timeout=30)
        raise
    return first.split()[1] if len(first.split()) > 1 else "(unknown version)"


def mount(runner: CommandRunner, tools: MountTools, request: MountRequest, timeout: float = 120) -> bool:
    """Mount on the node; False when the same mount was already there (reused). Raises MountError."""
    req_path = f"{runner.home.rstrip('/')}/{MOUNT_DIR}/req-{secrets.token_hex(8)}.json"
    body = {
        "path": request.path,
        "dir": f"{runner.home.rstrip('/')}/{MOUNT_DIR}",
        "key": request.key,
        "remote": request.remote,
        "env": dict(request.env),
        "args": request.rclone_args(),
        "fingerprint": request.fingerprint,
        "rclone": tools.rclone,
    }
    runner.write_text(req_path, json.dumps(body), mode=0o600)
    result = _helper(runner, "mount", req_path, timeout=timeout)
    if result.returncode != 0:
        _scrub_request(runner, req_path)
        detail = _redact((result.stderr or result.stdout).strip(), request.env.values())
        raise MountError(f"rclone could not mount {request.remote} at {request.path}: {detail}")
    return "reused" not in result.stdout


def copy(
    runner: CommandRunner, tools: MountTools, request: CopyRequest, timeout: float | None = None
) -> CopyResult:
    """`rclone copy` on the node (unchanged files are skipped); raises CopyError.

    No timeout by default: rclone's own I/O timeouts end a stalled transfer.
    """
    mdir = f"{runner.home.rstrip('/')}/{MOUNT_DIR}"
    req_path = f"{mdir}/req-{secrets.token_hex(8)}.json"
    body = {
        "path": request.path,
        "dir": mdir,
        "key": request.key,
        "remote": request.remote,
        "env": dict(request.env),
        "args": list(request.args),
        "rclone": tools.rclone,
    }
    runner.write_text(req_path, json.dumps(body), mode=0o600)
    try:
        result = _helper(runner, "copy", req_path, timeout=timeout)
    except Exception:
        _scrub_request(runner, req_path)
        raise
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = None
    if result.returncode != 0 or not isinstance(data, dict):
        _scrub_request(runner, req_path)
        if isinstance(data, dict) and data.get("errors"):
            detail = "; ".join(str(e) for e in data["errors"])
        else:
            detail = (result.stderr or result.stdout).strip()[-1500:]
        detail = _redact(detail, request.env.values())
        rc = data.get("rc") if isinstance(data, dict) else result.returncode
        raise CopyError(f"rclone copy {request.remote} -> {request.path} failed (exit {rc}): {detail}")
    return CopyResult(
        files=int(data["files"]),
        copied=int(data["copied"]),
        unchanged=int(data["unchanged"]),
        bytes=int(data["bytes"]),
        seconds=float(data["seconds"]),
    )


def _scrub_request(runner: CommandRunner, req_path: str) -> None:
    """Remove a request file the helper did not consume (it holds credentials)."""
    with contextlib.suppress(Exception):  # best effort: the node may be gone
        runner.run(["rm", "-f", "--", req_path], timeout=30)


def _redact(text: str, values: Iterable[str]) -> str:
    for value in values:
        if value and len(str(value)) >= 6:
            text = text.replace(str(value), "***")
    return text


@dataclass(frozen=True)
class Target:
    """A file-mount destination about to be written (COPY) or mounted: `path` is the absolute node
    path; `fingerprint` is the wanted mount's (`MountRequest.fingerprint`), None for a copy."""

    dst: str
    path: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class Conflict:
    """A live FUSE mount at, above or beneath a destination's node path.

    `ours`: made by `mount` (its marker is there), with `fingerprint`; `keep`: it is the very mount
    this task wants at that path (same source, mode and access), so it is reused.
    """

    dst: str
    path: str
    mount: str
    kind: str
    ours: bool
    fingerprint: str | None
    keep: bool


def check_destinations(
    runner: CommandRunner, targets: Sequence[Target], timeout: float = 60
) -> list[Conflict]:
    """The live FUSE mounts that writing to / mounting at `targets` would meet (read-only on the node).

    Looks at the node's /proc/self/mounts and our `<key>.path` markers; the file system the node's
    home itself lives on is not a conflict. Raises MountError when the node cannot be inspected.
    """
    spec = json.dumps([{"dst": t.dst, "path": t.path, "fingerprint": t.fingerprint} for t in targets])
    result = _helper(runner, "check", spec, timeout=timeout)
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
        return [Conflict(**c) for c in data["conflicts"]]
    except (ValueError, IndexError, KeyError, TypeError):
        detail = (result.stderr or result.stdout).strip()[-500:]
        raise MountError(f"cannot list the mounts on {runner.home}: {detail}") from None


def release(runner: CommandRunner, paths: Sequence[str], timeout: float = 400) -> dict[str, list[str]]:
    """Unmount these mounts of ours (as `unmount_all` does: a MOUNT_CACHED mount uploads what its
    cache holds first) and drop their markers; returns {"unmounted": [...], "failed": [...]}."""
    result = _helper(runner, "release", json.dumps(list(paths)), timeout=timeout)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"unmounted": [], "failed": [f"{p}: {result.stderr.strip()[-500:]}" for p in paths]}


def unmount_all(runner: CommandRunner, timeout: float = 400) -> dict[str, list[str]]:
    """Unmount every bucket mount of the node (and any FUSE mount under its home).

    Each unmount waits (up to 300 s) for its rclone to upload what its cache holds and exit.
    """
    result = _helper(runner, "unmount-all", timeout=timeout)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"unmounted": [], "failed": [f"{runner.home}: {result.stderr.strip()[-500:]}"]}
