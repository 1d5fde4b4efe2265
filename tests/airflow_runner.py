"""Run real Airflow CLI commands (`airflow dags test`) against a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@dataclass
class AirflowHome:
    """An initialized AIRFLOW_HOME whose DAG folder and Sky state live under `path`."""

    path: Path
    dags_folder: Path

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.path / 'sky' / 'state.db'}"

    @property
    def local_dir(self) -> Path:
        return self.path / "sky" / "local"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("SKY_STATE_DB_URL", "SKY_LOCAL_DIR"):
            env.pop(key, None)
        env.update(
            AIRFLOW_HOME=str(self.path),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def airflow(
        self, *args: str, timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args],
            env=self.env(**(extra_env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen_dags_test(self, dag_id: str) -> subprocess.Popen[str]:
        """Start `airflow dags test` in its own process group (so a test can kill it like a worker)."""
        return subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def make_home(path: Path, dags_folder: Path) -> AirflowHome:
    """Create and migrate an AIRFLOW_HOME (SQLite metadata DB)."""
    home = AirflowHome(path=path, dags_folder=dags_folder)
    path.mkdir(parents=True, exist_ok=True)
    result = home.airflow("db", "migrate", timeout=300)
    if result.returncode:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return home
