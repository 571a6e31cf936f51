"""``workbench app`` stops its Streamlit server when it is stopped (SIGTERM, SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_app_stops_its_server(signum: int, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "WORKBENCH_ARGON2_PROFILE": "fast", "GX_ANALYTICS_ENABLED": "false"}
    env.pop("WORKBENCH_DB_URL", None)
    command = [sys.executable, "-c", "from workbench.cli import main; main()", "app"]
    command += ["--workdir", str(tmp_path / "wb"), "--port", str(port), "--address", "127.0.0.1"]
    app = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert app.poll() is None, f"workbench app exited early with {app.returncode}"
            assert time.monotonic() < deadline, "the server never listened on its port"
            time.sleep(0.5)
        app.send_signal(signum)
        app.wait(timeout=60)
        deadline = time.monotonic() + 30
        while not _port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _port_is_free(port), "the Streamlit server still holds the port"
        assert not _listening(port)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
