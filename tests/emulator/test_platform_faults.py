"""Fault injection (issue 2 item 12): latency, 429 with and without Retry-After, 503/504, reset,
lost response, throttling; deterministic with the fault seed. Throttling envelope per notes §6.6."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

ALICE = "10000000-0000-4000-8000-000000000002"
ROLE_ASSIGNMENTS = "/roleManagement/directory/roleAssignments"
HELPDESK_ADMIN = "729827e3-9c14-49f7-bb1b-9608f156bbb8"


def _faults(sb, *rules):
    return sb.control("POST", "/faults", {"rules": list(rules)})


@pytest.mark.parametrize(
    ("kind", "code", "retry_after"),
    [
        ("429", "TooManyRequests", 2),
        ("429", "TooManyRequests", None),
        ("503", "serviceNotAvailable", 1),
        ("504", "gatewayTimeout", None),
    ],
)
def test_status_faults(fresh, kind, code, retry_after):
    sb = fresh
    _faults(
        sb, {"kind": kind, "count": 1, "retry_after": retry_after, "match": {"method": "GET", "path": "^/v1.0/users"}}
    )
    r = sb.get(f"/users/{ALICE}")
    assert r.status_code == int(kind)
    err = r.json()["error"]
    assert err["code"] == code
    assert err["innerError"]["request-id"] == r.headers["request-id"]
    if retry_after is None:
        assert "Retry-After" not in r.headers
    else:
        assert r.headers["Retry-After"] == str(retry_after)
    if kind == "429":  # notes §6.6: innerError also carries code and status
        assert err["innerError"]["status"] == "429" and err["innerError"]["code"] == "429"
    # count: 1 -> only the first match
    assert sb.get(f"/users/{ALICE}").status_code == 200
    listing = sb.control("GET", "/faults")
    assert listing["rules"][0]["hits"] == 1 and listing["rules"][0]["remaining"] == 0
    stats = sb.stats()
    assert stats["graph_requests"] == 2 and stats["faults_injected"] == 1


def test_token_expired_fault_answers_401_like_an_expired_token(fresh):
    """A token that expires mid-run: the next Graph request gets the expiry 401, then it recovers."""
    sb = fresh
    _faults(sb, {"kind": "token_expired", "count": 1, "match": {"method": "GET", "path": "^/v1.0/users"}})
    r = sb.get(f"/users/{ALICE}")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert r.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert sb.get(f"/users/{ALICE}").status_code == 200
    assert sb.stats()["faults_injected"] == 1
    # in a $batch the token is checked once, on the outer POST: items are never hit
    _faults(sb, {"kind": "token_expired", "count": 1, "match": {"path": "users"}})
    answer = sb.post("/$batch", json={"requests": [{"id": "1", "method": "GET", "url": f"/users/{ALICE}"}]})
    assert answer.status_code == 200 and answer.json()["responses"][0]["status"] == 200


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("subject_not_found", "SubjectNotFound", "The subject is not found."),
        ("role_not_found", "RoleNotFound", "The role is not found."),
    ],
)
def test_replication_lag_by_count(fresh, kind, code, message):
    """Replication lag counted in requests (notes §6.2 SubjectNotFound/RoleNotFound): nothing is written."""
    sb = fresh
    path = "/roleManagement/directory/roleEligibilityScheduleRequests"
    body = {
        "action": "adminAssign",
        "principalId": ALICE,
        "roleDefinitionId": HELPDESK_ADMIN,
        "directoryScopeId": "/",
        "justification": "lag",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "P30D"}},
    }
    _faults(sb, {"kind": kind, "count": 1, "match": {"method": "POST", "path": "ScheduleRequests$"}})
    # in a $batch it hits the item, like any answer PIM gives per request
    item = {"id": "1", "method": "POST", "url": path, "body": body, "headers": {"Content-Type": "application/json"}}
    answer = sb.post("/$batch", json={"requests": [item]})
    item = answer.json()["responses"][0]
    assert item["status"] == 400 and item["body"]["error"]["code"] == code
    assert item["body"]["error"]["message"] == message
    assert sb.get(path).json()["value"] == []
    r = sb.post(path, json=body)
    assert r.status_code == 201 and r.json()["status"] == "Provisioned"


def test_match_filters_method_and_path(fresh):
    sb = fresh
    _faults(sb, {"kind": "503", "count": 5, "match": {"method": "POST"}})
    assert sb.get(f"/users/{ALICE}").status_code == 200  # GET does not match
    _faults(sb, {"kind": "503", "count": 5, "match": {"path": "roleDefinitions"}})
    assert sb.get(f"/users/{ALICE}").status_code == 200
    assert sb.get("/roleManagement/directory/roleDefinitions").status_code == 503
    sb.control("DELETE", "/faults")
    assert sb.get("/roleManagement/directory/roleDefinitions").status_code == 200


def test_rate_faults_are_deterministic_with_the_seed(fresh):
    sb = fresh

    def run():
        sb.control("PATCH", "/settings", {"fault_seed": 1234})
        _faults(sb, {"kind": "503", "rate": 0.3})
        return [sb.get(f"/users/{ALICE}").status_code for _ in range(40)]

    first = run()
    assert first == run()
    assert 3 <= first.count(503) <= 25 and first.count(200) > 0


def test_reset_drops_the_connection_before_handling(fresh):
    sb = fresh
    principal = fresh.control(
        "POST",
        "/objects",
        {
            "type": "user",
            "displayName": "Reset Test",
            "userPrincipalName": f"reset-{uuid.uuid4().hex[:6]}@contoso.example",
        },
    )["id"]
    _faults(sb, {"kind": "reset", "count": 1, "match": {"method": "POST"}})
    body = {"principalId": principal, "roleDefinitionId": HELPDESK_ADMIN, "directoryScopeId": "/"}
    with pytest.raises(requests.exceptions.ConnectionError):
        sb.post(ROLE_ASSIGNMENTS, json=body)
    # nothing was written
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"principalId eq '{principal}'"})
    assert r.json()["value"] == []
    # the sandbox keeps serving; the retry succeeds
    assert sb.post(ROLE_ASSIGNMENTS, json=body).status_code == 201


def test_lost_response_commits_then_drops(fresh):
    sb = fresh
    principal = fresh.control(
        "POST",
        "/objects",
        {
            "type": "user",
            "displayName": "Lost Test",
            "userPrincipalName": f"lost-{uuid.uuid4().hex[:6]}@contoso.example",
        },
    )["id"]
    _faults(sb, {"kind": "lost_response", "count": 1, "match": {"method": "POST", "path": "roleAssignments$"}})
    body = {"principalId": principal, "roleDefinitionId": HELPDESK_ADMIN, "directoryScopeId": "/"}
    with pytest.raises(requests.exceptions.ConnectionError):
        sb.post(ROLE_ASSIGNMENTS, json=body)
    # the write happened although the client never saw the reply
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"principalId eq '{principal}'"})
    assert [a["roleDefinitionId"] for a in r.json()["value"]] == [HELPDESK_ADMIN]
    # a blind retry now conflicts: the client must re-read instead
    assert sb.post(ROLE_ASSIGNMENTS, json=body).status_code == 400
    assert sb.stats()["writes"]["POST /v1.0/roleManagement/directory/roleAssignments"] == 2


def test_latency(fresh):
    sb = fresh
    sb.get(f"/users/{ALICE}")
    t0 = time.monotonic()
    sb.get(f"/users/{ALICE}")
    base = time.monotonic() - t0
    sb.control("PATCH", "/settings", {"latency_ms": 300})
    t0 = time.monotonic()
    assert sb.get(f"/users/{ALICE}").status_code == 200
    assert time.monotonic() - t0 >= 0.3
    # control calls are not delayed
    t0 = time.monotonic()
    sb.control("GET", "/clock")
    assert time.monotonic() - t0 < 0.3 + base


def test_throttling_token_bucket(fresh):
    sb = fresh
    sb.control("PATCH", "/settings", {"throttle_rps": 5})
    statuses = [sb.get(f"/users/{ALICE}") for _ in range(12)]
    codes = [r.status_code for r in statuses]
    assert codes.count(429) >= 1 and codes[:5] == [200] * 5
    throttled = next(r for r in statuses if r.status_code == 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    err = throttled.json()["error"]
    assert err["code"] == "TooManyRequests" and err["message"] == "Please retry again later."
    # the bucket is per client app: the read-only app still has its own tokens
    assert sb.get(f"/users/{ALICE}", app="readonly").status_code == 200
    time.sleep(1.1)
    assert sb.get(f"/users/{ALICE}").status_code == 200
    assert sb.stats()["throttled"] >= 1
    sb.control("PATCH", "/settings", {"throttle_rps": 0})
    assert all(sb.get(f"/users/{ALICE}").status_code == 200 for _ in range(10))


def test_invalid_fault_rules_are_400(fresh):
    for rule in (
        {"kind": "explode", "count": 1},
        {"kind": "429"},
        {"kind": "429", "rate": 2},
        {"kind": "429", "count": 1, "match": {"path": "("}},
        {"kind": "429", "count": 1, "surprise": True},
    ):
        r = fresh.control_raw("POST", "/faults", {"rules": [rule]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", rule
    r = fresh.control_raw("PATCH", "/settings", {"page_size": 0})
    assert r.status_code == 400
    r = fresh.control_raw("PATCH", "/settings", {"no_such_setting": 1})
    assert r.status_code == 400


def test_reset_clears_faults_and_settings(sandbox):
    sandbox.control("POST", "/faults", {"rules": [{"kind": "503", "count": 100}]})
    sandbox.control("PATCH", "/settings", {"page_size": 1})
    sandbox.control("POST", "/reset")
    assert sandbox.control("GET", "/faults")["rules"] == []
    assert sandbox.control("GET", "/settings")["page_size"] == 100
    assert sandbox.get(f"/users/{ALICE}").status_code == 200


def test_lost_response_on_a_batch_item_commits_every_item_then_drops_the_batch(fresh):
    """scope batch_item: a $batch of writes whose answer never arrives (the items did run)."""
    sb = fresh
    principal = fresh.control(
        "POST",
        "/objects",
        {
            "type": "user",
            "displayName": "Lost Batch",
            "userPrincipalName": f"lostbatch-{uuid.uuid4().hex[:6]}@contoso.example",
        },
    )["id"]
    _faults(
        sb,
        {
            "kind": "lost_response",
            "count": 1,
            "scope": "batch_item",
            "match": {"method": "POST", "path": "Assignments$"},
        },
    )
    body = {"principalId": principal, "roleDefinitionId": HELPDESK_ADMIN, "directoryScopeId": "/"}
    batch = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{ALICE}"},
            {
                "id": "2",
                "method": "POST",
                "url": ROLE_ASSIGNMENTS,
                "body": body,
                "headers": {"Content-Type": "application/json"},
            },
        ]
    }
    with pytest.raises(requests.exceptions.ConnectionError):
        sb.post("/$batch", json=batch)
    r = sb.get(ROLE_ASSIGNMENTS, params={"$filter": f"principalId eq '{principal}'"})
    assert [a["roleDefinitionId"] for a in r.json()["value"]] == [HELPDESK_ADMIN]
    # scope any (the default) still never hits items: the next batch answers normally
    _faults(sb, {"kind": "lost_response", "count": 1, "match": {"path": "users"}})
    answer = sb.post("/$batch", json={"requests": batch["requests"][:1]})
    assert answer.status_code == 200 and answer.json()["responses"][0]["status"] == 200
