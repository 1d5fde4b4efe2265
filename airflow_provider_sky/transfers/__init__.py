"""Transfer operators (Airflow's `transfers/` naming): verified copies between object stores."""
