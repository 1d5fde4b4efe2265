"""SkyHook reads a `sky` connection; the `sky-airflow` CLI works against the same state DB."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_sky.hooks.sky import SkyHook
from airflow_provider_sky.provision.core import Owner, SkyCore
from airflow_provider_sky.provision.settings import SkySettings
from airflow_provider_sky.spec import Task

CLI = str(Path(sys.executable).parent / "sky-airflow")


def test_hook_reads_connection_extras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hook.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SKY_TEST",
        json.dumps({"conn_type": "sky", "extra": {"state_db_url": url, "enabled_clouds": "local", "region_preferences": "us-east-1,eu-west-1"}}),
    )
    hook = SkyHook("sky_test")
    settings = hook.get_settings()
    assert settings.state_db_url == url
    assert settings.region_preferences == ("us-east-1", "eu-west-1")
    ok, message = hook.test_connection()
    assert ok, message
    assert json.loads(message)["clouds"] == ["local"]


def test_hook_without_connection_uses_defaults_but_named_missing_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SKY_DEFAULT", raising=False)
    assert SkyHook().get_settings().enabled_clouds == ("local",)
    with pytest.raises(Exception, match="sky_missing"):
        SkyHook("sky_missing").get_settings()


def test_hook_rejects_unknown_cloud_in_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SKY_BAD", json.dumps({"conn_type": "sky", "extra": {"enabled_clouds": "lokal"}}))
    with pytest.raises(ValueError, match="enabled_clouds: unknown cloud"):
        SkyHook("sky_bad").get_settings()


def test_cli_status_logs_down_and_validate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env_args = ["--state-db", url]
    core = SkyCore.from_settings(SkySettings(state_db_url=url, local_dir=str(tmp_path / "local"), log_dir=str(tmp_path / "logs")))
    task = Task(name="cli", run="echo from-the-job")
    core.launch(task, "cli-cluster", Owner("d", "r", "t"))
    job_id = core.submit(task, "cli-cluster")
    deadline = time.time() + 30
    while not core.job_status("cli-cluster", job_id).is_terminal and time.time() < deadline:
        time.sleep(0.05)
    env = {"SKY_LOCAL_DIR": str(tmp_path / "local"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    status = subprocess.run([CLI, *env_args, "status", "--json"], capture_output=True, text=True, env=env, check=True)
    rows = json.loads(status.stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("cli-cluster", "UP")]
    logs = subprocess.run([CLI, *env_args, "logs", "cli-cluster", str(job_id)], capture_output=True, text=True, env=env, check=True)
    assert "from-the-job" in logs.stdout
    subprocess.run([CLI, *env_args, "down", "cli-cluster"], capture_output=True, text=True, env=env, check=True)
    assert core.store.get_cluster("cli-cluster").status.value == "TERMINATED"

    bad = tmp_path / "bad.yaml"
    bad.write_text("resources:\n  acelerators: V100:1\nrun: echo\n")
    result = subprocess.run([CLI, "validate", str(bad)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "resources.acelerators" in result.stdout and "accelerators" in result.stdout
