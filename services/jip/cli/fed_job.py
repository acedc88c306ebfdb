"""`jip fed researcher|workflow|job`: the researcher's side of a federation: keys, signed
workflows, jobs submitted to the hub, followed, opened and pooled.

Everything works on the researcher's home (``--home``, else ``$JIP_FED_HOME``, else
``~/.jip/federation``), which holds the key results are sealed to:

    jip fed researcher init --hub https://hub:8443 --token T --ca hub-ca.pem
    jip fed workflow keygen --out publisher.key
    jip fed workflow sign fed-stats --digest sha256:... --key publisher.key
    jip fed job submit --cohort mr.json --project prostate --k 2 --deadline 1h \\
        --output n:count:PatientAgeYears --wait
    jip fed job results JOB
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jip.cli.site import echo_json, jip_errors, json_option, parse_params, table

if TYPE_CHECKING:
    from jip.federation.requester import ResearcherHome

home_option = click.option(
    "--home",
    "home_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The researcher's home (default: $JIP_FED_HOME or ~/.jip/federation).",
)


def _home_path(home_dir: Path | None) -> Path:
    from jip.federation.requester import default_home

    return home_dir if home_dir is not None else default_home()


def _open(home_dir: Path | None) -> ResearcherHome:
    from jip.federation.requester import ResearcherHome

    return ResearcherHome.open(_home_path(home_dir))


def _progress(line: str) -> None:
    click.echo(line, err=True)


# -- jip fed researcher ----------------------------------------------------------------
@click.group()
def researcher() -> None:
    """This researcher's keys and hub (the home every `jip fed job` command uses)."""


@researcher.command("init")
@home_option
@click.option("--hub", "hub_url", required=True, help="The hub's URL (https://...).")
@click.option("--token", required=True, help="Your bearer token (`jip hub researcher add`).")
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The hub's CA certificate (pinned: no other CA is trusted for the hub).",
)
@json_option
def researcher_init(
    home_dir: Path | None, hub_url: str, token: str, ca_file: Path, as_json: bool
) -> None:
    """Make the home: a key pair results are sealed to, the hub, token and CA. Run it
    again to change the hub or token; the keys are kept."""
    from jip.federation.requester import ResearcherHome

    with jip_errors():
        home = ResearcherHome.init(_home_path(home_dir), hub_url, token, ca_file)
        described = home.describe()
    if as_json:
        echo_json(described)
    else:
        click.echo(f"Researcher home {described['home']} for {described['hub_url']}.")
        click.echo(f"Public key (results are sealed to it): {described['public_key']}")


@researcher.command("show")
@home_option
@json_option
def researcher_show(home_dir: Path | None, as_json: bool) -> None:
    """The home's hub, public key, publisher key and signed workflows."""
    with jip_errors():
        described = _open(home_dir).describe()
    if as_json:
        echo_json(described)
    else:
        table(["setting", "value"], [[k, v] for k, v in described.items()])


# -- jip fed workflow ------------------------------------------------------------------
@click.group()
def workflow() -> None:
    """Publish workflows: a signing key, and signatures over image digests."""


@workflow.command("keygen")
@home_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the key (default: publisher.key in the home).",
)
@json_option
def workflow_keygen(home_dir: Path | None, out: Path | None, as_json: bool) -> None:
    """Make an Ed25519 publisher key; sites trust its public half (`jip fed trust add`)."""
    from jip.federation import encode_key, generate_signing_keys, key_id
    from jip.federation.requester import write_key_file

    path = out or _home_path(home_dir) / "publisher.key"
    if path.exists():
        raise click.ClickException(f"{path} exists; choose another --out (keys are not replaced)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = generate_signing_keys()
    write_key_file(path, "publisher", keys.public, keys.private)
    found = {"key": str(path), "public_key": encode_key(keys.public), "key_id": key_id(keys.public)}
    if as_json:
        echo_json(found)
    else:
        click.echo(f"Publisher key {found['key_id']} written to {path} (keep it private).")
        click.echo(f"Sites trust it with: jip fed trust add NAME {found['public_key']}")


@workflow.command("sign")
@click.argument("name")
@click.option("--digest", required=True, help="The workflow image's digest, sha256:<64 hex>.")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The publisher key (default: publisher.key in the home).",
)
@home_option
@json_option
def workflow_sign(
    name: str, digest: str, key_file: Path | None, home_dir: Path | None, as_json: bool
) -> None:
    """Sign NAME's image digest: prints the workflow reference jobs carry, and keeps it in
    the home (if there is one) for `jip fed job submit --workflow NAME`."""
    from pydantic import ValidationError

    from jip.federation import WorkflowRef, encode_key, key_id, sign_workflow
    from jip.federation.requester import ResearcherHome, read_key_file

    home_path = _home_path(home_dir)
    with jip_errors():
        public, private = read_key_file(key_file or home_path / "publisher.key", "publisher")
        try:
            ref = WorkflowRef(
                name=name,
                image_digest=digest,
                signature=encode_key(sign_workflow(name, digest, private)),
                signer=encode_key(public),
            )
        except ValidationError as exc:
            raise click.ClickException(
                f"workflow {name}: {exc.errors()[0]['msg']} (a name of letters, digits, _ "
                "and -; a digest sha256:<64 lowercase hex>)"
            ) from None
        saved = None
        if (home_path / "hub.json").exists():
            saved = str(ResearcherHome.open(home_path).save_workflow(ref))
    found = {
        "workflow": ref.model_dump(mode="json"),
        "public_key": encode_key(public),
        "key_id": key_id(public),
        "saved": saved,
    }
    if as_json:
        echo_json(found)
    else:
        click.echo(json.dumps(found["workflow"], indent=2))
        click.echo(f"Sites trust it with: jip fed trust add NAME {found['public_key']}")


