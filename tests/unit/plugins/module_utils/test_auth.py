# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Credential selection, clouds, env fallbacks, MSAL flows against a fake identity platform,
the token cache files and the promise that no secret reaches any message or log line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
import requests
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.entra.pim.plugins.doc_fragments._auth import ModuleDocFragment
from ansible_collections.entra.pim.plugins.module_utils import _auth
from ansible_collections.entra.pim.plugins.module_utils._auth import (
    AUTH_ARGSPEC,
    resolve_endpoints,
    select_auth_method,
)
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import GraphClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from entra_pim_unit_fakes import (
    AUTHORITY,
    CERT_PASSWORD,
    CLIENT,
    GRAPH,
    SECRET,
    TENANT,
    USER_PASSWORD,
    FakeSession,
    add_identity,
    make_jwt,
    make_response,
)
from urllib3.exceptions import NewConnectionError

from pim_emulator.tls import self_signed_pem

V1 = GRAPH + "/v1.0"
TOKEN_URL = "%s/%s/oauth2/v2.0/token" % (AUTHORITY, TENANT)


def settings_with(base, **kw):
    s = dict(base)
    s.update(kw)
    return s


def secret_settings(base, **kw):
    return settings_with(base, tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, **kw)


def new_client(settings, session, waits=None):
    logs, warnings = [], []
    client = GraphClient(
        settings,
        log=logs.append,
        warn=warnings.append,
        session=session,
        sleep=(waits if waits is not None else []).append,
    )
    client.logs, client.warnings = logs, warnings
    return client


def graph_ok(session):
    return session.add("GET", V1, make_response(200, {"value": []}))


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"access_token": "t", "client_secret": "s", "tenant_id": "t", "client_id": "c"}, "access_token"),
        (
            {"tenant_id": "t", "client_id": "c", "client_secret": "s", "client_certificate_path": "/c.pem"},
            "client_secret",
        ),
        (
            {"tenant_id": "t", "client_id": "c", "client_certificate_path": "/c.pem", "federated_token_file": "/f"},
            "certificate",
        ),
        (
            {"tenant_id": "t", "client_id": "c", "federated_token_file": "/f", "username": "u", "password": "p"},
            "federated_token",
        ),
        ({"client_id": "c", "username": "u", "password": "p"}, "username_password"),
    ],
)
def test_auto_picks_the_first_complete_set(options, expected):
    assert select_auth_method(dict(options, auth_method="auto"), environ={}) == expected


@pytest.mark.parametrize(
    "method, options",
    [
        ("client_secret", {"tenant_id": "t", "client_id": "c", "client_secret": "s"}),
        ("certificate", {"tenant_id": "t", "client_id": "c", "client_certificate_path": "/c"}),
        ("federated_token", {"tenant_id": "t", "client_id": "c", "federated_token_file": "/f"}),
        ("access_token", {"access_token": "x"}),
        ("username_password", {"client_id": "c", "username": "u", "password": "p"}),
        ("managed_identity", {}),
        ("azure_cli", {}),
    ],
)
def test_explicit_method_with_its_options(method, options):
    # Other complete sets do not matter once a method is chosen.
    assert select_auth_method(dict(options, auth_method=method, access_token="other"), environ={}) == method


def test_explicit_method_lists_what_is_missing_with_env_names():
    with pytest.raises(AuthError) as info:
        select_auth_method({"auth_method": "client_secret", "tenant_id": "t"}, environ={})
    msg = info.value.msg
    assert msg.startswith("auth_method=client_secret needs tenant_id, client_id and client_secret. Missing: ")
    assert "client_id (or ENTRA_PIM_CLIENT_ID / AZURE_CLIENT_ID)" in msg
    assert "client_secret (or ENTRA_PIM_CLIENT_SECRET / AZURE_CLIENT_SECRET)" in msg
    assert "tenant_id (" not in msg


