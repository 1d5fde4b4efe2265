"""Autostop agent on the local backend: fires with no Airflow process around, honours jobs and config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_sky.clouds.local import LocalCloud, kill_processes_under
from airflow_provider_sky.execution import autostop_agent as agent
from airflow_provider_sky.execution import jobs
from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.execution.runner import SubprocessRunner
from airflow_provider_sky.provision import autostop as au
from airflow_provider_sky.state import ClusterStatus, StateStore

FAST = {"interval_seconds": 0.2, "startup_grace_seconds": 0.0}


@pytest.fixture
def cloud(tmp_path):
    c = LocalCloud(tmp_path / "local", cancel_grace=1)
    yield c
    kill_processes_under(str(tmp_path), grace=1)


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def marked(prefix: str) -> list[int]:
    return [p for p in agent._marked_pids(prefix) if pid_alive(p)]


def config(idle_seconds: float, down: bool = False) -> au.AutostopConfig:
    return au.AutostopConfig(idle_minutes=0, idle_seconds=idle_seconds, down=down, **FAST)


def test_autostop_fires_after_the_installer_is_gone(cloud, tmp_path):
    handle = cloud.launch("as-stop", 2, None)
    head = cloud.runners(handle)[0]
    jobs.submit_multinode_job(cloud.runners(handle), 1, "echo hello; sleep 0.3")
    assert jobs.wait_job(head, 1, timeout=20).status is jobs.JobStatus.SUCCEEDED
    # Install from a separate process that exits at once: nothing of ours watches the cluster afterwards.
    code = (
        "import sys; from airflow_provider_sky.clouds.local import LocalCloud;"
        "from airflow_provider_sky.provision import autostop as au;"
        f"c = LocalCloud({str(cloud.base_dir)!r}, cancel_grace=1); h = c.find('as-stop');"
        "i = au.ensure_autostop(c, h, au.AutostopConfig(0, idle_seconds=1.5, interval_seconds=0.2,"
        " startup_grace_seconds=0));"
        "assert 'airflow.sdk' not in sys.modules and 'airflow.models' not in sys.modules; print(i.pid)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout.split()[-1])
    assert pid_alive(pid)
    assert cloud.status("as-stop") == "UP"
    wait_for(lambda: cloud.status("as-stop") == "STOPPED")
    wait_for(lambda: not pid_alive(pid))
    assert marked(str(cloud.cluster_dir("as-stop"))) == []
    text = au.read_autostop_log(head)
    assert "idle for" in text and "stop the cluster" in text and "marked" in text
    meta = json.loads((cloud.cluster_dir("as-stop") / "cluster.json").read_text())
    assert meta["stopped_by"] == "autostop"
    # The backend can start it again, and a re-install brings the agent back.
    cloud.start(handle)
    info = au.ensure_autostop(cloud, handle, config(3600))
    assert info is not None and info.started and pid_alive(info.pid)


def test_autostop_down_removes_the_cluster(cloud):
    handle = cloud.launch("as-down", 1, None)
    info = au.ensure_autostop(cloud, handle, config(1.0, down=True))
    assert info is not None and info.started
    cdir = cloud.cluster_dir("as-down")
    wait_for(lambda: not cdir.exists())
    wait_for(lambda: not pid_alive(info.pid))
    assert cloud.find("as-down") is None
    assert not (cloud.base_dir / "clusters" / ".as-down.lock").exists()


def test_running_job_prevents_autostop(cloud):
    handle = cloud.launch("as-busy", 1, None)
    head = cloud.runners(handle)[0]
    jobs.submit_job(head, 1, "sleep 60")
    wait_for(lambda: jobs.job_status(head, 1).status is jobs.JobStatus.RUNNING)
    info = au.ensure_autostop(cloud, handle, config(0.5))
    time.sleep(2.5)
    assert cloud.status("as-busy") == "UP"
    status = au.agent_status(head)
    assert status["running"] and status["busy"] == ["1"] and status["idle_seconds"] == 0
    jobs.cancel_job(head, 1, grace=1)
    wait_for(lambda: cloud.status("as-busy") == "STOPPED")
    assert info is not None and "busy: jobs 1" in au.read_autostop_log(head)


def test_reinstall_changes_idle_time_and_keeps_one_agent(cloud):
    handle = cloud.launch("as-re", 1, None)
    head = cloud.runners(handle)[0]
    first = au.ensure_autostop(cloud, handle, config(3600))
    again = au.ensure_autostop(cloud, handle, config(3600))
    assert first is not None and again is not None
    assert first.started and not again.started and again.pid == first.pid
    time.sleep(1.0)
    assert cloud.status("as-re") == "UP"
    au.ensure_autostop(cloud, handle, config(0.5))
    wait_for(lambda: cloud.status("as-re") == "STOPPED")
    text = au.read_autostop_log(head)
    assert "idle 3600.0s" in text and "idle 0.5s" in text
    assert text.count("agent started") == 1


def test_disable_stops_the_agent(cloud):
    handle = cloud.launch("as-off", 1, None)
    info = au.ensure_autostop(cloud, handle, config(3600))
    assert info is not None
    assert au.ensure_autostop(cloud, handle, None) is None
    wait_for(lambda: not pid_alive(info.pid))
    assert cloud.status("as-off") == "UP"
    assert au.disable_autostop(cloud.runners(handle)[0]) is False  # nothing left to stop


def test_startup_grace_holds_a_fresh_cluster(cloud):
    handle = cloud.launch("as-grace", 1, None)
    au.ensure_autostop(
        cloud, handle, au.AutostopConfig(0, idle_seconds=0.1, interval_seconds=0.2, startup_grace_seconds=2.0)
    )
    time.sleep(1.0)
    assert cloud.status("as-grace") == "UP"
    wait_for(lambda: cloud.status("as-grace") == "STOPPED")


def test_command_action_runs_on_the_head(tmp_path):
    home = tmp_path / "node"
    (home / ".sky").mkdir(parents=True)
    marker = tmp_path / "shutdown-called"
    cfg = {
        "idle_seconds": 0.2, "down": False, "interval_seconds": 0.1, "startup_grace_seconds": 0,
        "set_at": time.time() - 10, "action": {"kind": "command", "command": f"touch {marker}", "workers": []},
    }  # fmt: skip
    (home / ".sky" / agent.CONFIG_FILE).write_text(json.dumps(cfg))
    assert agent.run(str(home)) == 0  # in-process: returns once the action ran
    assert marker.exists()
    assert "head: 'touch" in (home / ".sky" / agent.LOG_FILE).read_text()


def test_refresh_cluster_status_follows_autostop(cloud, tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    for name, down in (("as-st", False), ("as-td", True)):
        handle = cloud.launch(name, 1, None)
        store.upsert_cluster(name, cloud="local", status=ClusterStatus.UP, handle=handle.to_json(),
                             autostop_idle_minutes=0, autostop_down=down)  # fmt: skip
        assert au.refresh_cluster_status(store, cloud, name) is ClusterStatus.UP
        au.ensure_autostop(cloud, handle, config(0.3, down=down))
    wait_for(lambda: cloud.status("as-st") == "STOPPED" and cloud.find("as-td") is None)
    assert au.refresh_cluster_status(store, cloud, "as-st") is ClusterStatus.STOPPED
    assert au.refresh_cluster_status(store, cloud, "as-td") is ClusterStatus.TERMINATED
    assert store.get_cluster("as-st").status_reason == "stopped by autostop"
    assert "autostop down" in store.get_cluster("as-td").status_reason
    cloud.start(cloud.find("as-st"))
    assert au.refresh_cluster_status(store, cloud, "as-st") is ClusterStatus.UP
    assert au.refresh_cluster_status(store, cloud, "nope") is None


def test_idle_state_reads_job_files(tmp_path):
    home = str(tmp_path)
    jdir = Path(home, ".sky", "jobs", "7")
    jdir.mkdir(parents=True)
    now = time.time()
    cfg = {"idle_seconds": 60, "set_at": now - 1000, "startup_grace_seconds": 0}
    (jdir / "status").write_text("RUNNING\n")
    (jdir / "pid").write_text(f"{os.getpid()}\n")  # alive, but its cmdline does not name the job dir
    state = agent.idle_state(home, cfg, now)
    assert state["busy"] == [] and state["idle_seconds"] < 5 and not state["due"]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(jdir)])
    try:
        (jdir / "pid").write_text(f"{proc.pid}\n")
        assert agent.idle_state(home, cfg, now + 500)["busy"] == ["7"]
    finally:
        proc.kill()
        proc.wait()
    (jdir / "pid").unlink()
    assert agent.idle_state(home, cfg, now + 5)["busy"] == ["7"]  # submitted, no driver yet
    assert agent.idle_state(home, cfg, now + agent.PENDING_GRACE + 5)["busy"] == []
    (jdir / "status").write_text("SUCCEEDED\n")
    os.utime(jdir / "status", (now - 300, now - 300))
    state = agent.idle_state(home, cfg, now)
    assert state["due"] and 299 < state["idle_seconds"] < 302
    assert not agent.idle_state(home, {**cfg, "set_at": now - 10}, now)["due"]
    assert not agent.idle_state(home, {**cfg, "startup_grace_seconds": 2000}, now)["due"]


def test_action_choice_per_backend(cloud):
    from types import SimpleNamespace

    handle = cloud.launch("as-act", 1, None)
    action = au.autostop_action(cloud, handle, cloud.runners(handle), down=False)
    assert action["kind"] == "local" and action["cluster_dir"].endswith("as-act")

    class Node:
        def __init__(self, host):
            self.host = host

        def node_spec(self):
            return {"kind": "ssh", "host": self.host, "user": "u"}

    calls = []
    vm = SimpleNamespace(name="aws", prepare_autostop=lambda h, down: calls.append(down))
    act = au.autostop_action(vm, handle, [Node("h0"), Node("h1")], down=True)
    assert act == {"kind": "command", "command": au.SHUTDOWN_COMMAND,
                   "workers": [{"kind": "ssh", "host": "h1", "user": "u", "rank": 1}]}  # fmt: skip
    assert calls == [True]
    assert (
        au.autostop_action(SimpleNamespace(name="ssh"), handle, [Node("h0")], down=False)["kind"] == "release"
    )
    assert au.autostop_action(SimpleNamespace(name="gcp-tpu"), handle, [Node("h0")], down=False) is None
    custom = SimpleNamespace(name="ssh", autostop_action=lambda h, down: {"kind": "command", "command": "x"})
    assert au.autostop_action(custom, handle, [], down=False)["command"] == "x"
    argv = agent._ssh_argv("/home/u", {"host": "10.0.0.2", "user": "u", "port": 2222}, "sudo shutdown -h now")
    assert argv[-2:] == ["10.0.0.2", "sudo shutdown -h now"] and "2222" in argv


def test_from_spec():
    from airflow_provider_sky.spec.autostop import Autostop

    assert au.AutostopConfig.from_spec(None) is None
    cfg = au.AutostopConfig.from_spec(Autostop(10, down=True), interval_seconds=5)
    assert cfg.effective_idle_seconds == 600 and cfg.down and cfg.interval_seconds == 5
    assert au.AutostopConfig(0.05).effective_idle_seconds == pytest.approx(3.0)


def test_teardown_kills_the_agent_and_a_new_version_replaces_the_old(cloud):
    handle = cloud.launch("as-ver", 1, None)
    head = cloud.runners(handle)[0]
    old_path = Path(head.home, ".sky", "bin", "autostop_agent-old.py")
    old_path.parent.mkdir(parents=True, exist_ok=True)
    old_path.write_text(Path(agent.__file__).read_text() + "\n# an older release\n")
    head.write_text(".sky/" + agent.CONFIG_FILE, json.dumps({"idle_seconds": 3600, "interval_seconds": 0.2}))
    old = json.loads(head.run([head.python, "-I", "-S", str(old_path), "start", head.home]).stdout)
    wait_for(lambda: agent.running_pid(head.home) == old["pid"])
    new = au.ensure_autostop(cloud, handle, config(3600))
    assert new is not None and new.started and new.pid != old["pid"]
    wait_for(lambda: not pid_alive(old["pid"]))
    cloud.terminate(handle)  # the backend's teardown takes the agent with it
    wait_for(lambda: not pid_alive(new.pid))


def test_concurrent_installs_leave_one_agent(cloud):
    from concurrent.futures import ThreadPoolExecutor

    handle = cloud.launch("as-many", 1, None)
    with ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(lambda _: au.ensure_autostop(cloud, handle, config(3600)), range(4)))
    home = cloud.runners(handle)[0].home

    def agents():
        return [p for p in agent._marked_pids(home) if agent._is_agent(p) and pid_alive(p)]

    wait_for(lambda: len(agents()) == 1)
    assert {i.pid for i in infos} == set(agents())


def test_release_action_ends_jobs_and_leaves_a_marker(tmp_path):
    home = tmp_path / "pool-node"
    head = SubprocessRunner(home)
    jobs.submit_job(head, 1, "sleep 60")
    wait_for(lambda: jobs.job_status(head, 1).status is jobs.JobStatus.RUNNING)
    cfg = {"idle_seconds": 0, "action": {"kind": "release", "grace": 1}, "down": False}
    assert agent.act(str(home), cfg, agent.Log(str(home)))
    assert jobs.job_status(head, 1).finished
    assert json.loads((home / ".sky" / agent.RELEASE_MARKER).read_text())["down"] is False
    assert marked(str(home)) == []


def test_refresh_frees_a_released_pool_cluster(tmp_path):
    from types import SimpleNamespace

    from airflow_provider_sky.clouds.base import ClusterHandle

    head = SubprocessRunner(tmp_path / "host")
    handle = ClusterHandle("ssh", "pool-c", None, None, None, 1)
    freed = []
    pool = SimpleNamespace(
        name="ssh", find=lambda n: handle, runners=lambda h: [head], terminate=lambda h: freed.append(h)
    )
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.upsert_cluster("pool-c", cloud="ssh", status=ClusterStatus.UP, autostop_idle_minutes=1)
    assert au.refresh_cluster_status(store, pool, "pool-c") is ClusterStatus.UP and not freed
    head.write_text(f".sky/{agent.RELEASE_MARKER}", "{}")
    assert au.refresh_cluster_status(store, pool, "pool-c") is ClusterStatus.TERMINATED
    assert freed == [handle] and store.get_cluster("pool-c").status_reason == "released by autostop"
