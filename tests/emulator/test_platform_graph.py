"""Graph-side platform behaviour: token checks, error envelope, request ids, bad input, OData, paging."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROLE_ASSIGNMENTS = "/roleManagement/directory/roleAssignments"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"


def _assert_envelope(resp, status: int, code: str, message: str | None = None):
    """The Graph error envelope (notes §6.1): code, message, innerError with date and both request ids."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    if message is not None:
        assert err["message"] == message, err
    inner = err["innerError"]
    assert inner["request-id"] == resp.headers["request-id"]
    assert inner["client-request-id"] == resp.headers["client-request-id"]
    assert len(inner["date"]) == 19 and inner["date"][10] == "T"
    return err


# ----------------------------------------------------------------------------- authentication


def test_missing_and_malformed_tokens_are_401(fresh):
    sb = fresh
    r = sb.session.get(sb.graph + "/users", timeout=10)
    _assert_envelope(r, 401, "InvalidAuthenticationToken", "Access token is empty.")
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    r = sb.session.get(sb.graph + "/users", headers={"Authorization": "Basic abc"}, timeout=10)
    _assert_envelope(r, 401, "InvalidAuthenticationToken", "Access token is empty.")
    r = sb.get("/users", token="not-a-jwt")
    _assert_envelope(r, 401, "InvalidAuthenticationToken")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 3600, "nbf": int(time.time()) - 7200, "iat": int(time.time()) - 7200}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"aud": "https://management.azure.com"}, "Invalid audience."),
        ({"tid": str(uuid.uuid4())}, "Invalid audience."),
    ],
)
def test_bad_claims_are_401(fresh, claims, message):
    token = fresh.control("POST", "/tokens", {"claims": claims})["access_token"]
    r = fresh.get("/users", token=token)
    err = _assert_envelope(r, 401, "InvalidAuthenticationToken")
    assert message in err["message"]


def test_token_signed_by_another_key_is_401(fresh):
    good = jwt.decode(fresh.token(), options={"verify_signature": False})
    header = jwt.get_unverified_header(fresh.token())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = jwt.encode(good, pem, algorithm="RS256", headers={"kid": header["kid"]})
    err = _assert_envelope(fresh.get("/users", token=forged), 401, "InvalidAuthenticationToken")
    assert "signature" in err["message"].lower()


