"""`jip fed`: this site in a federation: join a hub, its policy, trusted keys, the
approval queue, and the agent.

Everything here works on the site's own data dir and catalog, in-process (no login):
the commands are for the site admin at the machine, like `jip user`.

    jip fed join https://hub:8443 --token T --ca hub-ca.pem
    jip fed trust add publisher-a BASE64KEY
    jip fed policy set projects=prostate approval=manual min_cohort_size=20
    jip fed queue
    jip fed approve JOB
    jip fed agent --forever     # `jip up` runs it by itself once the site has joined

Bundles carried by hand, the site's identity and the vocabulary mapping: cli/fed_site.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from jip.cli.fed_site import COMMANDS, actor, site_catalog, site_images
from jip.cli.site import echo_json, json_option, table

# The helpers live in fed_site (the site's other commands use them too); kept under these
# names for the commands here.
_site = site_catalog
_actor = actor


@click.group()
def fed() -> None:
    """Take part in federated studies: join a hub, set the policy, approve jobs."""


@fed.command()
@click.argument("hub_url")
@click.option("--token", required=True, help="The one-time enrolment token from the hub.")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The hub's CA certificate (ca.pem), to check the hub before sending the token.",
)
@click.option(
    "--name", default=None, help="The site id for the certificate request (default: the token's)."
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@json_option
@click.pass_context
def join(
    ctx: click.Context,
    hub_url: str,
    token: str,
    ca_file: Path | None,
    name: str | None,
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Enrol this site with a hub: make its keys and get its client certificate."""
    from jip.base import AuditLog
    from jip.federation.site import SiteFiles
    from jip.federation.site import join as enrol

    with _site(ctx, data_dir) as (settings, engine):
        hub = enrol(SiteFiles.of(settings.data_dir), hub_url, token, name=name, ca_file=ca_file)
        AuditLog(engine).record("fed.join", username=_actor(), target=hub["hub_url"], detail=hub)
    if as_json:
        echo_json(hub)
    else:
        click.echo(f"Joined {hub['hub_url']} as site {hub['site_id']}.")


@fed.command()
@click.option("--once", "mode", flag_value="once", default=True, help="One poll, then exit.")
@click.option("--forever", "mode", flag_value="forever", help="Poll until interrupted.")
@click.option("--wait", "wait_s", type=float, default=25.0, help="Long-poll seconds (≤ 30).")
@click.pass_context
def agent(ctx: click.Context, mode: str, wait_s: float) -> None:
    """Run the federation agent: take jobs, decide, run, send sealed results."""
    from jip.backends import index_for
    from jip.federation.site import SiteAgent, SiteFiles, hub_agent

    with _site(ctx) as (settings, engine):
        index = index_for(settings.resolved_index_url)
        files = SiteFiles.of(settings.data_dir)
        images = site_images(settings, engine, index)
        runner = hub_agent(SiteAgent(engine, index, files, wait_s=wait_s, images=images))
        try:
            if mode == "once":
                new = runner.cycle()
                click.echo(f"{new} new job round(s).")
            else:
                runner.run_forever()
        except KeyboardInterrupt:  # pragma: no cover - interactive
            pass
        finally:
            index.close()


@fed.group()
def policy() -> None:
    """This site's federation policy."""


@policy.command("show")
@json_option
@click.pass_context
def policy_show(ctx: click.Context, as_json: bool) -> None:
    from jip.federation.site import Policies

    with _site(ctx) as (_, engine):
        document = Policies(engine).get().model_dump(mode="json")
    if as_json:
        echo_json(document)
    else:
        table(["setting", "value"], [[k, v] for k, v in document.items()])


