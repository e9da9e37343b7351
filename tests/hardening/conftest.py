"""Fixtures for the hardening matrices: a PIM sandbox we can fault, restart and inspect.

Each pytest worker (xdist or not) gets one sandbox for the session, on a free loopback port,
stopped by its PID at the end. ``SandboxProc.restart()`` stops it and starts it again on the
same data directory and port (state, keys and tokens survive, notes in emulator/README.md).

Playbooks run through ``ansible-playbook`` with the JSON stdout callback so every task's
result (including failures) can be asserted from Python; the same environment the
integration targets use points the collection at the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".tmp" / "collections"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

# Fixed ids of the seed tenant (emulator/README.md "Seed tenant").
TENANT = "a1b2c3d4-0000-4000-8000-000000000000"
ADMIN = "10000000-0000-4000-8000-000000000001"
ALICE = "10000000-0000-4000-8000-000000000002"
BOB = "10000000-0000-4000-8000-000000000003"
CAROL = "10000000-0000-4000-8000-000000000006"
DAVE = "10000000-0000-4000-8000-000000000007"
HELPDESK_GROUP = "20000000-0000-4000-8000-000000000001"
DEPLOY_SP = "30000000-0000-4000-8000-000000000004"
SALES_AU = "50000000-0000-4000-8000-000000000001"
PASSWORDS = {
    "alice@contoso.example": "Sandbox-Alice-Pass-1!",
    "bob@contoso.example": "Sandbox-Bob-Pass-1!",
    "carol@contoso.example": "Sandbox-Carol-Pass-1!",
}

# Built-in role template ids (data/builtin-roles.json; id == templateId in the sandbox).
ROLES = {
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "Security Reader": "5d6b6bb7-de71-4623-b4af-96380a352509",
    "Global Reader": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Groups Administrator": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
}

ELIG_REQ = "/v1.0/roleManagement/directory/roleEligibilityScheduleRequests"
ASG_REQ = "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests"

# Small and bounded retries for every run: a fault matrix cell must never wait a minute.
FAST_RETRIES = {"ENTRA_PIM_MAX_RETRIES": "3", "ENTRA_PIM_MAX_RETRY_WAIT": "1"}


class SandboxProc:
    """One sandbox process we own: start, stop (by PID), restart on the same port, control API."""

    def __init__(self, data_dir: Path, extra_args=()):
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.conn: dict = {}
        self.session = requests.Session()
        self.session.trust_env = False
        self.restarts = 0

    # -- process -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        conn_file = self.data_dir / "connection.json"
        log = open(self.data_dir / "sandbox.log", "ab")  # noqa: SIM115 - kept for the process' life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pim_emulator", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
            + self.extra_args,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn_file.exists():
                try:
                    conn = json.loads(conn_file.read_text())
                except ValueError:
                    conn = {}
                if conn.get("pid") == self.proc.pid:
                    self.conn = conn
                    self.port = conn["port"]
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("sandbox exited: " + (self.data_dir / "sandbox.log").read_text()[-3000:])
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("sandbox did not become ready within %s s" % timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        """Stop by PID, then start again on the same data directory and port."""
        self.stop()
        self.restarts += 1
        for _attempt in range(50):  # the port can linger for a moment after the old socket closed
            try:
                self.start()
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc):
                    raise
                time.sleep(0.2)
        raise RuntimeError("could not restart the sandbox on port %d" % self.port)

    # -- addresses and credentials ---------------------------------------------------------
    @property
    def ca(self) -> str:
        return self.conn["ca_bundle"]

    @property
    def control_url(self) -> str:
        return self.conn["control_url"]

    @property
    def graph_url(self) -> str:
        return self.conn["graph_url"]

    def env(self) -> dict:
        """The export lines of ``python -m pim_emulator env``, from connection.json."""
        c = self.conn
        return {
            "AZURE_TENANT_ID": c["tenant_id"],
            "AZURE_CLIENT_ID": c["client_id"],
            "AZURE_CLIENT_SECRET": c["client_secret"],
            "AZURE_AUTHORITY_HOST": c["authority_host"],
            "ENTRA_PIM_GRAPH_URL": c["graph_url"],
            "ENTRA_PIM_CA_BUNDLE": c["ca_bundle"],
            "ENTRA_PIM_SANDBOX_KEY": c["control_key"],
        }

    # -- control API -----------------------------------------------------------------------
    def control(self, method: str, path: str, json=None, ok=True):
        resp = self.session.request(
            method,
            self.control_url + path,
            json=json,
            headers={"X-PIM-Sandbox-Key": self.conn["control_key"]},  # a new key at every (re)start
            verify=self.ca,
            timeout=30,
        )
        if ok:
            resp.raise_for_status()
        return resp.json() if resp.content else None

    def reset(self) -> None:
        self.control("POST", "/reset")
        self.control("POST", "/stats/reset")

    def stats(self) -> dict:
        return self.control("GET", "/stats")

    def state(self) -> dict:
        return self.control("GET", "/state")

    def faults(self, rules: list[dict]) -> None:
        self.control("POST", "/faults", json={"rules": rules})

    def settings(self, **changes) -> dict:
        return self.control("PATCH", "/settings", json=changes)

    def token(self, user=None, claims=None) -> str:
        body = {"user": user}
        if claims:
            body["claims"] = claims
        return self.control("POST", "/tokens", json=body)["access_token"]

    # -- Graph, for setting up preconditions out of band -------------------------------------
    def graph(self, method: str, path: str, body=None, token=None, expect=(200, 201, 204)):
        token = token or self.token()
        resp = self.session.request(
            method,
            self.graph_url + path,
            json=body,
            headers={"Authorization": "Bearer " + token},
            verify=self.ca,
            timeout=30,
        )
        if expect and resp.status_code not in expect:
            raise AssertionError("setup %s %s -> %d %s" % (method, path, resp.status_code, resp.text[:500]))
        return resp.json() if resp.content else None

    def admin_assign(self, requests_path, principal_id, role_id, expiration, token=None):
        """An eligibility (ELIG_REQ) or active assignment (ASG_REQ) made out of band, at the tenant scope."""
        body = {
            "action": "adminAssign",
            "principalId": principal_id,
            "roleDefinitionId": role_id,
            "directoryScopeId": "/",
            "justification": "setup",
            "scheduleInfo": {"expiration": expiration},
        }
        return self.graph("POST", requests_path, body, token=token)

    def patch_rule(self, role_id, rule_id, changes, keep=(), token=None):
        """PATCH one rule of a role's policy: its type, id, target and ``keep`` fields as stored, with ``changes``."""
        state = self.state()
        pid = next(a["policyId"] for a in state["roleManagementPolicyAssignments"] if a["roleDefinitionId"] == role_id)
        policy = next(p for p in state["roleManagementPolicies"] if p["id"] == pid)
        rule = next(r for r in policy["rules"] if r["id"] == rule_id)
        body = {key: rule[key] for key in ("@odata.type", "id", "target") + tuple(keep)}
        body.update(changes)
        self.graph("PATCH", "/v1.0/policies/roleManagementPolicies/%s/rules/%s" % (pid, rule_id), body, token=token)


