"""The link from a series to an external viewer (OHIF, …), from ``ui.viewer_url_template``.

Templates call ``viewer_url(study, series)``; it gives None when no viewer is
configured, so a page shows the link only where the site has a viewer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jinja2 import Environment, pass_context
from jinja2.runtime import Context


def format_viewer_url(template: str | None, study: str, series: str) -> str | None:
    """``template`` with ``{study}`` and ``{series}`` replaced by the URL-quoted UIDs."""
    if not template:
        return None
    return template.format(study=quote(study, safe=""), series=quote(series, safe=""))


@pass_context
def viewer_url(context: Context, study: str, series: str) -> str | None:
    request: Any = context.get("request")
    settings = request.app.state.runtime.settings
    return format_viewer_url(settings.ui.viewer_url_template, study, series)


def add_template_globals(env: Environment) -> None:
    env.globals["viewer_url"] = viewer_url