def test_auto_with_an_incomplete_set_says_what_is_missing():
    with pytest.raises(AuthError) as info:
        select_auth_method({"auth_method": "auto", "tenant_id": "t", "client_id": "c"}, environ={})
    msg = info.value.msg
    assert "client_secret needs tenant_id, client_id and client_secret (missing: client_secret)" in msg
    assert (
        "certificate needs tenant_id, client_id and client_certificate_path (missing: client_certificate_path)" in msg
    )
    assert "username_password needs client_id, username and password (missing: username and password)" in msg


def test_auto_with_nothing_set_lists_every_method():
    with pytest.raises(AuthError) as info:
        select_auth_method({"auth_method": "auto"}, environ={})
    for name in (
        "client_secret",
        "certificate",
        "federated_token",
        "username_password",
        "managed_identity",
        "azure_cli",
    ):
        assert name in info.value.msg


def test_auto_uses_managed_identity_only_when_nothing_else_is_set():
    assert select_auth_method({"auth_method": "auto"}, environ={"IDENTITY_ENDPOINT": "http://x"}) == "managed_identity"
    assert (
        select_auth_method({"auth_method": "auto", "client_id": "c"}, environ={"MSI_ENDPOINT": "http://x"})
        == "managed_identity"
    )
    with pytest.raises(AuthError):
        select_auth_method({"auth_method": "auto", "username": "u"}, environ={"IDENTITY_ENDPOINT": "http://x"})


# --------------------------------------------------------------------------- clouds and endpoints


