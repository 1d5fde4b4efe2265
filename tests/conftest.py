"""Test-wide setup: a throwaway AIRFLOW_HOME before anything imports airflow."""

from __future__ import annotations

import os
import tempfile

_home = os.environ.get("SKY_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="sky-airflow-test-")
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("SKY_LOCAL_DIR", os.path.join(os.environ["AIRFLOW_HOME"], "sky", "local"))
