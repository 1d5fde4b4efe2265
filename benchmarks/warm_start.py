"""Warm start vs cold launch: time from "run this task" to its job finished, on the local backend
and (when sshd and root are available) on an SSH node pool of real sshd hosts on 127.0.0.1.

    .venv/bin/python benchmarks/warm_start.py [--repeat 5] [--no-ssh]

Cold = launch a new cluster + setup + job + (nothing reused); warm = the same task on the cluster
the previous run left up (setup already done). Reported as medians and the cold/warm ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task

SETUP = "python3 -c 'import json, sqlite3' && sleep 1"  # a small but real setup step
RUN = "echo hello from $SKYPILOT_NODE_RANK"


def _run_once(core: SkyCore, task: Task, name: str) -> float:
    started = time.perf_counter()
    core.launch(task, name, Owner("bench", "r", "t"))
    job_id = core.submit(task, name)
    while not core.job_status(name, job_id).is_terminal:
        time.sleep(0.05)
    return time.perf_counter() - started


def measure(core: SkyCore, task: Task, repeat: int, prefix: str) -> tuple[float, float]:
    cold, warm = [], []
    for i in range(repeat):
        name = f"{prefix}-{i}"
        cold.append(_run_once(core, task, name))
        warm.append(_run_once(core, task, name))
        core.down(name)
    return statistics.median(cold), statistics.median(warm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-ssh", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        core = SkyCore.from_settings(
            SkySettings(state_db_url=f"sqlite:///{tmp}/state.db", local_dir=f"{tmp}/local", log_dir=f"{tmp}/logs")
        )
        task = Task(name="bench", setup=SETUP, run=RUN, resources={"infra": "local"})
        rows.append(("local", *measure(core, task, args.repeat, "bench-local")))
        if not args.no_ssh:
            try:
                from tests.sshd import available, start_hosts, stop_hosts
            except ImportError:
                available = None  # type: ignore[assignment]
            ok, why = available() if available else (False, "tests.sshd not importable")
            if ok:
                hosts = start_hosts(1)
                try:
                    h = hosts.hosts[0]
                    pool = {
                        "conn_id": "bench",
                        "conn_type": "sky_ssh_pool",
                        "extra": {
                            "hosts": f"{h.user}@127.0.0.1:{h.port}",
                            "private_key": hosts.key_text,
                            "known_hosts": hosts.known_hosts_text,
                        },
                    }
                    ssh_core = SkyCore.from_settings(
                        SkySettings(state_db_url=f"sqlite:///{tmp}/ssh.db", enabled_clouds=("ssh",), ssh_pool=pool,
                                    log_dir=f"{tmp}/logs")
                    )
                    ssh_task = Task(name="bench", setup=SETUP, run=RUN, resources={"infra": "ssh"})
                    rows.append(("ssh (sshd on 127.0.0.1)", *measure(ssh_core, ssh_task, args.repeat, "bench-ssh")))
                finally:
                    stop_hosts(hosts)
            else:
                print(f"ssh skipped: {why}")
    print(f"\n| backend | cold launch s | warm start s | cold / warm |  (median of {args.repeat})")
    print("|---|---|---|---|")
    for backend, cold, warm in rows:
        print(f"| {backend} | {cold:.2f} | {warm:.2f} | {cold / warm:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