# -- jip fed job -----------------------------------------------------------------------
@click.group()
def job() -> None:
    """Federated jobs: submit, follow, results (pooled across sites)."""


@job.command("submit")
@home_option
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workflow", "workflow_name", default=None, help="Default: fed-stats.")
@click.option("--workflow-ref", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--cohort", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--project", default=None, help="The project every site runs it in.")
@click.option("--output", "outputs", multiple=True, help="NAME:KIND:FIELD[:groups=..][:edges=..]")
@click.option("--param", "params", multiple=True, help="k=v (fed-stats: group_by=FIELD).")
@click.option("--levene", multiple=True, help="NAME=g1,g2[:mean|:median] (default median).")
@click.option("--k", "min_sites", type=int, default=None, help="Sites needed (default 1).")
@click.option("--deadline", default=None, help="10m, 2h, 1d or ISO 8601 (default 1h).")
@click.option("--title", default=None)
@click.option("--fanout", type=int, default=None, help="Thresholds per median round (15).")
@click.option("--wait", is_flag=True, help="Follow the job, run later rounds, print results.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds --wait waits.")
@click.option("--poll", "poll_s", type=float, default=2.0, help="Seconds between polls.")
@json_option
def job_submit(home_dir: Path | None, spec_file: Path | None, **options: Any) -> None:
    """Submit a job to every site of the hub (see docs/researcher-federation.md).

    --output SPEC: n:count:PatientAgeYears, age:histogram:PatientAgeYears:edges=0,40,60,120,
    adc:sufficient_stats:adc:groups=PZ/3/v1,PZ/3/v2; --levene PZ_3T=PZ/3/v1,PZ/3/v2 needs a
    levene_round1 output with those groups. --spec FILE gives any of these as JSON."""
    from jip.federation.requester import HubSession, submit_job

    as_json, wait = options.pop("as_json"), options.pop("wait")
    with jip_errors():
        home = _open(home_dir)
        request = _request(home, spec_file, options)
        with HubSession(home, poll_s=options["poll_s"]) as session:
            spec = submit_job(home, session, request)
            if not wait:
                found = {"job": spec.id, "deadline": spec.deadline.isoformat()}
                if as_json:
                    echo_json(found)
                else:
                    click.echo(spec.id)
                return
            _progress(f"job {spec.id} submitted; following it until {spec.deadline:%H:%M:%S}")
            report = _follow(home, session, spec.id, options["timeout_s"])
    if as_json:
        echo_json(report)
    else:
        _print_report(report)


def _request(home: ResearcherHome, spec_file: Path | None, options: dict[str, Any]) -> Any:
    """The submit options (over a --spec file's values) as a submission Request."""
    from jip.federation import DeclaredOutput, WorkflowRef
    from jip.federation.requester import Request, parse_deadline, parse_output, read_cohort
    from jip.federation.requester import read_spec_file as read_spec

    given = read_spec(spec_file) if spec_file else {}
    if options["workflow_ref"]:
        workflow = WorkflowRef.model_validate_json(options["workflow_ref"].read_text())
    elif "workflow" in given and isinstance(given["workflow"], dict):
        workflow = WorkflowRef.model_validate(given["workflow"])
    else:
        workflow = home.workflow(options["workflow_name"] or given.get("workflow") or "fed-stats")
    if options["cohort"]:
        cohort = read_cohort(options["cohort"])
    elif "cohort" in given:
        cohort = read_cohort_document(given["cohort"])
    else:
        raise click.UsageError("--cohort: give the file `jip cohort export` wrote")
    outputs = [DeclaredOutput.model_validate(o) for o in given.get("outputs", [])]
    outputs += [parse_output(text) for text in options["outputs"]]
    if not outputs:
        raise click.UsageError("--output: declare at least one output (NAME:KIND:FIELD)")
    project = options["project"] or given.get("project")
    if not project:
        raise click.UsageError("--project: name the project sites run the job in")
    return Request(
        workflow=workflow,
        cohort=cohort,
        project=project,
        outputs=tuple(outputs),
        min_sites=options["min_sites"] or int(given.get("min_sites", 1)),
        deadline=parse_deadline(options["deadline"] or str(given.get("deadline", "1h"))),
        parameters={**given.get("parameters", {}), **parse_params(options["params"])},
        levene=(*given.get("levene", ()), *options["levene"]),
        title=options["title"] or str(given.get("title", "")),
        fanout=options["fanout"] or int(given.get("fanout", 15)),
    )


