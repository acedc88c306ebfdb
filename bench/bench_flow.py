"""Workflow overhead: Airflow-run series against the same steps run directly, same run.

    .venv/bin/python bench/bench_flow.py [--series 20] [--parallel 4]

Starts a site (API under uvicorn, auth off) and its embedded Airflow on free ports with
a no-op operator (it only notes when it started) and DAGs of the two shapes JIP's
workflows have, per series:

- ``steps``: get-input → noop → put-output as three tasks (organ-seg-radiomics' shape);
- ``fused``: the same three steps as one ``process_series`` task (deidentify's shape);

each as ``jip-bench-<shape>`` (up to ``--parallel`` tasks at once) and
``jip-bench-<shape>-serial`` (one task at a time). Ingests ``--series`` small phantom
CT series, then measures:

- the reference: get-input, the operator and put-output of one series called directly
  (no Airflow), the same code and operator runner (``runner_for``) the tasks run;
- trigger → first operator start, through the flow API, and where the seconds of that
  run went by Airflow's own timestamps (scheduled, queued, started, ended);
- per-task overhead: (serial run time − the reference's work) / tasks;
- the speed-up of the parallel run over the serial one.

Operators run as the bench's own user (``flow.operator_isolation = none``) in the
tasks and in the reference alike: the no-op operator is the bench's own code, and
what is measured is Airflow's overhead, not the hand-over to another user.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from jip_sdk.phantom import build_abdomen_phantom, write_ct_series

from jip.app import build_app
from jip.backends import runner_for, storage_for
from jip.config import AuthSettings, FlowSettings, MetaSettings, Settings
from jip.errors import NotFound
from jip.flow.airflow_rest import run_path, run_what
from jip.flow.component import task_environment
from jip.flow.embedded_airflow import EmbeddedAirflow
from jip.flow.engine_airflow import AirflowEngine
from jip.flow.worker import steps
from jip.flow.worker.api_client import JipClient
from jip.flow.worker.runner import OperatorJob
from jip.runtime import Runtime, build_runtime

SHAPES = ("fused", "steps")
NOOP_MAIN = '''"""noop: notes when it started, does nothing else."""
import time
from pathlib import Path
from jip_sdk import iter_series, report_progress, run_operator

STARTED = time.time()


def process(context):
    with open(context.params["stamp_file"], "a") as stamps:
        stamps.write(f"{STARTED}\\n")
    for series in iter_series(context.input_dir):
        report_progress(1.0, series=series.uid, message="nothing to do")


if __name__ == "__main__":
    run_operator(process, schema_path=Path(__file__).with_name("params.schema.json"))
'''
NOOP_SCHEMA = """{"type": "object", "additionalProperties": false,
 "properties": {"stamp_file": {"type": "string", "default": "/dev/null"}}}
"""
DAGS = """from airflow.sdk import dag, task_group
from jip.flow.worker.tasks import (
    fan_out, get_input, process_series, put_output, run_operator, workflow_params,
)


def make(dag_id, max_active_tasks, fused):
    @dag(dag_id=dag_id, schedule=None, catchup=False, params=workflow_params("noop"),
         max_active_tasks=max_active_tasks, tags=["jip", "bench"])
    def bench():
        @task_group(group_id="series")
        def per_series(series_uid):
            if fused:
                process_series.override(task_id="noop")(series_uid, operator="noop")
                return
            staged = get_input.override(task_id="get-input")(series_uid)
            done = run_operator.override(task_id="noop")(staged, operator="noop")
            put_output.override(task_id="put-output")(done)

        fan_out(per_series)

    return bench()


for shape in SHAPES:
    make(f"jip-bench-{shape}", 64, shape == "fused")
    make(f"jip-bench-{shape}-serial", 1, shape == "fused")