@pytest.mark.parametrize(
    "cloud, authority, graph",
    [
        ("public", "https://login.microsoftonline.com", "https://graph.microsoft.com"),
        ("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
        ("usgov_dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
        ("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
    ],
)
def test_cloud_maps_to_authority_and_graph_hosts(cloud, authority, graph):
    assert resolve_endpoints({"cloud": cloud}) == (cloud, authority, graph)
    assert _auth.is_known_authority(authority)


def test_defaults_to_public_cloud():
    assert resolve_endpoints({}) == ("public", "https://login.microsoftonline.com", "https://graph.microsoft.com")


def test_overrides_for_the_sandbox_scheme_optional():
    cloud, authority, graph = resolve_endpoints(
        {"authority_host": "127.0.0.1:8443/", "graph_url": "https://127.0.0.1:8443/v1.0/"}
    )
    assert (cloud, authority, graph) == ("public", "https://127.0.0.1:8443", "https://127.0.0.1:8443")
    assert not _auth.is_known_authority(authority)


def test_cloud_follows_a_known_authority_host():
    assert resolve_endpoints({"authority_host": "https://login.chinacloudapi.cn"})[0] == "china"
    assert resolve_endpoints({"authority_host": "login.microsoftonline.us"})[2] == "https://graph.microsoft.us"


def test_bad_graph_url_is_refused():
    with pytest.raises(AuthError):
        resolve_endpoints({"graph_url": "ftp://x"})


# --------------------------------------------------------------------------- argspec, env, docs


def parse_params(monkeypatch, env, args=None):
    for name in [n for names in _auth.ENV_NAMES.values() for n in names]:
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with patch_module_args(args or {}):
        module = AnsibleModule(argument_spec=AUTH_ARGSPEC)
    return module.params


def test_env_order_is_option_then_entra_pim_then_azure(monkeypatch):
    env = {"ENTRA_PIM_CLIENT_ID": "from-entra", "AZURE_CLIENT_ID": "from-azure", "AZURE_TENANT_ID": "tenant-azure"}
    params = parse_params(monkeypatch, env)
    assert params["client_id"] == "from-entra" and params["tenant_id"] == "tenant-azure"
    params = parse_params(monkeypatch, env, {"client_id": "from-task"})
    assert params["client_id"] == "from-task"


def test_env_beats_defaults_and_is_typed(monkeypatch):
    params = parse_params(
        monkeypatch,
        {
            "ENTRA_PIM_MAX_RETRIES": "2",
            "ENTRA_PIM_TOKEN_CACHE": "false",
            "AZURE_AUTHORITY_HOST": "login.microsoftonline.us",
        },
    )
    assert params["max_retries"] == 2 and params["token_cache"] is False
    assert params["authority_host"] == "login.microsoftonline.us"
    assert params["max_retry_wait"] == 60 and params["request_timeout"] == 60 and params["auth_method"] == "auto"


def test_secret_options_are_no_log_and_lookalikes_are_explicitly_not():
    secrets = {name for name, spec in AUTH_ARGSPEC.items() if spec.get("no_log")}
    assert secrets == {"client_secret", "client_certificate_password", "access_token", "password"}
    for lookalike in ("token_cache", "token_cache_path", "federated_token_file"):
        assert AUTH_ARGSPEC[lookalike]["no_log"] is False


def test_doc_fragment_documents_every_option_like_the_argspec():
    doc = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    assert set(doc) == set(AUTH_ARGSPEC)
    for name, spec in AUTH_ARGSPEC.items():
        entry = doc[name]
        assert entry["type"] == spec["type"], name
        assert entry.get("default") == spec.get("default"), name
        assert entry.get("choices") == spec.get("choices"), name
        assert entry["version_added"] == "0.1.0"
        text = " ".join(entry["description"])
        for env in _auth.ENV_NAMES.get(name, []):
            assert "E(%s)" % env in text, (name, env)


# --------------------------------------------------------------------------- client secret, caches


def test_client_secret_flow_uses_shared_session_with_verify_and_scope(base_settings):
    session = graph_ok(add_identity(FakeSession()))
    client = new_client(secret_settings(base_settings, ca_bundle="/ca.pem", request_timeout=9), session)
    client.list("/users")
    identity = session.identity_calls()
    assert [c.method for c in identity] == ["GET", "POST"]
    assert all(c.kwargs["verify"] == "/ca.pem" and c.kwargs["timeout"] == 9 for c in identity)
    assert all(c.headers["User-Agent"].startswith("entra.pim/") for c in identity)
    form = identity[1].form()
    assert form["grant_type"] == "client_credentials" and form["client_id"] == CLIENT
    assert form["client_secret"] == SECRET and form["scope"] == GRAPH + "/.default"
    assert not any("login.microsoftonline.com" in c.url for c in session.calls)  # no instance discovery
    assert client.stats["token_requests"] == 1 and client.auth_method == "client_secret"


def test_token_cache_files_are_private_and_a_warm_run_needs_no_identity_request(base_settings, tmp_path):
    settings = secret_settings(base_settings)
    first = new_client(settings, graph_ok(add_identity(FakeSession())))
    first.get("/users")
    first.close()
    cache_path = settings["token_cache_path"]
    http_path = os.path.join(os.path.dirname(cache_path), "http_cache.json")
    for path in (cache_path, http_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(cache_path)).st_mode) == 0o700
    with open(http_path) as handle:
        http_text = handle.read()
    http = json.loads(http_text)
    assert list(http["entries"]) and all(k.startswith("GET ") for k in http["entries"])
    assert SECRET not in http_text
    before = (os.stat(cache_path).st_ino, os.stat(http_path).st_ino)

    session = graph_ok(FakeSession())  # no identity routes at all: any token/discovery call would fail
    second = new_client(settings, session)
    second.get("/users")
    second.close()
    assert session.identity_calls() == []
    assert second.stats["token_requests"] == 0 and second.stats["requests"] == 1
    # Nothing changed, so nothing was rewritten.
    assert (os.stat(cache_path).st_ino, os.stat(http_path).st_ino) == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_token_cache_readable_by_others_is_refused(base_settings, mode):
    settings = secret_settings(base_settings)
    path = settings["token_cache_path"]
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("{}")
    os.chmod(path, mode)
    session = add_identity(FakeSession())
    client = new_client(settings, session)
    with pytest.raises(AuthError) as info:
        client.get("/users")
    assert "Refusing to use the token cache %s" % path in info.value.msg
    assert "%04o" % mode in info.value.msg and "chmod 600" in info.value.msg
    assert session.calls == []


def test_token_cache_owned_by_someone_else_is_refused(base_settings, monkeypatch):
    settings = secret_settings(base_settings)
    path = settings["token_cache_path"]
    os.makedirs(os.path.dirname(path))
    _auth.write_private_file(path, "{}")
    monkeypatch.setattr(_auth.os, "getuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(AuthError) as info:
        new_client(settings, FakeSession()).get("/users")
    assert "belongs to another user" in info.value.msg


def test_token_cache_disabled_writes_nothing(base_settings, tmp_path):
    settings = secret_settings(base_settings, token_cache=False)
    client = new_client(settings, graph_ok(add_identity(FakeSession())))
    client.get("/users")
    client.close()
    assert not os.path.exists(os.path.dirname(settings["token_cache_path"]))


def test_unwritable_token_cache_warns_and_continues(base_settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings = secret_settings(base_settings, token_cache_path=str(blocker / "token_cache.json"))
    client = new_client(settings, graph_ok(add_identity(FakeSession())))
    assert client.get("/users") == {"value": []}
    assert len(client.warnings) == 1 and "Could not save the token cache" in client.warnings[0]


def test_corrupt_token_cache_is_replaced(base_settings):
    settings = secret_settings(base_settings)
    path = settings["token_cache_path"]
    _auth.write_private_file(path, "{not json")
    client = new_client(settings, graph_ok(add_identity(FakeSession())))
    client.get("/users")
    assert "Ignoring an unreadable token cache" in client.warnings[0]
    with open(path) as handle:
        partitions = json.loads(handle.read())["partitions"]
    assert len(partitions) == 1 and list(partitions.values())[0]["AccessToken"]


def test_stale_cached_token_gets_one_fresh_token_on_401(base_settings):
    settings = secret_settings(base_settings)
    old, new = make_jwt(jti="old"), make_jwt(jti="new")
    warm = new_client(settings, graph_ok(add_identity(FakeSession(), token=old)))
    warm.get("/users")
    warm.close()

    def graph(call):
        ok = call.headers["Authorization"] == "Bearer " + new
        return (
            make_response(200, {"ok": True})
            if ok
            else make_response(401, {"error": {"code": "InvalidAuthenticationToken", "message": "signature"}})
        )

    session = add_identity(FakeSession(), token=new).add("GET", V1, graph)
    client = new_client(settings, session)
    assert client.get("/users") == {"ok": True}
    assert [c.method for c in session.graph_calls()] == ["GET", "GET"]
    assert client.stats["token_requests"] == 1
    assert "answered 401 (the access token was refused); getting a new token" in client.logs[0]


# --------------------------------------------------------------------------- token errors


def aad_error(code, error, description):
    return make_response(
        401 if error == "invalid_client" else 400,
        {
            "error": error,
            "error_description": "AADSTS%d: %s\r\nTrace ID: 0000 Correlation ID: c-1 Timestamp: 2026-01-01 00:00:00Z"
            % (code, description),
            "error_codes": [code],
            "correlation_id": "c-1",
        },
    )


@pytest.mark.parametrize(
    "code, hint",
    [
        (7000215, "The client secret is wrong"),
        (700016, "was not found in this tenant"),
        (90002, "The tenant was not found"),
        (7000222, "has expired"),
    ],
)
def test_token_failure_names_the_aadsts_code_and_a_hint(base_settings, code, hint):
    session = add_identity(FakeSession(), token_answers=[aad_error(code, "invalid_client", "Something is wrong.")])
    client = new_client(secret_settings(base_settings), session)
    with pytest.raises(AuthError) as info:
        client.get("/users")
    err = info.value
    assert "AADSTS%d: Something is wrong." % code in err.msg and hint in err.msg
    assert "Trace ID" not in err.msg
    assert err.details["aadsts_code"] == code and err.details["correlation_id"] == "c-1"
    assert err.msg.startswith(
        "Could not get a Microsoft Graph token for %s from %s/%s with auth_method=client_secret"
        % (GRAPH, AUTHORITY, TENANT)
    )


def test_unknown_tenant_at_discovery_is_an_auth_error(base_settings):
    session = FakeSession().add(
        "GET",
        AUTHORITY,
        make_response(400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."}),
    )
    with pytest.raises(AuthError) as info:
        new_client(secret_settings(base_settings), session).get("/users")
    assert "Could not set up sign-in against %s/%s" % (AUTHORITY, TENANT) in info.value.msg


def test_identity_platform_unreachable_retries_then_fails(base_settings):
    refused = requests.exceptions.ConnectionError(NewConnectionError(None, "[Errno 111] Connection refused"))
    session = FakeSession().add("GET", AUTHORITY, refused)
    waits = []
    with pytest.raises(AuthError) as info:
        new_client(secret_settings(base_settings, max_retries=2), session, waits).get("/users")
    assert len(session.calls) == 3 and len(waits) == 2
    assert "Could not reach the identity platform" in info.value.msg and "gave up after 3 attempts" in info.value.msg


def test_identity_platform_throttling_honours_retry_after(base_settings):
    session = add_identity(
        FakeSession(),
        token_answers=[
            make_response(429, {"error": "throttled"}, {"Retry-After": "4"}),
            make_response(200, {"access_token": make_jwt(), "expires_in": 3600, "token_type": "Bearer"}),
        ],
    )
    waits = []
    graph_ok(session)
    new_client(secret_settings(base_settings), session, waits).get("/users")
    assert waits == [4]


# --------------------------------------------------------------------------- certificate


def make_cert_files(tmp_path):
    data = self_signed_pem("entra-pim-test")
    key = serialization.load_pem_private_key(data, password=None)
    cert = x509.load_pem_x509_certificate(data)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    plain = tmp_path / "plain.pem"
    plain.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert_pem
    )
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(CERT_PASSWORD.encode()),
        )
        + cert_pem
    )
    pfx = tmp_path / "cert.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", key, cert, None, serialization.BestAvailableEncryption(CERT_PASSWORD.encode())
        )
    )
    sha1 = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()
    return {
        "plain": str(plain),
        "encrypted": str(encrypted),
        "pfx": str(pfx),
        "x5t": base64.urlsafe_b64encode(sha1).rstrip(b"=").decode(),
    }


