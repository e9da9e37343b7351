"""The token cache against the real thing (issue 14, points 1, 2 and 15).

Every run is ``ansible-playbook`` against the PIM sandbox: real modules, real MSAL, real HTTPS.

* Point 1: a warm cache never lends its tokens to another credential. After each credential
  (client secret, certificate, user + password) has a token (and, for the user, a refresh
  token) in the cache, the same tasks with only the secret changed, an unregistered
  certificate or a wrong password must go to the token endpoint and fail there with the
  identity platform's error, for a read and for a write, with nothing written. The right
  credentials still run warm afterwards (no token request).
* Point 2: a cache directory others can write to is refused before any sign-in.
* Point 15: a token refused as expired on the very first request after it was issued (a cold
  cache) is replaced once and the task succeeds, for a read and for a bulk ``pim_access``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import ROLES, run_playbook, total_writes

from pim_emulator.tls import self_signed_pem

ADMIN_UPN = "admin@contoso.example"
ADMIN_PASSWORD = "Sandbox-Admin-Pass-1!"  # the seed's sandbox-only password (emulator/pim_emulator/data/seed.json)
WRONG_SECRET = "Hx-Not-The-Secret-0c4e"
WRONG_PASSWORD = "Hx-Not-The-Password-9d1b!"
CREDENTIALS = ("secret", "certificate", "password")
# What the identity platform answers each wrong credential (emulator/pim_emulator/identity.py).
AADSTS = {"secret": "AADSTS7000215", "certificate": "AADSTS700027", "password": "AADSTS50126"}


def _unregistered_certificate(path: Path) -> Path:
    """A key and a self-signed certificate the sandbox has never seen."""
    path.write_bytes(self_signed_pem("entra-pim-unregistered"))
    os.chmod(path, 0o600)
    return path


def _auth(sb, which: str, wrong: bool, unregistered: Path) -> dict:
    if which == "secret":
        return {"auth_method": "client_secret", "client_secret": WRONG_SECRET if wrong else sb.conn["client_secret"]}
    if which == "certificate":
        return {
            "auth_method": "certificate",
            "client_id": sb.conn["certificate_client_id"],
            "client_certificate_path": str(unregistered) if wrong else sb.conn["client_certificate_path"],
        }
    return {
        "auth_method": "username_password",
        "username": ADMIN_UPN,
        "password": WRONG_PASSWORD if wrong else ADMIN_PASSWORD,
    }


def _read(name, auth):
    args = dict(auth, principal="bob@contoso.example")
    return {"name": name, "entra.pim.pim_role_eligibility_info": args, "ignore_errors": True}


def _write(name, auth):
    args = dict(
        auth, principal="bob@contoso.example", role="Security Reader", duration="P30D", justification="cache test"
    )
    return {"name": name, "entra.pim.pim_role_eligibility": args, "ignore_errors": True}


@pytest.fixture(scope="module")
def partitions_run(sandbox, tmp_path_factory):
    """Three plays on one cache: warm every credential, the wrong credentials, the right ones again."""
    sb = sandbox
    sb.reset()
    work = tmp_path_factory.mktemp("token-cache")
    unregistered = _unregistered_certificate(work / "unregistered.pem")
    cache = work / "cache" / "token_cache.json"
    env = {"ENTRA_PIM_TOKEN_CACHE_PATH": str(cache)}

    def right_tasks(prefix):
        return [_read("%s %s" % (prefix, c), _auth(sb, c, False, unregistered)) for c in CREDENTIALS]

    plays, stats = {}, {"start": sb.stats()}
    plays["warm"] = run_playbook(sb, work, right_tasks("warm"), extra_env=env)
    stats["warm"] = sb.stats()
    wrong = []
    for c in CREDENTIALS:
        auth = _auth(sb, c, True, unregistered)
        wrong += [_read("wrong %s read" % c, auth), _write("wrong %s write" % c, auth)]
    plays["wrong"] = run_playbook(sb, work, wrong, extra_env=env)
    stats["wrong"] = sb.stats()
    plays["again"] = run_playbook(sb, work, right_tasks("again"), extra_env=env)
    stats["again"] = sb.stats()
    return {"plays": plays, "stats": stats, "cache": cache}


def test_the_right_credentials_warm_the_cache(partitions_run):
    warm = partitions_run["plays"]["warm"]
    for c in CREDENTIALS:
        assert warm.task("warm %s" % c)["_status"] == "ok", warm.describe()
    stats = partitions_run["stats"]
    # One token per credential, and the cache then holds one partition for each.
    assert stats["warm"]["token_requests"] - stats["start"]["token_requests"] == 3
    assert stat.S_IMODE(partitions_run["cache"].stat().st_mode) == 0o600
    assert stat.S_IMODE(partitions_run["cache"].parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("which", CREDENTIALS)
@pytest.mark.parametrize("operation", ["read", "write"])
def test_a_wrong_credential_never_uses_the_warm_cache(partitions_run, which, operation):
    res = partitions_run["plays"]["wrong"].task("wrong %s %s" % (which, operation))
    assert res["_status"] == "failed", res
    assert AADSTS[which] in res["msg"] and "Could not get a Microsoft Graph token" in res["msg"], res["msg"]


def test_wrong_credentials_asked_the_token_endpoint_and_wrote_nothing(partitions_run):
    warm, wrong = partitions_run["stats"]["warm"], partitions_run["stats"]["wrong"]
    # Each of the six tasks asked for a token and was refused; none reached Graph.
    assert wrong["token_requests"] - warm["token_requests"] == 6
    assert wrong["graph_requests"] == warm["graph_requests"]
    assert total_writes(wrong) == total_writes(warm)


def test_the_right_credentials_still_run_warm(partitions_run):
    again = partitions_run["plays"]["again"]
    for c in CREDENTIALS:
        assert again.task("again %s" % c)["_status"] == "ok", again.describe()
    stats = partitions_run["stats"]
    # The secret and the certificate find their access tokens. The user finds its refresh token: the
    # sandbox answers a .default sign-in with the app's scopes one by one, which MSAL cannot match to
    # .default, so every password task redeems its refresh token: one token request, as on main before
    # the partitions (the unit tests show the password's partition reused with no request at all).
    assert stats["again"]["token_requests"] - stats["wrong"]["token_requests"] == 1
    assert stats["again"]["discovery_requests"] == stats["wrong"]["discovery_requests"]


@pytest.mark.parametrize("mode", [0o777, 0o770], ids=oct)
def test_a_cache_directory_others_can_write_is_refused(sandbox, tmp_path, mode):
    directory = tmp_path / "shared-cache"
    directory.mkdir()
    os.chmod(directory, mode)
    tasks = [_read("info", {})]
    before = sandbox.stats()
    result = run_playbook(
        sandbox, tmp_path, tasks, extra_env={"ENTRA_PIM_TOKEN_CACHE_PATH": str(directory / "token_cache.json")}
    )
    res = result.task("info")
    assert res["_status"] == "failed"
    assert "Refusing to use the token cache directory %s" % directory in res["msg"], res["msg"]
    assert ("its mode is %04o" % mode) in res["msg"] and ("chmod 700 %s" % directory) in res["msg"]
    after = sandbox.stats()
    assert after["token_requests"] == before["token_requests"] and after["graph_requests"] == before["graph_requests"]
    assert os.listdir(directory) == [] and stat.S_IMODE(directory.stat().st_mode) == mode


def _access_task(name):
    grants = [
        {"principal": "carol@contoso.example", "role": "Security Reader", "duration": "P30D"},
        {"principal": "dave@contoso.example", "role": "Security Reader", "duration": "P30D"},
    ]
    return {"name": name, "entra.pim.pim_access": {"grants": grants, "justification": "expired token"}}


@pytest.mark.parametrize("task", ["read", "bulk"])
def test_a_token_refused_on_the_first_request_after_sign_in_is_replaced_once(sandbox, tmp_path, task):
    sb = sandbox
    sb.reset()
    # A cold cache: the module signs in, then Graph refuses that brand-new token as expired once.
    cache = tmp_path / "cold" / "token_cache.json"
    sb.faults([{"kind": "token_expired", "count": 1}])
    before = sb.stats()
    tasks = [_read("run", {}) if task == "read" else _access_task("run")]
    result = run_playbook(sb, tmp_path, tasks, extra_env={"ENTRA_PIM_TOKEN_CACHE_PATH": str(cache)})
    res = result.task("run")
    assert res["_status"] in ("ok", "changed"), result.describe()
    after = sb.stats()
    assert after["faults_injected"] - before["faults_injected"] == 1
    assert after["token_requests"] - before["token_requests"] == 2  # the first token, then exactly one more
    if task == "bulk":
        assert res["changed"] is True
        held = {
            (e["principalId"], e["roleDefinitionId"]) for e in sb.state()["roleEligibilitySchedules"] if e.get("status")
        }
        for principal in ("10000000-0000-4000-8000-000000000006", "10000000-0000-4000-8000-000000000007"):
            assert (principal, ROLES["Security Reader"]) in held
