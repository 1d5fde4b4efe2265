"""Memory of large-object copies: the engine's resident set grows by its byte budget, not twice it.

Parts are read straight into pooled, reused buffers (no intermediate bytes object per read, no
part-sized allocation per part), so the peak RSS of a copy stays within budget + a small margin
over the baseline of the same process measured just before it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.emulators import REPO, get_emulator, unique_name

MiB = 1 << 20
BUDGET = 48 * MiB
# Thread stacks, CRC32C slices, HTTP buffers: a few MiB. A second copy of the parts in flight
# (what the read path used to make) would be about BUDGET more.
MARGIN = 12 * MiB

CHILD = r"""
import json, sys
from airflow_provider_sky.storage import open_uri
from airflow_provider_sky.storage.transfer import TransferEngine

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

out = []
for job in json.loads(sys.argv[1]):
    src, src_key = open_uri(job["src"], **job["src_options"])
    dst, dst_key = open_uri(job["dst"], **job["dst_options"])
    # Warm up: modules imported, connection pools open, one small object copied.
    TransferEngine(src, src_key + "warm/", dst, dst_key + "warm/", workers=8).run()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak RSS (VmHWM) restarts from the current RSS
    base = status("VmRSS")
    engine = TransferEngine(src, src_key + "big/", dst, dst_key + "big/", **job["engine"])
    report = engine.run()
    out.append({"growth": status("VmHWM") - base, "budget_peak": engine.budget.peak,
                "copied": report.files_copied, "verified": report.verified})
print("RESULT " + json.dumps(out))
"""


def test_large_copy_peak_rss_within_budget(tmp_path):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip(reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
    s3, gcs, azure = get_emulator("s3"), get_emulator("gcs"), get_emulator("azure")
    src_bucket, mid_bucket, dst_bucket = unique_name("mem"), unique_name("mem"), unique_name("mem")
    src = s3.store(src_bucket)
    gcs.store(mid_bucket)
    azure.store(dst_bucket)
    for i in range(4):
        src.write(f"d/big/o{i}", random.Random(i).randbytes(24 * MiB + i))
    src.write("d/warm/w", b"w" * 1000)
    engine = {
        "workers": 8,
        "streams": 8,
        "part_size": 8 * MiB,
        "multipart_threshold": 8 * MiB,
        "memory_budget": BUDGET,
        "progress_interval": 3600,
    }
    jobs = [  # S3 -> GCS, then that copy GCS -> Azure: both streamed sources, both part uploads
        {
            "src": s3.uri(src_bucket, "d/"),
            "dst": gcs.uri(mid_bucket, "d/"),
            "src_options": s3.options(),
            "dst_options": gcs.options(),
            "engine": engine,
        },
        {
            "src": gcs.uri(mid_bucket, "d/"),
            "dst": azure.uri(dst_bucket, "d/"),
            "src_options": gcs.options(),
            "dst_options": azure.options(),
            "engine": engine,
        },
    ]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(jobs)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for job, res in zip(jobs, results, strict=True):
        where = f"{job['src']} -> {job['dst']}"
        assert res["copied"] == 4 and res["verified"], (where, res)
        assert res["budget_peak"] == BUDGET, (where, res)  # the budget was really used in full
        assert res["growth"] <= BUDGET + MARGIN, (
            f"{where}: peak RSS grew {res['growth'] / MiB:.1f} MiB for a {BUDGET / MiB:.0f} MiB budget"
        )
