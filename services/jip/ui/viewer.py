"""The link from a study or series to a viewer: JIP's own OHIF at ``/viewer``, or a
site's own viewer from ``ui.viewer_url_template``.

Templates call ``viewer_url(study, series)``. A template, when set, wins (a site with
its own viewer keeps it); otherwise the link opens the study in the OHIF that JIP serves
(:mod:`jip.ui.ohif`), with the series shown first. None when neither is there, so a page
shows the link only where the site has a viewer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from jip.config import UiSettings
from jip.ui.ohif import installed_dist, viewer_link


def format_viewer_url(template: str | None, study: str, series: str) -> str | None:
    """``template`` with ``{study}`` and ``{series}`` replaced by the URL-quoted UIDs."""
    if not template:
        return None
    return template.format(study=quote(study, safe=""), series=quote(series, safe=""))


def viewer_url_for(settings: UiSettings, study: str, series: str) -> str | None:
    """The site's viewer template, else JIP's OHIF when it is installed, else None."""
    if settings.viewer_url_template:
        return format_viewer_url(settings.viewer_url_template, study, series)
    if installed_dist(settings.ohif) is None:
        return None
    return viewer_link(quote(study, safe=""), quote(series, safe=""))


@pass_context
def viewer_url(context: Context, study: str, series: str) -> str | None:
    request: Any = context.get("request")
    return viewer_url_for(request.app.state.runtime.settings.ui, study, series)


def add_template_globals(env: Environment) -> None:
    env.globals["viewer_url"] = viewer_url
