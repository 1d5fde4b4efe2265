"""Task and resource specs: SkyPilot task YAML in, validated dataclasses out (pure Python + PyYAML).

Only `SpecError` (a ValueError) is raised for bad input; its message names the field, the bad value
and the fix.
"""

from airflow_provider_sky.spec.autostop import Autostop
from airflow_provider_sky.spec.errors import SpecError
from airflow_provider_sky.spec.quantity import Quantity
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.task import Task, load_chain, load_tasks

__all__ = ["Autostop", "Quantity", "Resources", "SpecError", "Task", "load_chain", "load_tasks"]