def test_readonly_app_gets_403_on_writes(fresh):
    body = {
        "principalId": "10000000-0000-4000-8000-000000000002",
        "roleDefinitionId": GLOBAL_ADMIN,
        "directoryScopeId": "/",
    }
    r = fresh.post(ROLE_ASSIGNMENTS, json=body, app="readonly")
    _assert_envelope(r, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    assert fresh.get(ROLE_ASSIGNMENTS, app="readonly").status_code == 200
    # an app with no roles at all cannot even read
    token = fresh.control("POST", "/tokens", {"roles": []})["access_token"]
    _assert_envelope(fresh.get("/users", token=token), 403, "Authorization_RequestDenied")


def test_delegated_only_route_rejects_app_token(fresh):
    path = "/roleManagement/directory/roleAssignmentScheduleInstances/filterByCurrentUser(on='principal')"
    _assert_envelope(fresh.get(path), 403, "Authorization_RequestDenied")
    r = fresh.get(path, user="alice@contoso.example")
    assert r.status_code == 200, r.text


def test_delegated_scopes_are_checked(fresh):
    token = fresh.token(user="alice@contoso.example", scopes=["User.Read.All"])
    assert fresh.get("/users", token=token).status_code == 200
    _assert_envelope(fresh.get(ROLE_ASSIGNMENTS, token=token), 403, "Authorization_RequestDenied")


# ----------------------------------------------------------------------------- envelope and bad input


def test_request_ids_echo_the_client(fresh):
    cid = str(uuid.uuid4())
    r = fresh.get("/users", headers={"client-request-id": cid})
    assert r.status_code == 200
    assert r.headers["client-request-id"] == cid
    uuid.UUID(r.headers["request-id"])
    assert r.headers["Content-Type"].startswith("application/json")
    r = fresh.get("/nope", headers={"client-request-id": cid})
    assert r.json()["error"]["innerError"]["client-request-id"] == cid


def test_unknown_routes(fresh):
    _assert_envelope(fresh.get("/nope"), 400, "BadRequest", "Resource not found for the segment 'nope'.")
    _assert_envelope(
        fresh.get("/roleManagement/directory/roleThings"),
        400,
        "BadRequest",
        "Resource not found for the segment 'roleThings'.",
    )
    # a known path with a method it does not support
    _assert_envelope(fresh.delete("/users"), 405, "Request_BadRequest")
    r = fresh.session.get(fresh.base_url + "/beta/users", timeout=10)
    _assert_envelope(r, 400, "BadRequest")


def test_malformed_json_is_400(fresh):
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2", b'"just a string"'):
        r = fresh.request("POST", ROLE_ASSIGNMENTS, data=raw, headers={"Content-Type": "application/json"})
        _assert_envelope(r, 400, "BadRequest")
    assert fresh.stats()["server_errors"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "displayName eq"},
        {"$filter": "displayName eq 'unterminated"},
        {"$filter": "noSuchProperty eq 'x'"},
        {"$filter": "frobnicate(displayName, 'x')"},
        {"$select": "displayName,noSuchProperty"},
        {"$expand": "noSuchNavigation"},
        {"$expand": "principal($bogus=1)"},
        {"$top": "-1"},
        {"$top": "ten"},
        {"$skiptoken": "garbage!"},
        {"$orderby": "displayName sideways"},
        {"$search": "x"},
    ],
)
def test_invalid_odata_is_400(fresh, params):
    r = fresh.get("/users", params=params)
    _assert_envelope(r, 400, "BadRequest")


def test_bad_input_never_500(fresh):
    """Odd paths, methods and bodies: always an envelope, never a 500 (and the sandbox keeps serving)."""
    cases = [
        ("GET", "/users/%ZZ", None),
        ("GET", "/users/" + "a" * 3000, None),
        ("POST", "/$batch", b"{}"),
        ("POST", "/$batch", b'{"requests": "nope"}'),
        ("PATCH", "/users", b"{}"),
        ("POST", ROLE_ASSIGNMENTS, b"{}"),
        ("POST", ROLE_ASSIGNMENTS, b'{"principalId": 5, "roleDefinitionId": [], "directoryScopeId": {}}'),
        ("GET", "/roleManagement/directory/roleDefinitions/not-a-guid", None),
    ]
    for method, path, body in cases:
        r = fresh.request(method, path, data=body, headers={"Content-Type": "application/json"} if body else {})
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        assert "error" in r.json()
    assert fresh.get("/users").status_code == 200
    assert fresh.stats()["server_errors"] == 0


# ----------------------------------------------------------------------------- OData


def _all_pages(sb, path, params=None, **kw):
    pages, url = [], path
    for _ in range(200):  # bounded
        r = sb.get(url, params=params if url == path else None, **kw)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        url = body.get("@odata.nextLink")
        if not url:
            return pages
        assert url.startswith(sb.base_url + "/v1.0/") and "$skiptoken=" in url
    raise AssertionError("paging did not end")


def test_server_paging_with_small_page_size(fresh):
    sb = fresh
    everything = sb.get("/users").json()["value"]
    assert len(everything) >= 5
    sb.control("PATCH", "/settings", {"page_size": 2})
    pages = _all_pages(sb, "/users")
    assert [len(p["value"]) for p in pages[:-1]] == [2] * (len(pages) - 1)
    assert [u["id"] for p in pages for u in p["value"]] == [u["id"] for u in everything]
    assert all(p["@odata.context"] == f"{sb.base_url}/v1.0/$metadata#users" for p in pages)
    # a smaller $top wins and the options survive into the nextLink
    first_run = len(pages)
    pages = _all_pages(sb, "/users", {"$top": "1", "$select": "displayName"})
    assert len(pages) == len(everything)
    assert all(set(p["value"][0]) == {"id", "displayName"} for p in pages)
    # a larger $top does not beat the server page size
    assert len(sb.get("/users", params={"$top": "50"}).json()["value"]) == 2
    stats = sb.stats()
    assert stats["by_route"]["GET /v1.0/users"] == 1 + first_run + len(pages) + 1  # every page is a round trip


