"""The `jip` command line: parse, call a service (in-process or over HTTP), print.

What the room holds:

- ``main``: the root group; it imports every subcommand module and adds its commands;
- ``site``: what the subcommands share: settings from flags, env and YAML; which site a
  command talks to (``--url`` -> ``JIP_API_URL`` -> the stored login's site -> the
  running local site -> the site's own URL) and with which token (``JIP_API_TOKEN`` ->
  the stored login's, only to its site); the token file of `jip login`; the HTTP client
  with readable errors; JSON and table output;
- one module per subcommand: ``up``, ``status``, ``user`` (with `jip login`/`logout`,
  `jip keycloak`), ``dicom``, ``cohort``, ``meta``, ``flow``, ``operator``, ``project``.

A subcommand module imports :mod:`jip.cli.site` and the parts of JIP it calls in-process
(the composition, ``jip.runtime``/``jip.backends``/``jip.embedded``, and any service's
modules), never another subcommand and never ``main``. Nothing in JIP imports ``cli``.
"""
