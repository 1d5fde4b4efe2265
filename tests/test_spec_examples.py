"""Realistic SkyPilot task YAMLs parse, keep their meaning and round-trip through dict and YAML form."""

from __future__ import annotations

import pytest

from airflow_provider_sky.spec import Autostop, Quantity, Resources, Task, load_chain, load_tasks
from airflow_provider_sky.spec.task import dump_chain

GPU_TRAINING = """
name: finetune-llama
workdir: .
resources:
  accelerators: A100:8
  disk_size: 512
  disk_tier: high
  use_spot: true
  memory: 64+
envs:
  MODEL_NAME: meta-llama/Llama-3-8B
  BATCH_SIZE: 16
  LEARNING_RATE: 2.0e-5
  WANDB_PROJECT:
secrets:
  HF_TOKEN: hf_abcdefghijklmnop
file_mounts:
  /dataset: s3://my-training-data/alpaca
  ~/.cache/huggingface: gs://my-hf-cache
setup: |
  pip install torch transformers datasets
  huggingface-cli login --token $HF_TOKEN
run: |
  torchrun --nproc_per_node=$SKYPILOT_NUM_GPUS_PER_NODE train.py \\
    --model $MODEL_NAME --batch-size $BATCH_SIZE --lr $LEARNING_RATE
"""

MULTI_NODE = """
name: distributed-pretrain
num_nodes: 4
resources:
  infra: gcp/us-central1
  accelerators: H100:8
  cpus: 32+
  ports:
    - 29500
    - 8265
    - "10000-10010"
  labels:
    team: research
    cost-center: 1234
  autostop:
    idle_minutes: 30
    down: true
  job_recovery:
    strategy: EAGER_NEXT_REGION
    max_restarts_on_errors: 3
run: |
  MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)
  torchrun --nnodes=$SKYPILOT_NUM_NODES --node_rank=$SKYPILOT_NODE_RANK \\
    --master_addr=$MASTER_ADDR --master_port=29500 pretrain.py
estimated_hours: 12.5
"""

ANY_OF = """
name: serve-eval
resources:
  accelerators: L4:1
  cpus: 8
  any_of:
    - infra: aws/us-east-1
    - infra: gcp
      use_spot: true
    - infra: azure/eastus
      accelerators: A10:1
run: python eval.py
"""

ORDERED = """
name: train-preferred
resources:
  disk_size: 1024
  ordered:
    - infra: gcp
      accelerators: H100:8
    - infra: aws/us-west-2
      accelerators: A100-80GB:8
    - accelerators: A100:8
      use_spot: true
run: python train.py
"""

BUCKET_MOUNTS = """
name: preprocess
resources:
  infra: aws/us-east-1/us-east-1a
  cpus: 16
  memory: 64GB
  instance_type: m6i.4xlarge
file_mounts:
  /raw:
    source: s3://raw-events/2024/
    mode: MOUNT
  /cache:
    source: gs://feature-cache
    mode: MOUNT_CACHED
  /outputs:
    name: preprocess-outputs
    store: s3
    mode: MOUNT
    persistent: false
  /code: ./src
inputs:
  s3://raw-events/2024/: 250
outputs:
  s3://features/2024/: 40
run: python preprocess.py --in /raw --out /outputs
"""

ACCELERATOR_SETS = """
name: flexible
resources:
  accelerators: {V100, T4, L4}
run: nvidia-smi
"""

ACCELERATOR_LIST = """
name: preference-list
resources:
  accelerators: ["H100:1", "A100:1", "L4:1"]
run: nvidia-smi
"""

TPU = """
name: tpu-train
resources:
  infra: gcp/us-central2/us-central2-b
  accelerators: tpu-v4-8
  accelerator_args:
    runtime_version: tpu-ubuntu2204-base
    tpu_vm: true
run: python3 -c "import jax; print(jax.devices())"
"""

LEGACY_LOCATION = """
resources:
  cloud: aws
  region: us-east-1
  zone: us-east-1b
  cpus: 4
run: echo legacy
"""

LOCAL = """
name: hello-local
resources:
  infra: local
  autostop: 10m
config:
  jobs:
    controller:
      resources: {cpus: 2}
experimental:
  config_overrides: {docker: {run_options: ["--shm-size=1g"]}}
run: echo hello
"""

