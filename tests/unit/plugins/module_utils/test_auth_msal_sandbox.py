# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real MSAL over real HTTPS against the PIM sandbox: secret, certificate and password sign-in,
the warm token cache (no token or discovery request on the second run), per-request CA bundle.

Runs where the sandbox package (emulator/, ``pip install -e emulator``) is importable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import GraphClient

START_TIMEOUT = 30
ROLES = "/roleManagement/directory/roleDefinitions"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("sandbox")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    conn_file = data_dir / "connection.json"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not conn_file.exists():
            if proc.poll() is not None:
                raise AssertionError("sandbox exited: %s" % proc.stderr.read().decode()[-2000:])
            if time.monotonic() > deadline:
                raise AssertionError("sandbox did not write connection.json within %ds" % START_TIMEOUT)
            time.sleep(0.05)
        conn = json.loads(conn_file.read_text())
        yield conn
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stderr.close()


def control(conn, method, path):
    resp = requests.request(
        method,
        conn["control_url"] + path,
        headers={"X-PIM-Sandbox-Key": conn["control_key"]},
        verify=conn["ca_bundle"],
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json() if resp.content else None


def settings(conn, cache_dir, **kw):
    s = {
        "auth_method": "auto",
        "tenant_id": conn["tenant_id"],
        "client_id": conn["client_id"],
        "client_secret": conn["client_secret"],
        "authority_host": conn["authority_host"],
        "graph_url": conn["graph_url"],
        "ca_bundle": conn["ca_bundle"],
        "validate_certs": True,
        "token_cache": True,
        "token_cache_path": str(cache_dir / "token_cache.json"),
        "request_timeout": 30,
        "max_retries": 2,
        "max_retry_wait": 5,
    }
    s.update(kw)
    return s


def test_client_secret_sign_in_and_warm_cache(sandbox, tmp_path, monkeypatch):
    # A bogus REQUESTS_CA_BUNDLE would break a Session.verify-only setup; ca_bundle is passed per request.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    control(sandbox, "POST", "/stats/reset")
    cold = GraphClient(settings(sandbox, tmp_path))
    roles = cold.list(ROLES)
    cold.close()
    assert cold.auth_method == "client_secret"
    assert any(r["displayName"] == "Global Administrator" for r in roles)
    assert cold.token_claims()["appid" if "appid" in cold.token_claims() else "azp"] == sandbox["client_id"]
    cold_stats = control(sandbox, "GET", "/stats")
    assert cold_stats["token_requests"] == 1 and cold.stats["token_requests"] == 1

    warm = GraphClient(settings(sandbox, tmp_path))
    warm.list(ROLES)
    warm.close()
    warm_stats = control(sandbox, "GET", "/stats")
    assert warm_stats["token_requests"] == cold_stats["token_requests"]
    assert warm_stats["discovery_requests"] == cold_stats["discovery_requests"]
    assert warm.stats["token_requests"] == 0


def test_certificate_sign_in(sandbox, tmp_path):
    client = GraphClient(
        settings(
            sandbox,
            tmp_path,
            client_secret=None,
            client_id=sandbox["certificate_client_id"],
            client_certificate_path=sandbox["client_certificate_path"],
        )
    )
    assert client.auth_method == "certificate"
    assert client.get(ROLES, params={"$top": 1})["value"]
    assert sandbox["certificate_client_id"] in json.dumps(client.token_claims())


def test_username_password_sign_in(sandbox, tmp_path):
    client = GraphClient(
        settings(
            sandbox,
            tmp_path,
            client_secret=None,
            username="alice@contoso.example",
            password="Sandbox-Alice-Pass-1!",
        )
    )
    assert client.auth_method == "username_password"
    claims = client.token_claims()
    assert claims.get("scp") and "alice@contoso.example" in json.dumps(claims)


def test_wrong_secret_is_an_aadsts_error_without_the_secret(sandbox, tmp_path):
    wrong = "definitely-wrong-secret-123"
    client = GraphClient(settings(sandbox, tmp_path, client_secret=wrong, token_cache=False))
    with pytest.raises(AuthError) as info:
        client.list(ROLES)
    assert "AADSTS" in info.value.msg and wrong not in info.value.msg


def test_read_only_app_gets_a_403_that_names_the_permission(sandbox, tmp_path):
    client = GraphClient(
        settings(
            sandbox, tmp_path, client_id=sandbox["readonly_client_id"], client_secret=sandbox["readonly_client_secret"]
        )
    )
    with pytest.raises(GraphError) as info:
        client.post(
            "/roleManagement/directory/roleEligibilityScheduleRequests",
            {"action": "adminAssign", "principalId": "x", "roleDefinitionId": "y", "directoryScopeId": "/"},
        )
    assert info.value.status == 403
    assert "RoleEligibilitySchedule.ReadWrite.Directory" in info.value.msg
    assert info.value.request_id


def test_untrusted_certificate_names_ca_bundle(sandbox, tmp_path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = GraphClient(
        settings(sandbox, tmp_path, ca_bundle=None, token_cache=False, access_token="x", auth_method="access_token")
    )
    with pytest.raises(GraphError) as info:
        client.get(ROLES)
    assert info.value.code == "TLSError" and "ca_bundle" in info.value.msg
