"""The federation hub: one per research network (`jip hub`), its own app and database.

It holds the network's sites (enrolled by one-time token, known by the client
certificate its CA issued), the researchers allowed to submit (bearer tokens), jobs and
their state per site, and results sealed to the researcher's key, which it relays and
cannot read. It never holds images or per-record values. Sites only connect out:
they long-poll for work over HTTPS with mutual TLS.

HTTP API (JSON; /api/site/* needs the site's client certificate, /api/jobs* a
researcher's bearer token):

- ``POST /api/enrol {token, csr_pem, identity_key, box_key}`` -> ``{site_id,
  certificate_pem, ca_pem}``; the token reads ``<site_id>.<secret>`` and the CSR's CN
  must be that site id.
- ``GET /api/site/jobs?wait=S`` -> ``{jobs: [JobSpec], rounds: [RoundRequest]}`` not yet
  acknowledged by the site, waiting up to S (at most 30) seconds for one; a round is
  sent only to the sites it is sealed to, with the site's own entry alone.
- ``POST /api/site/jobs/{id}/ack[?round=N]`` -> 204 (round 1 is the job itself).
- ``POST /api/site/jobs/{id}/state`` SiteJobStatus -> 204.
- ``POST /api/site/jobs/{id}/results`` SiteResult -> 204; once per (job, site, round).
- ``POST /api/jobs`` JobSpec -> ``{id}``; ``GET /api/jobs/{id}`` -> spec, per-site state,
  ``delivered``, ``missed_deadline``, ``k_reached``, ``finished``; ``GET
  /api/jobs/{id}/results[?round=N]`` -> [SiteResult]; ``POST /api/jobs/{id}/rounds``
  RoundRequest -> 204 (sealed per site: the hub stores and relays ciphertext only; the
  same request again is accepted, another for an existing round is a Conflict).
- ``GET /api/sites`` -> ``[{site_id, box_key, identity_key}]`` of the enrolled sites
  (researcher's token): the keys a researcher seals later rounds to. The researcher
  trusts the hub for them; a site's admin can show its own keys (`jip fed identity`).
- ``GET /healthz``.

Modules: ``home`` (the data dir, init and open), ``pki`` (CA and certificates),
``tables`` (the hub's database), ``registry`` (sites, enrolment, researchers), ``jobs``
(the researcher's side), ``relay`` (the sites' side), ``app`` (HTTP), ``server``
(uvicorn with client certificates).
"""

from jip.federation.hub.app import create_app
from jip.federation.hub.home import Hub, HubPaths, init_hub, open_hub
from jip.federation.hub.registry import Enrolment, add_researcher, add_site, list_sites
from jip.federation.hub.server import PeerCertProtocol, serve, server_config

__all__ = [
    "Enrolment",
    "Hub",
    "HubPaths",
    "PeerCertProtocol",
    "add_researcher",
    "add_site",
    "create_app",
    "init_hub",
    "list_sites",
    "open_hub",
    "serve",
    "server_config",
]