CHAIN = """
name: etl-pipeline
---
name: extract
resources:
  infra: aws/us-east-1
  cpus: 4+
outputs:
  s3://pipeline/raw: 10
run: python extract.py
---
name: transform
resources:
  accelerators: T4:1
inputs:
  s3://pipeline/raw: 10
outputs:
  s3://pipeline/features: 2
run: python transform.py
---
name: load
inputs: s3://pipeline/features
run: python load.py
"""

EXAMPLES = {
    "gpu_training": GPU_TRAINING,
    "multi_node": MULTI_NODE,
    "any_of": ANY_OF,
    "ordered": ORDERED,
    "bucket_mounts": BUCKET_MOUNTS,
    "accelerator_set": ACCELERATOR_SETS,
    "accelerator_list": ACCELERATOR_LIST,
    "tpu": TPU,
    "legacy_location": LEGACY_LOCATION,
    "local": LOCAL,
}


@pytest.mark.parametrize("text", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_example_round_trips(text: str) -> None:
    task = Task.from_yaml(text)
    assert Task.from_dict(task.to_dict()) == task
    assert Task.from_yaml(task.to_yaml()) == task
    assert Resources.from_dict(task.resources.to_dict()) == task.resources
    # canonical form is a fixed point
    assert Task.from_dict(task.to_dict()).to_dict() == task.to_dict()


def test_gpu_training_fields() -> None:
    task = Task.from_yaml(GPU_TRAINING)
    res = task.resources
    assert res.accelerators == {"A100": 8}
    assert res.disk_size == 512 and res.disk_tier == "high" and res.use_spot is True
    assert res.memory == Quantity(64, at_least=True)
    assert task.envs == {
        "MODEL_NAME": "meta-llama/Llama-3-8B",
        "BATCH_SIZE": "16",
        "LEARNING_RATE": "2e-05",
        "WANDB_PROJECT": None,
    }
    assert task.file_mounts["/dataset"].source == "s3://my-training-data/alpaca"
    assert task.file_mounts["/dataset"].is_bucket and task.file_mounts["/dataset"].effective_mode == "COPY"
    assert task.run is not None and task.run.startswith("torchrun")
    assert task.to_dict()["resources"] == {
        "memory": "64+",
        "accelerators": {"A100": 8},
        "use_spot": True,
        "disk_size": 512,
        "disk_tier": "high",
    }


def test_multi_node_fields() -> None:
    task = Task.from_yaml(MULTI_NODE)
    res = task.resources
    assert task.num_nodes == 4 and task.estimated_hours == 12.5
    assert (res.cloud, res.region, res.zone) == ("gcp", "us-central1", None)
    assert res.ports == ("29500", "8265", "10000-10010")
    assert res.labels == {"team": "research", "cost-center": "1234"}
    assert res.autostop == Autostop(idle_minutes=30, down=True)
    assert res.job_recovery is not None and res.job_recovery.strategy == "EAGER_NEXT_REGION"
    assert res.job_recovery.max_restarts_on_errors == 3
    out = res.to_dict()
    assert out["infra"] == "gcp/us-central1"
    assert out["cpus"] == "32+"
    assert out["accelerators"] == {"H100": 8}


def test_any_of_items_inherit_top_level_fields() -> None:
    res = Task.from_yaml(ANY_OF).resources
    assert not res.is_ordered
    cands = res.candidates()
    assert [c.infra for c in cands] == ["aws/us-east-1", "gcp", "azure/eastus"]
    assert [dict(c.accelerators or {}) for c in cands] == [{"L4": 1}, {"L4": 1}, {"A10": 1}]
    assert [c.use_spot for c in cands] == [False, True, False]
    assert all(c.cpus == Quantity(8) for c in cands)
    # items are written as differences from the top level
    assert res.to_dict()["any_of"] == [
        {"infra": "aws/us-east-1"},
        {"infra": "gcp", "use_spot": True},
        {"infra": "azure/eastus", "accelerators": {"A10": 1}},
    ]


def test_ordered_preserves_preference() -> None:
    res = Task.from_yaml(ORDERED).resources
    assert res.is_ordered
    cands = res.candidates()
    assert [next(iter(c.accelerators or {})) for c in cands] == ["H100", "A100-80GB", "A100"]
    assert [c.cloud for c in cands] == ["gcp", "aws", None]
    assert all(c.disk_size == 1024 for c in cands)
    assert cands[2].use_spot


def test_bucket_mounts() -> None:
    task = Task.from_yaml(BUCKET_MOUNTS)
    mounts = task.file_mounts
    assert mounts["/raw"].mode == "MOUNT" and mounts["/raw"].is_bucket
    assert mounts["/cache"].mode == "MOUNT_CACHED"
    assert mounts["/outputs"].source is None and mounts["/outputs"].name == "preprocess-outputs"
    assert mounts["/outputs"].store == "s3" and mounts["/outputs"].persistent is False
    assert not mounts["/code"].is_bucket
    assert task.inputs == {"s3://raw-events/2024/": 250.0}
    assert task.outputs == {"s3://features/2024/": 40.0}
    assert task.resources.infra == "aws/us-east-1/us-east-1a"
    assert task.resources.memory == Quantity(64)
    assert task.to_dict()["file_mounts"]["/code"] == "./src"


def test_accelerator_set_and_list() -> None:
    flexible = Task.from_yaml(ACCELERATOR_SETS).resources
    assert not flexible.is_ordered
    assert [dict(c.accelerators or {}) for c in flexible.candidates()] == [{"V100": 1}, {"T4": 1}, {"L4": 1}]
    assert flexible.to_dict()["accelerators"] == {"V100": 1, "T4": 1, "L4": 1}

    preferred = Task.from_yaml(ACCELERATOR_LIST).resources
    assert preferred.is_ordered
    assert [dict(c.accelerators or {}) for c in preferred.candidates()] == [
        {"H100": 1},
        {"A100": 1},
        {"L4": 1},
    ]
    assert preferred.to_dict()["accelerators"] == ["H100:1", "A100:1", "L4:1"]
    assert all(not c.is_ordered for c in preferred.candidates())


def test_tpu_and_legacy_and_local() -> None:
    tpu = Task.from_yaml(TPU).resources
    assert tpu.accelerators == {"tpu-v4-8": 1}
    assert tpu.accelerator_args == {"runtime_version": "tpu-ubuntu2204-base", "tpu_vm": True}
    assert tpu.zone == "us-central2-b"

    legacy = Task.from_yaml(LEGACY_LOCATION)
    assert legacy.resources.location == Resources(infra="aws/us-east-1/us-east-1b").location
    assert legacy.resources.to_dict()["infra"] == "aws/us-east-1/us-east-1b"
    assert "cloud" not in legacy.resources.to_dict()

    local = Task.from_yaml(LOCAL)
    assert local.resources.cloud == "local"
    assert local.resources.autostop == Autostop(10)
    assert local.config == {"jobs": {"controller": {"resources": {"cpus": 2}}}}
    assert local.experimental is not None


def test_chain_header_names_the_chain() -> None:
    name, tasks = load_chain(CHAIN)
    assert name == "etl-pipeline"
    assert [t.name for t in tasks] == ["extract", "transform", "load"]
    assert tasks[2].inputs == {"s3://pipeline/features": None}
    assert load_tasks(CHAIN) == tasks
    again_name, again = load_chain(dump_chain(tasks, name))
    assert (again_name, again) == (name, tasks)


def test_chain_without_header_and_from_files(tmp_path) -> None:
    text = CHAIN.split("---", 1)[1]
    assert load_chain(text)[0] is None
    assert len(load_tasks(text)) == 3
    path = tmp_path / "pipeline.yaml"
    path.write_text(CHAIN)
    assert load_tasks(path) == load_tasks(CHAIN)
    assert load_tasks(str(path)) == load_tasks(CHAIN)
    single = tmp_path / "task.yml"
    single.write_text(GPU_TRAINING)
    assert Task.from_yaml(single) == Task.from_yaml(GPU_TRAINING)
    assert Task.from_yaml(GPU_TRAINING.encode()) == Task.from_yaml(GPU_TRAINING)


def test_dag_yaml_with_depends_on() -> None:
    text = """
name: a
run: echo a
---
name: b
depends_on: a
run: echo b
---
name: c
depends_on: [a, b]
run: echo c
"""
    tasks = load_tasks(text)
    assert [t.depends_on for t in tasks] == [[], ["a"], ["a", "b"]]
    assert load_chain(text)[0] is None  # first document has more than a name: not a header
