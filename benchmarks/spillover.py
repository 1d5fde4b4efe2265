#!/usr/bin/env python
"""Spillover policies over a simulated day of a recurring workload (discrete-event, seeded, seconds).

    .venv/bin/python benchmarks/spillover.py [--seed 7] [--hosts 8] [--base-rate 5] [--peak-rate 13]
                                             [--cloud-price 2.5] [--provision-min 4] [--json]

Workload: four recurring tasks (dag/task ids) with lognormal runtimes (medians 20/40/75/30 min), a
declared ``estimated_hours`` that is off by -40%..+60%, Poisson arrivals at `--base-rate` per hour
overnight and `--peak-rate` from 08:00 to 18:00 (the peak overloads the pool). Each task has a
deadline of arrival + 1.5 x its median runtime + 30 min. A task in the cloud pays `--cloud-price` per
hour for provisioning (lognormal around `--provision-min`) and its runtime, plus its staging egress.

The policy code itself decides (`provision.spillover.decide`, `state.pool_queue.expected_wait`,
`Hold.remaining_s`): a task finding a free host and nobody queued runs on-prem; otherwise it is
decided, and a waiting task is re-decided every `--poll-s` seconds until a host frees up (FIFO) or
the policy flips it to the cloud. Expected runtimes are learned (median of the last 20 runs of that
task), the declared estimate before any run. "cloud only" and "on-prem only" bracket the policies.
Wait = start - arrival (cloud: includes provisioning).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_provider_sky.provision import spillover as sp  # noqa: E402
from airflow_provider_sky.state import pool_queue  # noqa: E402

BASE = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
BASE_TS = BASE.timestamp()
DAY = 24 * 3600.0
TYPES = [  # (task id, median runtime min, sigma, egress $ to run it in the cloud)
    ("etl", 20.0, 0.35, 0.05),
    ("train", 40.0, 0.45, 0.40),
    ("render", 75.0, 0.30, 0.20),
    ("report", 30.0, 0.40, 0.02),
]


@dataclass
class Job:
    i: int
    kind: int
    arrival: float
    runtime: float
    deadline: float
    start: float | None = None
    end: float | None = None
    where: str = ""
    cost: float = 0.0
    polls: int = 0


@dataclass
class Workload:
    jobs: list[Job]
    declared_s: list[float]
    provision_s: list[float]  # per job, if it goes to the cloud


def workload(seed: int, base_rate: float, peak_rate: float, provision_min: float) -> Workload:
    rng = random.Random(seed)
    declared = [med * 60 * rng.uniform(0.6, 1.6) for _, med, _, _ in TYPES]
    jobs: list[Job] = []
    t = 0.0
    peak_max = max(base_rate, peak_rate)
    while True:  # thinning: a non-homogeneous Poisson process
        t += rng.expovariate(peak_max / 3600.0)
        if t >= DAY:
            break
        rate = peak_rate if 8 * 3600 <= t < 18 * 3600 else base_rate
        if rng.random() > rate / peak_max:
            continue
        k = rng.randrange(len(TYPES))
        _, med, sigma, _ = TYPES[k]
        runtime = med * 60 * math.exp(rng.gauss(0, sigma))
        jobs.append(Job(len(jobs), k, t, runtime, t + 1.5 * med * 60 + 1800))
    prov = [provision_min * 60 * math.exp(rng.gauss(0, 0.3)) for _ in jobs]
    return Workload(jobs, declared, prov)


@dataclass
class Sim:
    wl: Workload
    hosts: int
    cloud_price: float
    mode: str  # cloud_only | onprem_only | policy
    policy_for: Any = None  # Job -> SpillPolicy
    poll_s: float = 60.0
    provision_guess_s: float = 240.0
    now: float = 0.0
    busy: dict[int, tuple[Job, float]] = field(default_factory=dict)  # host -> (job, expected runtime)
    queue: deque[Job] = field(default_factory=deque)
    history: dict[int, list[float]] = field(default_factory=dict)
    events: list[tuple[float, int, str, int]] = field(default_factory=list)
    seq: int = 0
    onprem_busy_s: float = 0.0

    def push(self, at: float, kind: str, job: Job) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, job.i))

    def expected(self, job: Job) -> float:
        past = self.history.get(job.kind)
        return statistics.median(past[-20:]) if past else self.wl.declared_s[job.kind]

    def free_host(self) -> int | None:
        return next((h for h in range(self.hosts) if h not in self.busy), None)

    def start_onprem(self, job: Job, host: int) -> None:
        job.start, job.where = self.now, "onprem"
        job.end = self.now + job.runtime
        self.busy[host] = (job, self.expected(job))
        self.onprem_busy_s += job.runtime
        self.push(job.end, "finish", job)

    def start_cloud(self, job: Job) -> None:
        prov = self.wl.provision_s[job.i]
        job.start, job.where = self.now + prov, "cloud"
        job.end = job.start + job.runtime
        job.cost = self.cloud_price * (prov + job.runtime) / 3600.0 + TYPES[job.kind][3]
        self.history.setdefault(job.kind, []).append(job.runtime)

    def view(self, job: Job) -> sp.OnPremView:
        now_dt = BASE + timedelta(seconds=self.now)
        units = []
        for h in range(self.hosts):
            if h not in self.busy:
                units.append(0.0)
                continue
            running, expected = self.busy[h]
            hold = pool_queue.Hold(
                "sim", str(running.i), None, None, expected, BASE + timedelta(seconds=running.start or 0)
            )
            units.append(hold.remaining_s(now_dt))
        ahead = [(1, self.expected(q)) for q in self.queue if q is not job and q.arrival <= job.arrival]
        ahead = ahead[: len(ahead)]
        wait = pool_queue.expected_wait(units, ahead, 1)
        free = sum(1 for u in units if u <= 0)
        return sp.OnPremView(
            True, expected_wait_s=wait, runtime_s=self.expected(job), runtime_source="learned",
            position=len(ahead), ahead=len(ahead), free_units=free, units_total=self.hosts,
            free_now=free > len(ahead),
        )  # fmt: skip

    def quote(self, job: Job) -> sp.CloudQuote:
        return sp.CloudQuote(
            True, hourly_price=self.cloud_price, runtime_s=self.expected(job), provision_s=self.provision_guess_s,
            egress_usd=TYPES[job.kind][3], source="sim",
        )  # fmt: skip

    def decide(self, job: Job) -> str:
        view = self.view(job)
        if view.free_now:
            return "onprem"
        d = sp.decide(self.policy_for(job), view, self.quote(job), now=BASE_TS + self.now,
                      waited_s=self.now - job.arrival)  # fmt: skip
        return d.choice

    def dispatch(self) -> None:
        while self.queue and (host := self.free_host()) is not None:
            self.start_onprem(self.queue.popleft(), host)

    def run(self) -> list[Job]:
        jobs = self.wl.jobs
        for job in jobs:
            self.push(job.arrival, "arrive", job)
        while self.events:
            self.now, _, kind, i = heapq.heappop(self.events)
            job = jobs[i]
            if kind == "finish":
                host = next(h for h, (j, _) in self.busy.items() if j is job)
                del self.busy[host]
                self.history.setdefault(job.kind, []).append(job.runtime)
                self.dispatch()
            elif kind == "arrive":
                if self.mode == "cloud_only":
                    self.start_cloud(job)
                    continue
                host = self.free_host()
                if host is not None and not self.queue:
                    self.start_onprem(job, host)
                    continue
                if self.mode == "onprem_only":
                    self.queue.append(job)
                    continue
                choice = self.decide(job)
                if choice == "cloud":
                    self.start_cloud(job)
                else:
                    self.queue.append(job)
                    self.push(self.now + self.poll_s, "poll", job)
            elif kind == "poll" and job.start is None and job in self.queue:
                job.polls += 1
                if self.decide(job) == "cloud":
                    self.queue.remove(job)
                    self.start_cloud(job)
                else:
                    self.push(self.now + self.poll_s, "poll", job)
        return jobs


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def summarize(name: str, jobs: list[Job], hosts: int, busy_s: float) -> dict[str, Any]:
    waits = [(j.start or 0) - j.arrival for j in jobs]
    horizon = max(DAY, max(j.end or 0 for j in jobs))
    return {
        "policy": name,
        "tasks": len(jobs),
        "to_cloud": sum(j.where == "cloud" for j in jobs),
        "cloud_spend_usd": round(sum(j.cost for j in jobs), 2),
        "mean_wait_min": round(statistics.fmean(waits) / 60, 1),
        "p95_wait_min": round(p95(waits) / 60, 1),
        "deadline_misses": sum((j.end or 0) > j.deadline for j in jobs),
        "onprem_util_pct": round(100 * busy_s / (hosts * horizon), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--base-rate", type=float, default=5.0, help="arrivals per hour off-peak")
    ap.add_argument("--peak-rate", type=float, default=13.0, help="arrivals per hour 08:00-18:00")
    ap.add_argument("--cloud-price", type=float, default=2.5, help="$ per cloud node-hour")
    ap.add_argument("--provision-min", type=float, default=4.0, help="median cloud provisioning minutes")
    ap.add_argument(
        "--poll-s", type=float, default=60.0, help="seconds between re-decisions of a waiting task"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    def deadline_policy(job: Job) -> sp.SpillPolicy:
        return sp.deadline(BASE_TS + job.deadline)

    runs: list[tuple[str, str, Any]] = [
        ("cloud only", "cloud_only", None),
        ("on-prem only", "onprem_only", None),
        ("prefer_onprem(10 min)", "policy", lambda j: sp.prefer_onprem(600)),
        ("prefer_onprem(60 min)", "policy", lambda j: sp.prefer_onprem(3600)),
        ("deadline(task's)", "policy", deadline_policy),
        ("cost_of_delay($2/h)", "policy", lambda j: sp.cost_of_delay(2.0)),
        ("cost_of_delay($20/h)", "policy", lambda j: sp.cost_of_delay(20.0)),
    ]
    rows = []
    for name, mode, policy_for in runs:
        wl = workload(args.seed, args.base_rate, args.peak_rate, args.provision_min)
        sim = Sim(wl, args.hosts, args.cloud_price, mode, policy_for, poll_s=args.poll_s,
                  provision_guess_s=args.provision_min * 60)  # fmt: skip
        jobs = sim.run()
        rows.append(summarize(name, jobs, args.hosts, sim.onprem_busy_s))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    n = rows[0]["tasks"]
    print(f"{n} tasks in 24 h, {args.hosts} on-prem hosts, cloud ${args.cloud_price}/node-h, "
          f"provisioning ~{args.provision_min:g} min, seed {args.seed}\n")  # fmt: skip
    print(
        "| policy | to cloud | cloud spend $ | mean wait min | p95 wait min | deadline misses | on-prem util % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['to_cloud']} | {r['cloud_spend_usd']:.2f} | {r['mean_wait_min']:.1f} | "
              f"{r['p95_wait_min']:.1f} | {r['deadline_misses']} | {r['onprem_util_pct']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
