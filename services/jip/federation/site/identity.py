"""Who this site is in a federation: its site id and its Ed25519 identity key.

A site that joined a hub has both from `jip fed join` (``hub.json``, ``identity.key``).
A site that never connects to a hub takes part by bundles alone: `jip fed offline-init
SITE_ID` makes its identity key and ``offline.json`` (not ``hub.json``, so `jip up`
runs no hub agent). Either way the researcher gets the public key (`jip fed identity`)
by a channel they trust, and checks the site's result bundles with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from jip.errors import Conflict, Invalid, NotFound
from jip.federation.crypto import (
    SigningKeyPair,
    decode_bytes,
    encode_key,
    generate_signing_keys,
    key_id,
)
from jip.federation.private_files import write_private
from jip.federation.site.files import SiteFiles

SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # protocol's Identifier


@dataclass(frozen=True)
class SiteIdentity:
    site_id: str
    keys: SigningKeyPair

    def describe(self) -> dict[str, str]:
        public = encode_key(self.keys.public)
        return {"site_id": self.site_id, "identity_key": public, "key_id": key_id(self.keys.public)}


def offline_json(files: SiteFiles) -> Path:
    return files.root / "offline.json"


def site_identity(files: SiteFiles) -> SiteIdentity:
    """This site's id and identity keys (joined, or set up for bundles only)."""
    if files.joined:
        about = files.hub()
    elif offline_json(files).exists():
        about = json.loads(offline_json(files).read_text())
    else:
        raise NotFound(
            f"{files.root}: this site has no federation identity: `jip fed join HUB_URL "
            "--token T`, or for bundles only `jip fed offline-init SITE_ID`"
        )
    private = decode_bytes(files.identity_key.read_text().strip(), "identity.key", 32)
    public = decode_bytes(str(about["identity_key"]), "identity_key", 32)
    return SiteIdentity(str(about["site_id"]), SigningKeyPair(public, private))


def init_offline(files: SiteFiles, site_id: str) -> SiteIdentity:
    """Make the identity of a site that takes part by bundles alone."""
    if not SITE_ID.fullmatch(site_id):
        raise Invalid(f"site id {site_id!r}: letters, digits, '_' and '-', at most 64")
    if files.joined or files.identity_key.exists():
        raise Conflict(f"{files.root}: this site has a federation identity already")
    files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.root.chmod(0o700)
    keys = generate_signing_keys()
    write_private(files.identity_key, encode_key(keys.private).encode())
    files.ledger_secret()
    about = {"site_id": site_id, "identity_key": encode_key(keys.public)}
    write_private(offline_json(files), json.dumps(about, indent=2).encode())
    return SiteIdentity(site_id, keys)
