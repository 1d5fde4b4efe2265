"""`make demo`: run the quickstart DAG with `airflow dags test` on the local backend.

Uses a throwaway AIRFLOW_HOME (default `.demo/airflow_home`, wiped first), then prints where the task
logs and the Sky state DB are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "sky_quickstart"


def main() -> int:
    home = Path(os.environ.get("AIRFLOW_HOME") or REPO / ".demo" / "airflow_home").resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags_examples"),
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
    )
    env.pop("SKY_STATE_DB_URL", None)
    env.pop("SKY_LOCAL_DIR", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    started = time.time()
    print(f"AIRFLOW_HOME={home}", flush=True)
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True)
    if migrate.returncode:
        print(migrate.stdout[-4000:], migrate.stderr[-4000:], sep="\n", file=sys.stderr)
        return migrate.returncode
    run_log = home / "logs" / f"dags_test_{DAG_ID}.log"
    run_log.parent.mkdir(parents=True, exist_ok=True)
    with run_log.open("w") as out:  # the run's task logs, on screen and in a file
        proc = subprocess.Popen(
            [airflow, "dags", "test", DAG_ID], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        returncode = proc.wait()
    elapsed = time.time() - started
    state_db = home / "sky" / "state.db"
    print("\n=== Sky demo", "succeeded" if returncode == 0 else "FAILED", f"in {elapsed:.1f}s ===")
    print(f"Task logs:      {run_log}")
    print(f"Sky job logs:   {home / 'sky' / 'logs'} (one file per job, kept after teardown)")
    print(f"Sky state DB:   {state_db}")
    print(f"Local clusters: {home / 'sky' / 'local'}")
    print(f"Inspect:        AIRFLOW_HOME={home} {Path(sys.executable).parent / 'sky-airflow'} status")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
