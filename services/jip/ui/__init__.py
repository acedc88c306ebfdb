"""UI: the researcher's and the admin's web pages, and the status page behind them.

What the room holds:

- ``routes`` (the page router, templates, login through the embedded issuer's browser
  flow), ``session`` (the session cookie and CSRF), ``api`` (the pages' client of the
  site's own HTTP API);
- the pages: ``explore`` and ``series`` (cohort search, the series viewer and its SEG
  ``overlay``), ``runs`` and ``workflow_form`` (starting and following workflows),
  ``admin`` (status, users, projects, audit), ``admin_assignment`` (assignment rules),
  ``admin_peers`` (DICOM peers, auto-rules), ``viewer`` (the link to a viewer),
  ``ohif`` (OHIF v3 at /viewer: its files, its generated config, a read-only DICOMweb
  mount that takes the session cookie) with ``ohif_fetch`` (the pinned @ohif/app,
  fetched by `make install`); ``upload``, ``download`` and ``forward`` (files in and
  zips out, streamed through the API), ``pacs`` (query and retrieve, saved queries),
  ``forwarding`` (forwarding rules and dead letters), ``charts`` with ``chart_routes``
  (facet distributions as server-drawn SVG); ``federation_admin`` and ``federation_policy`` (the site's federation
  queue, policy, trusted keys and audit), ``federation_studies`` with
  ``federation_report`` (the researcher's federated studies: per-site and pooled tables,
  SVG plots); ``templates/`` and ``static/``;
- ``status``: ``GET /api/admin/status``, the site at a glance for the admin overview.

The pages are server-rendered over the same HTTP API the CLI uses. The UI calls the
services only through their public interfaces (``jip.base``, ``jip.store``,
``jip.meta``, ``jip.flow``; ``jip.federation`` with its ``site`` and ``requester``
packages, which have no HTTP API of the site's own) and may read the site's adapters
through ``jip.runtime``; only ``jip.app`` (and above it ``embedded`` and ``cli``) imports it.
"""