""".replace("SHAPES", repr(SHAPES))


@dataclass(frozen=True)
class ShapeRun:
    """One DAG shape's figures: one series alone, then every series one task at a time."""

    first_s: float
    one_s: float
    one_tasks: int
    serial_s: float
    tasks: int
    where: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(runtime: Runtime) -> Iterator[str]:
    settings = runtime.settings
    server = uvicorn.Server(
        uvicorn.Config(build_app(runtime), host="127.0.0.1", port=settings.http_port,
                       log_config=None, lifespan="off", access_log=False)
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_site(root: Path, parallel: int) -> Settings:
    operator = root / "operators" / "noop"
    operator.mkdir(parents=True)
    (operator / "main.py").write_text(NOOP_MAIN)
    (operator / "params.schema.json").write_text(NOOP_SCHEMA)
    (root / "dags").mkdir()
    (root / "dags" / "jip_bench_noop.py").write_text(DAGS)
    return Settings(
        data_dir=root / "data",
        http_port=free_port(),
        auth=AuthSettings(enabled=False),
        meta=MetaSettings(series_quiet_period_s=3600),
        flow=FlowSettings(
            airflow_port=free_port(),
            dags_folder=root / "dags",
            operators_dir=root / "operators",
            max_parallel_series=parallel,
            operator_isolation="none",  # see the module docstring
        ),
    )


def ingest_series(runtime: Runtime, count: int, root: Path) -> list[str]:
    phantom = build_abdomen_phantom(shape=(4, 64, 64))
    uids = []
    for n in range(count):
        written = write_ct_series(phantom, root / f"series-{n}")
        for path in sorted(written.series.path.glob("*.dcm")):
            runtime.ingestor.ingest_file(path)
        uids.append(written.series_instance_uid)
    return uids


def direct_reference(
    settings: Settings, uid: str, root: Path, repeats: int = 3
) -> tuple[float, float]:
    """Seconds for one series' three steps called directly, and for the operator alone."""
    runner = runner_for(settings)  # the runner the tasks use (tasks.run_operator)
    results = storage_for(settings.resolved_results_url, settings)
    totals, operator_only = [], []
    with JipClient(f"http://127.0.0.1:{settings.http_port}") as client:
        for n in range(repeats):
            dirs = steps.step_dirs(root / "direct", f"direct-{n}", uid, "noop")
            started = time.monotonic()
            steps.get_input(client, [uid], dirs.input_dir)
            job = OperatorJob(operator="noop", input_dir=dirs.input_dir, output_dir=dirs.output_dir)
            op_started = time.monotonic()
            steps.run_operator(runner, job, lambda _: None)
            operator_only.append(time.monotonic() - op_started)
            steps.put_output(client=client, results=results, run_id=f"direct-{n}",
                             series_uid=uid, operator="noop", output_dir=dirs.output_dir)  # fmt: skip
            totals.append(time.monotonic() - started)
    return min(totals), min(operator_only)


def timed_run(
    api: httpx.Client, dag_id: str, uids: list[str], stamps: Path
) -> tuple[float, float, int, str, float]:
    """(trigger → first operator start, trigger → run end, tasks, run id, trigger time)."""
    stamps.write_text("")
    started = time.time()
    answer = api.post(f"/api/flow/workflows/{dag_id}/runs",
                      json={"series": uids, "params": {"noop": {"stamp_file": str(stamps)}}})  # fmt: skip
    answer.raise_for_status()
    run_id = answer.json()["run_id"]
    while True:
        detail = api.get(f"/api/flow/runs/{run_id}").json()
        if detail["state"] in ("success", "failed", "cancelled"):
            break
        time.sleep(0.5)
    ended = time.time()
    if detail["state"] != "success":
        raise SystemExit(f"{dag_id} run {run_id} ended {detail['state']}")
    first = min(float(line) for line in stamps.read_text().split())
    return first - started, ended - started, detail["tasks_total"], run_id, started


def breakdown(engine: AirflowEngine, dag_id: str, run_id: str, triggered: float) -> list[str]:
    """Where one run's seconds went, from Airflow's own timestamps (seconds after trigger).

    Per task instance: scheduled (the scheduler made it runnable), queued (handed to the
    executor), start (the task process parsed its DAG and began), end.
    """
    run = engine.rest.call("GET", run_path(dag_id, run_id), what=run_what(dag_id, run_id))
    items = engine.rest.paged(f"{run_path(dag_id, run_id)}/taskInstances", "task_instances",
                              {"order_by": "start_date"}, what=run_what(dag_id, run_id))  # fmt: skip

    def at(value: str | None) -> str:
        if not value:
            return "    -"
        return f"{datetime.fromisoformat(value).timestamp() - triggered:5.2f}"

    lines = [f"  run {run_id}: queued {at(run.get('queued_at'))}, started {at(run.get('start_date'))}, "
             f"ended {at(run.get('end_date'))}",
             f"  {'task':<28}{'scheduled':>10}{'queued':>8}{'start':>8}{'end':>8}"]  # fmt: skip
    for ti in sorted(items, key=lambda t: t.get("start_date") or ""):
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        lines.append(f"  {name:<28}{at(ti.get('scheduled_when')):>10}{at(ti.get('queued_when')):>8}"
                     f"{at(ti.get('start_date')):>8}{at(ti.get('end_date')):>8}")  # fmt: skip
    return lines


def wait_for_dags(engine: AirflowEngine, *dag_ids: str) -> None:
    deadline = time.monotonic() + 180
    for dag_id in dag_ids:
        while True:
            try:
                engine.get_workflow(dag_id)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def measure_shape(
    api: httpx.Client, engine: AirflowEngine, shape: str, uids: list[str], stamps: Path
) -> ShapeRun:
    first_s, one_s, one_tasks, run_id, at = timed_run(api, f"jip-bench-{shape}", uids[:1], stamps)
    where = breakdown(engine, f"jip-bench-{shape}", run_id, at)
    _, serial_s, tasks, _, _ = timed_run(api, f"jip-bench-{shape}-serial", uids, stamps)
    return ShapeRun(first_s, one_s, one_tasks, serial_s, tasks, where)


def report(
    shapes: dict[str, ShapeRun],
    parallel_s: float,
    direct_s: float,
    operator_s: float,
    n: int,
    parallel: int,
) -> None:
    for shape, run in shapes.items():
        print()
        print(f"{shape}: one series, seconds after the trigger (Airflow's timestamps):")
        print("\n".join(run.where))
    print()
    print(f"{'measurement':<48}{'seconds':>10}{'ratio':>28}")
    for shape, run in shapes.items():
        overhead = (run.serial_s - n * direct_s) / run.tasks
        print(f"{shape + ': trigger -> first operator start':<48}{run.first_s:>10.2f}"
              f"{run.first_s / operator_s:>12.1f} x operator alone")  # fmt: skip
        print(f"{f'{shape}: one series, whole run ({run.one_tasks} tasks)':<48}{run.one_s:>10.2f}"
              f"{run.one_s / direct_s:>12.1f} x direct steps")  # fmt: skip
        print(f"{f'{shape}: {n} series one by one ({run.tasks} tasks)':<48}{run.serial_s:>10.2f}"
              f"{run.serial_s / (n * direct_s):>12.1f} x direct steps")  # fmt: skip
        print(f"{f'{shape}: per-task overhead (serial)':<48}{overhead:>10.2f}"
              f"{overhead / operator_s:>12.1f} x operator alone")  # fmt: skip
    serial_s = shapes["fused"].serial_s
    print(f"{f'fused: {n} series, up to {parallel} tasks at once':<48}{parallel_s:>10.2f}"
          f"{serial_s / parallel_s:>12.2f} x faster than one by one")  # fmt: skip


def load_average() -> str:
    """The machine's 1/5/15-minute load, printed beside the figures (a shared machine
    inflates absolute times; the ratios are what to read)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--keep", action="store_true",
                        help="keep the site's folder (Airflow's task logs) and print where")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jip-bench-flow-"))
    load_before = load_average()
    try:
        settings = make_site(root, args.parallel)
        runtime = build_runtime(settings)
        uids = ingest_series(runtime, args.series, root / "phantoms")
        with serve(runtime) as url, httpx.Client(base_url=url, timeout=60) as api:
            direct_s, operator_s = direct_reference(settings, uids[0], root)
            print(f"reference, one series called directly: {direct_s:.2f} s "
                  f"(the operator process alone {operator_s:.2f} s)", flush=True)  # fmt: skip
            started = time.monotonic()
            with EmbeddedAirflow(settings, extra_env=task_environment(settings)) as airflow:
                engine = AirflowEngine.from_settings(settings)
                wait_for_dags(
                    engine, *(f"jip-bench-{s}{m}" for s in SHAPES for m in ("", "-serial"))
                )
                print(f"airflow up after {time.monotonic() - started:.0f} s "
                      f"({airflow.url}, parallelism {args.parallel})", flush=True)  # fmt: skip
                stamps = root / "stamps.txt"
                timed_run(api, "jip-bench-fused", uids[:1], stamps)  # warm-up: parse, imports
                shapes = {
                    shape: measure_shape(api, engine, shape, uids, stamps) for shape in SHAPES
                }
                _, parallel_s, _, _, _ = timed_run(api, "jip-bench-fused", uids, stamps)
                engine.close()
        runtime.close()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(shapes, parallel_s, direct_s, operator_s, args.series, args.parallel)
    print(f"load average (1/5/15 min): {load_before} at the start, {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