def test_role_definitions_come_in_one_page(fresh):
    """Graph answers the role catalogue in one response; $top still limits it (README, OData)."""
    sb = fresh
    sb.control("PATCH", "/settings", {"page_size": 5})
    body = sb.get("/roleManagement/directory/roleDefinitions").json()
    assert "@odata.nextLink" not in body
    assert len(body["value"]) == 123  # every built-in role in reference/builtin-roles.json
    limited = sb.get("/roleManagement/directory/roleDefinitions", params={"$top": "3"}).json()
    assert len(limited["value"]) == 3 and "@odata.nextLink" in limited


def test_filter_operators_and_escaped_quotes(fresh):
    sb = fresh

    def names(flt, path="/users"):
        r = sb.get(path, params={"$filter": flt})
        assert r.status_code == 200, (flt, r.text)
        return sorted(u.get("userPrincipalName") or u.get("displayName") for u in r.json()["value"])

    assert names("userPrincipalName eq 'o''brien@contoso.example'") == ["o'brien@contoso.example"]
    assert names("startswith(displayName, 'Zoë')") == ["zoe@contoso.example"]
    assert names("displayName eq 'zoë åkesson'") == ["zoe@contoso.example"]  # case-insensitive, non-ASCII
    assert names("userPrincipalName in ('alice@contoso.example', 'bob@contoso.example')") == [
        "alice@contoso.example",
        "bob@contoso.example",
    ]
    everyone = names("userPrincipalName ne 'nobody'")
    assert "alice@contoso.example" in everyone
    assert "alice@contoso.example" not in names("not (userPrincipalName eq 'alice@contoso.example')")
    assert names("userPrincipalName eq 'alice@contoso.example' or userPrincipalName eq 'bob@contoso.example'") == [
        "alice@contoso.example",
        "bob@contoso.example",
    ]
    assert names("endswith(userPrincipalName, '@contoso.example') and contains(displayName, 'ander')") == [
        "alice@contoso.example"
    ]
    assert names("userPrincipalName gt 'y'") == ["zoe@contoso.example"]
    assert names("officeLocation eq null") == everyone
    # GUID literals and nested paths on role assignments
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"roleDefinitionId eq '{GLOBAL_ADMIN}'"})
    assert r.status_code == 200 and len(r.json()["value"]) >= 1
    admin_id = r.json()["value"][0]["principalId"]
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"roleDefinitionId eq {GLOBAL_ADMIN}"})
    assert r.status_code == 200 and len(r.json()["value"]) >= 1
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"principal/id eq '{admin_id}'", "$expand": "principal"})
    assert r.status_code == 200 and {a["principalId"] for a in r.json()["value"]} == {admin_id}


def test_select_and_expand(fresh):
    sb = fresh
    r = sb.get(ROLE_ASSIGNMENTS, params={"$select": "principalId,roleDefinitionId", "$expand": "principal($select=id)"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"].endswith(
        "#roleManagement/directory/roleAssignments(principalId,roleDefinitionId,principal(id))"
    )
    first = body["value"][0]
    assert set(first) == {"id", "principalId", "roleDefinitionId", "principal"}
    assert set(first["principal"]) <= {"id", "@odata.type"} and first["principal"]["id"] == first["principalId"]
    # one entity with $select
    uid = sb.get("/users", params={"$top": "1"}).json()["value"][0]["id"]
    r = sb.get(f"/users/{uid}", params={"$select": "displayName"})
    assert r.status_code == 200
    assert set(r.json()) == {"@odata.context", "id", "displayName"}
    assert r.json()["@odata.context"].endswith("#users(displayName)/$entity")
    # sandbox-only keys never leak (password)
    for u in sb.get("/users").json()["value"]:
        assert "password" not in u and "clientSecret" not in u
