"""FLOW: start workflows on series, report their state, logs and results; auto-rules.

What the room holds, by where the code runs:

- the API side: ``routes`` (``/api/flow``), ``deps``, ``service`` (start, list, cancel,
  logs, results), ``access`` (who may start, cancel, review, record), ``run_tokens``
  (each run's own token), ``result_keys`` (``runs/<run_id>/`` in the result store),
  ``reviews`` (human steps), ``rules`` (auto-rules), ``records`` and ``schema`` (the
  flow tables), ``models``, ``workflows`` (operator parameter schemas), ``retry`` (a
  new run on a run's failed series), ``run_download`` (a run's results as a zip);
  ``forwarding``, ``forwarding_schema``, ``forwarding_routes`` and ``forwarder``
  (forwarding rules, their queue and dead letters; the send itself is store's, handed
  in by the composition);
  the workflow engine port ``engine`` and its Airflow adapter ``engine_airflow`` (on the
  REST client ``airflow_rest``); ``scaffold`` (`jip operator new`);
- ``worker/``: what runs inside Airflow (DAG building blocks, the human-step operator
  and trigger, the operator runners, staging, the site API client);
- the `jip up` side: ``airflow_home`` (Airflow's environment and JIP's password there),
  ``embedded_airflow`` (the supervisor of Airflow's processes) and ``component`` (the
  Airflow and rule-evaluator components).

Other services and the UI use only the names below (``from jip.flow import X``); the
composition (runtime, backends, migrations, app, embedded, cli) may reach the modules.
FLOW may import the core and the services below it (meta, store, base) only through
their packages (``from jip.meta import SeriesMatcher``), never their modules. The
Airflow worker's task processes are their own composition root and may import
``jip.backends`` (see pyproject's import contracts). Kept light on purpose: Airflow's
DAG processor imports this package with every DAG file.
"""

from jip.flow.engine import (
    RunState,
    TaskInstance,
    TaskState,
    WorkflowEngine,
    WorkflowInfo,
    WorkflowRun,
)

__all__ = [
    "RunState",
    "TaskInstance",
    "TaskState",
    "WorkflowEngine",
    "WorkflowInfo",
    "WorkflowRun",
]
