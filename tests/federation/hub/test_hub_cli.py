"""`jip hub init|up|site add|site list|researcher add`, the hub admin's commands."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner, Result
from cryptography import x509
from tests.support.network import free_port

from jip.cli.main import _register, cli

_register()


def jip(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_init_makes_a_private_ca_and_a_server_certificate_once(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    made = jip("hub", "init", "--data-dir", str(hub_dir), "--host", "hub.example.org", "--json")
    assert made.exit_code == 0, made.output
    for name in ("ca.key", "server.key", "hub.db"):
        assert stat.S_IMODE(os.stat(hub_dir / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(hub_dir).st_mode) == 0o700
    server = x509.load_pem_x509_certificate((hub_dir / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "hub.example.org"} <= set(names.get_values_for_type(x509.DNSName))
    ca_before = (hub_dir / "ca.pem").read_bytes()
    again = jip("hub", "init", "--data-dir", str(hub_dir))
    assert again.exit_code != 0 and "already holds a hub" in again.output
    assert (hub_dir / "ca.pem").read_bytes() == ca_before


def test_tokens_are_printed_once_and_stored_hashed(tmp_path: Path) -> None:
    hub_dir = str(tmp_path / "hub")
    jip("hub", "init", "--data-dir", hub_dir)
    site = json.loads(jip("hub", "site", "add", "alpha", "--data-dir", hub_dir, "--json").output)
    researcher = json.loads(
        jip("hub", "researcher", "add", "rita", "--data-dir", hub_dir, "--json").output
    )
    assert site["site_id"] == "alpha" and site["token"].startswith("alpha.")
    assert len(site["ca_sha256"]) == 64 and site["expires_at"]
    stored = b"".join(p.read_bytes() for p in Path(hub_dir).glob("hub.db*"))
    for token in (site["token"], researcher["token"]):
        assert token.encode() not in stored
        assert token.split(".")[-1].encode() not in stored
    listed = json.loads(jip("hub", "site", "list", "--data-dir", hub_dir, "--json").output)
    assert [(s["site_id"], s["enrolled"]) for s in listed] == [("alpha", False)]
    bad = jip("hub", "site", "add", "no spaces", "--data-dir", hub_dir)
    assert bad.exit_code != 0 and "letters, digits" in bad.output
    twice = jip("hub", "researcher", "add", "rita", "--data-dir", hub_dir)
    assert twice.exit_code != 0 and "already exists" in twice.output


def test_commands_on_a_dir_without_a_hub_say_how_to_make_one(tmp_path: Path) -> None:
    found = jip("hub", "site", "list", "--data-dir", str(tmp_path / "none"))
    assert found.exit_code != 0 and "jip hub init" in found.output


def test_hub_up_serves_https_and_asks_sites_for_their_certificate(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    jip("hub", "init", "--data-dir", str(hub_dir))
    port = free_port()
    jip_command = Path(sys.executable).with_name("jip")
    process = subprocess.Popen(
        [str(jip_command), "hub", "up", "--data-dir", str(hub_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    context = ssl.create_default_context(cafile=str(hub_dir / "ca.pem"))
    try:
        with httpx.Client(base_url=f"https://localhost:{port}", verify=context) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                try:
                    health = client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "`jip hub up` did not answer"
                    time.sleep(0.2)
            assert health.json() == {"status": "ok"}
            assert client.get("/api/site/jobs").status_code == 401
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as plain:
            try:
                answered = plain.get("/healthz").status_code
            except httpx.TransportError:
                answered = None
            assert answered != 200  # no plain HTTP
    finally:
        process.terminate()
        process.wait(30)
