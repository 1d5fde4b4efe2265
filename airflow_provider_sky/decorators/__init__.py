"""decorators layer of airflow-provider-sky."""
