"""Serving a FastAPI app with uvicorn in a thread, for tests that need a real socket.

Clients that speak HTTP themselves (dicomweb-client, the CLI, Airflow's tasks, a
browser) need a listening port; ``TestClient`` only serves in-process calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from tests.support.network import free_port


@contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 30
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://host:port``)."""
    port = port or free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="jip-test-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the test HTTP server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
