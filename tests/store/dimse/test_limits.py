"""The listener's gate: called AE title, loopback by default, association limits, deadlines.

Hand-made PDUs on raw sockets for what no well-behaved peer does (trickling bytes,
connections that never ask); dcmtk's echoscu/storescu for the called AE title.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context
from tests.store.dimse.support import answer_to, request_pdu, serving

from jip.config import Settings, StoreSettings
from jip.runtime import build_runtime
from jip.store.dimse.contexts import QueryRetrieveModel
from jip.store.dimse.listener import ListenerGroup
from jip.store.dimse.pdu import read_pdu

STUDY_ROOT_FIND = QueryRetrieveModel.STUDY_ROOT_FIND.value
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
# A-ASSOCIATE-RJ (PS3.8 §9.3.4): (result, source, reason/diagnostic).
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


def rejection(pdu: bytes) -> tuple[int, int, int]:
    assert pdu[0] == 0x03, f"A-ASSOCIATE-RJ expected, got PDU type {pdu[0]:#x}"
    return pdu[7], pdu[8], pdu[9]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes (or aborts) ``sock`` within ``seconds``, reading what comes."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def trickle(sock: socket.socket, data: bytes, every_s: float, give_up_s: float) -> float | None:
    """Send ``data`` a byte every ``every_s``; seconds until the peer hung up, or None."""
    start = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - start
        if closed_within(sock, every_s):
            return time.monotonic() - start
        if time.monotonic() - start > give_up_s:
            return None
    return None


# -- called AE title (PS3.8 §9.3.4) --------------------------------------------------------
@pytest.mark.parametrize("abstract", [CTImageStorage, STUDY_ROOT_FIND], ids=["fast-path", "pynetdicom"])  # fmt: skip
def test_an_association_for_another_ae_title_is_rejected(tmp_path: Path, abstract: str) -> None:
    with serving(tmp_path) as (_, server, _):
        port = server.server_address[1]
        answer = answer_to(port, request_pdu(abstract, called="OTHER"))
        assert rejection(answer) == CALLED_AE_NOT_RECOGNISED
        assert answer_to(port, request_pdu(abstract, called="JIP"))[0] == 0x02  # accepted


@pytest.mark.dcmtk
def test_echoscu_and_storescu_to_another_called_ae_are_told_so(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    with serving(tmp_path) as (_, server, _):
        port = str(server.server_address[1])
        for command in (
            ["echoscu", "-aec", "OTHER", "127.0.0.1", port],
            [
                "storescu",
                "-aec",
                "OTHER",
                "127.0.0.1",
                port,
                str(get_testdata_file("CT_small.dcm")),
            ],
        ):
            result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)  # fmt: skip
            assert result.returncode != 0
            assert "Called AE Title Not Recognized" in result.stderr, result.stderr


# -- loopback by default -----------------------------------------------------------------
def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: it picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_dicom_listener_listens_on_loopback_by_default(tmp_path: Path) -> None:
    assert StoreSettings().dicom_host == "127.0.0.1"
    settings = Settings(data_dir=tmp_path, store=StoreSettings(dicom_port=0, listener_processes=1))
    build_runtime(settings).close()
    group = ListenerGroup(settings, build_runtime)
    group.start()
    try:
        group.wait_ready(90)
        assert group.describe()["host"] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", group.port), timeout=5):
            pass
        other = _non_loopback_address()
        if other is not None:
            with socket.socket() as sock, pytest.raises(OSError):
                sock.settimeout(5)
                sock.connect((other, group.port))
    finally:
        group.stop()


# -- association limits, counted before the request --------------------------------------
def test_connections_over_the_limit_per_address_are_rejected(tmp_path: Path) -> None:
    with serving(tmp_path, max_associations_per_address=2) as (_, server, _):
        port = server.server_address[1]
        # Two connections that never send a request hold both places.
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        time.sleep(0.3)
        assert server.admission.counts()[0] == {"127.0.0.1": 2}
        assert rejection(answer_to(port, request_pdu())) == LOCAL_LIMIT_EXCEEDED
        silent.pop().close()
        deadline = time.monotonic() + 10
        while server.admission.counts()[0].get("127.0.0.1", 0) > 1:
            assert time.monotonic() < deadline, "the closed connection was not given back"
            time.sleep(0.05)
        assert answer_to(port, request_pdu())[0] == 0x02  # a place again
        silent.pop().close()


def test_associations_over_the_limit_per_calling_ae_are_rejected(tmp_path: Path) -> None:
    with serving(tmp_path, max_associations_per_ae=1) as (_, server, _):
        port = server.server_address[1]
        contexts = [build_context(CTImageStorage)]
        first = AE(ae_title="SAME").associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")  # fmt: skip
        try:
            assert first.is_established
            second = AE(ae_title="SAME").associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")  # fmt: skip
            assert second.is_rejected
            other = AE(ae_title="OTHER").associate("127.0.0.1", port, contexts=contexts, ae_title="JIP")  # fmt: skip
            assert other.is_established
            other.release()
        finally:
            first.release()


# -- deadlines ---------------------------------------------------------------------------
def test_a_peer_trickling_its_association_request_is_dropped(tmp_path: Path) -> None:
    """A byte every 0.2 s never trips an idle timeout; the request deadline drops it."""
    with serving(tmp_path, association_timeout_s=2) as (_, server, _):
        sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
        with sock:
            dropped_after = trickle(sock, request_pdu(), every_s=0.2, give_up_s=8)
        assert dropped_after is not None and dropped_after < 5


def test_a_peer_sending_a_byte_every_20_s_is_dropped_by_default(tmp_path: Path) -> None:
    """The default request deadline (10 s) ends it before its second byte."""
    with (
        serving(tmp_path) as (_, server, _),
        socket.create_connection(("127.0.0.1", server.server_address[1])) as sock,
    ):
        sock.sendall(request_pdu()[:1])
        assert closed_within(sock, 15)


@pytest.mark.parametrize("abstract", [CTImageStorage, STUDY_ROOT_FIND], ids=["fast-path", "pynetdicom"])  # fmt: skip
def test_a_peer_trickling_a_pdu_in_an_association_is_dropped(tmp_path: Path, abstract: str) -> None:
    with serving(tmp_path, pdu_timeout_s=2, unknown_ae_store=True) as (_, server, _):
        sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
        with sock:
            sock.sendall(request_pdu(abstract))
            assert read_pdu(sock, 1 << 20)[0] == 0x02
            # A P-DATA-TF announcing 100 bytes, sent a byte every 0.2 s.
            pdu = bytes.fromhex("04 00 00000064") + bytes(100)
            dropped_after = trickle(sock, pdu, every_s=0.2, give_up_s=8)
        assert dropped_after is not None and dropped_after < 5
