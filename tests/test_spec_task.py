"""Task: Python construction, normalization, secrets masking and module boundaries."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

from airflow_provider_sky import spec
from airflow_provider_sky.spec import Resources, Task
from airflow_provider_sky.spec.accelerators import CANONICAL_NAMES, canonical_name, is_tpu, suggest
from airflow_provider_sky.spec.file_mounts import FileMount

SPEC_DIR = pathlib.Path(spec.__file__).parent


def test_build_in_python() -> None:
    task = Task(name="train", run="python train.py", resources=Resources(accelerators={"A100": 8}))
    assert task.resources.accelerators == {"A100": 8}
    assert task.num_nodes == 1 and task.envs == {} and task.depends_on == []
    assert Task.from_dict(task.to_dict()) == task
    assert task.to_dict() == {
        "name": "train",
        "resources": {"accelerators": {"A100": 8}},
        "run": "python train.py",
    }


def test_python_values_are_normalized() -> None:
    task = Task(
        name="t",
        num_nodes="2",  # type: ignore[arg-type]
        resources={"cpus": "4+"},  # type: ignore[arg-type]
        envs={"A": 1, "B": 2.5, "C": True, "D": None},  # type: ignore[dict-item]
        file_mounts={"/data": "s3://bucket"},  # type: ignore[dict-item]
        inputs="gs://in",  # type: ignore[arg-type]
        outputs=["gs://out"],  # type: ignore[arg-type]
        estimated_hours="1.5",  # type: ignore[arg-type]
        depends_on="prep",  # type: ignore[arg-type]
    )
    assert task.num_nodes == 2
    assert task.resources == Resources(cpus="4+")
    assert task.envs == {"A": "1", "B": "2.5", "C": "True", "D": None}
    assert task.file_mounts == {"/data": FileMount(source="s3://bucket")}
    assert task.inputs == {"gs://in": None} and task.outputs == {"gs://out": None}
    assert task.estimated_hours == 1.5
    assert task.depends_on == ["prep"]


def test_validate_after_mutation() -> None:
    task = Task(run="x")
    task.resources = {"accelerators": "v100"}  # type: ignore[assignment]
    task.validate()
    assert task.resources.accelerators == {"V100": 1}


def test_secrets_are_masked_in_repr() -> None:
    task = Task(
        name="t", run="echo", envs={"PUBLIC": "visible"}, secrets={"TOKEN": "s3cr3t-value", "LATER": None}
    )
    text = repr(task)
    assert "s3cr3t-value" not in text
    assert "visible" in text and "TOKEN" in text and "<redacted>" in text
    assert "s3cr3t-value" not in task.to_yaml(redact_secrets=True)
    assert "s3cr3t-value" in task.to_yaml()  # the full form keeps them for round trips
    assert Task.from_yaml(task.to_yaml()) == task


def test_multiline_scripts_dump_as_blocks() -> None:
    task = Task(setup="pip install a\npip install b\n", run="echo 1\necho 2  \n")
    text = task.to_yaml()
    assert "setup: |" in text
    assert Task.from_yaml(text) == task


def test_file_mount_python_validation() -> None:
    mount = FileMount(source="s3://b", mode="mount")
    assert mount.mode == "MOUNT" and mount.is_bucket
    assert FileMount(source="./x").effective_mode == "COPY"
    assert FileMount(source="https://acct.blob.core.windows.net/container/path").is_bucket


def test_accelerator_names() -> None:
    for name in ("T4", "L4", "L40S", "A10", "A10G", "A100", "A100-80GB", "H100", "H100-MEGA", "H200", "B200",
                 "V100", "V100-32GB", "P100", "K80", "M60", "P4", "A40", "RTX6000", "RTX4090", "A6000",
                 "Inferentia", "Trainium", "Radeon MI25", "Gaudi HL-205", "tpu-v2-8", "tpu-v3-8", "tpu-v4-8"):  # fmt: skip
        assert name in CANONICAL_NAMES or is_tpu(name)
        assert canonical_name(name.lower()) == name
        assert canonical_name(name.upper()) == name
    assert canonical_name("tpu-v5e-256") == "tpu-v5e-256"
    assert canonical_name("TPU-V6E-8") == "tpu-v6e-8"
    assert canonical_name("tpu-v5litepod-16") == "tpu-v5litepod-16"
    assert canonical_name("GTX9999") is None
    assert suggest("V10O") == "V100"
    assert suggest("A10O") == "A100"
    assert suggest("H10") in {"H100", "H200"}
    assert suggest("zzzzqqqq") is None
    assert len(set(name.lower() for name in CANONICAL_NAMES)) == len(CANONICAL_NAMES)


def test_public_exports() -> None:
    assert set(spec.__all__) == {
        "Task", "Resources", "Quantity", "Autostop", "SpecError", "load_tasks", "load_chain",
    }  # fmt: skip
    assert issubclass(spec.SpecError, ValueError)


def test_spec_imports_nothing_outside_itself() -> None:
    allowed_third_party = {"yaml"}
    for path in SPEC_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "airflow_provider_sky":
                    assert module.startswith("airflow_provider_sky.spec"), f"{path.name} imports {module}"
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party, (
                        f"{path.name}: {module}"
                    )


def test_importing_spec_does_not_load_airflow() -> None:
    code = (
        "import sys, airflow_provider_sky.spec as s; s.Task.from_yaml('run: echo'); "
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