def jwt_header(token):
    if isinstance(token, bytes):
        token = token.decode("ascii")
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode((part + "=" * (-len(part) % 4)).encode()))


@pytest.mark.parametrize("kind, password", [("plain", None), ("encrypted", CERT_PASSWORD), ("pfx", CERT_PASSWORD)])
def test_certificate_flow_signs_an_assertion_with_the_certificate_thumbprint(base_settings, tmp_path, kind, password):
    files = make_cert_files(tmp_path)
    settings = settings_with(
        base_settings,
        tenant_id=TENANT,
        client_id=CLIENT,
        client_certificate_path=files[kind],
        client_certificate_password=password,
    )
    session = graph_ok(add_identity(FakeSession()))
    client = new_client(settings, session)
    client.get("/users")
    assert client.auth_method == "certificate"
    form = session.identity_calls()[-1].form()
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    # MSAL pads x5t with "=", Entra accepts both forms.
    assert jwt_header(form["client_assertion"])["x5t"].rstrip("=") == files["x5t"]
    assert "client_secret" not in form


@pytest.mark.parametrize(
    "kind, password, expected",
    [
        ("encrypted", None, "is encrypted: set client_certificate_password"),
        ("encrypted", "wrong-password-123", "Could not load the private key"),
        ("pfx", "wrong-password-123", "Could not open"),
        ("missing", None, "Could not read client_certificate_path"),
    ],
)
def test_certificate_problems_are_explained(base_settings, tmp_path, kind, password, expected):
    files = make_cert_files(tmp_path)
    path = files.get(kind, str(tmp_path / "nope.pem"))
    settings = settings_with(
        base_settings,
        tenant_id=TENANT,
        client_id=CLIENT,
        client_certificate_path=path,
        client_certificate_password=password,
    )
    with pytest.raises(AuthError) as info:
        new_client(settings, add_identity(FakeSession())).get("/users")
    assert expected in info.value.msg
    assert (password or "\0") not in info.value.msg


