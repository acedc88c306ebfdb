"""The Airflow side of the flow service: DAG building blocks, the human-step operator and trigger.

Laid out like an Airflow provider (``tasks``, ``operators``, ``triggers``); only DAG
files and Airflow's own processes import it. Nothing here does I/O at import or at DAG
parse time: settings, clients and runners are built when a task runs.
"""
