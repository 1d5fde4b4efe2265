"""`sky-airflow cp` / `sky-airflow verify`: the transfer engine from a shell.

    sky-airflow cp ./data/ s3://bucket/data/ --dst-options @s3.json
    sky-airflow verify ./data/ s3://bucket/data/ --dst-options @s3.json

Kept lean on purpose: this module imports only the standard library at parse time and
`airflow_provider_sky.storage` (plus the SDK of the schemes used) when a command runs; never the
broker (provision, state, spec, optimizer, catalog), rich or yaml. The one exception is
`--max-cost`, which needs the catalog's egress price tables.

Store options (credentials, endpoints) come as a JSON object (`--src-options '{...}'`,
`--src-options @file.json`, or `$SKY_SRC_OPTIONS` / `$SKY_DST_OPTIONS`), and their values never
appear in what this command prints: every message goes through `_Redactor`.

Exit codes: 0 success, 1 transfer or verification failure, 2 usage error (bad flags, bad options).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from airflow_provider_sky.storage import Store, TransferProgress, TransferReport

MiB = 1 << 20

#: Option names whose values are not secret (shown in messages as they are).
_PUBLIC_OPTIONS = frozenset(
    {"endpoint_url", "endpoint", "region_name", "region", "project", "account_url", "profile_name",
     "anonymous", "verify", "max_pool_connections", "resumable_chunk_size", "root"}
)  # fmt: skip
#: Connection-string fields that are not secret (everything else in it is redacted).
_PUBLIC_CONN_FIELDS = frozenset(
    {"defaultendpointsprotocol", "accountname", "endpointsuffix", "blobendpoint", "queueendpoint",
     "tableendpoint", "fileendpoint"}
)  # fmt: skip
#: Options a JSON object cannot carry (SDK objects): not offered in "accepted options" hints.
_OBJECT_OPTIONS = frozenset({"client", "credentials"})
_ENV_OF = {"src": "SKY_SRC_OPTIONS", "dst": "SKY_DST_OPTIONS"}


class UsageError(Exception):
    """A bad flag or option: one line on stderr, exit 2."""


class _Redactor:
    """Replaces every secret option value (and its URL-quoted form) in a text with `***`."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add_options(self, options: dict[str, Any]) -> None:
        for name, value in options.items():
            self._add_value(name, value)

    def _add_value(self, name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._add_value(str(k), v)
            return
        if isinstance(value, list):
            for v in value:
                self._add_value(name, v)
            return
        if not isinstance(value, str) or name in _PUBLIC_OPTIONS:
            return
        self._add(value)
        if name == "connection_string":
            for field in value.split(";"):
                key, sep, val = field.partition("=")
                if sep and key.strip().lower() not in _PUBLIC_CONN_FIELDS:
                    self._add(val)
        if name == "sas_token":
            for field in value.lstrip("?").split("&"):
                key, sep, val = field.partition("=")
                if sep and key == "sig":
                    self._add(val)

    def _add(self, value: str) -> None:
        value = value.strip()
        if len(value) >= 4:
            self.secrets.update({value, quote(value, safe=""), quote(value)})

    def __call__(self, text: object) -> str:
        out = str(text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            out = out.replace(secret, "***")
        return out

    def line(self, text: object, limit: int = 300) -> str:
        """The first non-empty line of `text`, redacted and shortened (SDK errors span pages)."""
        first = next((ln.strip() for ln in self(text).splitlines() if ln.strip()), "")
        return first if len(first) <= limit else first[: limit - 3] + "..."


# --------------------------------------------------------------------------- options


def _load_options(which: str, raw: str | None) -> dict[str, Any]:
    """The store options of `--<which>-options` (JSON object or @file), else of its env var."""
    flag, env = f"--{which}-options", _ENV_OF[which]
    source = flag
    if raw is None:
        raw = os.environ.get(env)
        source = f"${env} (used when {flag} is not given)"
        if raw is None or not raw.strip():
            return {}
    text = raw
    if raw.startswith("@"):
        path = os.path.expanduser(raw[1:])
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(
                f"{source}: cannot read options file {path!r} ({exc.strerror or type(exc).__name__}); "
                f"give an existing JSON file as @path/to/file.json, or the JSON object inline"
            ) from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:  # its message holds a position, never the text
        raise UsageError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"""give a JSON object such as '{{"region_name": "us-east-1"}}' or @path/to/file.json"""
        ) from None
    if not isinstance(options, dict):
        raise UsageError(
            f"{source}: expected a JSON object of store options, got a JSON {type(options).__name__}; "
            f"""e.g. '{{"endpoint_url": "http://127.0.0.1:9000"}}'"""
        )
    return options


def _store_class(scheme: str) -> Any:
    if scheme == "s3":
        from airflow_provider_sky.storage.s3 import S3Store

        return S3Store
    if scheme == "gs":
        from airflow_provider_sky.storage.gcs import GCSStore

        return GCSStore
    if scheme == "az":
        from airflow_provider_sky.storage.azure import AzureStore

        return AzureStore
    from airflow_provider_sky.storage.local import FileStore

    return FileStore


def _accepted_options(scheme: str) -> list[str]:
    import inspect

    params = inspect.signature(_store_class(scheme).__init__).parameters.values()
    names = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if scheme == "file":
        names = ["root"]
    return [n for n in names if n not in _OBJECT_OPTIONS]


def _open(which: str, uri: str, options: dict[str, Any], redact: _Redactor) -> tuple[Store, str, Any]:
    """(store, key, parsed URI) for one side; a bad URI or a rejected option is a UsageError."""
    from airflow_provider_sky.storage import parse_uri, store_for

    flag = f"--{which}-options"
    name = "SRC" if which == "src" else "DST"
    try:
        loc = parse_uri(uri)
    except ValueError as exc:
        raise UsageError(f"{name}: {redact.line(exc)}") from None
    accepted = _accepted_options(loc.scheme)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise UsageError(
            f"{flag}: the {loc.scheme}:// store does not accept option(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    try:
        store = store_for(loc, **options)
    except TypeError:
        raise UsageError(
            f"{flag}: the {loc.scheme}:// store rejected an option value (wrong type?); "
            f"check the values of {', '.join(sorted(options)) or 'the options'}"
        ) from None
    except Exception as exc:
        raise UsageError(
            f"{flag}: cannot open {uri} with these options: {type(exc).__name__}: {redact.line(exc)}"
        ) from None
    return store, loc.key, loc


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------- reporting


def peak_rss_mib() -> float | None:
    """This process's peak resident set (VmHWM) in MiB; None where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _report_dict(
    report: TransferReport | None, budget_peak: int, redact: _Redactor, error: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "src": None,
        "dst": None,
        "dry_run": False,
        "files": 0,
        "bytes": 0,
        "skipped": 0,
        "bytes_skipped": 0,
        "deleted": 0,
        "resumed_bytes": 0,
        "verified": False,
        "size_only": 0,
        "server_side": False,
        "seconds": 0.0,
        "mb_per_s": 0.0,
        "cost_usd": None,
        "estimate": None,
        "budget_peak_mib": round(budget_peak / MiB, 1),
        "peak_rss_mib": peak_rss_mib(),
        "failed": [],
        "error": error,
    }
    if report is not None:
        est = report.estimate
        out.update(
            src=report.src_uri,
            dst=report.dst_uri,
            dry_run=report.dry_run,
            files=report.files_copied,
            bytes=report.bytes_copied,
            skipped=report.files_skipped,
            bytes_skipped=report.bytes_skipped,
            deleted=report.files_deleted,
            resumed_bytes=report.bytes_resumed,
            verified=report.verified,
            size_only=report.files_size_only,
            server_side=report.server_side,
            seconds=round(report.seconds, 3),
            mb_per_s=round(report.throughput / 1e6, 2),
            cost_usd=report.cost_usd,
            failed=[{"key": key, "error": redact.line(msg)} for key, msg in report.failures],
            estimate=None
            if est is None
            else {
                "files": est.files,
                "bytes": est.bytes,
                "skipped": est.files_skipped,
                "bytes_skipped": est.bytes_skipped,
                "seconds": round(est.seconds, 3),
                "cost_usd": est.cost_usd,
                "server_side": est.server_side,
                "src_region": est.src_region,
                "dst_region": est.dst_region,
            },
        )
    return out


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _human_summary(data: dict[str, Any]) -> str:
    if data["dry_run"]:
        est = data["estimate"] or {}
        cost = est.get("cost_usd")
        return (
            f"dry run: would copy {est.get('files', 0)} files ({_mib(est.get('bytes', 0))}), "
            f"{est.get('skipped', 0)} identical skipped ({_mib(est.get('bytes_skipped', 0))}); "
            f"estimated {est.get('seconds', 0):.1f}s"
            + (f", ${cost:.4f} egress" if cost is not None else ", egress cost not priced (see --max-cost)")
            + (" (server-side)" if est.get("server_side") else "")
            + "; nothing copied"
        )
    return (
        f"copied {data['files']} files ({_mib(data['bytes'])}), {data['skipped']} skipped, "
        f"{data['deleted']} deleted in {data['seconds']:.1f}s ({data['mb_per_s']:.1f} MB/s), "
        f"verified={data['verified']}, memory budget peak {data['budget_peak_mib']:.1f} MiB"
        + (f", peak RSS {data['peak_rss_mib']:.0f} MiB" if data["peak_rss_mib"] is not None else "")
        + (f", cost ${data['cost_usd']:.4f}" if data["cost_usd"] is not None else "")
    )


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _logging_to_stderr(prefix: str, redact: _Redactor) -> Iterator[None]:
    """Warnings of the engine and the SDKs as one redacted line each on stderr while a command runs
    (the default last-resort handler would print them whole: SDK errors span pages)."""
    import logging  # here, not at module level: `--help` need not pay for it

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "airflow_provider_sky.storage.transfer" and str(record.msg).startswith(
                "copy of "
            ):
                return  # a failed object: listed once the copy ends (see _cp)
            try:
                message = redact.line(record.getMessage())
            except Exception:
                message = redact.line(record.msg)
            _err(f"{prefix}: {record.levelname.lower()}: {message}")

    root = logging.getLogger()
    handler = Handler(logging.WARNING)
    old_level = root.level
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _progress_printer(prefix: str) -> Any:
    def show(snap: TransferProgress) -> None:
        _err(f"{prefix}: {snap}")

    return show


def _close(*stores: Store | None) -> None:
    for store in stores:
        if store is not None:
            with contextlib.suppress(Exception):  # closing is best effort at exit
                store.close()


def _egress_price(
    src_cloud: str, src_region: str | None, dst_cloud: str, dst_region: str | None
) -> float | None:
    """USD/GB from the catalog's egress tables (imported only for --max-cost: it pulls numpy)."""
    try:
        from airflow_provider_sky.catalog.egress import Location, egress_price_per_gb
    except ImportError:  # pragma: no cover - the catalog is part of the package
        return None
    return egress_price_per_gb(Location(src_cloud, src_region), Location(dst_cloud, dst_region))


# --------------------------------------------------------------------------- commands


def _missing(key: str, loc: Any, is_source: bool) -> str | None:
    """Why a local source cannot be used (its path does not exist), else None. Buckets are not
    asked about up front (a HeadBucket would cost a request and, for S3, the botocore client the
    direct reads avoid): the engine's first listing finds a missing bucket before any byte moves."""
    if loc.scheme == "file" and is_source:
        return None if os.path.exists(("/" + key).rstrip("/") or "/") else "no such file or directory"
    return None


def _missing_bucket(exc: Exception, sides: list[tuple[str, str, Any, Any]]) -> str | None:
    """The message for a listing's NotFound naming one side's bucket, else None."""
    text = str(exc)
    for name, uri, store, loc in sides:
        if store is not None and loc.scheme != "file" and text.startswith(store.uri()):
            return f"{name} {uri}: bucket {loc.bucket!r} does not exist" + (
                "; create it first" if name == "DST" else ""
            )
    return None


def cmd_cp(args: argparse.Namespace, console: object = None) -> int:
    redact = _Redactor()
    with _logging_to_stderr("sky-airflow cp", redact):
        code = _cp(args, redact)
    if code == 0:
        import gc

        # The process is about to exit: freezing moves every live object to the permanent
        # generation, which skips the interpreter's exit-time collection over every long-lived SDK
        # object (~0.1 s after the botocore / azure imports).
        gc.freeze()
    return code


def _cp(args: argparse.Namespace, redact: _Redactor) -> int:
    src_store = dst_store = None
    engine = None
    try:
        src_options = _load_options("src", args.src_options)
        dst_options = _load_options("dst", args.dst_options)
        redact.add_options(src_options)
        redact.add_options(dst_options)
        src_store, src_key, src_loc = _open("src", args.src, src_options, redact)
        dst_store, dst_key, dst_loc = _open("dst", args.dst, dst_options, redact)
    except UsageError as exc:
        _close(src_store, dst_store)
        _err(f"sky-airflow cp: {exc}")
        return 2

    from airflow_provider_sky.storage.transfer import TransferEngine, TransferError

    def fail(message: str, report: TransferReport | None = None) -> int:
        message = redact.line(message)
        _err(f"sky-airflow cp: {message}")
        if args.json:
            peak = engine.budget.peak if engine is not None else 0
            print(json.dumps(_report_dict(report, peak, redact, error=message), indent=2))
        return 1

    try:
        why = _missing(src_key, src_loc, True)
        if why:
            return fail(f"SRC {args.src}: {why}")
        interval = args.progress_interval
        engine = TransferEngine(
            src_store,
            src_key,
            dst_store,
            dst_key,
            workers=args.workers,
            part_size=int(args.part_size * MiB),
            multipart_threshold=int(args.multipart_threshold * MiB),
            memory_budget=int(args.memory * MiB),
            delete_extraneous=args.delete,
            dry_run=args.dry_run,
            max_cost_usd=args.max_cost,
            resume=not args.no_resume,
            egress_price_per_gb=_egress_price if args.max_cost is not None else None,
            progress=_progress_printer("sky-airflow cp") if interval > 0 else None,
            progress_interval=interval if interval > 0 else 3600.0,
        )
        try:
            report = engine.run()
        except TransferError as exc:
            for key, message in exc.report.failures:
                _err(f"sky-airflow cp: failed {key}: {redact.line(message)}")
            return fail(str(exc), exc.report)
        if args.max_cost is not None and report.estimate is not None and report.estimate.cost_usd is None:
            _err("sky-airflow cp: warning: no egress price known for this pair; --max-cost was not enforced")
        data = _report_dict(report, engine.budget.peak, redact)
        if not report.dry_run and report.files_copied + report.files_skipped == 0:
            _err(f"sky-airflow cp: warning: nothing to copy under {args.src}")
    except KeyboardInterrupt:
        _err("sky-airflow cp: interrupted; rerun the same command to continue (copied objects are skipped)")
        return 130
    except Exception as exc:
        sides = [("SRC", args.src, src_store, src_loc), ("DST", args.dst, dst_store, dst_loc)]
        return fail(_missing_bucket(exc, sides) or f"{type(exc).__name__}: {exc}")
    finally:
        _close(src_store, dst_store)
    print(json.dumps(data, indent=2) if args.json else _human_summary(data), flush=True)
    return 0


def cmd_verify(args: argparse.Namespace, console: object = None) -> int:
    redact = _Redactor()
    with _logging_to_stderr("sky-airflow verify", redact):
        return _verify(args, redact)


def _verify(args: argparse.Namespace, redact: _Redactor) -> int:
    src_store = dst_store = None
    try:
        src_options = _load_options("src", args.src_options)
        dst_options = _load_options("dst", args.dst_options)
        redact.add_options(src_options)
        redact.add_options(dst_options)
        src_store, _, _ = _open("src", args.src, src_options, redact)
        dst_store, _, _ = _open("dst", args.dst, dst_options, redact)
    except UsageError as exc:
        _close(src_store, dst_store)
        _err(f"sky-airflow verify: {exc}")
        return 2

    from airflow_provider_sky.storage import verify

    try:
        result = verify(args.src, args.dst, src_store=src_store, dst_store=dst_store, deep=args.deep)
    except KeyboardInterrupt:
        _err("sky-airflow verify: interrupted")
        return 130
    except Exception as exc:
        message = redact.line(f"{type(exc).__name__}: {exc}")
        _err(f"sky-airflow verify: {message}")
        if args.json:
            print(json.dumps({"ok": False, "error": message}, indent=2))
        return 1
    finally:
        _close(src_store, dst_store)
    if args.json:
        print(json.dumps({"ok": result.ok, "matched": result.matched, "missing": result.missing,
                          "mismatched": result.mismatched, "extra": result.extra, "error": None}, indent=2))  # fmt: skip
    else:
        for key in result.missing:
            print(f"missing     {key}")
        for key in result.mismatched:
            print(f"mismatched  {key}")
        for key in result.extra:
            print(f"extra       {key} (only at the destination; not an error)")
        print(
            f"{'ok' if result.ok else 'FAILED'}: {result.matched} matched, {len(result.missing)} missing, "
            f"{len(result.mismatched)} mismatched, {len(result.extra)} extra"
        )
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- parser

_OPTIONS_HELP = (
    "store options of SRC as a JSON object, or @path/to/file.json (default: $SKY_SRC_OPTIONS); "
    "s3: endpoint_url, region_name, aws_access_key_id, aws_secret_access_key, aws_session_token, "
    "profile_name; gs: project, endpoint, anonymous; az: connection_string, account_key, sas_token, "
    "account_url, region. Without credentials the SDKs' default chains apply"
)


def _add_options_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", metavar="SRC", help="source object or prefix: s3://, gs://, az://, file:// or a path"
    )
    parser.add_argument("dst", metavar="DST", help="destination object or prefix")
    parser.add_argument("--src-options", metavar="JSON|@FILE", help=_OPTIONS_HELP)
    parser.add_argument(
        "--dst-options",
        metavar="JSON|@FILE",
        help=f"store options of DST, like --src-options (default: ${_ENV_OF['dst']})",
    )


def add_transfer_parser(subparsers: Any) -> None:
    """Register ``cp`` and ``verify`` (handlers ``func(args, console=None)``; ``plain=True``: no console)."""
    cp = subparsers.add_parser(
        "cp",
        help="copy an object or prefix between s3://, gs://, az:// and file:// (verified, incremental)",
        description="Copy SRC to DST with the transfer engine: every object verified, identical ones "
        "skipped, large ones resumed. Exit 0 on success, 1 when objects failed, 2 on usage errors.",
    )
    _add_options_flags(cp)
    cp.add_argument(
        "--workers", type=_positive(int), default=16, metavar="N", help="parallel requests (default: 16)"
    )
    cp.add_argument(
        "--part-size",
        type=_positive(float),
        default=16,
        metavar="MiB",
        help="multipart part size (default: 16)",
    )
    cp.add_argument(
        "--multipart-threshold",
        type=_positive(float),
        default=64,
        metavar="MiB",
        help="objects larger than this are copied in parts (default: 64)",
    )
    cp.add_argument(
        "--memory",
        type=_positive(float),
        default=512,
        metavar="MiB",
        help="bytes in flight at most (default: 512)",
    )
    cp.add_argument("--delete", action="store_true", help="delete destination objects absent from the source")
    cp.add_argument(
        "--dry-run", action="store_true", help="list both sides and print the estimate; copy nothing"
    )
    cp.add_argument(
        "--max-cost",
        type=_non_negative_float,
        metavar="USD",
        help="refuse before copying when the estimated egress cost is higher (prices from the catalog)",
    )
    cp.add_argument("--no-resume", action="store_true", help="restart interrupted large objects from scratch")
    cp.add_argument(
        "--progress-interval",
        type=_non_negative_float,
        default=5.0,
        metavar="SECONDS",
        help="progress lines on stderr every SECONDS (default: 5; 0: none)",
    )
    cp.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    cp.set_defaults(func=cmd_cp, plain=True)

    ver = subparsers.add_parser(
        "verify",
        help="compare a destination prefix with its source (exit 1 on missing or changed objects)",
    )
    _add_options_flags(ver)
    ver.add_argument("--deep", action="store_true", help="re-read and hash every destination object")
    ver.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    ver.set_defaults(func=cmd_verify, plain=True)
