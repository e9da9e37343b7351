"""PIM routes over real HTTPS through the sandbox process (fixtures in conftest.py): doc-page replays
with status, keys, value types and @odata.context; Graph error envelopes; router-level permissions;
the clock, approval, object and state control routes; concurrent writers. Notes §N = graph-pim-notes.md.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import requests
from test_pim_domain import (
    ADMIN,
    ALICE,
    BOB,
    DAVE,
    GA,
    HELPDESK,
    TENANT,
    USER_ADMIN,
    doc_examples,
    graph_path,
    same_shape,
)

BASE = "/roleManagement/directory"
MFA = {"amr": ["pwd", "mfa"]}


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(sb) -> datetime:
    return datetime.fromisoformat(sb.control("GET", "/clock")["now"].replace("Z", "+00:00"))


def _rel(url: str) -> tuple[str, dict]:
    path, query = graph_path(url)
    return path.removeprefix("/v1.0"), query


def _objects(sb):
    for spec in (
        {
            "type": "user",
            "id": "071cc716-8147-4397-a5ba-b2105951cc0b",
            "displayName": "Doc User",
            "userPrincipalName": "docuser@contoso.example",
            "createdAt": "2020-01-01T00:00:00Z",
        },
        {
            "type": "user",
            "id": "7146daa8-1b4b-4a66-b2f7-cf593d03c8d2",
            "displayName": "Aline Dupuy",
            "userPrincipalName": "AlineD@contoso.example",
            "createdAt": "2020-01-01T00:00:00Z",
        },
    ):
        sb.control("POST", "/objects", spec)


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    # Graph envelope (notes §6.1)
    assert set(err["innerError"]) >= {"request-id", "client-request-id", "date"}
    return err


def test_http_replay_eligibility_and_assignment_pages(fresh):
    sb = fresh
    _objects(sb)
    admin = {"user": "admin@contoso.example"}
    assign, remove = doc_examples("rbacapplication-post-roleeligibilityschedulerequests.md")
    body = assign["body"] | {
        "scheduleInfo": {
            "startDateTime": "2022-04-10T00:00:00Z",
            "expiration": {"type": "afterDateTime", "endDateTime": _iso(_now(sb) + timedelta(days=30))},
        }
    }
    r = sb.post(_rel(assign["url"])[0], json=body, **admin)
    assert r.status_code == 201, r.text
    got = r.json()
    same_shape(got, assign["response"])
    assert (
        got["@odata.context"]
        == f"{sb.base_url}/v1.0/$metadata#roleManagement/directory/roleEligibilityScheduleRequests/$entity"
    )
    assert set(got) == set(assign["response"])
    r = sb.post(_rel(remove["url"])[0], json=remove["body"], **admin)
    assert r.status_code == 201, r.text
    same_shape(r.json(), remove["response"])
    admin_assign, _ = doc_examples("rbacapplication-post-roleassignmentschedulerequests.md")
    r = sb.post(_rel(admin_assign["url"])[0], json=admin_assign["body"], **admin)
    assert r.status_code == admin_assign["status"] == 201, r.text
    same_shape(r.json(), admin_assign["response"])
    listing = sb.get(f"{BASE}/roleEligibilityScheduleRequests")
    assert listing.status_code == 200
    assert [x["status"] for x in listing.json()["value"]] == ["Provisioned", "Revoked"]


def test_http_policy_pages(fresh):
    sb = fresh
    ex1, ex2, _, _ = doc_examples("policyroot-list-rolemanagementpolicyassignments.md")
    path, query = _rel(ex2["url"])
    r = sb.get(path, params=query)
    assert r.status_code == 200, r.text
    data = r.json()
    assert (
        data["@odata.context"]
        == f"{sb.base_url}/v1.0/$metadata#policies/roleManagementPolicyAssignments(policy(rules()))"
    )
    same_shape(data["value"][0], ex2["response"]["value"][0])
    assert data["value"][0]["policy"]["rules"] == ex2["response"]["value"][0]["policy"]["rules"]
    policy_id = data["value"][0]["policyId"]
    _error(sb.get("/policies/roleManagementPolicyAssignments"), 400, "BadRequest")
    _error(sb.get("/policies/roleManagementPolicies", params={"$filter": "scopeId eq '/'"}), 400, "BadRequest")
    # PATCH: the docs say delegated only (notes §6.4); with the setting off app-only tokens get 403
    sb.control("PATCH", "/settings", {"app_only_policy_patch": False})
    [patch] = doc_examples("unifiedrolemanagementpolicyrule-update.md")
    url = f"/policies/roleManagementPolicies/{policy_id}/rules/Expiration_EndUser_Assignment"
    _error(sb.patch(url, json=patch["body"]), 403, "Authorization_RequestDenied")
    r = sb.patch(url, json=patch["body"], user="admin@contoso.example")
    assert r.status_code == 204 and r.content == b""
    assert sb.get(url).json()["maximumDuration"] == "PT1H45M"
    sb.control("PATCH", "/settings", {"app_only_policy_patch": True})
    assert sb.patch(url, json=patch["body"] | {"maximumDuration": "PT2H"}).status_code == 204
    assert sb.get(url).json()["maximumDuration"] == "PT2H"
    _error(sb.patch(url, json={"maximumDuration": "PT2H"}), 400, "BadRequest")
    _error(sb.patch(url, json=patch["body"], app="readonly"), 403, "Authorization_RequestDenied")


def test_http_activation_lifecycle_with_clock_and_control(fresh):
    sb = fresh
    start = _now(sb)
    r = sb.post(
        f"{BASE}/roleEligibilityScheduleRequests",
        json={
            "action": "adminAssign",
            "principalId": HELPDESK,
            "roleDefinitionId": USER_ADMIN,
            "directoryScopeId": "/",
        },
    )
    assert r.status_code == 201
    activation = {
        "action": "selfActivate",
        "principalId": DAVE,
        "roleDefinitionId": USER_ADMIN,
        "directoryScopeId": "/",
        "justification": "ticket",
        "scheduleInfo": {"startDateTime": _iso(start), "expiration": {"type": "afterDuration", "duration": "PT1H"}},
    }
    # a password-grant style token has amr ["pwd"] only: MfaRule (notes §6.3)
    err = _error(
        sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=activation, user="dave@contoso.example"),
        400,
        "RoleAssignmentRequestPolicyValidationFailed",
    )
    assert err["message"] == 'The following policy rules failed: ["MfaRule"]'
    _error(sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=activation), 403, "Authorization_RequestDenied")
    dave = sb.token(user="dave@contoso.example", claims=MFA)
    r = sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=activation, token=dave)
    assert r.status_code == 201 and r.json()["status"] == "Provisioned", r.text
    mine = sb.get(f"{BASE}/roleAssignmentScheduleInstances/filterByCurrentUser(on='principal')", token=dave)
    assert [i["assignmentType"] for i in mine.json()["value"]] == ["Activated"]
    _error(
        sb.get(f"{BASE}/roleAssignmentScheduleInstances/filterByCurrentUser(on='principal')"),
        403,
        "Authorization_RequestDenied",
    )
    deactivate = {
        "action": "selfDeactivate",
        "principalId": DAVE,
        "roleDefinitionId": USER_ADMIN,
        "directoryScopeId": "/",
    }
    err = _error(
        sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=deactivate, token=dave), 400, "ActiveDurationTooShort"
    )
    assert err["message"] == "The Active duration is too short. Miniumum Required is 5 minutes."
    sb.control("POST", "/clock", {"advance": "PT5M"})
    r = sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=deactivate, token=dave)
    assert r.status_code == 201 and r.json()["status"] == "Revoked"
    # approval through the control API (v1.0 has no approval API for roles, notes §10.6)
    policy = sb.get(
        "/policies/roleManagementPolicyAssignments",
        params={"$filter": f"scopeId eq '/' and scopeType eq 'DirectoryRole' and roleDefinitionId eq '{USER_ADMIN}'"},
    )
    pid = policy.json()["value"][0]["policyId"]
    r = sb.patch(
        f"/policies/roleManagementPolicies/{pid}/rules/Approval_EndUser_Assignment",
        json={
            "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule",
            "setting": {"isApprovalRequired": True},
        },
        user="admin@contoso.example",
    )
    assert r.status_code == 204
    activation["scheduleInfo"]["startDateTime"] = _iso(_now(sb))
    pending = sb.post(f"{BASE}/roleAssignmentScheduleRequests", json=activation, token=dave).json()
    assert pending["status"] == "PendingApproval"
    approved = sb.control("POST", f"/approvals/{pending['id']}", {"decision": "approve", "justification": "ok"})
    assert approved["status"] == "Provisioned"
    state = sb.control("GET", "/state")
    assert [i["principalId"] for i in state["roleAssignmentScheduleInstances"]] == [ADMIN, DAVE]
    sb.control("POST", "/clock", {"advance": "PT2H"})
    state = sb.control("GET", "/state")
    assert [i["principalId"] for i in state["roleAssignmentScheduleInstances"]] == [ADMIN]


def test_http_errors_and_permissions(fresh):
    sb = fresh
    url = f"{BASE}/roleEligibilityScheduleRequests"
    body = {"action": "adminAssign", "principalId": BOB, "roleDefinitionId": GA, "directoryScopeId": "/"}
    _error(sb.post(url, json=body, app="readonly"), 403, "Authorization_RequestDenied")
    _error(sb.post(url, json=body | {"principalId": "bob"}), 400, "BadRequest")
    _error(sb.post(url, json=body | {"principalId": "00000000-0000-4000-8000-00000000abcd"}), 400, "SubjectNotFound")
    _error(sb.post(url, json=body | {"roleDefinitionId": "00000000-0000-4000-8000-00000000abcd"}), 400, "RoleNotFound")
    _error(sb.post(f"{url}/00000000-0000-4000-8000-00000000abcd/cancel"), 404, "Request_ResourceNotFound")
    assert sb.post(url, json=body).status_code == 201
    _error(sb.post(url, json=body), 400, "RoleAssignmentExists")
    assert sb.get(f"{BASE}/roleEligibilitySchedules", app="readonly").status_code == 200
    _error(sb.get(f"{BASE}/roleEligibilitySchedules", params={"$filter": "nope eq 1"}), 400, "BadRequest")
    # replication lag (issue 2 item 12): a new principal is unknown to PIM for a while
    sb.control("PATCH", "/settings", {"replication_lag_seconds": 30})
    made = sb.control(
        "POST", "/objects", {"type": "user", "displayName": "Lagging", "userPrincipalName": "lag@contoso.example"}
    )
    _error(sb.post(url, json=body | {"principalId": made["id"]}), 400, "SubjectNotFound")
    assert sb.get(f"/users/{made['id']}").status_code == 200
    sb.control("POST", "/clock", {"advance": "PT31S"})
    assert sb.post(url, json=body | {"principalId": made["id"]}).status_code == 201


def test_http_directory_and_paging(fresh):
    sb = fresh
    sb.control("PATCH", "/settings", {"page_size": 50})
    seen, url = [], f"{BASE}/roleDefinitions"
    for _ in range(10):
        page = sb.get(url).json()
        seen += [r["id"] for r in page["value"]]
        url = page.get("@odata.nextLink")
        if not url:
            break
    assert len(seen) == len(set(seen)) == 123
    r = sb.get("/users/o'brien@contoso.example")
    assert r.status_code == 200 and "password" not in r.json()
    r = sb.post("/directoryObjects/getByIds", json={"ids": [ALICE, HELPDESK], "types": ["user", "group"]})
    assert r.status_code == 200 and {o["@odata.type"] for o in r.json()["value"]} == {
        "#microsoft.graph.user",
        "#microsoft.graph.group",
    }
    r = sb.get(f"{BASE}/roleAssignments", params={"$filter": f"roleDefinitionId eq '{GA}'", "$expand": "principal"})
    [ra] = r.json()["value"]
    assert ra["principal"]["userPrincipalName"] == "admin@contoso.example" and ra["principalOrganizationId"] == TENANT


def test_http_eight_threads_times_one_hundred_creates(fresh):
    sb = fresh
    sb.control("PATCH", "/settings", {"page_size": 999})
    role_ids = [r["id"] for r in sb.get(f"{BASE}/roleDefinitions").json()["value"]][:100]
    made = [
        sb.control(
            "POST",
            "/objects",
            {
                "type": "user",
                "displayName": f"Load {i}",
                "userPrincipalName": f"load{i}@contoso.example",
                "createdAt": "2020-01-01T00:00:00Z",
            },
        )["id"]
        for i in range(8)
    ]
    sb.token()  # warm the token cache before the threads start
    failures = []

    def worker(principal):
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify
        s.verify = sb.ca
        headers = {"Authorization": "Bearer " + sb.token()}
        for role_id in role_ids:
            try:
                r = s.post(
                    f"{sb.graph}{BASE}/roleEligibilityScheduleRequests",
                    headers=headers,
                    timeout=60,
                    json={
                        "action": "adminAssign",
                        "principalId": principal,
                        "roleDefinitionId": role_id,
                        "directoryScopeId": "/",
                    },
                )
            except requests.RequestException as e:
                failures.append(repr(e))
                continue
            if r.status_code != 201:
                failures.append(r.text)

    threads = [threading.Thread(target=worker, args=(p,)) for p in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads) and failures == []
    state = sb.control("GET", "/state")
    pairs = {(s["principalId"], s["roleDefinitionId"]) for s in state["roleEligibilitySchedules"]}
    assert pairs == {(p, r) for p in made for r in role_ids}
    assert len(state["roleEligibilitySchedules"]) == len(state["roleEligibilityScheduleRequests"]) == 800
    assert sb.stats()["writes"]["POST /v1.0/roleManagement/directory/roleEligibilityScheduleRequests"] == 800
