"""Identity side of the sandbox: discovery, JWKS, token endpoint with unmodified MSAL, AAD-style errors."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


class PortKeepingSession(requests.Session):
    """The HTTP client given to MSAL: trusts the sandbox CA, ignoring REQUESTS_CA_BUNDLE (which in
    requests overrides ``Session.verify``, and so MSAL's own ``verify=``), and works around this:

    MSAL's user-realm lookup drops the authority's port (it builds ``https://{hostname}/common/userrealm``).

    This only puts the port back for that one URL; MSAL itself is unmodified. The collection's
    client needs the same when it uses the password grant against a sandbox on a non-443 port.
    """

    def __init__(self, base_url: str, ca: str):
        super().__init__()
        self.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
        self.verify = ca
        self._base = base_url
        self._portless = base_url.rsplit(":", 1)[0] + "/"

    def request(self, method, url, *args, **kwargs):
        if url.startswith(self._portless):
            url = self._base + "/" + url[len(self._portless) :]
        return super().request(method, url, *args, **kwargs)


def _authority(sb) -> str:
    return f"{sb.conn['authority_host']}/{sb.conn['tenant_id']}"


def _decode(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_openid_configuration_and_jwks(fresh):
    sb = fresh
    tenant = sb.conn["tenant_id"]
    cfg = sb.session.get(f"{sb.base_url}/{tenant}/v2.0/.well-known/openid-configuration", timeout=10)
    assert cfg.status_code == 200
    body = cfg.json()
    assert body["token_endpoint"] == f"{sb.base_url}/{tenant}/oauth2/v2.0/token"
    assert body["issuer"] == f"{sb.base_url}/{tenant}/v2.0"
    assert body["jwks_uri"] == f"{sb.base_url}/{tenant}/discovery/v2.0/keys"
    assert "authorization_endpoint" in body
    keys = sb.session.get(body["jwks_uri"], timeout=10).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"
    # a minted token verifies with the published key
    token = sb.token()
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=sb.base_url)
    assert claims["tid"] == tenant
    stats = sb.stats()
    assert stats["discovery_requests"] == 2 and stats["graph_requests"] == 0


def test_unknown_tenant_discovery_is_400(fresh):
    r = fresh.session.get(f"{fresh.base_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration", timeout=10)
    assert r.status_code == 400
    assert "AADSTS90002" in r.json()["error_description"]


def test_msal_client_secret(fresh):
    sb = fresh
    app = msal.ConfidentialClientApplication(
        sb.conn["client_id"],
        client_credential=sb.conn["client_secret"],
        authority=_authority(sb),
        instance_discovery=False,
        http_client=PortKeepingSession(sb.base_url, sb.ca),
    )
    result = app.acquire_token_for_client(scopes=[sb.conn["graph_url"] + "/.default"])
    assert "access_token" in result, result
    assert result["token_type"].lower() == "bearer"
    claims = _decode(result["access_token"])
    assert claims["aud"] == sb.conn["graph_url"]
    assert claims["iss"] == f"{sb.conn['authority_host']}/{sb.conn['tenant_id']}/v2.0"
    assert claims["appid"] == claims["azp"] == sb.conn["client_id"]
    assert "RoleManagement.ReadWrite.Directory" in claims["roles"]
    assert "scp" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    for name in ("tid", "oid", "nbf", "uti", "jti"):
        assert claims[name]
    # the token works on Graph
    r = sb.get("/users", token=result["access_token"], params={"$top": "1"})
    assert r.status_code == 200, r.text
    assert sb.stats()["token_requests"] == 1


def test_msal_client_secret_wrong_secret(fresh):
    sb = fresh
    app = msal.ConfidentialClientApplication(
        sb.conn["client_id"],
        client_credential="not-the-secret",
        authority=_authority(sb),
        instance_discovery=False,
        http_client=PortKeepingSession(sb.base_url, sb.ca),
    )
    result = app.acquire_token_for_client(scopes=[sb.conn["graph_url"] + "/.default"])
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "not-the-secret" not in result["error_description"]


def test_token_endpoint_errors_are_aad_shaped(fresh):
    sb = fresh
    url = f"{sb.base_url}/{sb.conn['tenant_id']}/oauth2/v2.0/token"
    scope = sb.conn["graph_url"] + "/.default"
    cases = [
        (
            {"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": "x", "scope": scope},
            400,
            "unauthorized_client",
            700016,
        ),
        (
            {"grant_type": "client_credentials", "client_id": sb.conn["client_id"], "scope": scope},
            401,
            "invalid_client",
            7000218,
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": sb.conn["client_id"],
                "client_secret": sb.conn["client_secret"],
                "scope": sb.conn["graph_url"] + "/User.Read",
            },
            400,
            "invalid_scope",
            1002012,
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": sb.conn["client_id"],
                "client_secret": sb.conn["client_secret"],
                "scope": "https://vault.example/.default",
            },
            400,
            "invalid_resource",
            500011,
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": sb.conn["client_id"],
                "client_secret": sb.conn["client_secret"],
            },
            400,
            "invalid_request",
            90014,
        ),
        ({"grant_type": "device_code", "client_id": sb.conn["client_id"]}, 400, "unsupported_grant_type", 70003),
        (
            {
                "grant_type": "password",
                "client_id": sb.conn["client_id"],
                "username": "alice@contoso.example",
                "password": "wrong",
                "scope": scope,
            },
            400,
            "invalid_grant",
            50126,
        ),
        (
            {
                "grant_type": "password",
                "client_id": sb.conn["client_id"],
                "username": "nobody@contoso.example",
                "password": "x",
                "scope": scope,
            },
            400,
            "invalid_grant",
            50034,
        ),
    ]
    for form, status, error, code in cases:
        r = sb.session.post(url, data=form, timeout=10)
        assert r.status_code == status, (form, r.text)
        body = r.json()
        assert body["error"] == error, body
        assert body["error_codes"] == [code]
        assert body["error_description"].startswith(f"AADSTS{code}: ")
        assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    # the grant's well-known audiences are accepted too (notes §0)
    for aud in ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"):
        r = sb.session.post(
            url,
            data={
                "grant_type": "client_credentials",
                "client_id": sb.conn["client_id"],
                "client_secret": sb.conn["client_secret"],
                "scope": aud + "/.default",
            },
            timeout=10,
        )
        assert r.status_code == 200
        token = r.json()["access_token"]
        assert _decode(token)["aud"] == aud
        assert sb.get("/users", token=token, params={"$top": "1"}).status_code == 200


def test_msal_certificate(fresh):
    sb = fresh
    pem = Path(sb.conn["client_certificate_path"]).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    scope = [sb.conn["graph_url"] + "/.default"]
    credentials = [
        # SHA-1 thumbprint, RS256, header x5t (the classic MSAL form)
        {"private_key": key_pem.decode(), "thumbprint": cert.fingerprint(hashes.SHA1()).hex()},
        # public certificate given: MSAL computes the SHA-256 thumbprint and signs PS256 (x5t#S256)
        {"private_key": key_pem.decode(), "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()},
    ]
    for cred in credentials:
        app = msal.ConfidentialClientApplication(
            sb.conn["certificate_client_id"],
            client_credential=cred,
            authority=_authority(sb),
            instance_discovery=False,
            http_client=PortKeepingSession(sb.base_url, sb.ca),
        )
        result = app.acquire_token_for_client(scopes=scope)
        assert "access_token" in result, result
        claims = _decode(result["access_token"])
        assert claims["appid"] == sb.conn["certificate_client_id"]
        assert claims["appidacr"] == "2"
        assert sb.get("/users", token=result["access_token"], params={"$top": "1"}).status_code == 200


def _assertion(sb, key, thumb_header: dict, **overrides) -> str:
    now = int(time.time())
    claims = {
        "aud": f"{sb.base_url}/{sb.conn['tenant_id']}/oauth2/v2.0/token",
        "iss": sb.conn["certificate_client_id"],
        "sub": sb.conn["certificate_client_id"],
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers=thumb_header)


def test_client_assertion_failures(fresh):
    sb = fresh
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = Path(sb.conn["client_certificate_path"]).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    import base64

    x5t = {"x5t": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode().rstrip("=")}
    url = f"{sb.base_url}/{sb.conn['tenant_id']}/oauth2/v2.0/token"

    def post(assertion):
        return sb.session.post(
            url,
            data={
                "grant_type": "client_credentials",
                "client_id": sb.conn["certificate_client_id"],
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
                "scope": sb.conn["graph_url"] + "/.default",
            },
            timeout=10,
        )

    assert post(_assertion(sb, key, x5t)).status_code == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (_assertion(sb, other_key, x5t), 700027),  # signed by a key that is not the registered cert's
        (_assertion(sb, key, x5t, exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200), 700024),  # expired
        (_assertion(sb, key, x5t, aud="https://login.example/other"), 700212),  # wrong audience
        (_assertion(sb, key, {"x5t": "AAAA"}), 700027),  # unknown thumbprint
        (_assertion(sb, key, x5t, iss=sb.conn["client_id"], sub=sb.conn["client_id"]), 700021),
        ("not.a.jwt", 700025),
    ]
    for assertion, code in cases:
        r = post(assertion)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert r.json()["error_codes"] == [code], r.text
    # the certificate is registered only on the certificate app
    r = sb.session.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": sb.conn["client_id"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(sb, key, x5t, iss=sb.conn["client_id"], sub=sb.conn["client_id"]),
            "scope": sb.conn["graph_url"] + "/.default",
        },
        timeout=10,
    )
    assert r.status_code == 401 and r.json()["error_codes"] == [700027]


def test_msal_username_password(fresh):
    sb = fresh
    app = msal.PublicClientApplication(
        sb.conn["client_id"],
        authority=_authority(sb),
        instance_discovery=False,
        http_client=PortKeepingSession(sb.base_url, sb.ca),
    )
    result = app.acquire_token_by_username_password(
        "alice@contoso.example", "Sandbox-Alice-Pass-1!", scopes=[sb.conn["graph_url"] + "/.default"]
    )
    assert "access_token" in result, result
    claims = _decode(result["access_token"])
    assert claims["amr"] == ["pwd"]
    assert claims["idtyp"] == "user"
    assert "RoleAssignmentSchedule.ReadWrite.Directory" in claims["scp"].split(" ")
    assert "roles" not in claims
    assert claims["upn"] == "alice@contoso.example"
    assert result["id_token_claims"]["preferred_username"] == "alice@contoso.example"
    # MSAL built an account from client_info + id_token, so silent acquisition works (cache or refresh token)
    accounts = app.get_accounts(username="alice@contoso.example")
    assert len(accounts) == 1
    silent = app.acquire_token_silent([sb.conn["graph_url"] + "/.default"], account=accounts[0])
    assert silent and _decode(silent["access_token"])["oid"] == claims["oid"]
    # explicit delegated scopes: only what is asked (and consented) is granted
    app2 = msal.PublicClientApplication(
        sb.conn["client_id"],
        authority=_authority(sb),
        instance_discovery=False,
        http_client=PortKeepingSession(sb.base_url, sb.ca),
    )
    scoped = app2.acquire_token_by_username_password(
        "bob@contoso.example",
        "Sandbox-Bob-Pass-1!",
        scopes=[sb.conn["graph_url"] + "/RoleAssignmentSchedule.ReadWrite.Directory"],
    )
    assert _decode(scoped["access_token"])["scp"] == "RoleAssignmentSchedule.ReadWrite.Directory"
    refused = app2.acquire_token_by_username_password(
        "bob@contoso.example", "Sandbox-Bob-Pass-1!", scopes=[sb.conn["graph_url"] + "/Mail.Send"]
    )
    assert refused["error"] == "invalid_grant" and 65001 in refused["error_codes"]


def test_refresh_token_grant(fresh):
    sb = fresh
    url = f"{sb.base_url}/{sb.conn['tenant_id']}/oauth2/v2.0/token"
    first = sb.session.post(
        url,
        data={
            "grant_type": "password",
            "client_id": sb.conn["client_id"],
            "username": "bob@contoso.example",
            "password": "Sandbox-Bob-Pass-1!",
            "scope": sb.conn["graph_url"] + "/.default offline_access openid profile",
        },
        timeout=10,
    ).json()
    again = sb.session.post(
        url,
        data={
            "grant_type": "refresh_token",
            "client_id": sb.conn["client_id"],
            "refresh_token": first["refresh_token"],
            "scope": sb.conn["graph_url"] + "/.default",
        },
        timeout=10,
    )
    assert again.status_code == 200
    assert _decode(again.json()["access_token"])["oid"] == _decode(first["access_token"])["oid"]
    # a refresh token is not an access token
    r = sb.get("/users", token=first["refresh_token"])
    assert r.status_code == 401


@pytest.mark.parametrize(
    "claims",
    [{"amr": ["pwd", "mfa"]}, {"acrs": ["c1"], "amr": ["pwd", "mfa"]}],
)
def test_control_minted_tokens_carry_chosen_claims(fresh, claims):
    token = fresh.control("POST", "/tokens", {"user": "alice@contoso.example", "claims": claims})["access_token"]
    decoded = _decode(token)
    for k, v in claims.items():
        assert decoded[k] == v
    assert decoded["upn"] == "alice@contoso.example" and "scp" in decoded
    assert fresh.get("/users", token=token, params={"$top": "1"}).status_code == 200


def test_control_body_is_read_whatever_its_content_type(fresh):
    """A JSON body sent as text/plain is still honoured; a body that is not JSON is a 400, never ignored."""
    body = '{"user": "alice@contoso.example", "claims": {"amr": ["pwd", "mfa"]}}'
    resp = fresh.control_raw("POST", "/tokens", data=body, headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.text
    decoded = _decode(resp.json()["access_token"])
    assert decoded["upn"] == "alice@contoso.example" and decoded["amr"] == ["pwd", "mfa"]
    resp = fresh.control_raw("POST", "/tokens", data="user=alice", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest"
