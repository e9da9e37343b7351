"""Fixtures for the workflow tests (execution environment, AWX-style runs, docs).

The AWX-style runs need a PIM sandbox: the one `tests/with-sandbox.sh` started (its directory in
ENTRA_PIM_SANDBOX_DIR), or one started here on a free loopback port and stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".tmp" / "collections"


class Sandbox:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.conn = json.loads((self.data_dir / "connection.json").read_text())
        self.control_url = self.conn["control_url"]
        self.session = requests.Session()

    def control(self, method: str, path: str, **kwargs):
        headers = {"X-PIM-Sandbox-Key": self.conn["control_key"], **kwargs.pop("headers", {})}
        resp = self.session.request(
            method, self.control_url + path, headers=headers, verify=self.conn["ca_bundle"], timeout=30, **kwargs
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None


@pytest.fixture(scope="session")
def collections_path() -> Path:
    """The collections path with entra.pim linked in, as the Makefile's `collection` target makes it."""
    link = COLLECTIONS / "ansible_collections" / "entra" / "pim"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    return COLLECTIONS


@pytest.fixture(scope="session")
def sandbox():
    given = os.environ.get("ENTRA_PIM_SANDBOX_DIR")
    if given:
        yield Sandbox(Path(given))
        return
    with tempfile.TemporaryDirectory(prefix="pim-sandbox-") as tmp:
        data = Path(tmp)
        log = open(data / "sandbox.log", "wb")  # noqa: SIM115 - open for the process' life
        proc = subprocess.Popen(
            [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(data)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not (data / "connection.json").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start: " + (data / "sandbox.log").read_text())
                time.sleep(0.1)
            yield Sandbox(data)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
