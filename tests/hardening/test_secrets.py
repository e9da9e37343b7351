"""Secrets never leak (issue 8, DESIGN.md quality bars).

Every module runs at ``-vvvv`` with known secret values: a client secret, a certificate
password (an encrypted copy of the sandbox's certificate app key), access tokens (app and
user), and a user password; in successful, check/diff and failing tasks. Everything Ansible
prints and logs is then searched for them: stdout, stderr, the ANSIBLE_LOG_PATH file and
every task result (with diffs and invocation) as a callback sees it. The access tokens MSAL
fetched during the run (read from the token cache afterwards) are searched for too.

The token cache is created 0600 and refused, with a clear error, when group/world-readable.
``validate_certs: false`` warns on every task.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import ELIG_REQ, ROLES, run_playbook
from cryptography import x509
from cryptography.hazmat.primitives import serialization

CERT_PASSWORD = "Hx-Cert-Pass-4f1c9e2a"
ALICE_PASSWORD = "Sandbox-Alice-Pass-1!"
WRONG_SECRET = "Hx-Wrong-Secret-Value-77aa"


def _encrypted_cert(sb, path: Path) -> Path:
    """The certificate app's key, encrypted with CERT_PASSWORD, followed by its certificate."""
    pem = Path(sb.conn["client_certificate_path"]).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    cert = x509.load_pem_x509_certificate(pem)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(CERT_PASSWORD.encode()),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def secret_run(sandbox, tmp_path_factory):
    sb = sandbox
    sb.reset()
    work = tmp_path_factory.mktemp("secrets")
    client_secret = sb.conn["client_secret"]
    app_token = sb.token()
    user_token = sb.token(user="alice@contoso.example", claims={"amr": ["pwd", "mfa"]})
    alice = "10000000-0000-4000-8000-000000000002"
    sb.admin_assign(ELIG_REQ, alice, ROLES["Helpdesk Administrator"], {"type": "noExpiration"}, token=app_token)
    cert = _encrypted_cert(sb, work / "cert-encrypted.pem")
    # Secrets come from an extra-vars file, as a vault or a credential would give them: ansible-core
    # quotes the playbook's source lines around a failing task, so a literal in the play would show.
    values = {
        "client_secret": client_secret,
        "cert_password": CERT_PASSWORD,
        "app_token": app_token,
        "user_token": user_token,
        "alice_password": ALICE_PASSWORD,
        "wrong": WRONG_SECRET,
    }
    secrets_file = work / "secrets.json"
    secrets_file.write_text(json.dumps({"hx": values}))
    os.chmod(secrets_file, 0o600)
    secret_auth = {"auth_method": "client_secret", "client_secret": "{{ hx.client_secret }}"}
    cert_auth = {
        "auth_method": "certificate",
        "client_id": sb.conn["certificate_client_id"],
        "client_certificate_path": str(cert),
        "client_certificate_password": "{{ hx.cert_password }}",
    }
    token_auth = {"auth_method": "access_token", "access_token": "{{ hx.app_token }}"}
    user_auth = {"auth_method": "access_token", "access_token": "{{ hx.user_token }}"}
    password_auth = {
        "auth_method": "username_password",
        "username": "alice@contoso.example",
        "password": "{{ hx.alice_password }}",
    }
    elig = {"principal": "bob@contoso.example", "role": "Security Reader", "duration": "P30D", "justification": "s"}

    def t(name, module, args, **kw):
        return dict({"name": name, module: args, "ignore_errors": True}, **kw)

    tasks = [
        t("elig check", "entra.pim.pim_role_eligibility", dict(elig, **secret_auth), check_mode=True, diff=True),
        t("elig apply", "entra.pim.pim_role_eligibility", dict(elig, **secret_auth), diff=True),
        t("elig cert", "entra.pim.pim_role_eligibility", dict(elig, duration="P60D", **cert_auth), diff=True),
        t("elig fail", "entra.pim.pim_role_eligibility", dict(elig, role="No Such Role", **cert_auth)),
        t("elig info", "entra.pim.pim_role_eligibility_info", dict(principal="bob@contoso.example", **cert_auth)),
        t(
            "asg apply",
            "entra.pim.pim_role_assignment",
            dict(elig, role="Global Reader", **token_auth),
            diff=True,
        ),
        t("asg fail", "entra.pim.pim_role_assignment", dict(elig, duration="soon", **token_auth)),
        t("asg info", "entra.pim.pim_role_assignment_info", dict(current_user=True, **password_auth)),
        t(
            "activate",
            "entra.pim.pim_role_activation",
            dict(role="Helpdesk Administrator", duration="PT1H", justification="s", **user_auth),
            diff=True,
        ),
        t(
            "activate fail",
            "entra.pim.pim_role_activation",
            dict(role="Global Administrator", justification="s", **user_auth),
        ),
        t("activate app-only", "entra.pim.pim_role_activation", dict(role="Helpdesk Administrator", **secret_auth)),
        t(
            "policy",
            "entra.pim.pim_policy",
            dict(roles=["Groups Administrator"], settings={"activation": {"max_duration": "PT6H"}}, **cert_auth),
            diff=True,
        ),
        t("policy info", "entra.pim.pim_policy_info", dict(roles=["Groups Administrator"], **password_auth)),
        t(
            "access",
            "entra.pim.pim_access",
            dict(
                grants=[{"principal": "carol@contoso.example", "role": "Security Reader", "duration": "P30D"}],
                justification="s",
                **secret_auth,
            ),
            diff=True,
        ),
        t(
            "wrong secret",
            "entra.pim.pim_policy_info",
            dict(auth_method="client_secret", client_secret="{{ hx.wrong }}", token_cache=False),
        ),
        t(
            "bad cert password",
            "entra.pim.pim_policy_info",
            dict(cert_auth, client_certificate_password="{{ hx.wrong }}", token_cache=False),
        ),
        t("no tls check 1", "entra.pim.pim_policy_info", dict(roles=["Groups Administrator"], validate_certs=False)),
        t("no tls check 2", "entra.pim.pim_policy_info", dict(roles=["Global Reader"], validate_certs=False)),
    ]
    log_path = work / "ansible.log"
    cache = work / "cache" / "token_cache.json"
    result = run_playbook(
        sb,
        work,
        tasks,
        args=("-vvvv", "-e", "@" + str(secrets_file)),
        extra_env={"ANSIBLE_LOG_PATH": str(log_path), "ENTRA_PIM_TOKEN_CACHE_PATH": str(cache)},
    )
    cached_tokens = []
    if cache.exists():
        # One MSAL cache per credential (partition), each under a keyed hash of that credential.
        for part in json.loads(cache.read_text())["partitions"].values():
            cached_tokens += [item["secret"] for item in part.get("AccessToken", {}).values()]
            cached_tokens += [item["secret"] for item in part.get("RefreshToken", {}).values()]
    secrets = {
        "client_secret": client_secret,
        "certificate password": CERT_PASSWORD,
        "app access token": app_token,
        "user access token": user_token,
        "user password": ALICE_PASSWORD,
        "wrong secret": WRONG_SECRET,
    }
    for n, token in enumerate(cached_tokens):
        secrets["token from the cache #%d" % n] = token
    return {"result": result, "secrets": secrets, "cache": cache, "work": work, "cached_tokens": cached_tokens}


