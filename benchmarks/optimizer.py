"""Optimizer benchmark: chain, diamond and random DAGs of 1..1000 tasks over real v8 catalogs.

    .venv/bin/python benchmarks/optimizer.py [--catalog ../shared/catalogs] [--sizes 1,5,20,100,1000]
        [--skypilot /tmp/skyvenv/bin/python] [--skypilot-timeout 120]

SkyPilot is timed on the same DAGs (egress-free ones, where the cost models agree) when a separate
venv with it exists (it conflicts with Airflow; never install it into the project venv)::

    python3 -m venv /tmp/skyvenv && /tmp/skyvenv/bin/pip install skypilot==0.14.1

SkyPilot runs in a subprocess with HOME pointing at a temporary directory whose
``~/.sky/catalogs/v8`` links to ``--catalog`` and with AWS/GCP/Azure treated as enabled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_provider_sky.catalog import load_catalog  # noqa: E402
from airflow_provider_sky.optimizer import optimize  # noqa: E402
from airflow_provider_sky.spec.resources import Resources  # noqa: E402
from airflow_provider_sky.spec.task import Task  # noqa: E402

V100 = {"accelerators": "V100:1"}
CPU8 = {"cpus": "8+"}


def dag(kind: str, n: int, data: bool, seed: int = 0) -> list[dict]:
    """Tasks as plain dicts: name, resources, depends_on, outputs_gb."""
    rng = random.Random(seed)
    sizes = random.Random(seed + 1)  # separate stream: the same DAG with and without data
    out = []
    for i in range(n):
        if kind == "chain":
            res, deps = V100, [f"t{i - 1}"] if i else []
        elif kind == "diamond":  # source -> n-2 parallel -> sink
            res = V100 if i % 2 == 0 else CPU8
            deps = [] if i == 0 else (["t0"] if i < n - 1 or n == 2 else [f"t{j}" for j in range(1, n - 1)])
        else:  # random mixed DAG
            res = rng.choice([V100, CPU8, {"accelerators": "A100:8"}, {"cpus": "4+", "memory": "32+"}])
            deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(1, 3))}) if i else []
        gb = sizes.choice([1, 10, 100]) if data else 0
        out.append({"name": f"t{i}", "resources": res, "depends_on": deps, "outputs_gb": gb})
    return out


def ours(spec: list[dict], catalog, time_limit: float) -> tuple[float, float, float, str, str]:
    tasks = [
        Task(name=t["name"], resources=Resources.from_dict(t["resources"]), depends_on=t["depends_on"],
             outputs={"out": t["outputs_gb"]} if t["outputs_gb"] else {})
        for t in spec
    ]  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    plan = optimize(tasks, catalog, time_limit=time_limit)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    gap = "0 (opt)" if plan.optimal else "no bound" if plan.gap is None else f"{100 * plan.gap:.2f}%"
    return dt, cpu, plan.total_cost, plan.solver, gap


SKY_SCRIPT = r"""
import json, sys, time
spec = json.loads(sys.stdin.read())
import sky
from sky import check as sky_check
from sky import clouds as sky_clouds
from sky import optimizer as sky_optimizer
enabled = [sky_clouds.AWS(), sky_clouds.GCP(), sky_clouds.Azure()]
sky_check.get_cached_enabled_clouds_or_refresh = lambda *a, **k: enabled
sky_optimizer.sky_check.get_cached_enabled_clouds_or_refresh = lambda *a, **k: enabled
with sky.Dag() as d:
    tasks = {}
    for t in spec:
        task = sky.Task(name=t["name"], run="true")
        task.set_resources(sky.Resources(**{k: v for k, v in t["resources"].items() if k in ("accelerators", "cpus", "memory")}))
        task.set_time_estimator(lambda _: 3600)
        tasks[t["name"]] = task
    for t in spec:
        for dep in t["depends_on"]:
            d.add_edge(tasks[dep], tasks[t["name"]])
t0 = time.perf_counter()
sky_optimizer.Optimizer.optimize(d, quiet=True)
dt = time.perf_counter() - t0
cost = sum(t.best_resources.get_cost(3600) for t in tasks.values())
print(json.dumps({"seconds": dt, "cost": cost}))
"""


def skypilot(python: str, spec: list[dict], catalog_dir: Path, timeout: float) -> tuple[float | None, float | None, str]:
    home = Path(tempfile.mkdtemp(prefix="skybench-"))
    v8 = home / ".sky" / "catalogs" / "v8"
    v8.mkdir(parents=True)
    for cloud in ("aws", "gcp", "azure", "common"):
        if (catalog_dir / cloud).is_dir():
            (v8 / cloud).symlink_to((catalog_dir / cloud).resolve())
    env = {**os.environ, "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    try:
        r = subprocess.run([python, "-c", SKY_SCRIPT], input=json.dumps(spec), capture_output=True, text=True,
                           env=env, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, None, f"> {timeout:.0f} s"
    if r.returncode != 0:
        return None, None, "error: " + (r.stderr.strip().splitlines() or ["?"])[-1][:80]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d["seconds"], d["cost"], ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, default=ROOT.parent / "shared" / "catalogs")
    p.add_argument("--sizes", default="1,5,20,100,1000")
    p.add_argument("--kinds", default="chain,diamond,random")
    p.add_argument("--skypilot", default="/tmp/skyvenv/bin/python", help="python of a venv with skypilot==0.14.1")
    p.add_argument("--skypilot-max-tasks", type=int, default=20)
    p.add_argument("--skypilot-timeout", type=float, default=120.0)
    p.add_argument("--time-limit", type=float, default=4.0, help="MILP time limit (s, wall clock, model building included)")
    args = p.parse_args()
    if not args.catalog.is_dir():
        sys.exit(f"catalog directory {args.catalog} not found (use --catalog DIR)")
    have_sky = Path(args.skypilot).exists()
    if not have_sky:
        print(f"SkyPilot not timed: {args.skypilot} missing. Create it with:\n"
              "  python3 -m venv /tmp/skyvenv && /tmp/skyvenv/bin/pip install skypilot==0.14.1\n")  # fmt: skip
    t0 = time.perf_counter()
    catalog = load_catalog(args.catalog)
    print(f"catalog {args.catalog}: {len(catalog)} offerings loaded in {time.perf_counter() - t0:.2f} s\n")
    print(f"{'dag':8} {'tasks':>5} {'data':>5} {'ours s':>9} {'cpu s':>7} {'our $':>10} {'gap':>8} {'sky s':>9} {'sky $':>10} {'speedup':>8} {'$ ratio':>8}  notes")
    for kind in args.kinds.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            for data in (False, True):
                spec = dag(kind, n, data)
                dt, cpu, cost, note, gap = ours(spec, catalog, args.time_limit)
                sky_s = sky_c = None
                sky_note = ""
                if have_sky and not data and n <= args.skypilot_max_tasks:
                    sky_s, sky_c, sky_note = skypilot(args.skypilot, spec, args.catalog, args.skypilot_timeout)
                speed = f"{sky_s / dt:,.0f}x" if sky_s else "-"
                ratio = f"{cost / sky_c:.3f}" if sky_c else "-"
                print(f"{kind:8} {n:5d} {'yes' if data else 'no':>5} {dt:9.3f} {cpu:7.3f} {cost:10.2f} {gap:>8} "
                      f"{(f'{sky_s:.2f}' if sky_s else '-'):>9} {(f'{sky_c:.2f}' if sky_c else '-'):>10} {speed:>8} {ratio:>8}  {note} {sky_note}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