# --------------------------------------------------------------------------- federated, user, MI, CLI, static


def test_federated_token_file_is_read_at_every_acquisition(base_settings, tmp_path):
    token_file = tmp_path / "federated"
    token_file.write_text("assertion-one\n")
    settings = settings_with(
        base_settings, tenant_id=TENANT, client_id=CLIENT, federated_token_file=str(token_file), token_cache=False
    )
    session = graph_ok(add_identity(FakeSession()))
    new_client(settings, session).get("/users")
    token_file.write_text("assertion-two")
    new_client(settings, session).get("/users")
    sent = [c.form()["client_assertion"] for c in session.identity_calls() if c.method == "POST"]
    assert sent == ["assertion-one", "assertion-two"]


def test_empty_federated_token_file(base_settings, tmp_path):
    token_file = tmp_path / "federated"
    token_file.write_text("")
    settings = settings_with(base_settings, tenant_id=TENANT, client_id=CLIENT, federated_token_file=str(token_file))
    with pytest.raises(AuthError) as info:
        new_client(settings, add_identity(FakeSession())).get("/users")
    assert "is empty" in info.value.msg


def test_username_password_then_warm_run_uses_the_cache(base_settings):
    settings = settings_with(
        base_settings, tenant_id=TENANT, client_id=CLIENT, username="alice@contoso.example", password=USER_PASSWORD
    )
    token = make_jwt({"scp": "RoleManagement.ReadWrite.Directory", "upn": "alice@contoso.example"}, roles=None)
    session = graph_ok(add_identity(FakeSession(), token=token))
    first = new_client(settings, session)
    first.get("/users")
    first.close()
    form = [c for c in session.identity_calls() if c.method == "POST"][0].form()
    assert form["grant_type"] == "password" and form["username"] == "alice@contoso.example"
    assert form["password"] == USER_PASSWORD
    assert first.auth_method == "username_password"

    session2 = graph_ok(FakeSession())
    second = new_client(settings, session2)
    second.get("/users")
    assert session2.identity_calls() == [] and second.stats["token_requests"] == 0


