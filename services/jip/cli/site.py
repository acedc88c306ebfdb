"""What every `jip` subcommand shares: settings, which site, which token, HTTP, output.

Every subcommand module imports this one (and the services it calls in-process), never
another subcommand, so the rules below hold for all of them.

**Which site** a command talks to, the first that is set:

1. ``--url`` on the command line;
2. ``api_url`` of the settings (``JIP_API_URL``, or the YAML file of ``JIP_CONFIG``);
3. the site of the stored login (`jip login --url …` keeps it beside the token);
4. the site running from this data dir (the state file `jip up` writes), its wildcard
   address (``0.0.0.0``) turned into loopback;
5. the site's own URL from the settings (``auth.public_url``, else
   ``http://<http_host>:<http_port>``).

**Which token**: ``JIP_API_TOKEN`` when set; else the stored login's token (refreshed
when it expired), and only towards the site it was issued for, so that ``--url`` to
another site never carries it there; else none (a site with auth disabled takes that,
one with auth enabled answers that a login is needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from jip.config import Settings, reachable_host
from jip.errors import JipError, detail_of

if TYPE_CHECKING:  # imported where used: `jip up` reads its settings here, and no HTTP
    import httpx

TOKEN_FILE = "token.json"
REFRESH_MARGIN_S = 30
TIMEOUT_S = 300.0


# -- settings ------------------------------------------------------------------------------
def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings from YAML/env, then the global `--data-dir` and the command's flags."""
    values: dict[str, Any] = dict(ctx.find_root().obj or {})
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition("__")
        if field:
            values.setdefault(section, {})[field] = value
        else:
            values[key] = value
    return Settings(**values)  # pydantic-settings deep-merges these over env and YAML


# -- the stored login ----------------------------------------------------------------------
def token_path() -> Path:
    return Path(click.get_app_dir("jip")) / TOKEN_FILE


def save_token(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``data`` readable by its owner only (0600), replacing the file atomically."""
    path = path or token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover partial file may have had another mode
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def load_token(path: Path | None = None) -> dict[str, Any]:
    path = path or token_path()
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException("not logged in: run `jip login`") from None
    return data


def stored_login(path: Path | None = None) -> dict[str, Any] | None:
    """The stored login (site, issuer, tokens), or None when nobody is logged in."""
    path = path or token_path()
    return load_token(path) if path.exists() else None


def issuer_client() -> httpx.Client:
    """The HTTP client for the token issuer (login, refresh, logout)."""
    import httpx

    return httpx.Client(timeout=30)


def token_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a token response (RFC 6749 §5.1) that the token file keeps."""
    now = time.time()
    return {
        "access_token": body["access_token"],
        "refresh_token": body.get("refresh_token", ""),
        "expires_at": now + float(body.get("expires_in", 0)),
        "refresh_expires_at": now + float(body.get("refresh_expires_in", 0)),
    }


def bearer_token(path: Path | None = None) -> str:
    """A valid access token from the token file, refreshed (and saved) when it expired."""
    from jip.base import CLI_CLIENT

    data = load_token(path)
    if data.get("expires_at", 0) - REFRESH_MARGIN_S > time.time():
        return str(data["access_token"])
    with issuer_client() as client:
        response = client.post(
            data["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": data["refresh_token"],
                "client_id": data.get("client_id", CLI_CLIENT),
            },
        )
    if response.status_code != 200:
        raise click.ClickException("the session expired: run `jip login` again")
    data.update(token_fields(response.json()))
    save_token(data, path)
    return str(data["access_token"])


# -- which site, which token ---------------------------------------------------------------
def site_url_of(settings: Settings, url: str | None = None) -> str:
    """The site a command talks to, in the order of this module's docstring."""
    from jip.base import site_url

    login = stored_login()
    for candidate in (url, settings.api_url, login and login.get("site")):
        if candidate:
            return str(candidate).rstrip("/")
    return running_site_url(settings) or site_url(settings).rstrip("/")


def running_site_url(settings: Settings) -> str | None:
    """The URL of the site `jip up` runs from ``settings.data_dir``, reachable from here."""
    if not settings.state_file.exists():
        return None
    parts = urlsplit(json.loads(settings.state_file.read_text())["http"])
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{reachable_host(parts.hostname or '')}{port}{parts.path}".rstrip("/")


def token_for(settings: Settings, site: str) -> str | None:
    """The bearer token for ``site``, by the rule of this module's docstring."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    login = stored_login()
    if login is not None and same_site(str(login.get("site", "")), site):
        return bearer_token()
    return None


def same_site(a: str, b: str) -> bool:
    """Whether two URLs name the same origin (scheme, host, port) and path."""
    x, y = urlsplit(a.rstrip("/")), urlsplit(b.rstrip("/"))
    default = {"http": 80, "https": 443}
    return (x.scheme, x.hostname, x.port or default.get(x.scheme), x.path) == (
        y.scheme,
        y.hostname,
        y.port or default.get(y.scheme),
        y.path,
    )


# -- talking to the site -------------------------------------------------------------------
class SiteClient:
    """JSON over HTTP to one site; HTTP errors become messages, not tracebacks."""

    def __init__(self, base_url: str, token: str | None, hint: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.hint = hint  # said after a 401: how to log in to this site
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=TIMEOUT_S)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (text for other media types, None when empty)."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            message = f"{detail_of(response)} (HTTP {response.status_code})"
            if response.status_code == 401 and self.hint:
                message = f"{message}: {self.hint}"
            raise click.ClickException(message)
        if response.status_code == 204 or not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SiteClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def site_client(ctx: click.Context, url: str | None = None) -> SiteClient:
    """A client for the site this command talks to, with the token for it."""
    settings = settings_from(ctx)
    site = site_url_of(settings, url)
    token = token_for(settings, site)
    login = stored_login()
    if token is not None:
        hint = ""
    elif login is not None and login.get("site"):
        hint = f"logged in to {login['site']}, not here: run `jip login --url {site}`"
    else:
        hint = f"run `jip login --url {site}`"
    return SiteClient(site, token, hint)


# -- options and output --------------------------------------------------------------------
url_option = click.option(
    "--url", default=None, help="The site (default: JIP_API_URL, the login's, the running one)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@contextlib.contextmanager
def jip_errors() -> Iterator[None]:
    """JIP's errors as one-line messages (they say what to do next), not tracebacks."""
    try:
        yield
    except JipError as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Rows under headers, columns as wide as their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "\\".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; ``op.key=v`` sets a key of an operator's object; v is JSON or text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        target = params
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise click.BadParameter(
                    f"{key!r}: {parent} is not an object", param_hint="--param"
                )
        target[leaf] = value
    return params
