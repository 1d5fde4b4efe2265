"""Every validation error names the field path, the bad value and a fix; only SpecError escapes."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_sky.spec import Autostop, Quantity, Resources, SpecError, Task, load_chain, load_tasks

# (task mapping, expected field, text that must appear in the message: the fix or the key problem)
TASK_ERRORS = [
    ({"resources": {"acelerators": "V100:1"}}, "resources.acelerators", "did you mean 'accelerators'?"),
    ({"resources": {"accelerators": "V10O:1"}}, "resources.accelerators", "did you mean 'V100'?"),
    ({"resources": {"accelerators": ["A100:1", "V10O"]}}, "resources.accelerators[1]", "did you mean 'V100'?"),
    ({"resources": {"accelerators": {"H1000": 8}}}, "resources.accelerators", "did you mean"),
    ({"resources": {"accelerators": "zzzzqqq"}}, "resources.accelerators", "use a known name"),
    ({"resources": {"accelerators": "V100:0"}}, "resources.accelerators", "'V100:0.5'"),
    ({"resources": {"accelerators": "V100:1.5"}}, "resources.accelerators", "whole number"),
    ({"resources": {"accelerators": "V100:1:2"}}, "resources.accelerators", "NAME:COUNT"),
    ({"resources": {"accelerators": 4}}, "resources.accelerators", "NAME:COUNT"),
    ({"resources": {"accelerators": ["V100", "v100"]}}, "resources.accelerators", "list each accelerator once"),
    ({"resources": {"accelerators": []}}, "resources.accelerators", "name at least one accelerator"),
    ({"nmae": "x"}, "nmae", "did you mean 'name'?"),
    ({"runn": "echo"}, "runn", "did you mean 'run'?"),
    ({"zzz_unknown": 1}, "zzz_unknown", "valid fields here are"),
    ({"service": {"readiness_probe": "/"}}, "service", "SkyServe"),
    ({"num_nodes": 0}, "num_nodes", "integer >= 1"),
    ({"num_nodes": "two"}, "num_nodes", "integer >= 1"),
    ({"num_nodes": True}, "num_nodes", "integer >= 1"),
    ({"num_nodes": 2.5}, "num_nodes", "integer >= 1"),
    ({"resources": {"disk_size": 0}}, "resources.disk_size", "integer >= 1"),
    ({"resources": {"disk_size": "big"}}, "resources.disk_size", "as an integer"),
    ({"resources": {"disk_tier": "hgh"}}, "resources.disk_tier", "did you mean 'high'?"),
    ({"resources": {"cloud": "kubernetes"}}, "resources.cloud", "use one of aws, gcp, azure, local or ssh/<pool>"),
    ({"resources": {"cloud": "gpc"}}, "resources.cloud", "did you mean 'gcp'?"),
    ({"resources": {"cloud": "aws/us-east-1"}}, "resources.cloud", "use infra: aws/us-east-1"),
    ({"resources": {"infra": "k8s/my-context"}}, "resources.infra", "ssh/<pool>"),
    ({"resources": {"infra": "aws/us-east-1/a/b"}}, "resources.infra", "cloud/region/zone"),
    ({"resources": {"infra": "aws//us-east-1a"}}, "resources.infra", "use '*' for any region"),
    ({"resources": {"infra": "local/us-east-1"}}, "resources.infra", "use infra: local"),
    ({"resources": {"infra": "ssh/pool/zone"}}, "resources.infra", "ssh/<pool>"),
    ({"resources": {"infra": "aws", "cloud": "aws"}}, "resources.cloud", "use only infra"),
    ({"resources": {"infra": "aws", "region": "us-east-1"}}, "resources.region", "both 'infra' and 'region'"),
    ({"resources": {"zone": "us-east-1a"}}, "resources.zone", "gcp/*/us-central1-a"),
    ({"resources": {"use_spot": "yes"}}, "resources.use_spot", "use true or false"),
    ({"resources": {"ports": 70000}}, "resources.ports", "between 1 and 65535"),
    ({"resources": {"ports": [22, "0"]}}, "resources.ports[1]", "between 1 and 65535"),
    ({"resources": {"ports": "9000-8000"}}, "resources.ports", "low-high"),
    ({"resources": {"ports": "http"}}, "resources.ports", "between 1 and 65535"),
    ({"resources": {"cpus": "eight"}}, "resources.cpus", "'8' or '8+'"),
    ({"resources": {"cpus": 0}}, "resources.cpus", "'8' or '8+'"),
    ({"resources": {"cpus": "8GB"}}, "resources.cpus", "no unit"),
    ({"resources": {"memory": "32XB"}}, "resources.memory", "GB or TB"),
    ({"resources": {"memory": -4}}, "resources.memory", "> 0"),
    ({"resources": {"labels": {"team": [1]}}}, "resources.labels.team", "quote the value"),
    ({"resources": {"labels": ["a"]}}, "resources.labels", "key: value"),
    ({"resources": {"autostop": "soon"}}, "resources.autostop", "'10m'"),
    ({"resources": {"autostop": -3}}, "resources.autostop", ">= 0"),
    ({"resources": {"autostop": {"idle": 5}}}, "resources.autostop.idle", "did you mean 'idle_minutes'?"),
    ({"resources": {"autostop": {"down": "yes"}}}, "resources.autostop.down", "true or false"),
    ({"resources": {"autostop": [5]}}, "resources.autostop", "idle_minutes"),
    ({"resources": {"job_recovery": "failovr"}}, "resources.job_recovery", "did you mean 'FAILOVER'?"),
    ({"resources": {"job_recovery": {"max_restarts_on_errors": -1}}},
     "resources.job_recovery.max_restarts_on_errors", ">= 0"),
    ({"resources": {"any_of": [{"infra": "aws"}], "ordered": [{"infra": "gcp"}]}}, "resources.ordered", "not both"),
    ({"resources": {"any_of": {"infra": "aws"}}}, "resources.any_of", "as a list"),
    ({"resources": {"any_of": [{"any_of": []}]}}, "resources.any_of[0].any_of", "flatten"),
    ({"resources": {"any_of": [{"infra": "aws"}, {"acelerators": "T4"}]}},
     "resources.any_of[1].acelerators", "did you mean 'accelerators'?"),
    ({"resources": {"any_of": [{"cpus": "x"}]}}, "resources.any_of[0].cpus", "'8' or '8+'"),
    ({"resources": {"any_of": ["aws"]}}, "resources.any_of[0]", "key: value"),
    ({"resources": {"accelerators": {"V100", "T4"}, "any_of": [{"infra": "aws"}]}},
     "resources.accelerators", "own any_of item"),
    ({"resources": {"ordered": [{"accelerators": ["V100", "T4"]}]}},
     "resources.ordered[0].accelerators", "own item"),
    ({"resources": {"spot_recovery": "FAILOVER"}}, "resources.spot_recovery", "rename it to job_recovery"),
    ({"resources": "aws"}, "resources", "key: value"),
    ({"run": ["echo a", "echo b"]}, "run", "multi-line string"),
    ({"run": print}, "run", "shell script"),
    ({"setup": 5}, "setup", "shell script"),
    ({"envs": {"1BAD": "x"}}, "envs.1BAD", "letters, digits"),
    ({"envs": {"GOOD": [1, 2]}}, "envs.GOOD", "quote the value"),
    ({"envs": ["A=1"]}, "envs", "key: value"),
    ({"envs": {"K": "1"}, "secrets": {"K": "2"}}, "secrets.K", "not both"),
    ({"file_mounts": {"data": "./data"}}, "file_mounts.data", "/data or ~/data"),
    ({"file_mounts": {"/d": "gcs://bucket"}}, "file_mounts./d", "did you mean 'gs://'?"),
    ({"file_mounts": {"/d": "ftp://host/x"}}, "file_mounts./d", "s3://bucket/path"),
    ({"file_mounts": {"/d": {"source": "s3://b", "mode": "MOUNTED"}}}, "file_mounts./d.mode", "did you mean 'MOUNT'?"),
    ({"file_mounts": {"/d": {"source": "s3://b", "store": "r2"}}}, "file_mounts./d.store", "s3, gcs, azure"),
    ({"file_mounts": {"/d": {"mode": "MOUNT"}}}, "file_mounts./d", "add source:"),
    ({"file_mounts": {"/d": 3}}, "file_mounts./d", "source string"),
    ({"inputs": {"s3://b": -1}}, "inputs.s3://b", ">= 0"),
    ({"outputs": 5}, "outputs", "key: value"),
    ({"estimated_hours": 0}, "estimated_hours", "> 0"),
    ({"estimated_hours": "soon"}, "estimated_hours", "> 0"),
    ({"depends_on": 5}, "depends_on", "[task_a, task_b]"),
    ({"name": "a", "depends_on": ["a"]}, "depends_on[0]", "remove it"),
    ({"depends_on": ["a", "a"]}, "depends_on[1]", "list each task once"),
    ({"name": ["x"]}, "name", "a task name"),
    ({"name": "   "}, "name", "give name a value"),
    ({"workdir": {"url": "https://github.com/x/y"}}, "workdir", "local directory path"),
    ({"config": ["x"]}, "config", "key: value"),
    ({"config": {"a": float("nan")}}, "config.a", "finite number"),
    ({"config": {"a": object()}}, "config.a", "use strings, numbers"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "field", "text"), TASK_ERRORS, ids=[e[1] + ":" + e[2][:20] for e in TASK_ERRORS]
)
def test_task_errors_name_field_and_fix(data: dict, field: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        Task.from_dict(data)
    err = info.value
    assert err.field == field
    message = str(err)
    assert message.startswith(f"{field}: ")
    assert text in message
    assert err.fix and err.problem
    assert isinstance(err, ValueError)


def test_message_format_matches_contract() -> None:
    with pytest.raises(SpecError) as info:
        Task.from_dict({"resources": {"accelerators": "V10O:1"}})
    assert str(info.value) == (
        "resources.accelerators: unknown accelerator 'V10O' (got 'V10O:1'); did you mean 'V100'?"
    )
    err = info.value
    assert (err.field, err.value, err.problem, err.fix) == (
        "resources.accelerators", "V10O:1", "unknown accelerator 'V10O'", "did you mean 'V100'?",
    )  # fmt: skip


def test_errors_in_python_construction() -> None:
    with pytest.raises(SpecError, match=r"^resources\.cpus: .*'8\+'"):
        Resources(cpus="lots")
    with pytest.raises(SpecError, match=r"^resources\.accelerators: .*did you mean 'A100'"):
        Task(resources=Resources(accelerators={"A10O": 8}))
    with pytest.raises(SpecError, match=r"^num_nodes: "):
        Task(num_nodes=-1)
    with pytest.raises(SpecError, match=r"^resources\.infra: "):
        Resources(infra="mars")
    with pytest.raises(SpecError, match=r"^autostop\.idle_minutes: "):
        Autostop(idle_minutes=-1)
    with pytest.raises(SpecError, match=r"^quantity: "):
        Quantity(0)


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(SpecError) as info:
        Task.from_dict({"secrets": {"TOKEN": ["hunter2"]}})
    assert "hunter2" not in str(info.value)
    assert info.value.field == "secrets.TOKEN"
    with pytest.raises(SpecError) as info:
        Task.from_dict({"envs": {"TOKEN": "a"}, "secrets": {"TOKEN": "hunter2"}})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [[1, 2], "just a string", 42, None.__class__, 3.5],
    ids=["list", "str", "int", "type", "float"],
)
def test_non_mapping_task_is_a_root_error(value: object) -> None:
    with pytest.raises(SpecError) as info:
        Task.from_dict(value)
    assert info.value.field == "<root>"
    assert "mapping" in str(info.value)


def test_non_mapping_yaml_document_is_a_root_error() -> None:
    with pytest.raises(SpecError) as info:
        Task.from_yaml("- a\n- b\n")
    assert info.value.field == "<root>"


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "name: x\nresources:\n  cpus: 4\n   memory: 8\n"
    with pytest.raises(SpecError) as info:
        Task.from_yaml(text)
    err = info.value
    assert err.field == "<yaml>"
    assert "line 4" in err.problem and "column" in err.problem
    assert "fix the YAML syntax" in str(err)


def test_duplicate_yaml_keys_are_rejected() -> None:
    with pytest.raises(SpecError, match=r"line 3.*duplicate key 'cpus'"):
        Task.from_yaml("resources:\n  cpus: 4\n  cpus: 8\n")


def test_bad_yaml_values_become_spec_errors() -> None:
    with pytest.raises(SpecError):
        Task.from_yaml("name: 2024-02-30\n")  # an impossible date
    with pytest.raises(SpecError):
        Task.from_yaml("num_nodes: " + "9" * 5000 + "\n")  # beyond int/str conversion limits
    with pytest.raises(SpecError):
        Task.from_yaml("[" * 1500)  # deeply nested


def test_recursive_yaml_in_config_is_rejected() -> None:
    text = "config: &a\n  self: *a\n"
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:  # pragma: no cover - depends on the PyYAML version
        pytest.skip(reason="PyYAML refuses recursive aliases")
    assert loaded["config"]["self"] is loaded["config"]
    with pytest.raises(SpecError, match="nested too deeply"):
        Task.from_yaml(text)


def test_empty_yaml_and_missing_file(tmp_path) -> None:
    with pytest.raises(SpecError, match="holds no task"):
        load_tasks("")
    with pytest.raises(SpecError, match="holds no task"):
        load_tasks("---\n---\n")
    with pytest.raises(SpecError) as info:
        load_tasks(str(tmp_path / "missing.yaml"))
    assert info.value.field == "<file>" and "check the path" in str(info.value)
    with pytest.raises(SpecError, match="not valid UTF-8"):
        load_tasks(b"\xff\xfe")
    with pytest.raises(SpecError, match="expected YAML text or a file path"):
        load_tasks(42)  # type: ignore[arg-type]


def test_from_yaml_refuses_chains() -> None:
    with pytest.raises(SpecError, match="load_tasks"):
        Task.from_yaml("name: a\nrun: x\n---\nname: b\nrun: y\n")


def test_errors_in_chains_name_the_document() -> None:
    text = "name: pipe\n---\nname: a\nrun: x\n---\nname: b\nresources:\n  cpus: lots\n"
    with pytest.raises(SpecError) as info:
        load_chain(text)
    assert info.value.field == "documents[2].resources.cpus"
    with pytest.raises(SpecError) as info:
        load_chain("name: a\n---\n- not a task\n")
    assert info.value.field == "documents[1]"


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        (
            "name: a\nrun: x\n---\nname: b\ndepends_on: [c]\n",
            "documents[1].depends_on",
            "use one of the task names",
        ),
        ("name: a\nrun: x\n---\nname: b\ndepends_on: [aa]\n", "documents[1].depends_on", "did you mean 'a'?"),
        ("name: a\ndepends_on: b\n---\nname: b\ndepends_on: a\n", "documents[0].depends_on", "remove one"),
        ("name: a\nrun: x\n---\nname: a\n---\nname: c\ndepends_on: a\n", "documents[1].name", "unique"),
        ("run: x\n---\nname: b\ndepends_on: x\n", "documents[0].name", "give every task"),
    ],
    ids=["unknown", "typo", "cycle", "duplicate", "unnamed"],
)
def test_dependency_errors(text: str, field: str, fix: str) -> None:
    with pytest.raises(SpecError) as info:
        load_tasks(text)
    assert info.value.field == field
    assert fix in str(info.value)


def test_validate_for_run_requires_env_values() -> None:
    task = Task(run="echo $A", envs={"A": None}, secrets={"S": None})
    with pytest.raises(SpecError) as info:
        task.validate_for_run()
    assert info.value.field == "envs.A" and "update_envs" in str(info.value)
    task.update_envs({"A": 1})
    with pytest.raises(SpecError, match=r"^secrets\.S: "):
        task.validate_for_run()
    task.update_secrets({"S": "x"})
    task.validate_for_run()
    assert task.envs == {"A": "1"}


def test_huge_and_odd_values_give_spec_errors() -> None:
    for resources in (
        {"cpus": 10**5000},
        {"cpus": float("inf")},
        {"memory": "1e400"},
        {"disk_size": 10**40},
        {"accelerators": {"V100": 10**400}},
        {"labels": {"a": 10**5000}},
        {"ports": True},
        {"autostop": 10**12},
    ):
        with pytest.raises(SpecError):
            Resources.from_dict(resources)


def test_spec_error_pickles_and_prefixes() -> None:
    import pickle

    err = SpecError("resources.cpus", "x", "not a valid amount", "use a number like '8' or '8+'")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.field == err.field
    assert err.with_prefix("documents[1]").field == "documents[1].resources.cpus"
    assert SpecError("", 1, "p", "f").with_prefix("documents[0]").field == "documents[0]"
