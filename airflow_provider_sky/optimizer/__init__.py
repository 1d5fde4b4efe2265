"""optimizer layer of airflow-provider-sky: DAG-wide placement over the catalog; no airflow imports."""

from airflow_provider_sky.optimizer.errors import InfeasibleTaskError, OptimizerError
from airflow_provider_sky.optimizer.plan import Alternative, EgressFlow, Plan, TaskPlacement
from airflow_provider_sky.optimizer.ranking import rank_placements
from airflow_provider_sky.optimizer.solver import optimize

__all__ = [
    "Alternative",
    "EgressFlow",
    "InfeasibleTaskError",
    "OptimizerError",
    "Plan",
    "TaskPlacement",
    "optimize",
    "rank_placements",
]
