"""SubprocessRunner: commands, sync with ignore rules, byte reads, atomic writes."""

from __future__ import annotations

import os
import stat
import time

import pytest

from airflow_provider_sky.execution.job_driver import pid_alive
from airflow_provider_sky.execution.runner import CommandRunner, CommandTimeout, SubprocessRunner
from airflow_provider_sky.execution.sync import SyncFilter, iter_sync_files


@pytest.fixture
def runner(tmp_path):
    return SubprocessRunner(tmp_path / "node")


def test_is_a_command_runner(runner):
    assert isinstance(runner, CommandRunner)
    assert runner.node_ip == "127.0.0.1"
    assert runner.home == str(runner_home := os.path.realpath(runner.home))
    assert os.path.isdir(runner_home)


def test_run_script_and_argv(runner):
    res = runner.run('echo "out $FOO"; echo err >&2; pwd; exit 3', env={"FOO": "bar"})
    assert res.returncode == 3
    assert res.stdout.splitlines() == ["out bar", runner.home]
    assert res.stderr == "err\n"
    res = runner.run(["printf", "%s", "a b $(c)"])
    assert res.ok and res.stdout == "a b $(c)"


def test_run_cwd_is_inside_home(runner):
    os.makedirs(os.path.join(runner.home, "sub"))
    assert runner.run("pwd", cwd="sub").stdout.strip() == os.path.join(runner.home, "sub")
    assert runner.run("pwd", cwd="~/sub").stdout.strip() == os.path.join(runner.home, "sub")


def test_run_streams_lines(runner):
    seen: list[str] = []
    res = runner.run("echo one; echo two; printf three", stream=seen.append)
    assert res.ok
    assert seen == ["one", "two", "three"]


def test_run_timeout_kills_the_process_group(runner, tmp_path):
    gc = tmp_path / "gc.pid"
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        runner.run(f"sleep 100 & echo $! > {gc}; wait", timeout=0.5)
    assert time.monotonic() - start < 5
    pid = int(gc.read_text())
    deadline = time.monotonic() + 3
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_read_bytes_offsets(runner):
    runner.write_text("f.txt", "0123456789")
    assert runner.read_bytes("f.txt") == b"0123456789"
    assert runner.read_bytes("f.txt", 3, 4) == b"3456"
    assert runner.read_bytes("f.txt", -3, 10) == b"789"
    assert runner.read_bytes("f.txt", -100, 2) == b"01"
    assert runner.read_bytes("f.txt", 50, 2) == b""
    with pytest.raises(FileNotFoundError):
        runner.read_bytes("missing")


def test_write_text_mode_and_parents(runner):
    runner.write_text("~/a/b/secret.json", '{"k": "v"}')
    path = os.path.join(runner.home, "a", "b", "secret.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    runner.write_text("a/b/secret.json", "new", mode=0o644)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with open(path) as f:
        assert f.read() == "new"
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")] == []


def _tree(root):
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def _make_src(tmp_path):
    src = tmp_path / "src"
    for rel in [
        "main.py",
        "top.txt",
        "sub/top.txt",
        "sub/x.tmp",
        "deep/sub/y.tmp",
        "run.log",
        "sub/run.log",
        "build/out.bin",
        ".git/config",
        "pkg/.git/HEAD",
    ]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    return src


def test_put_directory_honours_skyignore(runner, tmp_path):
    src = _make_src(tmp_path)
    (src / ".skyignore").write_text("# comment\n*.log\nbuild/\n/top.txt\nsub/*.tmp\n!main.py\n")
    (src / ".gitignore").write_text("main.py\n")  # ignored: .skyignore wins
    runner.put(src, "~/workdir")
    assert _tree(os.path.join(runner.home, "workdir")) == {
        ".skyignore",
        ".gitignore",
        "main.py",
        "sub/top.txt",
        "deep/sub/y.tmp",
    }


def test_put_directory_falls_back_to_gitignore(runner, tmp_path):
    src = _make_src(tmp_path)
    (src / ".gitignore").write_text("**/*.tmp\nbuild\n")
    (src / "link").symlink_to("main.py")
    runner.put(src, "wd")
    dst = os.path.join(runner.home, "wd")
    assert _tree(dst) == {".gitignore", "main.py", "top.txt", "sub/top.txt", "run.log", "sub/run.log", "link"}
    assert os.readlink(os.path.join(dst, "link")) == "main.py"
    # A second sync overwrites changed files and keeps going.
    (src / "main.py").write_text("v2")
    runner.put(src, "wd")
    with open(os.path.join(dst, "main.py")) as f:
        assert f.read() == "v2"


def test_put_single_file(runner, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("hello")
    runner.put(f, "dir/renamed.txt")
    assert runner.read_bytes("dir/renamed.txt") == b"hello"
    runner.put(f, "dir")  # existing directory: put inside
    assert runner.read_bytes("dir/one.txt") == b"hello"
    with pytest.raises(FileNotFoundError):
        runner.put(tmp_path / "nope", "x")


def test_sync_filter_rules():
    rules = SyncFilter.from_lines(["*.pyc", "/data", "docs/", "a/b/*.csv"])
    assert rules.excluded("x/y/z.pyc", is_dir=False)
    assert rules.excluded("data", is_dir=True)
    assert not rules.excluded("sub/data", is_dir=True)
    assert rules.excluded("sub/docs", is_dir=True)
    assert not rules.excluded("docs", is_dir=False)  # dir-only pattern
    assert rules.excluded("a/b/t.csv", is_dir=False)
    assert not rules.excluded("c/a/b/t.csv", is_dir=False)
    assert rules.excluded(".git", is_dir=True)


def test_iter_sync_files_prunes_excluded_dirs(tmp_path):
    (tmp_path / "keep" / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "keep" / "node_modules" / "x" / "f.js").write_text("")
    (tmp_path / "keep" / "a.py").write_text("")
    files = {p.as_posix() for p in iter_sync_files(tmp_path, SyncFilter.from_lines(["node_modules/"]))}
    assert files == {"keep", "keep/a.py"}
