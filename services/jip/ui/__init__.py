"""The researcher's web UI: server-rendered pages over the site's own HTTP API."""