# POSTs that only read: the sandbox counts every non-GET as a write, these change nothing.
READ_ONLY_POSTS = ("/directoryObjects/getByIds", "/getByIds")


def total_writes(stats: dict) -> int:
    """Writes that could change the tenant (stats ``writes`` minus read-only POST functions)."""
    return sum(n for route, n in stats.get("writes", {}).items() if not route.endswith(READ_ONLY_POSTS))


@dataclass
class PlayResult:
    rc: int
    stdout: str
    stderr: str
    records: list = field(default_factory=list)
    log_text: str = ""
    results_text: str = ""

    def tasks(self) -> list[tuple[str, dict]]:
        return [
            (r["task"], dict(r["result"], _status=r["status"], _action=r.get("action"), _time=r.get("time")))
            for r in self.records
        ]

    def task(self, name: str) -> dict:
        found = [res for tname, res in self.tasks() if tname == name]
        if not found:
            raise AssertionError("no task %r in the play output:\n%s\n%s" % (name, self.stdout[-4000:], self.stderr))
        return found[-1]

    def has_task(self, name: str) -> bool:
        return any(tname == name for tname, dummy in self.tasks())

    def describe(self) -> str:
        return "rc=%d\nSTDOUT:\n%s\nSTDERR:\n%s" % (self.rc, self.stdout[-12000:], self.stderr[-4000:])


def playbook_env(sandbox: SandboxProc, workdir: Path, extra_env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ENTRA_PIM_"))}
    env.update(sandbox.env())
    env.update(FAST_RETRIES)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="record_results",
        HARDENING_RESULTS_FILE=str(workdir / "results.jsonl"),
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(workdir / "ansible-remote"),
        ENTRA_PIM_TOKEN_CACHE_PATH=str(workdir / "cache" / "token_cache.json"),
    )
    env.update(extra_env or {})
    return env


def write_playbook(workdir: Path, tasks: list[dict], play_vars: dict | None = None) -> Path:
    play = {"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": tasks}
    if play_vars:
        play["vars"] = play_vars
    path = workdir / "play.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False, allow_unicode=True))
    return path


def start_playbook(sandbox, workdir, tasks, play_vars=None, extra_env=None, args=()):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.jsonl").unlink(missing_ok=True)
    playbook = write_playbook(workdir, tasks, play_vars)
    env = playbook_env(sandbox, workdir, extra_env)
    return subprocess.Popen(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", *args, str(playbook)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_playbook(proc, workdir: Path, timeout=240, log_path: Path | None = None) -> PlayResult:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError("ansible-playbook did not finish in %d s:\n%s\n%s" % (timeout, stdout[-4000:], stderr))
    results_file = workdir / "results.jsonl"
    results_text = results_file.read_text() if results_file.exists() else ""
    records = [json.loads(line) for line in results_text.splitlines() if line.strip()]
    log_text = log_path.read_text() if log_path is not None and log_path.exists() else ""
    return PlayResult(proc.returncode, stdout, stderr, records, log_text, results_text)


def run_playbook(sandbox, workdir, tasks, play_vars=None, extra_env=None, args=(), timeout=240) -> PlayResult:
    proc = start_playbook(sandbox, workdir, tasks, play_vars, extra_env, args)
    log_path = Path(extra_env["ANSIBLE_LOG_PATH"]) if extra_env and "ANSIBLE_LOG_PATH" in extra_env else None
    return finish_playbook(proc, workdir, timeout, log_path)


@pytest.fixture(scope="session")
def sandbox():
    with tempfile.TemporaryDirectory(prefix="pim-hardening-") as tmp:
        sb = SandboxProc(Path(tmp))
        sb.start()
        try:
            yield sb
        finally:
            sb.stop()
