"""Fixtures for the integration playbooks: one PIM sandbox per test process.

Each pytest process (each xdist worker under `make test`) starts its own sandbox on a free
loopback port in a temporary directory and stops it by PID at the end, pass or fail, so
targets running in parallel never share state. `make integration` runs one process under
tests/with-sandbox.sh instead, which passes its sandbox in ENTRA_PIM_SANDBOX_DIR.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


class Sandbox:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.conn = json.loads((self.data_dir / "connection.json").read_text())
        self.control_url = self.conn["control_url"]
        self.ca = self.conn["ca_bundle"]
        self.session = requests.Session()

    def env(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "pim_emulator", "env", "--data-dir", str(self.data_dir)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        env = {}
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("export "):
                name, dummy, value = line[len("export ") :].partition("=")
                env[name] = shlex.split(value)[0] if value else ""
        return env

    def playbook_env(self, workdir: Path, **extra) -> dict:
        """The environment of an ansible-playbook run against this sandbox, its token cache in ``workdir``."""
        env = dict(os.environ)
        env.update(self.env())
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".tmp" / "collections"),
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_NOCOLOR="1",
            # Feed modules over stdin instead of temp files: several fewer processes per task.
            ANSIBLE_PIPELINING="1",
            ENTRA_PIM_TOKEN_CACHE_PATH=str(Path(workdir) / "token_cache.json"),
            **extra,
        )
        return env

    def ansible_playbook(self, workdir: Path, playbook: Path, *args, timeout=600, env=None) -> str:
        """Run ``playbook`` in ``workdir``; a failed play fails the test with its output. Returns stdout."""
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook), *args],
            cwd=workdir,
            env=env or self.playbook_env(workdir),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail("%s failed:\n%s\n%s" % (playbook, proc.stdout[-20000:], proc.stderr[-5000:]))
        return proc.stdout

    def control(self, method: str, path: str, **kwargs):
        headers = {"X-PIM-Sandbox-Key": self.conn["control_key"], **kwargs.pop("headers", {})}
        resp = self.session.request(
            method, self.control_url + path, headers=headers, verify=self.ca, timeout=30, **kwargs
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None


def _start(data_dir: Path) -> subprocess.Popen:
    log = open(data_dir / "sandbox.log", "wb")  # noqa: SIM115 - kept open for the process' life
    proc = subprocess.Popen(
        [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (data_dir / "connection.json").exists():
            return proc
        if proc.poll() is not None:
            raise RuntimeError("sandbox exited: " + (data_dir / "sandbox.log").read_text())
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sandbox did not become ready within 30 s")


@pytest.fixture(scope="session")
def sandbox():
    given = os.environ.get("ENTRA_PIM_SANDBOX_DIR")
    if given and not os.environ.get("PYTEST_XDIST_WORKER"):
        yield Sandbox(Path(given))
        return
    with tempfile.TemporaryDirectory(prefix="pim-sandbox-") as tmp:
        proc = _start(Path(tmp))
        try:
            yield Sandbox(Path(tmp))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