def read_cohort_document(value: Any) -> Any:
    """A cohort given inside --spec: the document itself, or a path to it."""
    from jip.federation import CohortDocument
    from jip.federation.requester import read_cohort

    if isinstance(value, str):
        return read_cohort(Path(value))
    return CohortDocument.model_validate(value)


def _follow(
    home: ResearcherHome, session: Any, job_id: str, timeout_s: float | None
) -> dict[str, Any]:
    from datetime import UTC, datetime

    from jip.federation.requester import Follow, follow, job_report

    if timeout_s is None:
        left = (home.spec(job_id).deadline - datetime.now(UTC)).total_seconds()
        timeout_s = max(left, 0.0) + 60.0
    status = follow(home, session, job_id, Follow(timeout_s), _progress)
    delivered = len(status["delivered"])
    _progress(f"job {job_id}: finished, {delivered} of {len(status['sites'])} site(s) delivered")
    return job_report(home, job_id, session)


@job.command("status")
@click.argument("job_id")
@home_option
@json_option
def job_status(job_id: str, home_dir: Path | None, as_json: bool) -> None:
    """Where the job stands at each site (the hub's view; nothing is opened)."""
    from jip.federation.requester import HubSession

    with jip_errors():
        home = _open(home_dir)
        with HubSession(home) as session:
            status = session.status(job_id)
    if as_json:
        echo_json(status)
        return
    reached = "reached" if status["k_reached"] else "not reached"
    finished = "finished" if status["finished"] else "running"
    click.echo(
        f"job {job_id}: {finished}, k={status['min_sites']} {reached}, "
        f"{len(status['delivered'])} of {len(status['sites'])} delivered, "
        f"deadline {status['deadline']}, rounds {status['rounds']}"
    )
    rows = [[site, s["state"], s.get("reason")] for site, s in sorted(status["sites"].items())]
    table(["site", "state", "reason"], rows)


@job.command("results")
@click.argument("job_id")
@home_option
@json_option
def job_results(job_id: str, home_dir: Path | None, as_json: bool) -> None:
    """Open every site's result with your key and pool them: per output and group, each
    site's numbers and the pooled ones; Levene tests."""
    from jip.federation.requester import job_report

    with jip_errors():
        report = job_report(_open(home_dir), job_id)
    if as_json:
        echo_json(report)
    else:
        _print_report(report)


@job.command("list")
@home_option
@json_option
def job_list(home_dir: Path | None, as_json: bool) -> None:
    """The jobs submitted from this home (no hub needed)."""
    with jip_errors():
        jobs = _open(home_dir).list_jobs()
    if as_json:
        echo_json(jobs)
    else:
        rows = [[j["id"], j["title"], j["workflow"], j["submitted_at"], j["outputs"]] for j in jobs]
        table(["job", "title", "workflow", "submitted", "outputs"], rows)


# -- printing a report -----------------------------------------------------------------
STAT_COLUMNS = ("n", "mean", "variance", "min", "max", "counts", "below", "above")


def _print_report(report: dict[str, Any]) -> None:
    reached = "reached" if report["k_reached"] else "NOT reached"
    click.echo(
        f"job {report['job']} ({report['title']}, {report['workflow']}): k={report['k']} "
        f"{reached}; answered: {', '.join(report['sites_answered']) or 'none'}"
    )
    for gone in report["sites_missing"]:
        click.echo(f"  missing {gone['site']}: {gone['state']} ({gone.get('reason') or '-'})")
    for name, output in report["outputs"].items():
        click.echo(f"\n{name} ({output['kind']} of {output['field']})")
        rows = []
        for group, found in output["groups"].items():
            for site, stats in [*found["sites"].items(), ("pooled", found["pooled"])]:
                rows.append([group, site, *(_cell(stats, c) for c in STAT_COLUMNS)])
        columns = [c for i, c in enumerate(STAT_COLUMNS) if any(r[i + 2] is not None for r in rows)]
        keep = [i + 2 for i, c in enumerate(STAT_COLUMNS) if c in columns]
        table(["group", "site", *columns], [[r[0], r[1], *(r[i] for i in keep)] for r in rows])
        for group, found in output["groups"].items():
            for q, est in ((found["pooled"] or {}).get("quantiles") or {}).items():
                click.echo(f"  {group} q{q} ≈ {est['estimate']} (approximate, from bins)")
    if report["levene"]:
        click.echo("\nLevene tests")
        rows = [
            [t["name"], ",".join(t["groups"]), t["center"], t["W"], t["p"], t["df"], t["error"]]
            for t in report["levene"]
        ]
        table(["test", "groups", "centre", "W", "p", "df", "error"], rows)


def _cell(stats: dict[str, Any] | None, column: str) -> Any:
    return None if stats is None else stats.get(column)


def register(group: click.Group) -> None:
    """Add the researcher's groups to `jip fed`."""
    for command in (researcher, workflow, job):
        group.add_command(command)
