"""Property tests: arbitrary (mostly garbage) input never raises anything but SpecError,
and whatever parses survives a round trip through dict and YAML form."""

from __future__ import annotations

import contextlib
import datetime

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sky.spec import Resources, SpecError, Task, load_chain, load_tasks
from airflow_provider_sky.spec.resources import YAML_KEYS
from airflow_provider_sky.spec.task import TASK_KEYS, dump_chain

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

INTERESTING = [
    "", " ", "8", "8+", "0", "-1", "+", "8++", "0.5", "1e400", "nan", "inf", "²", "٣", "1_000", "\x00", "\n",
    "V100", "v100:1", "V100:0.5", "V100:1.5", "V100:", ":1", "A100:8", "tpu-v4-8", "tpu-v99x-3", "H100:0",
    "aws", "AWS", "aws/us-east-1", "aws/us-east-1/us-east-1a", "gcp/*/us-central1-a", "*/us-east-1", "*",
    "local", "local/x", "ssh/pool", "ssh", "kubernetes", "k8s/ctx", "a/b/c/d", "aws//x", "/",
    "10m", "1h", "2d", "30s", "32GB", "32GB+", "1TB", "32+", "8080", "10000-10010", "20-10", "70000",
    "s3://bucket/path", "gs://b", "gcs://b", "https://acct.blob.core.windows.net/c", "ftp://x", "~/data",
    "/data", "data", "COPY", "mount", "MOUNT_CACHED", "s3", "gcs", "azure", "r2", "failover",
    "EAGER_NEXT_REGION", "high", "best", "hgh", "FOO", "1FOO", "BAR_BAZ", "x" * 300,
]  # fmt: skip
ODD_OBJECTS = [object(), print, datetime.date(2024, 1, 2), b"bytes", -(10**400), 1e308, float("nan")]
# ints too long for str() (built lazily: hypothesis cannot repr them)
HUGE_INTS = st.sampled_from([4400, 6000]).map(lambda digits: 7 * 10**digits)

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(INTERESTING),
    st.binary(max_size=4),
)
scalars = st.one_of(hashable_scalars, st.sampled_from(ODD_OBJECTS), HUGE_INTS)
dict_keys = st.one_of(
    st.sampled_from(INTERESTING), st.sampled_from(YAML_KEYS + TASK_KEYS), st.text(max_size=8), st.integers()
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(dict_keys, children, max_size=4),
        st.frozensets(hashable_scalars, max_size=3),
        st.tuples(children, children),
    ),
    max_leaves=6,
)


def _near_miss(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key[:-1], key + "s", key.upper(), "_" + key])


PLAUSIBLE_RESOURCE_VALUES = {
    "accelerators": st.one_of(
        st.sampled_from(["V100:1", "A100", "tpu-v4-8", "T4:0.5"]),
        st.dictionaries(st.sampled_from(["V100", "t4", "A100-80GB", "V10O"]), st.one_of(st.none(), st.integers(-1, 9)), max_size=3),
        st.lists(st.sampled_from(["V100:1", "A100:2", "L4", "H100:8"]), max_size=3),
        st.frozensets(st.sampled_from(["V100", "T4", "L4"]), max_size=3),
    ),
    "cpus": st.one_of(st.sampled_from(["8", "8+", "0.5", "4+"]), st.integers(-2, 64), st.floats()),
    "memory": st.sampled_from(["32", "32+", "32GB", "16GB+", "1TB", "0"]),
    "infra": st.sampled_from(["aws", "aws/us-east-1", "gcp/*/us-central1-a", "local", "ssh/pool", "azure/eastus"]),
    "cloud": st.sampled_from(["aws", "gcp", "azure", "local", "ssh", "lambda"]),
    "region": st.sampled_from(["us-east-1", "us-central1", "eastus"]),
    "zone": st.sampled_from(["us-east-1a", "us-central1-a"]),
    "ports": st.one_of(st.integers(0, 70000), st.lists(st.sampled_from([22, "8080", "10000-10010"]), max_size=3)),
    "autostop": st.one_of(st.booleans(), st.integers(-1, 100), st.sampled_from(["10m", "1h"]),
                          st.fixed_dictionaries({}, optional={"idle_minutes": st.integers(-1, 30), "down": st.booleans()})),
    "job_recovery": st.one_of(st.sampled_from(["FAILOVER", "eager_next_region", "nope"]),
                              st.fixed_dictionaries({}, optional={"strategy": st.just("FAILOVER"),
                                                                   "max_restarts_on_errors": st.integers(-1, 5)})),
    "labels": st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    "use_spot": st.booleans(),
    "disk_size": st.one_of(st.integers(0, 2000), st.sampled_from(["100", "100GB"])),
    "disk_tier": st.sampled_from(["low", "medium", "high", "ultra", "best", "fast"]),
}  # fmt: skip


_ITEM_KEYS = [key for key in YAML_KEYS if key not in ("any_of", "ordered")]


@st.composite
def _mapping_of(draw: st.DrawFn, keys: list[str], plausible: dict, max_keys: int = 5) -> dict:
    """A mapping over some of `keys`: mostly plausible values, sometimes garbage, sometimes odd keys."""
    out: dict = {}
    for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=max_keys)):
        good = plausible.get(key)
        out[key] = draw(good) if good is not None and draw(st.integers(0, 5)) else draw(values)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.one_of(dict_keys, st.sampled_from(keys).flatmap(_near_miss)))] = draw(values)
    return out


