"""Fixtures for the PIM sandbox tests (tests/emulator/test_platform_*.py and test_pim_*.py).

Stable fixture names (shared by the platform and PIM test files):

``sandbox`` (session scope)
    One sandbox process for the whole session (``python -m pim_emulator serve --port 0
    --data-dir <tmp>``), stopped by PID at the end; the session fails if the sandbox logged
    an internal error (a 500) at any point. The object has:

    * ``conn``: the parsed connection.json; ``data_dir``: its directory (Path)
    * ``base_url`` (``https://127.0.0.1:PORT``), ``graph`` (``base_url + "/v1.0"``), ``ca`` (CA bundle path)
    * ``session``: a ``requests.Session`` that trusts the sandbox CA
    * ``token(app="primary", user=None, claims=None, scopes=None, roles=None)`` -> access token minted
      through the control API; ``app`` is ``"primary"``, ``"readonly"``, ``"certificate"`` or an appId;
      ``user`` (UPN or id) gives a delegated token
    * ``headers(app="primary", user=None, **kw)`` -> ``{"Authorization": "Bearer ..."}``
    * ``request(method, path, app="primary", user=None, token=None, **kw)`` -> ``requests.Response``
      for a Graph path relative to ``/v1.0`` (``"/users"``); also ``get``, ``post``, ``patch``, ``delete``
    * ``control(method, path, json=None)`` -> parsed JSON of a control call (``path`` relative to
      ``/_emulator``, e.g. ``"/stats"``, sent with the ``X-PIM-Sandbox-Key`` header from
      connection.json); raises AssertionError on an error status.
      ``control_raw(...)`` returns the ``requests.Response``.
    * ``control_headers()`` -> ``{"X-PIM-Sandbox-Key": <control_key>}``
    * ``stats()`` -> ``GET /_emulator/stats``

``fresh`` (function scope)
    The same object after ``POST /_emulator/reset`` (seed reloaded, clock, faults and settings back
    to the defaults) and ``POST /_emulator/stats/reset``. Use it in every test that changes state.

``SandboxProcess`` (a class, import it with ``from conftest import SandboxProcess``... or use the
``sandbox_factory`` fixture): start extra sandboxes with their own data dir and CLI flags
(restart and CLI tests). ``sandbox_factory(data_dir, *extra_args)`` -> started ``SandboxProcess``;
every one started is stopped at the end of the test.
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

START_TIMEOUT = 30


class SandboxProcess:
    def __init__(self, data_dir, *extra_args):
        self.data_dir = Path(data_dir)
        self.extra_args = [str(a) for a in extra_args]
        self.proc: subprocess.Popen | None = None
        self.conn: dict = {}
        self.session = requests.Session()
        self._tokens: dict = {}

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> SandboxProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conn_path = self.data_dir / "connection.json"
        if conn_path.exists():
            conn_path.unlink()
        self.log_path = self.data_dir / "sandbox.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        cmd = [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd + self.extra_args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if conn_path.exists():
                try:
                    self.conn = json.loads(conn_path.read_text())
                    if self.conn.get("pid") == self.proc.pid:
                        break
                except ValueError:
                    pass  # cannot happen with the atomic write, but do not trust it blindly
            if self.proc.poll() is not None:
                raise RuntimeError("sandbox exited during start:\n" + self.log_text())
            time.sleep(0.05)
        else:
            self.kill()
            raise RuntimeError("sandbox not ready within %ss:\n%s" % (START_TIMEOUT, self.log_text()))
        self.session = requests.Session()
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment override Session.verify in requests;
        # ignore the environment for this loopback-only session.
        self.session.trust_env = False
        self.session.verify = self.conn["ca_bundle"]
        self._tokens = {}
        return self

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM by PID and wait (bounded); SIGKILL if it does not stop."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.session.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- conveniences -------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.conn["graph_url"]

    @property
    def graph(self) -> str:
        return self.conn["graph_url"] + "/v1.0"

    @property
    def ca(self) -> str:
        return self.conn["ca_bundle"]

    @property
    def control_url(self) -> str:
        return self.conn["control_url"]

    def _app_id(self, app: str) -> str:
        return {
            "primary": self.conn["client_id"],
            "readonly": self.conn["readonly_client_id"],
            "certificate": self.conn["certificate_client_id"],
        }.get(app, app)

    def control_headers(self) -> dict:
        key = self.conn.get("control_key")
        return {"X-PIM-Sandbox-Key": key} if key else {}

    def control_raw(self, method: str, path: str, json=None, headers=None, **kw) -> requests.Response:
        hdrs = {**self.control_headers(), **(headers or {})}
        return self.session.request(method, self.control_url + path, json=json, headers=hdrs, timeout=30, **kw)

    def control(self, method: str, path: str, json=None, **kw):
        resp = self.control_raw(method, path, json=json, **kw)
        assert resp.status_code < 400, f"control {method} {path} -> {resp.status_code}: {resp.text}"
        return resp.json() if resp.content else None

    def stats(self) -> dict:
        return self.control("GET", "/stats")

    def token(self, app: str = "primary", user: str | None = None, claims=None, scopes=None, roles=None) -> str:
        key = (app, user, json.dumps(claims, sort_keys=True), json.dumps(scopes), json.dumps(roles))
        if key not in self._tokens:
            body = {"app": self._app_id(app), "user": user}
            if claims is not None:
                body["claims"] = claims
            if scopes is not None:
                body["scopes"] = scopes
            if roles is not None:
                body["roles"] = roles
            self._tokens[key] = self.control("POST", "/tokens", body)["access_token"]
        return self._tokens[key]

    def headers(self, app: str = "primary", user: str | None = None, **kw) -> dict:
        return {"Authorization": "Bearer " + self.token(app, user, **kw)}

    def request(self, method, path, app="primary", user=None, token=None, headers=None, **kw) -> requests.Response:
        hdrs = {"Authorization": "Bearer " + (token or self.token(app, user))}
        hdrs.update(headers or {})
        url = path if path.startswith("https://") else self.graph + path
        kw.setdefault("timeout", 30)
        return self.session.request(method, url, headers=hdrs, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


@pytest.fixture(scope="session")
def sandbox():
    with tempfile.TemporaryDirectory(prefix="pim-sandbox-test-") as tmp:
        sb = SandboxProcess(tmp).start()
        try:
            yield sb
        finally:
            try:
                errors = sb.control("GET", "/stats").get("server_errors", 0) if sb.proc.poll() is None else 0
            except Exception:  # the sandbox may already be gone; the log check below still runs
                errors = 0
            code = sb.stop()
            log = sb.log_text()
            if os.environ.get("KEEP_SANDBOX_LOG"):
                print(log)
        assert errors == 0 and "internal error" not in log, "the sandbox answered 500 during the session:\n" + log
        assert code == 0, f"the sandbox did not stop cleanly on SIGTERM (exit {code}):\n{log}"


@pytest.fixture
def fresh(sandbox):
    sandbox.control("POST", "/reset")
    sandbox.control("POST", "/stats/reset")
    sandbox._tokens.clear()
    return sandbox


@pytest.fixture
def sandbox_factory(tmp_path):
    started: list[SandboxProcess] = []

    def factory(data_dir=None, *extra_args) -> SandboxProcess:
        sb = SandboxProcess(data_dir or tmp_path / f"sb{len(started)}", *extra_args).start()
        started.append(sb)
        return sb

    yield factory
    for sb in started:
        sb.stop()
