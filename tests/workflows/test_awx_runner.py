"""The onboard playbook run the way AWX runs a job: through ansible-runner, with the credentials
injected by the custom credential type in docs/awx/credential_type.yml.

The injectors are rendered here with a sandboxed Jinja environment exactly as AWX does it (file
injectors written to files, ``tower.filename.<name>`` pointing at them), so the test checks the
credential type itself, not a copy of its variables. Nothing from the test process' own
AZURE_* / ENTRA_PIM_* environment reaches the job.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
CREDENTIAL_TYPE = yaml.safe_load((ROOT / "docs" / "awx" / "credential_type.yml").read_text())
ALICE = "10000000-0000-4000-8000-000000000002"
HELPDESK_ADMINISTRATOR = "729827e3-9c14-49f7-bb1b-9608f156bbb8"


def inject(inputs: dict, workdir: Path) -> dict:
    """The environment AWX would give the job for these credential inputs."""
    env = ImmutableSandboxedEnvironment()
    fields = {f["id"]: f for f in CREDENTIAL_TYPE["inputs"]["fields"]}
    assert set(inputs) <= set(fields), "unknown inputs %s" % (set(inputs) - set(fields))
    missing = [name for name in CREDENTIAL_TYPE["inputs"]["required"] if not inputs.get(name)]
    assert not missing, missing
    values = {name: inputs.get(name, "") for name in fields}
    filenames = {}
    for key, template in CREDENTIAL_TYPE["injectors"].get("file", {}).items():
        name = key.split(".", 1)[1]
        path = workdir / ("awx_cred_" + name)
        path.write_text(env.from_string(template).render(**values))
        path.chmod(0o600)
        filenames[name] = str(path)
    context = dict(values, tower={"filename": filenames}, awx={"filename": filenames})
    return {k: env.from_string(v).render(**context) for k, v in CREDENTIAL_TYPE["injectors"]["env"].items()}


@pytest.fixture
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("AZURE_", "ENTRA_PIM_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")):
            monkeypatch.delenv(name)
    # ansible-runner looks ansible-playbook up on PATH, as in an execution environment
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


def run_onboard(tmp_path, collections_path, injected, extravars, cmdline=None):
    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    envvars = dict(
        injected,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ENTRA_PIM_TOKEN_CACHE_PATH=str(tmp_path / "token_cache.json"),
    )
    result = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(ROOT / "playbooks"),
        playbook="onboard.yml",
        inventory=str(ROOT / "playbooks" / "inventory" / "localhost.yml"),
        envvars=envvars,
        extravars=extravars,
        cmdline=cmdline,
        quiet=True,
        timeout=600,
    )
    stdout = result.stdout.read()
    return result, stdout


def test_credential_type_shape():
    assert CREDENTIAL_TYPE["kind"] == "cloud"
    secret_fields = {f["id"] for f in CREDENTIAL_TYPE["inputs"]["fields"] if f.get("secret")}
    assert secret_fields == {"client_secret", "client_certificate", "client_certificate_password"}
    assert set(CREDENTIAL_TYPE["injectors"]["env"]) >= {
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "ENTRA_PIM_GRAPH_URL",
        "ENTRA_PIM_CA_BUNDLE",
    }


def test_empty_optional_inputs_inject_nothing_that_points_anywhere(tmp_path):
    env = inject({"tenant_id": "t", "client_id": "c", "client_secret": "s"}, tmp_path)
    assert env["AZURE_CLIENT_CERTIFICATE_PATH"] == ""
    assert env["ENTRA_PIM_CA_BUNDLE"] == ""
    assert env["ENTRA_PIM_GRAPH_URL"] == ""
    assert env["ENTRA_PIM_AUTH_METHOD"] == "client_secret"
    assert env["ENTRA_PIM_CLOUD"] == "public"


def test_onboard_through_ansible_runner_with_client_secret(tmp_path, sandbox, collections_path, clean_environment):
    sandbox.control("POST", "/reset")
    conn = sandbox.conn
    injected = inject(
        {
            "tenant_id": conn["tenant_id"],
            "client_id": conn["client_id"],
            "client_secret": conn["client_secret"],
            "graph_url": conn["graph_url"],
            "authority_host": conn["authority_host"],
            "ca_bundle": Path(conn["ca_bundle"]).read_text(),
        },
        tmp_path,
    )
    report = tmp_path / "onboarding.json"
    result, stdout = run_onboard(
        tmp_path,
        collections_path,
        injected,
        {
            "principal": "alice@contoso.example",
            "profiles": ["helpdesk_tier1"],
            "report_path": str(report),
            # AWX adds these to every job
            "awx_user_name": "jdoe",
            "awx_job_id": 4242,
        },
    )
    assert result.status == "successful", stdout[-6000:]
    assert result.rc == 0
    assert conn["client_secret"] not in stdout
    changed = [
        e
        for e in result.events
        if e.get("event") == "runner_on_ok" and e["event_data"].get("task", "").startswith("Make the principals")
    ]
    assert len(changed) == 1 and changed[0]["event_data"]["res"]["changed"] is True
    state = sandbox.control("GET", "/state")
    mine = [s for s in state["roleEligibilitySchedules"] if s["principalId"] == ALICE]
    assert HELPDESK_ADMINISTRATOR in {s["roleDefinitionId"] for s in mine}
    data = json.loads(report.read_text())
    assert data["run_by"] == "jdoe" and data["job_id"] == "4242"
    assert data["client_id"] == conn["client_id"]
    assert data["summary"]["added"] == 3 and data["summary"]["failed"] == 0


def test_onboard_check_mode_with_certificate(tmp_path, sandbox, collections_path, clean_environment):
    sandbox.control("POST", "/reset")
    conn = sandbox.conn
    injected = inject(
        {
            "tenant_id": conn["tenant_id"],
            "client_id": conn["certificate_client_id"],
            "auth_method": "certificate",
            "client_certificate": Path(conn["client_certificate_path"]).read_text(),
            "graph_url": conn["graph_url"],
            "authority_host": conn["authority_host"],
            "ca_bundle": Path(conn["ca_bundle"]).read_text(),
        },
        tmp_path,
    )
    assert Path(injected["AZURE_CLIENT_CERTIFICATE_PATH"]).read_text().startswith("-----BEGIN")
    before = sandbox.control("GET", "/state")
    result, stdout = run_onboard(
        tmp_path,
        collections_path,
        injected,
        {"principal": "bob@contoso.example", "profiles": ["cloud_platform"]},
        cmdline="--check",
    )
    assert result.status == "successful", stdout[-6000:]
    assert "would add" in stdout
    assert "PRIVATE KEY" not in stdout
    after = sandbox.control("GET", "/state")
    assert after["roleEligibilitySchedules"] == before["roleEligibilitySchedules"]