@policy.command("set")
@click.argument("changes", nargs=-1, required=True)
@click.pass_context
def policy_set(ctx: click.Context, changes: tuple[str, ...]) -> None:
    """KEY=VALUE ...: projects, approval (manual|automatic), min_cohort_size,
    min_cell_count, allowed_outputs (lists comma-separated)."""
    from jip.base import AuditLog
    from jip.federation.site import Policies

    pairs = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep:
            raise click.BadParameter(f"{change}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    with _site(ctx) as (_, engine):
        document = Policies(engine).set(pairs).model_dump(mode="json")
        AuditLog(engine).record("fed.policy.set", username=_actor(), detail=document)
    echo_json(document)


@fed.group()
def trust() -> None:
    """The workflow signing keys this site trusts."""


@trust.command("add")
@click.argument("name")
@click.argument("public_key")
@click.pass_context
def trust_add(ctx: click.Context, name: str, public_key: str) -> None:
    """Trust workflows signed by PUBLIC_KEY (base64 Ed25519)."""
    from jip.base import AuditLog
    from jip.federation.site import Policies

    with _site(ctx) as (_, engine):
        kid = Policies(engine).trust(name, public_key)
        AuditLog(engine).record(
            "fed.trust.add", username=_actor(), target=name, detail={"key_id": kid}
        )
    click.echo(f"Trusting {name} (key {kid}).")


@trust.command("list")
@json_option
@click.pass_context
def trust_list(ctx: click.Context, as_json: bool) -> None:
    from jip.federation.site import Policies

    with _site(ctx) as (_, engine):
        keys = Policies(engine).trusted_list()
    if as_json:
        echo_json(keys)
    else:
        table(["name", "key_id"], [[k["name"], k["key_id"]] for k in keys])


@fed.command()
@click.option("--all", "show_all", is_flag=True, help="Every job, not only those waiting.")
@json_option
@click.pass_context
def queue(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Jobs waiting for approval, with exactly what each would send."""
    from jip.federation.protocol import SiteJobState
    from jip.federation.site import JobBook, queue_view

    with _site(ctx) as (_, engine):
        states = None if show_all else [SiteJobState.QUEUED]
        views = [queue_view(r) for r in JobBook(engine).all(states) if r.round == 1]
    if as_json:
        echo_json(views)
        return
    for view in views:
        click.echo(
            f"{view['job_id']}  {view['state']}  project {view['project']}  "
            f"workflow {view['workflow']['name']}  cohort {view['cohort']['name']!r}"
        )
        for output in view["outputs"]:
            keys = ", ".join(output["leaves"])
            click.echo(f"    {output['name']} ({output['kind']} of {output['field']}): {keys}")


@fed.command()
@click.argument("job_id")
@click.pass_context
def approve(ctx: click.Context, job_id: str) -> None:
    """Approve a queued job (the agent runs it on its next cycle; a job that came by
    bundle runs now)."""
    from jip.federation.site import JobBook, SiteFiles, carried, settle_carried
    from jip.federation.site import approve as approve_job

    with _site(ctx) as (settings, engine):
        approve_job(engine, job_id, _actor())
        if carried(engine, job_id) is not None:
            from jip.cli.fed_site import site_images, site_index

            with site_index(settings) as index:
                images = site_images(settings, engine, index)
                settle_carried(engine, index, SiteFiles.of(settings.data_dir), images)
            record = JobBook(engine).get(job_id)
            why = f": {record.reason}" if record.reason else ""
            click.echo(f"Approved {job_id}: {record.state.value}{why}.")
            return
    click.echo(f"Approved {job_id}.")


@fed.command()
@click.argument("job_id")
@click.option("--reason", required=True, help="Why (the researcher sees it).")
@click.pass_context
def reject(ctx: click.Context, job_id: str, reason: str) -> None:
    """Refuse a queued job; the hub is told why."""
    from jip.federation.site import reject as reject_job

    with _site(ctx) as (_, engine):
        reject_job(engine, job_id, _actor(), reason)
    click.echo(f"Refused {job_id}.")


from jip.cli import fed_job  # noqa: E402  (the researcher's groups, after `fed` exists)

fed_job.register(fed)

for _command in COMMANDS:  # bundles, identity, mapping (cli/fed_site.py)
    fed.add_command(_command)