def test_every_module_ran_in_the_secret_play(secret_run):
    """The play did what it should, so the grep below searched real output (not an empty run)."""
    result = secret_run["result"]
    by_name = dict(result.tasks())
    for name in ("elig check", "elig apply", "elig cert", "elig info", "asg apply", "asg info", "activate", "policy"):
        assert by_name[name]["_status"] == "ok", (name, by_name[name].get("msg"))
    for name in ("policy info", "access", "no tls check 1", "no tls check 2"):
        assert by_name[name]["_status"] == "ok", (name, by_name[name].get("msg"))
    for name in ("elig fail", "asg fail", "activate fail", "activate app-only", "wrong secret", "bad cert password"):
        assert by_name[name]["_status"] == "failed", name
    assert by_name["elig apply"]["diff"], "diff mode produced no diff to search"
    assert secret_run["cached_tokens"], "MSAL cached no token: the cached-token search would be empty"
    assert len(secret_run["result"].log_text) > 10000, "the -vvvv log is suspiciously short"


@pytest.mark.parametrize("where", ["stdout", "stderr", "ansible_log", "task_results"])
def test_no_secret_in_any_output(secret_run, where):
    result = secret_run["result"]
    text = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "ansible_log": result.log_text,
        "task_results": result.results_text,
    }[where]
    hits = [name for name, value in secret_run["secrets"].items() if value and value in text]
    assert not hits, "%s shows: %s" % (where, hits)


def test_failure_messages_are_clear_without_the_secret(secret_run):
    by_name = dict(secret_run["result"].tasks())
    wrong = by_name["wrong secret"]["msg"]
    assert "7000215" in wrong or "secret" in wrong.lower(), wrong
    bad_pw = by_name["bad cert password"]["msg"]
    assert "password" in bad_pw.lower(), bad_pw
    app_only = by_name["activate app-only"]["msg"]
    assert "delegated" in app_only.lower() or "user" in app_only.lower(), app_only


def test_validate_certs_false_warns_every_time(secret_run):
    by_name = dict(secret_run["result"].tasks())
    for name in ("no tls check 1", "no tls check 2"):
        warnings = " ".join(by_name[name].get("warnings") or [])
        assert "validate_certs" in warnings, (name, by_name[name].get("warnings"))
    # Every task's result carries the warning; ansible-core prints an identical warning text once per run.
    printed = secret_run["result"].stdout + secret_run["result"].stderr
    assert "validate_certs is false" in printed


def test_token_cache_is_private(secret_run):
    cache = secret_run["cache"]
    assert cache.exists()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    http_cache = cache.parent / "http_cache.json"
    if http_cache.exists():
        assert stat.S_IMODE(http_cache.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_readable_token_cache_is_refused(sandbox, tmp_path, mode):
    cache = tmp_path / "cache" / "token_cache.json"
    cache.parent.mkdir()
    cache.write_text("{}")
    os.chmod(cache, mode)
    tasks = [{"name": "info", "entra.pim.pim_policy_info": {"roles": ["Global Reader"]}, "ignore_errors": True}]
    before = sandbox.stats()["token_requests"]
    result = run_playbook(sandbox, tmp_path, tasks, extra_env={"ENTRA_PIM_TOKEN_CACHE_PATH": str(cache)})
    res = result.task("info")
    assert res["_status"] == "failed"
    assert "Refusing to use the token cache" in res["msg"] and ("%04o" % mode) in res["msg"], res["msg"]
    assert "chmod 600" in res["msg"]
    # refused before asking for a token: the readable file was never trusted
    assert sandbox.stats()["token_requests"] == before
    assert stat.S_IMODE(cache.stat().st_mode) == mode  # and left as it was