def test_managed_identity_on_app_service(base_settings, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://169.254.1.1/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header-value")
    token = make_jwt(jti="mi")
    session = FakeSession().add(
        "GET",
        "http://169.254.1.1/msi/token",
        make_response(
            200, {"access_token": token, "expires_on": "9999999999", "resource": GRAPH, "token_type": "Bearer"}
        ),
    )
    graph_ok(session)
    client = new_client(settings_with(base_settings, managed_identity_client_id="mi-client"), session)
    assert client.auth_method == "managed_identity"
    client.get("/users")
    mi_call = session.calls[0]
    assert mi_call.kwargs["params"]["resource"] == GRAPH and mi_call.kwargs["params"]["client_id"] == "mi-client"
    assert session.graph_calls()[0].headers["Authorization"] == "Bearer " + token


def write_fake_az(tmp_path, body, rc=0, stderr=""):
    script = tmp_path / "az"
    args_file = tmp_path / "az-args"
    script.write_text(
        "#!/bin/sh\n"
        'printf "%%s\\n" "$@" > %s\n'
        "cat <<'EOF'\n%s\nEOF\n"
        "echo %r >&2\n"
        "exit %d\n" % (args_file, body, stderr, rc)
    )
    script.chmod(0o755)
    return str(script), args_file


def test_azure_cli_token(base_settings, tmp_path):
    token = make_jwt(jti="cli")
    az, args_file = write_fake_az(
        tmp_path, json.dumps({"accessToken": token, "expiresOn": "2099-01-01 00:00:00.000000"})
    )
    session = graph_ok(FakeSession())
    client = new_client(
        settings_with(base_settings, auth_method="azure_cli", azure_cli_path=az, tenant_id=TENANT), session
    )
    client.get("/users")
    client.get("/users")
    assert session.graph_calls()[0].headers["Authorization"] == "Bearer " + token
    args = args_file.read_text().split()
    assert args == ["account", "get-access-token", "--resource", GRAPH, "--output", "json", "--tenant", TENANT]
    assert client.stats["token_requests"] == 1


def test_azure_cli_missing_or_failing(base_settings, tmp_path):
    settings = settings_with(base_settings, auth_method="azure_cli", azure_cli_path=str(tmp_path / "no-az"))
    with pytest.raises(AuthError) as info:
        new_client(settings, FakeSession()).get("/users")
    assert "needs the Azure CLI ('az'), which was not found at" in info.value.msg
    az, dummy = write_fake_az(tmp_path, "", rc=1, stderr="ERROR: Please run 'az login' to setup account.")
    with pytest.raises(AuthError) as info:
        new_client(settings_with(settings, azure_cli_path=az), FakeSession()).get("/users")
    assert "exit code 1" in info.value.msg and "Please run 'az login'" in info.value.msg


def test_static_access_token_strips_bearer_and_needs_no_identity_call(base_settings):
    token = make_jwt(jti="static")
    session = graph_ok(FakeSession())
    client = new_client(settings_with(base_settings, access_token="Bearer " + token), session)
    client.get("/users")
    assert session.calls[0].headers["Authorization"] == "Bearer " + token
    assert client.stats["token_requests"] == 0
    assert not os.path.exists(os.path.dirname(base_settings["token_cache_path"]))


# --------------------------------------------------------------------------- no secret anywhere


def _failure_paths(base_settings, tmp_path):
    """Each returns (settings, session) that fail somewhere a secret is in play."""
    echoing = add_identity(
        FakeSession(),
        token_answers=[aad_error(7000215, "invalid_client", "Invalid client secret provided: %s." % SECRET)],
    )
    files = make_cert_files(tmp_path)
    token = make_jwt(jti="leaky")
    leaky_graph = add_identity(FakeSession(), token=token).add(
        "GET",
        V1,
        make_response(403, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}}),
    )
    throttled = add_identity(FakeSession(), token=token).add("GET", V1, make_response(429, {}, {"Retry-After": "0"}))
    lost = add_identity(FakeSession(), token=token).add("POST", V1, requests.exceptions.ReadTimeout("timeout"))
    unreachable = FakeSession().add("GET", AUTHORITY, requests.exceptions.ConnectionError("Connection refused"))
    bad_user = add_identity(
        FakeSession(),
        token_answers=[
            aad_error(50126, "invalid_grant", "Error validating credentials due to invalid username or password.")
        ],
    )
    return {
        "wrong-secret-echoed": (secret_settings(base_settings), echoing, "get"),
        "graph-403": (secret_settings(base_settings), leaky_graph, "get"),
        "throttled": (secret_settings(base_settings, max_retries=1), throttled, "get"),
        "lost-post": (secret_settings(base_settings), lost, "post"),
        "unreachable": (secret_settings(base_settings, max_retries=1), unreachable, "get"),
        "cert-wrong-password": (
            settings_with(
                base_settings,
                tenant_id=TENANT,
                client_id=CLIENT,
                client_certificate_path=files["encrypted"],
                client_certificate_password=CERT_PASSWORD + "x",
            ),
            add_identity(FakeSession()),
            "get",
        ),
        "user-wrong-password": (
            settings_with(
                base_settings,
                tenant_id=TENANT,
                client_id=CLIENT,
                username="bob@contoso.example",
                password=USER_PASSWORD,
            ),
            bad_user,
            "get",
        ),
    }, token


FAILURES = [
    "wrong-secret-echoed",
    "graph-403",
    "throttled",
    "lost-post",
    "unreachable",
    "cert-wrong-password",
    "user-wrong-password",
]


@pytest.mark.parametrize("name", FAILURES)
def test_no_secret_in_any_error_or_log_line(base_settings, tmp_path, name):
    paths, token = _failure_paths(base_settings, tmp_path)
    settings, session, verb = paths[name]
    client = new_client(settings, session)
    with pytest.raises((AuthError, GraphError)) as info:
        if verb == "post":
            client.post("/roleManagement/directory/roleEligibilityScheduleRequests", {"justification": "x"})
        else:
            client.get("/roleManagement/directory/roleDefinitions")
    err = info.value
    texts = (
        [err.msg, str(err), repr(err), json.dumps(err.to_fail_kwargs(), default=str)] + client.logs + client.warnings
    )
    for secret in (SECRET, CERT_PASSWORD, CERT_PASSWORD + "x", USER_PASSWORD, token):
        for text in texts:
            assert secret not in text, (name, text)
    assert "Traceback" not in err.msg