resource_items = _mapping_of(_ITEM_KEYS, PLAUSIBLE_RESOURCE_VALUES)


@st.composite
def _resource_dicts(draw: st.DrawFn) -> dict:
    data = draw(resource_items)
    for key in ("any_of", "ordered"):
        if draw(st.integers(0, 5)) == 0:
            data[key] = draw(st.one_of(st.lists(st.one_of(resource_items, values), max_size=3), values))
    return data


resource_dicts = _resource_dicts()

PLAUSIBLE_TASK_VALUES = {
    "name": st.sampled_from(["train", "eval", "a"]),
    "workdir": st.sampled_from([".", "~/src", "/abs/path"]),
    "setup": st.sampled_from(["pip install -r requirements.txt", ""]),
    "num_nodes": st.integers(-1, 8),
    "resources": resource_dicts,
    "run": st.sampled_from(["echo hi", "python train.py\necho done\n", "  trailing  \n x"]),
    "envs": st.dictionaries(st.sampled_from(["FOO", "BAR", "1X", "A-B"]), st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats())),
    "secrets": st.dictionaries(st.sampled_from(["TOKEN", "FOO"]), st.one_of(st.none(), st.text(max_size=5))),
    "file_mounts": st.dictionaries(st.sampled_from(["/data", "~/x", "rel"]),
                                   st.one_of(st.sampled_from(["s3://b", "./local", "gcs://x"]),
                                             st.fixed_dictionaries({}, optional={"source": st.just("gs://b"), "mode": st.sampled_from(["MOUNT", "copy", "x"]),
                                                                                 "store": st.sampled_from(["s3", "gcs", "r2"]), "name": st.just("bkt")}))),
    "inputs": st.one_of(st.just("s3://b/in"), st.dictionaries(st.just("gs://b/x"), st.one_of(st.none(), st.floats(-1, 100)))),
    "estimated_hours": st.one_of(st.floats(-1, 100), st.sampled_from(["2.5", "0"])),
    "depends_on": st.one_of(st.just("train"), st.lists(st.sampled_from(["train", "eval", "x"]), max_size=3)),
    "config": st.dictionaries(st.text(max_size=5), values, max_size=3),
}  # fmt: skip
task_dicts = _mapping_of(list(TASK_KEYS), PLAUSIBLE_TASK_VALUES, max_keys=8)


def _check_resources_round_trip(resources: Resources) -> None:
    again = Resources.from_dict(resources.to_dict())
    assert again == resources
    assert hash(again) == hash(resources)
    for candidate in resources.candidates():
        assert not candidate.any_of and not candidate.ordered
        assert candidate.accelerators is None or len(candidate.accelerators) == 1
    repr(resources)


@FUZZ
@given(resource_dicts)
def test_resources_from_anything_raises_only_spec_error(data: dict) -> None:
    try:
        resources = Resources.from_dict(data)
    except SpecError as err:
        assert str(err).startswith(err.field)
        return
    _check_resources_round_trip(resources)


@FUZZ
@given(task_dicts)
def test_task_from_anything_raises_only_spec_error(data: dict) -> None:
    try:
        task = Task.from_dict(data)
    except SpecError as err:
        assert err.field and err.problem and err.fix
        return
    assert Task.from_dict(task.to_dict()) == task
    assert Task.from_yaml(task.to_yaml()) == task
    _check_resources_round_trip(task.resources)
    repr(task)


@settings(FUZZ, max_examples=500)
@given(values)
def test_python_constructors_raise_only_spec_error(value: object) -> None:
    for build in (
        lambda: Task(run=value),  # type: ignore[arg-type]
        lambda: Task(envs=value),  # type: ignore[arg-type]
        lambda: Task(name="t", resources=value),  # type: ignore[arg-type]
        lambda: Resources(accelerators=value),
        lambda: Resources(cpus=value),  # type: ignore[arg-type]
        lambda: Resources(any_of=value),
        lambda: Resources(ports=value),
        lambda: Resources(autostop=value),
    ):
        with contextlib.suppress(SpecError):
            build()


@settings(FUZZ, max_examples=500)
@given(st.one_of(st.text(max_size=200), values.map(lambda v: yaml.dump(v, Dumper=_LaxDumper))))
def test_yaml_text_raises_only_spec_error(text: str) -> None:
    try:
        tasks = load_tasks(text)
    except SpecError:
        return
    for task in tasks:
        assert Task.from_dict(task.to_dict()) == task


@settings(FUZZ, max_examples=150)
@given(st.lists(task_dicts, min_size=1, max_size=3))
def test_multi_document_yaml_raises_only_spec_error(docs: list) -> None:
    try:
        text = yaml.dump_all(docs, Dumper=_LaxDumper)
    except yaml.YAMLError:
        return
    try:
        name, tasks = load_chain(text)
    except SpecError:
        return
    assert load_chain(dump_chain(tasks, name)) == (name, tasks)


class _LaxDumper(yaml.Dumper):
    """Dumps the odd objects in the fuzz values as plain strings so the text stays loadable by safe_load."""


_LaxDumper.add_multi_representer(object, lambda dumper, data: dumper.represent_str(repr(data)[:50]))
_LaxDumper.add_representer(int, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:int", str(data)) if abs(data) < 10**100 else dumper.represent_str("huge"))  # fmt: skip
