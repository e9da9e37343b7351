"""PIM-domain tests, in process: the route handlers of directory.py, roles.py, pim.py and
policies.py called through the real router, RequestContext, OData engine and Store, without
HTTP (the HTTPS replay lives in test_pim_http.py). References: graph-pim-notes.md (notes §N)
and the doc pages under /work/shared/reference/graph/.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from pim_emulator import directory, ids, pim, policies, roles, seed  # noqa: F401  (registers routes)
from pim_emulator.clock import Clock, parse_datetime
from pim_emulator.errors import GraphError
from pim_emulator.routing import ROUTER, RequestContext, Response, split_path
from pim_emulator.store import Store

TENANT = "a1b2c3d4-0000-4000-8000-000000000000"
ADMIN = "10000000-0000-4000-8000-000000000001"
ALICE = "10000000-0000-4000-8000-000000000002"
BOB = "10000000-0000-4000-8000-000000000003"
OBRIEN = "10000000-0000-4000-8000-000000000004"
ZOE = "10000000-0000-4000-8000-000000000005"
DAVE = "10000000-0000-4000-8000-000000000007"
HELPDESK = "20000000-0000-4000-8000-000000000001"
ENGINEERING = "20000000-0000-4000-8000-000000000003"
SALES_AU = "50000000-0000-4000-8000-000000000001"
PRIMARY_SP = "30000000-0000-4000-8000-000000000001"
DEPLOY_SP = "30000000-0000-4000-8000-000000000004"
PRIMARY_APP = "40000000-0000-4000-8000-000000000001"
READONLY_APP = "40000000-0000-4000-8000-000000000002"

GA = "62e90394-69f5-4237-9190-012177145e10"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
GROUPS_ADMIN = "fdd7a751-b60b-444a-984c-02652fe8fa1c"
ATTR_ADMIN = "8424c6f0-a189-499e-bbd0-26c1753c96d4"
GLOBAL_READER = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"

BASE = "/v1.0/roleManagement/directory"
ELIG_REQ = f"{BASE}/roleEligibilityScheduleRequests"
ASSIGN_REQ = f"{BASE}/roleAssignmentScheduleRequests"

PRIMARY_ROLES = [
    "RoleManagement.ReadWrite.Directory",
    "RoleEligibilitySchedule.ReadWrite.Directory",
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "RoleManagementPolicy.ReadWrite.Directory",
    "Directory.Read.All",
    "User.Read.All",
    "Group.Read.All",
    "Application.Read.All",
    "AdministrativeUnit.Read.All",
]
APP = {"tid": TENANT, "oid": PRIMARY_SP, "appid": PRIMARY_APP, "roles": PRIMARY_ROLES}
READONLY = {
    "tid": TENANT,
    "oid": "30000000-0000-4000-8000-000000000002",
    "appid": READONLY_APP,
    "roles": ["RoleManagement.Read.Directory", "Directory.Read.All", "RoleManagementPolicy.Read.Directory"],
}
DELEGATED_SCOPES = (
    "RoleAssignmentSchedule.ReadWrite.Directory RoleEligibilitySchedule.ReadWrite.Directory "
    "RoleManagement.ReadWrite.Directory RoleManagementPolicy.ReadWrite.Directory Directory.Read.All User.Read.All"
)


def user(oid: str, mfa: bool = True, acrs=None) -> dict:
    claims = {"tid": TENANT, "oid": oid, "scp": DELEGATED_SCOPES, "amr": ["pwd", "mfa"] if mfa else ["pwd"]}
    if acrs is not None:
        claims["acrs"] = acrs
    return claims


class Env:
    """The handlers over a real Store and Clock; permission checks as the router declares them."""

    def __init__(self, path):
        self.store = Store(path)
        self.clock = Clock()
        self.settings = {"page_size": 100, "app_only_policy_patch": False, "replication_lag_seconds": 0}
        with self.store.transaction() as tx:
            seed.load_seed(tx, None)

    def call(self, method, path, body=None, query=None, claims=APP):
        route_, params, _ = ROUTER.resolve(method, split_path(path))
        assert route_ is not None, f"no route for {method} {path}"
        if route_.permissions is not None:
            granted = directory.granted_permissions(claims)
            if route_.permissions and not granted & set(route_.permissions):
                return 403, {"error": {"code": "Authorization_RequestDenied", "message": "denied"}}
            if route_.delegated_only and "scp" not in (claims or {}):
                return 403, {"error": {"code": "Authorization_RequestDenied", "message": "delegated only"}}
        try:
            with self.store.transaction() as tx:
                ctx = RequestContext(
                    method=method,
                    path=path,
                    query=dict(query or {}),
                    body=body,
                    headers={},
                    claims=claims,
                    tx=tx,
                    settings=self.settings,
                    base_url="https://127.0.0.1:8443",
                    tenant_id=TENANT,
                    clock=self.clock,
                    params=params,
                    route=route_,
                )
                result = route_.handler(ctx)
        except GraphError as e:
            return e.status, {"error": {"code": e.code, "message": e.message}}
        if isinstance(result, Response):
            return result.status, result.body
        if result is None:
            return 204, None
        return 200, result

    def ok(self, method, path, body=None, query=None, claims=APP, status=None):
        code, data = self.call(method, path, body, query, claims)
        expected = status or {"GET": 200, "POST": 201, "PATCH": 204, "DELETE": 204}[method]
        assert code == expected, (code, data)
        return data

    def error(self, method, path, body=None, query=None, claims=APP, status=400, code=None):
        got, data = self.call(method, path, body, query, claims)
        assert got == status, (got, data)
        if code is not None:
            assert data["error"]["code"] == code, data
        return data["error"]

    def advance(self, **kw):
        self.clock.advance(timedelta(**kw))

    def now(self):
        return self.clock.now()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path / "state.sqlite3")
    yield e
    e.store.close()


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def elig_body(principal=ALICE, role=USER_ADMIN, action="adminAssign", **extra):
    body = {
        "action": action,
        "principalId": principal,
        "roleDefinitionId": role,
        "directoryScopeId": "/",
        "justification": "because",
    }
    body.update(extra)
    return body


def activation(principal=ALICE, role=USER_ADMIN, duration="PT4H", **extra):
    body = {
        "action": "selfActivate",
        "principalId": principal,
        "roleDefinitionId": role,
        "directoryScopeId": "/",
        "justification": "incident 42",
        "scheduleInfo": {
            "startDateTime": iso(datetime.now(timezone.utc) - timedelta(minutes=1)),
            "expiration": {"type": "afterDuration", "duration": duration},
        },
    }
    body.update(extra)
    return body


REFERENCE = Path("/work/shared/reference")
GRAPH_DOCS = REFERENCE / "graph"


def doc_examples(page: str) -> list[dict]:
    """The example HTTP exchanges of a reference doc page: [{method, url, body, status, response}].

    Request blocks start with ``METHOD https://graph.microsoft.com/...``; response blocks start with
    ``HTTP/1.1 NNN``; the JSON (if any) follows the first blank line.
    """
    text = (GRAPH_DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    out, pending = [], None
    for block in blocks:
        first, _, rest = block.strip().partition("\n")
        m = re.match(r"^(GET|POST|PATCH|DELETE) (https://graph\.microsoft\.com/.+)$", first.strip())
        if m:
            if pending is not None:  # a request the page shows without a response (how-to page: 204s)
                out.append({**pending, "status": None, "response": None})
            body = rest.split("\n\n", 1)[1].strip() if "\n\n" in rest else ""
            pending = {"method": m.group(1), "url": m.group(2), "body": json.loads(body) if body else None}
            continue
        m = re.match(r"^HTTP/1\.1 (\d{3})", first.strip())
        if m and pending is not None:
            body = rest.split("\n\n", 1)[1].strip() if "\n\n" in rest else ""
            pending["status"] = int(m.group(1))
            pending["response"] = json.loads(body) if body else None
            out.append(pending)
            pending = None
    if pending is not None:
        out.append({**pending, "status": None, "response": None})
    return out


def graph_path(url: str) -> tuple[str, dict]:
    """Doc URL -> (sandbox path under /v1.0, decoded query). The adminRemove example uses /beta (notes §10.8)."""
    parts = urlsplit(url.replace(" ", "%20"))
    path = re.sub(r"^/(v1\.0|beta)", "/v1.0", parts.path).rstrip("/")
    return path, dict(parse_qsl(parts.query))


def same_shape(actual, expected, where="$"):
    """Every key of the doc example is present with a value of the same JSON type (null matches null)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key.startswith("@odata.") and key != "@odata.type":
                continue
            assert key in actual, f"{where}: missing key {key!r}"
            same_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=False)):
            same_shape(a, e, f"{where}[{i}]")
    elif expected is None:
        assert actual is None, f"{where}: expected null, got {actual!r}"
    else:
        assert type(actual) is type(expected), f"{where}: {actual!r} is not a {type(expected).__name__}"


def make_object(env, **spec):
    return env.ok("POST", "/_emulator/objects", spec, status=201)


# ==================================================================================== seed


def test_seed_roles_are_the_123_builtins_with_id_equal_template_id(env):
    data = env.ok("GET", f"{BASE}/roleDefinitions", query={"$top": "999"})
    env.settings["page_size"] = 500
    data = env.ok("GET", f"{BASE}/roleDefinitions")
    roles_ = data["value"]
    assert len(roles_) == 123
    builtins = json.loads((REFERENCE / "builtin-roles.json").read_text())
    assert {r["id"] for r in roles_} == {b["templateId"] for b in builtins}
    for r in roles_:
        assert r["id"] == r["templateId"] and r["isBuiltIn"] is True and r["isEnabled"] is True
        assert r["resourceScopes"] == ["/"] and r["version"] == "1" and r["rolePermissions"] == []
        assert not any(k.startswith("_") for k in r)
    ga = env.ok("GET", f"{BASE}/roleDefinitions/{GA}")
    assert ga["displayName"] == "Global Administrator"
    found = env.ok("GET", f"{BASE}/roleDefinitions", query={"$filter": "displayName eq 'User Administrator'"})
    assert [r["id"] for r in found["value"]] == [USER_ADMIN]
    found = env.ok("GET", f"{BASE}/roleDefinitions", query={"$filter": f"id in ('{GA}', '{USER_ADMIN}')"})
    assert {r["id"] for r in found["value"]} == {GA, USER_ADMIN}
    env.error("GET", f"{BASE}/roleDefinitions/00000000-0000-0000-0000-000000000000", status=404)


def test_every_role_has_a_policy_with_the_17_default_rules(env):
    """notes §3.10: the rules equal the docs' directory-role example exactly."""
    expected = json.loads((GRAPH_DOCS / "default-rules-from-docs.json").read_text())["directoryRole_defaults"]
    env.settings["page_size"] = 500
    data = env.ok(
        "GET",
        "/v1.0/policies/roleManagementPolicyAssignments",
        query={"$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole'", "$expand": "policy($expand=rules)"},
    )
    assert len(data["value"]) == 123
    for item in data["value"]:
        assert item["id"] == f"{item['policyId']}_{item['roleDefinitionId']}"
        assert re.fullmatch(rf"DirectoryRole_{TENANT}_[0-9a-f-]{{36}}", item["policyId"])
        assert item["policy"]["id"] == item["policyId"]
        assert item["policy"]["rules"] == expected
    assert len({i["policyId"] for i in data["value"]}) == 123


def test_seed_admin_holds_permanent_global_administrator(env):
    data = env.ok("GET", f"{BASE}/roleAssignments", query={"$filter": f"principalId eq '{ADMIN}'"})
    [ra] = data["value"]
    assert ra["roleDefinitionId"] == GA and ra["directoryScopeId"] == "/"
    assert ids.decode_assignment_id(ra["id"]) == (GA, ADMIN) and ra["id"].endswith("-1")
    inst = env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{ADMIN}'"})
    [i] = inst["value"]
    # notes §3.4: a permanent direct assignment: null start/end, id == origin id == schedule id
    assert i["startDateTime"] is None and i["endDateTime"] is None
    assert i["assignmentType"] == "Assigned" and i["memberType"] == "Direct"
    assert i["id"] == i["roleAssignmentOriginId"] == i["roleAssignmentScheduleId"] == ra["id"]
    sched = env.ok("GET", f"{BASE}/roleAssignmentSchedules/{ra['id']}")
    assert sched["status"] == "Provisioned" and sched["scheduleInfo"]["expiration"]["type"] == "noExpiration"


def test_users_apostrophe_non_ascii_and_no_password(env):
    u = env.ok("GET", "/v1.0/users/o'brien@contoso.example")
    assert u["id"] == OBRIEN and "password" not in u
    found = env.ok("GET", "/v1.0/users", query={"$filter": "userPrincipalName eq 'o''brien@contoso.example'"})
    assert [x["id"] for x in found["value"]] == [OBRIEN]
    z = env.ok("GET", f"/v1.0/users/{ZOE}")
    assert z["displayName"] == "Zoë Åkesson"
    everyone = env.ok("GET", "/v1.0/users", query={"$select": "id,displayName,accountEnabled"})
    assert len(everyone["value"]) == 8
    assert all("password" not in x for x in everyone["value"])
    assert all(set(x) <= {"id", "displayName", "accountEnabled"} for x in everyone["value"])
    env.error("GET", "/v1.0/users/nobody@contoso.example", status=404, code="Request_ResourceNotFound")
    env.error("GET", "/v1.0/users", claims=READONLY | {"roles": ["RoleManagement.Read.Directory"]}, status=403)


def test_groups_sps_aus_and_get_by_ids(env):
    dup = env.ok("GET", "/v1.0/groups", query={"$filter": "displayName eq 'Duplicate Team'"})
    assert len(dup["value"]) == 2
    helpdesk = env.ok("GET", f"/v1.0/groups/{HELPDESK}")
    assert helpdesk["isAssignableToRole"] is True and "_members" not in helpdesk
    sps = env.ok("GET", "/v1.0/servicePrincipals", query={"$filter": "displayName eq 'Deploy Pipeline'"})
    assert [s["id"] for s in sps["value"]] == [DEPLOY_SP]
    aus = env.ok("GET", "/v1.0/directory/administrativeUnits", query={"$filter": "displayName eq 'Sales AU'"})
    assert [a["id"] for a in aus["value"]] == [SALES_AU]
    env.ok("GET", f"/v1.0/directory/administrativeUnits/{SALES_AU}")
    got = env.ok(
        "POST",
        "/v1.0/directoryObjects/getByIds",
        {"ids": [ALICE, HELPDESK, DEPLOY_SP, "00000000-0000-4000-8000-000000000000"]},
        status=200,
    )
    assert [(o["@odata.type"], o["id"]) for o in got["value"]] == [
        ("#microsoft.graph.user", ALICE),
        ("#microsoft.graph.group", HELPDESK),
        ("#microsoft.graph.servicePrincipal", DEPLOY_SP),
    ]
    only_users = env.ok(
        "POST", "/v1.0/directoryObjects/getByIds", {"ids": [ALICE, HELPDESK], "types": ["user"]}, status=200
    )
    assert [o["id"] for o in only_users["value"]] == [ALICE]
    env.error("POST", "/v1.0/directoryObjects/getByIds", {"ids": ["not-a-guid"]}, code="Request_BadRequest")
    env.error("POST", "/v1.0/directoryObjects/getByIds", {"ids": [ALICE], "bogus": 1}, code="BadRequest")


def test_control_objects_create_and_delete(env):
    made = make_object(env, type="user", displayName="New Hire", userPrincipalName="new@contoso.example", password="x")
    assert made["@odata.type"] == "#microsoft.graph.user" and "password" not in made
    assert env.ok("GET", f"/v1.0/users/{made['id']}")["displayName"] == "New Hire"
    env.ok("DELETE", f"/_emulator/objects/{made['id']}")
    env.error("GET", f"/v1.0/users/{made['id']}", status=404)
    env.error("DELETE", f"/_emulator/objects/{made['id']}", status=404)


# ============================================================================ doc replays


def _create_doc_principals(env):
    make_object(
        env,
        type="user",
        id="071cc716-8147-4397-a5ba-b2105951cc0b",
        displayName="Doc User",
        userPrincipalName="docuser@contoso.example",
        createdAt="2020-01-01T00:00:00Z",
    )
    make_object(
        env,
        type="user",
        id="7146daa8-1b4b-4a66-b2f7-cf593d03c8d2",
        displayName="Aline Dupuy",
        userPrincipalName="AlineD@contoso.example",
        createdAt="2020-01-01T00:00:00Z",
    )
    make_object(
        env,
        type="group",
        id="e77cbb23-0ff2-4e18-819c-690f58269752",
        displayName="IT Helpdesk (User)",
        isAssignableToRole=True,
        members=["7146daa8-1b4b-4a66-b2f7-cf593d03c8d2"],
        createdAt="2020-01-01T00:00:00Z",
    )


def test_replay_eligibility_create_page(env):
    """The page's requests verbatim: their end date (2024-04-10) is now in the past, so the assign is refused
    (sandbox choice, emulator/README.md) and there is nothing to remove. The next test replays with moved dates."""
    _create_doc_principals(env)
    assign, remove = doc_examples("rbacapplication-post-roleeligibilityschedulerequests.md")
    assert (assign["status"], remove["status"]) == (201, 201)
    err = env.error("POST", graph_path(assign["url"])[0], assign["body"], claims=user(ADMIN), code="BadRequest")
    assert "must be later than the start" in err["message"]
    env.error(
        "POST", graph_path(remove["url"])[0], remove["body"], claims=user(ADMIN), code="RoleAssignmentDoesNotExist"
    )
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleRequests")["value"] == []


def test_replay_eligibility_pages_with_current_dates(env):
    """The same exchanges with dates moved into the emulator's present, so the schedule is live."""
    _create_doc_principals(env)
    assign, remove = doc_examples("rbacapplication-post-roleeligibilityschedulerequests.md")
    body = json.loads(json.dumps(assign["body"]))
    end = iso(env.now() + timedelta(days=300))
    body["scheduleInfo"]["expiration"]["endDateTime"] = end
    got = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", body, claims=user(ADMIN))
    same_shape(got, assign["response"])
    assert got["scheduleInfo"]["expiration"] == {"type": "afterDateTime", "endDateTime": end, "duration": None}
    assert got["scheduleInfo"]["recurrence"] is None
    assert got["ticketInfo"] == {"ticketNumber": None, "ticketSystem": None}
    assert got["createdBy"] == {"application": None, "device": None, "user": {"displayName": None, "id": ADMIN}}
    inst = env.ok(
        "GET",
        f"{BASE}/roleEligibilityScheduleInstances",
        query={"$filter": "principalId eq '071cc716-8147-4397-a5ba-b2105951cc0b'"},
    )
    # notes §5: the docs' eligibility instance id, decoded and re-encoded
    assert [i["id"] for i in inst["value"]] == ["8MYkhImhnkm70CbBdTyW1BbHHAdHgZdDpbqyEFlRzAs-1-e"]
    assert inst["value"][0]["roleEligibilityScheduleId"] == got["id"]
    assert inst["value"][0]["memberType"] == "Direct" and inst["value"][0]["endDateTime"] == end
    sched = env.ok("GET", f"{BASE}/roleEligibilitySchedules/{got['id']}")
    assert sched["createdUsing"] == got["id"] and sched["status"] == "Provisioned"
    env.error("POST", f"{BASE}/roleEligibilityScheduleRequests", body, code="RoleAssignmentExists")
    removed = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", remove["body"], claims=user(ADMIN))
    same_shape(removed, remove["response"])
    assert removed["status"] == "Revoked" and removed["targetScheduleId"] is None and removed["scheduleInfo"] is None
    assert removed["completedDateTime"] is None
    env.error("POST", f"{BASE}/roleEligibilityScheduleRequests", remove["body"], code="RoleAssignmentDoesNotExist")
    history = env.ok("GET", f"{BASE}/roleEligibilityScheduleRequests")
    assert [(r["action"], r["status"]) for r in history["value"]] == [
        ("adminAssign", "Provisioned"),
        ("adminRemove", "Revoked"),
    ]
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"] == []


def test_replay_assignment_create_page(env):
    _create_doc_principals(env)
    admin_assign, self_activate = doc_examples("rbacapplication-post-roleassignmentschedulerequests.md")
    got = env.ok("POST", graph_path(admin_assign["url"])[0], admin_assign["body"], claims=user(ADMIN))
    same_shape(got, admin_assign["response"])
    assert set(got) == set(admin_assign["response"])
    assert got["scheduleInfo"]["expiration"] == {"type": "noExpiration", "endDateTime": None, "duration": None}
    assert got["status"] == "Provisioned" and got["targetScheduleId"] == got["id"]
    # the activating user needs an eligibility first; the doc dates are moved to the emulator's future
    principal = self_activate["body"]["principalId"]
    env.ok(
        "POST",
        f"{BASE}/roleEligibilityScheduleRequests",
        elig_body(principal=principal, role=self_activate["body"]["roleDefinitionId"]),
    )
    body = json.loads(json.dumps(self_activate["body"]))
    start = iso(env.now() + timedelta(days=1))
    body["scheduleInfo"]["startDateTime"] = start
    act = env.ok("POST", graph_path(self_activate["url"])[0], body, claims=user(principal))
    same_shape(act, self_activate["response"])
    assert act["status"] == "Granted" and act["completedDateTime"] == start
    assert act["scheduleInfo"]["expiration"] == {"type": "afterDuration", "endDateTime": None, "duration": "PT5H"}
    assert act["createdBy"]["user"]["id"] == principal and act["action"] == "selfActivate"
    assert act["ticketInfo"] == self_activate["response"]["ticketInfo"]


def test_replay_cancel_pages_and_asymmetry(env):
    """notes §10.1: a canceled eligibility request reads Revoked, an assignment request Canceled."""
    [elig_cancel] = doc_examples("unifiedroleeligibilityschedulerequest-cancel.md")
    [assign_cancel] = doc_examples("unifiedroleassignmentschedulerequest-cancel.md")
    assert elig_cancel["status"] == assign_cancel["status"] == 204
    future = {"startDateTime": iso(env.now() + timedelta(days=2)), "expiration": {"type": "noExpiration"}}
    e = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(scheduleInfo=future))
    a = env.ok(
        "POST",
        f"{BASE}/roleAssignmentScheduleRequests",
        elig_body(principal=BOB, role=GROUPS_ADMIN, scheduleInfo=future),
    )
    assert e["status"] == a["status"] == "Granted"
    assert env.ok("GET", f"{BASE}/roleEligibilitySchedules/{e['id']}")["status"] == "Granted"
    env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests/{e['id']}/cancel", status=204)
    env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests/{a['id']}/cancel", status=204)
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleRequests/{e['id']}")["status"] == "Revoked"
    assert env.ok("GET", f"{BASE}/roleAssignmentScheduleRequests/{a['id']}")["status"] == "Canceled"
    env.error("GET", f"{BASE}/roleEligibilitySchedules/{e['id']}", status=404)
    env.error("GET", f"{BASE}/roleAssignmentSchedules/{a['id']}", status=404)
    # not cancelable any more (and a provisioned one never was): 400
    env.error("POST", f"{BASE}/roleEligibilityScheduleRequests/{e['id']}/cancel", code="BadRequest")
    p = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(principal=BOB))
    env.error("POST", f"{BASE}/roleEligibilityScheduleRequests/{p['id']}/cancel", code="BadRequest")
    env.error("POST", f"{BASE}/roleAssignmentScheduleRequests/{ids.new_guid()}/cancel", status=404)


def test_replay_tutorial(env):
    """tutorial-assign-azureadroles.md: group eligibility, member activation, roleAssignments check, removal."""
    _create_doc_principals(env)
    steps = doc_examples("tutorial-assign-azureadroles.md")
    by_path = [(s["method"], graph_path(s["url"])[0], s) for s in steps]
    elig = next(
        s
        for m, p, s in by_path
        if m == "POST" and p.endswith("roleEligibilityScheduleRequests") and s["body"]["action"] == "AdminAssign"
    )
    body = json.loads(json.dumps(elig["body"]))
    body["scheduleInfo"]["expiration"]["endDateTime"] = iso(env.now() + timedelta(days=365))
    got = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", body, claims=user(ADMIN))
    same_shape(got, {k: v for k, v in elig["response"].items() if k not in ("ticketInfo", "scheduleInfo")})
    assert got["action"] == "adminAssign"  # notes §0: responses echo camelCase
    listing = next(s for m, p, s in by_path if m == "GET" and p.endswith("roleAssignments"))
    path, query = graph_path(listing["url"])
    assert env.ok("GET", path, query=query)["value"] == listing["response"]["value"] == []
    activate = next(s for m, p, s in by_path if s["body"] and s["body"].get("action") == "SelfActivate")
    body = json.loads(json.dumps(activate["body"]))
    body["scheduleInfo"]["startDateTime"] = iso(env.now())
    aline = body["principalId"]
    act = env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", body, claims=user(aline))
    assert act["status"] == "Provisioned" and act["action"] == "selfActivate"
    mine = env.ok(
        "GET", f"{BASE}/roleAssignmentScheduleRequests/filterByCurrentUser(on='principal')", claims=user(aline)
    )
    assert [r["id"] for r in mine["value"]] == [act["id"]]
    now_active = env.ok("GET", path, query=query)["value"]
    assert [(r["principalId"], r["roleDefinitionId"]) for r in now_active] == [(aline, USER_ADMIN)]
    revoke = next(s for m, p, s in by_path if s["body"] and s["body"].get("action") == "AdminRemove")
    removed = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", revoke["body"], claims=user(ADMIN))
    same_shape(removed, revoke["response"])
    assert removed["status"] == "Revoked"


def test_replay_policy_assignment_list_page(env):
    ex1, ex2, ex3, ex4 = doc_examples("policyroot-list-rolemanagementpolicyassignments.md")
    path, query = graph_path(ex1["url"])
    data = env.ok("GET", path, query=query)
    ga = next(v for v in data["value"] if v["roleDefinitionId"] == GA)
    same_shape(ga, ex1["response"]["value"][0])
    assert ga["scopeType"] == "Directory" and ga["id"].startswith(f"Directory_{TENANT}_")
    path, query = graph_path(ex2["url"])
    data = env.ok("GET", path, query=query)
    assert data["@odata.context"].endswith("#policies/roleManagementPolicyAssignments(policy(rules()))")
    [item] = data["value"]
    same_shape(item, ex2["response"]["value"][0])
    expected_policy = {k: v for k, v in ex2["response"]["value"][0]["policy"].items() if k != "id"}
    assert {k: v for k, v in item["policy"].items() if k != "id"} == expected_policy
    for ex in (ex3, ex4):  # PIM for Groups is not emulated: the group scope answers an empty list
        path, query = graph_path(ex["url"])
        assert env.ok("GET", path, query=query)["value"] == []


def test_replay_rule_update_pages(env):
    ga_policy = _policy_id(env, GA)
    pages = doc_examples("unifiedrolemanagementpolicyrule-update.md") + doc_examples("how-to-pim-update-rules.md")
    assert len(pages) == 7
    for ex in pages:
        rule_id = ex["url"].rsplit("/", 1)[1]
        env.ok(
            "PATCH",
            f"/v1.0/policies/roleManagementPolicies/{ga_policy}/rules/{rule_id}",
            ex["body"],
            claims=user(ADMIN),
        )
        rule = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{ga_policy}/rules/{rule_id}")
        for key, value in ex["body"].items():
            if key in ("@odata.type", "target", "setting"):
                continue
            assert rule[key] == value, (rule_id, key)
        assert rule["target"]["operations"] == ["all"]
        if "setting" in ex["body"]:
            assert rule["setting"]["isApprovalRequired"] is True
            assert [a["@odata.type"] for a in rule["setting"]["approvalStages"][0]["primaryApprovers"]] == [
                "#microsoft.graph.singleUser",
                "#microsoft.graph.groupMembers",
            ]
    policy = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{ga_policy}", query={"$expand": "rules"})
    assert policy["lastModifiedDateTime"] is not None and policy["lastModifiedBy"]["id"] == ADMIN
    assert len(policy["rules"]) == 17


# ============================================================================== policies


def _policy_id(env, role_id):
    data = env.ok(
        "GET",
        "/v1.0/policies/roleManagementPolicyAssignments",
        query={"$filter": f"scopeId eq '/' and scopeType eq 'DirectoryRole' and roleDefinitionId eq '{role_id}'"},
    )
    [item] = data["value"]
    return item["policyId"]


def patch_rule(env, role_id, rule_id, odata_type, claims=None, **fields):
    body = {"@odata.type": f"#microsoft.graph.unifiedRoleManagementPolicy{odata_type}Rule", "id": rule_id, **fields}
    return env.call(
        "PATCH",
        f"/v1.0/policies/roleManagementPolicies/{_policy_id(env, role_id)}/rules/{rule_id}",
        body,
        claims=claims or user(ADMIN),
    )


def test_policy_filters_are_required(env):
    for path in ("/v1.0/policies/roleManagementPolicies", "/v1.0/policies/roleManagementPolicyAssignments"):
        assert "scopeId" in env.error("GET", path, code="BadRequest")["message"]
        env.error("GET", path, query={"$filter": "scopeId eq '/'"}, code="BadRequest")
        env.error("GET", path, query={"$filter": "scopeType eq 'DirectoryRole'"}, code="BadRequest")
        env.error("GET", path, query={"$filter": "scopeId eq '/' and scopeType eq 'Nope'"}, code="BadRequest")
        env.error("GET", path, query={"$filter": "scopeId eq '/' and scopeType eq"}, code="BadRequest")
    env.settings["page_size"] = 500
    pols = env.ok(
        "GET",
        "/v1.0/policies/roleManagementPolicies",
        query={"$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole'"},
    )
    assert len(pols["value"]) == 123 and all("rules" not in p for p in pols["value"])
    dirs = env.ok(
        "GET", "/v1.0/policies/roleManagementPolicies", query={"$filter": "scopeId eq '/' and scopeType eq 'Directory'"}
    )
    assert {p["displayName"] for p in dirs["value"]} == {"Directory"}
    assert {p["id"].split("_")[-1] for p in dirs["value"]} == {p["id"].split("_")[-1] for p in pols["value"]}
    env.error(
        "GET",
        "/v1.0/policies/roleManagementPolicies",
        query={"$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole' and bogus eq 1"},
        code="BadRequest",
    )


def test_policy_get_expand_rules_and_effective_rules(env):
    pid = _policy_id(env, USER_ADMIN)
    p = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{pid}")
    assert p["id"] == pid and "rules" not in p and p["scopeType"] == "DirectoryRole"
    p = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{pid}", query={"$expand": "rules,effectiveRules"})
    assert len(p["rules"]) == len(p["effectiveRules"]) == 17
    rules_ = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{pid}/rules")
    assert [r["id"] for r in rules_["value"]] == [r["id"] for r in p["rules"]]
    one = env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{pid}/rules/Expiration_EndUser_Assignment")
    assert one["maximumDuration"] == "PT8H" and one["@odata.type"].endswith("ExpirationRule")
    env.error("GET", f"/v1.0/policies/roleManagementPolicies/{pid}/rules/Nope", status=404)
    env.error("GET", "/v1.0/policies/roleManagementPolicies/DirectoryRole_x_y", status=404)
    directory_view = pid.replace("DirectoryRole_", "Directory_", 1)
    assert env.ok("GET", f"/v1.0/policies/roleManagementPolicies/{directory_view}")["displayName"] == "Directory"
    pa = env.ok(
        "GET", f"/v1.0/policies/roleManagementPolicyAssignments/{pid}_{USER_ADMIN}", query={"$expand": "policy"}
    )
    assert pa["policy"]["id"] == pid


def test_rule_patch_validation(env):
    ok = {"isExpirationRequired": True, "maximumDuration": "PT2H"}
    code, err = patch_rule(env, USER_ADMIN, "Expiration_EndUser_Assignment", "Enablement", **ok)
    assert code == 400 and err["error"]["code"] == "BadRequest"
    pid = _policy_id(env, USER_ADMIN)
    url = f"/v1.0/policies/roleManagementPolicies/{pid}/rules/Expiration_EndUser_Assignment"
    env.error("PATCH", url, {"id": "Expiration_EndUser_Assignment", **ok}, claims=user(ADMIN))  # no @odata.type
    typ = "#microsoft.graph.unifiedRoleManagementPolicyExpirationRule"
    env.error("PATCH", url, {"@odata.type": typ, "id": "Other", **ok}, claims=user(ADMIN))
    err = env.error("PATCH", url, {"@odata.type": typ, "bogus": 1}, claims=user(ADMIN))
    assert "does not exist on type" in err["message"]
    env.error("PATCH", url, {"@odata.type": typ, "isExpirationRequired": "yes"}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "maximumDuration": "eight hours"}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "maximumDuration": "P3D"}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "target": {"caller": "Admin"}}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "target": {"operations": ["sometimes"]}}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "target": {"unknown": []}}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, "target": []}, claims=user(ADMIN))
    enab = url.replace("Expiration_EndUser_Assignment", "Enablement_EndUser_Assignment")
    etyp = "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule"
    env.error("PATCH", enab, {"@odata.type": etyp, "enabledRules": ["Prayer"]}, claims=user(ADMIN))
    env.error("PATCH", enab, {"@odata.type": etyp, "enabledRules": "Justification"}, claims=user(ADMIN))
    appr = url.replace("Expiration_EndUser_Assignment", "Approval_EndUser_Assignment")
    atyp = "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule"
    env.error("PATCH", appr, {"@odata.type": atyp, "setting": {"approvalMode": "Sometimes"}}, claims=user(ADMIN))
    env.error(
        "PATCH",
        appr,
        {"@odata.type": atyp, "setting": {"approvalStages": [{"primaryApprovers": [{"userId": ALICE}]}]}},
        claims=user(ADMIN),
    )
    ctx = url.replace("Expiration_EndUser_Assignment", "AuthenticationContext_EndUser_Assignment")
    ctyp = "#microsoft.graph.unifiedRoleManagementPolicyAuthenticationContextRule"
    env.error("PATCH", ctx, {"@odata.type": ctyp, "isEnabled": True}, claims=user(ADMIN))
    env.error("PATCH", url, {"@odata.type": typ, **ok}, claims=user(ADMIN) | {"scp": "Directory.Read.All"}, status=403)
    # nothing above changed the rule
    assert env.ok("GET", url)["maximumDuration"] == "PT8H"
    env.ok(
        "PATCH",
        url,
        {"@odata.type": typ.lstrip("#"), "maximumDuration": "PT2H", "target": {"operations": ["All"]}},
        claims=user(ADMIN),
    )
    rule = env.ok("GET", url)
    assert rule["maximumDuration"] == "PT2H" and rule["isExpirationRequired"] is True
    assert rule["target"]["operations"] == ["all"] and rule["target"]["caller"] == "EndUser"


def test_rule_patch_app_only_is_a_setting(env):
    """notes §6.4: docs say delegated only; practice reportedly allows app-only. A sandbox setting."""
    fields = {"isExpirationRequired": True, "maximumDuration": "PT3H"}
    code, err = patch_rule(env, USER_ADMIN, "Expiration_EndUser_Assignment", "Expiration", claims=APP, **fields)
    assert code == 403 and err["error"]["code"] == "Authorization_RequestDenied"
    env.settings["app_only_policy_patch"] = True
    code, _ = patch_rule(env, USER_ADMIN, "Expiration_EndUser_Assignment", "Expiration", claims=APP, **fields)
    assert code == 204
    code, _ = patch_rule(env, USER_ADMIN, "Expiration_EndUser_Assignment", "Expiration", claims=READONLY, **fields)
    assert code == 403


# ===================================================================== eligibility rules


def test_eligibility_validation_errors(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    env.error("POST", url, elig_body(principal="not-a-guid"), code="BadRequest")
    env.error("POST", url, elig_body(role="62e90394"), code="BadRequest")
    env.error("POST", url, elig_body(principal="00000000-0000-4000-8000-000000000099"), code="SubjectNotFound")
    env.error("POST", url, elig_body(role="00000000-0000-4000-8000-000000000099"), code="RoleNotFound")
    env.error("POST", url, elig_body(action="adminDance"), code="BadRequest")
    env.error("POST", url, elig_body(colour="blue"), code="BadRequest")
    env.error("POST", url, elig_body(directoryScopeId=None), code="BadRequest")
    env.error("POST", url, elig_body(directoryScopeId="/administrativeUnits/00000000-0000-4000-8000-000000000099"))
    env.error("POST", url, elig_body(scheduleInfo={"startDateTime": "yesterday"}), code="BadRequest")
    env.error("POST", url, elig_body(scheduleInfo={"expiration": {"type": "afterDuration"}}), code="BadRequest")
    env.error("POST", url, elig_body(scheduleInfo={"expiration": {"type": "afterDuration", "duration": "soon"}}))
    env.error("POST", url, elig_body(scheduleInfo={"expiration": {"type": "whenever"}}))
    env.error("POST", url, elig_body(ticketInfo={"ticketNumber": 5}))
    env.error("POST", url, "not an object")
    # service principals: active assignments only (notes §3.1)
    err = env.error("POST", url, elig_body(principal=DEPLOY_SP), code="BadRequest")
    assert "Service principals" in err["message"]
    env.error("POST", url, elig_body(principal=ENGINEERING), code="BadRequest")  # not role-assignable
    env.error("POST", url, elig_body(), claims=READONLY, status=403)
    env.error("POST", url, elig_body(action="selfActivate"), claims=user(ALICE))
    assert env.ok("GET", url)["value"] == []


def test_validation_only_persists_nothing(env):
    got = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(isValidationOnly=True))
    assert got["isValidationOnly"] is True and got["status"] == "Provisioned"
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleRequests")["value"] == []
    assert env.ok("GET", f"{BASE}/roleEligibilitySchedules")["value"] == []
    env.error("GET", f"{BASE}/roleEligibilityScheduleRequests/{got['id']}", status=404)
    # a validation-only request still fails on the policy
    patch_rule(
        env, USER_ADMIN, "Expiration_Admin_Eligibility", "Expiration", isExpirationRequired=True, maximumDuration="P90D"
    )
    err = env.error(
        "POST",
        f"{BASE}/roleEligibilityScheduleRequests",
        elig_body(isValidationOnly=True),
        code="RoleAssignmentRequestPolicyValidationFailed",
    )
    assert err["message"] == 'The following policy rules failed: ["ExpirationRule"]'


def test_expiration_rule_admin_eligibility(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    # default: isExpirationRequired false -> maximumDuration not enforced (docs' example: 2 years under P365D)
    env.ok(
        "POST",
        url,
        elig_body(principal=BOB, scheduleInfo={"expiration": {"type": "afterDuration", "duration": "P700D"}}),
    )
    assert (
        patch_rule(
            env,
            USER_ADMIN,
            "Expiration_Admin_Eligibility",
            "Expiration",
            isExpirationRequired=True,
            maximumDuration="P90D",
        )[0]
        == 204
    )
    err = env.error("POST", url, elig_body(), code="RoleAssignmentRequestPolicyValidationFailed")
    assert err["message"] == 'The following policy rules failed: ["ExpirationRule"]'
    too_long = {"expiration": {"type": "afterDateTime", "endDateTime": iso(env.now() + timedelta(days=120))}}
    env.error("POST", url, elig_body(scheduleInfo=too_long), code="RoleAssignmentRequestPolicyValidationFailed")
    ok = {"expiration": {"type": "afterDuration", "duration": "P90D"}}
    got = env.ok("POST", url, elig_body(scheduleInfo=ok))
    assert got["scheduleInfo"]["expiration"] == {"type": "afterDuration", "endDateTime": None, "duration": "P90D"}
    inst = env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances", query={"$filter": f"principalId eq '{ALICE}'"})
    end = parse_datetime(inst["value"][0]["endDateTime"])
    assert abs((end - parse_datetime(got["completedDateTime"])) - timedelta(days=90)) < timedelta(seconds=1)
    # Enablement_Admin_Eligibility with Justification + Ticketing: both missing -> both listed, in order
    patch_rule(
        env, GROUPS_ADMIN, "Enablement_Admin_Eligibility", "Enablement", enabledRules=["Ticketing", "Justification"]
    )
    err = env.error(
        "POST",
        url,
        elig_body(role=GROUPS_ADMIN, justification=None),
        code="RoleAssignmentRequestPolicyValidationFailed",
    )
    assert err["message"] == 'The following policy rules failed: ["JustificationRule","TicketingRule"]'


def test_admin_update_extend_renew(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    env.error("POST", url, elig_body(action="adminUpdate"), code="RoleAssignmentDoesNotExist")
    first = env.ok("POST", url, elig_body(scheduleInfo={"expiration": {"type": "afterDuration", "duration": "PT2H"}}))
    upd = env.ok(
        "POST",
        url,
        elig_body(action="adminUpdate", scheduleInfo={"expiration": {"type": "afterDuration", "duration": "P10D"}}),
    )
    assert upd["status"] == "Provisioned" and upd["targetScheduleId"] == first["id"]
    sched = env.ok("GET", f"{BASE}/roleEligibilitySchedules/{first['id']}")
    assert sched["scheduleInfo"]["expiration"]["duration"] == "P10D" and sched["modifiedDateTime"] is not None
    ext = env.ok(
        "POST",
        url,
        elig_body(action="adminExtend", scheduleInfo={"expiration": {"type": "afterDuration", "duration": "PT3H"}}),
    )
    assert ext["targetScheduleId"] == first["id"]
    env.advance(hours=4)  # expired now
    assert env.ok("GET", f"{BASE}/roleEligibilitySchedules")["value"] == []
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"] == []
    env.error("POST", url, elig_body(action="adminExtend", scheduleInfo={}), code="RoleAssignmentDoesNotExist")
    ren = env.ok("POST", url, elig_body(action="adminRenew", scheduleInfo={"expiration": {"type": "noExpiration"}}))
    assert ren["targetScheduleId"] == first["id"]
    assert len(env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"]) == 1


def test_expired_schedule_is_replaced_by_new_assign(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    env.ok("POST", url, elig_body(scheduleInfo={"expiration": {"type": "afterDuration", "duration": "PT1H"}}))
    env.advance(hours=2)
    second = env.ok("POST", url, elig_body())
    scheds = env.ok("GET", f"{BASE}/roleEligibilitySchedules")["value"]
    assert [s["id"] for s in scheds] == [second["id"]]


def test_future_start_becomes_active_when_the_clock_reaches_it(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    start = env.now() + timedelta(hours=3)
    got = env.ok(
        "POST", url, elig_body(scheduleInfo={"startDateTime": iso(start), "expiration": {"type": "noExpiration"}})
    )
    assert got["status"] == "Granted" and got["completedDateTime"] == iso(start)
    assert env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"] == []
    env.advance(hours=3, seconds=1)
    assert env.ok("GET", f"{url}/{got['id']}")["status"] == "Provisioned"
    assert len(env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"]) == 1
    assert env.ok("GET", f"{BASE}/roleEligibilitySchedules/{got['id']}")["status"] == "Provisioned"


def test_replication_lag_answers_subject_not_found(env):
    env.settings["replication_lag_seconds"] = 60
    fresh_user = make_object(env, type="user", displayName="Fresh", userPrincipalName="fresh@contoso.example")
    url = f"{BASE}/roleEligibilityScheduleRequests"
    env.error("POST", url, elig_body(principal=fresh_user["id"]), code="SubjectNotFound")
    env.advance(seconds=61)
    env.ok("POST", url, elig_body(principal=fresh_user["id"]))


def test_administrative_unit_scope(env):
    url = f"{BASE}/roleEligibilityScheduleRequests"
    scope = f"/administrativeUnits/{SALES_AU}"
    got = env.ok("POST", url, elig_body(directoryScopeId=scope))
    env.ok("POST", url, elig_body())  # same role at tenant scope is a different eligibility
    inst = env.ok(
        "GET", f"{BASE}/roleEligibilityScheduleInstances", query={"$filter": f"directoryScopeId eq '{scope}'"}
    )
    [i] = inst["value"]
    assert i["roleEligibilityScheduleId"] == got["id"] and i["id"].endswith("-1-e")
    exp = env.ok(
        "GET",
        f"{BASE}/roleEligibilitySchedules/{got['id']}",
        query={"$expand": "directoryScope,principal,roleDefinition"},
    )
    assert exp["directoryScope"]["id"] == SALES_AU and exp["principal"]["id"] == ALICE
    assert exp["roleDefinition"]["displayName"] == "User Administrator"


# ============================================================= assignments and activation


def _eligible(env, principal=ALICE, role=USER_ADMIN):
    return env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(principal=principal, role=role))


def test_admin_assignment_requires_justification_by_default(env):
    url = f"{BASE}/roleAssignmentScheduleRequests"
    info = {"expiration": {"type": "noExpiration"}}
    err = env.error(
        "POST",
        url,
        elig_body(justification=None, scheduleInfo=info),
        code="RoleAssignmentRequestPolicyValidationFailed",
    )
    assert err["message"] == 'The following policy rules failed: ["JustificationRule"]'
    env.error("POST", url, elig_body(), code="BadRequest")  # scheduleInfo is required for assignments
    sp = env.ok("POST", url, elig_body(principal=DEPLOY_SP, scheduleInfo=info))  # SPs can be active
    assert sp["status"] == "Provisioned"
    env.error("POST", url, elig_body(principal=DEPLOY_SP, scheduleInfo=info), code="RoleAssignmentExists")
    inst = env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{DEPLOY_SP}'"})
    [i] = inst["value"]
    assert i["assignmentType"] == "Assigned" and i["roleAssignmentScheduleId"] == sp["id"]
    assert i["id"] == ids.assignment_id(USER_ADMIN, DEPLOY_SP) and i["startDateTime"] is not None
    ra = env.ok("GET", f"{BASE}/roleAssignments/{i['id']}", query={"$expand": "principal"})
    assert ra["principal"]["@odata.type"] == "#microsoft.graph.servicePrincipal"
    removed = env.ok(
        "POST",
        url,
        {"action": "adminRemove", "principalId": DEPLOY_SP, "roleDefinitionId": USER_ADMIN, "directoryScopeId": "/"},
    )
    assert removed["status"] == "Revoked"
    env.error("GET", f"{BASE}/roleAssignments/{i['id']}", status=404)


def test_self_activation_rules(env):
    url = f"{BASE}/roleAssignmentScheduleRequests"
    err = env.error("POST", url, activation(), claims=user(ALICE), code="RoleAssignmentRequestPolicyValidationFailed")
    assert err["message"] == 'The following policy rules failed: ["EligibilityRule"]'
    err = env.error("POST", url, activation(duration="PT9H"), claims=user(ALICE))
    assert err["message"] == 'The following policy rules failed: ["EligibilityRule","ExpirationRule"]'
    _eligible(env)
    err = env.error("POST", url, activation(duration="PT9H"), claims=user(ALICE))
    assert err["message"] == 'The following policy rules failed: ["ExpirationRule"]'
    err = env.error("POST", url, activation(justification=""), claims=user(ALICE))
    assert err["message"] == 'The following policy rules failed: ["JustificationRule"]'
    err = env.error("POST", url, activation(), claims=user(ALICE, mfa=False))
    assert err["message"] == 'The following policy rules failed: ["MfaRule"]'
    no_exp = activation(scheduleInfo={"expiration": {"type": "noExpiration"}})
    err = env.error("POST", url, no_exp, claims=user(ALICE))
    assert err["message"] == 'The following policy rules failed: ["ExpirationRule"]'
    patch_rule(
        env,
        USER_ADMIN,
        "Enablement_EndUser_Assignment",
        "Enablement",
        enabledRules=["Justification", "MultiFactorAuthentication", "Ticketing"],
    )
    err = env.error("POST", url, activation(), claims=user(ALICE, mfa=False))
    assert err["message"] == 'The following policy rules failed: ["TicketingRule","MfaRule"]'
    # self actions are the signed-in user's own (notes §6.4): app token / someone else -> 403
    env.error("POST", url, activation(), claims=APP, status=403, code="Authorization_RequestDenied")
    env.error("POST", url, activation(), claims=user(BOB), status=403, code="Authorization_RequestDenied")
    ticket = {"ticketNumber": "INC-1", "ticketSystem": "ServiceNow"}
    act = env.ok("POST", url, activation(ticketInfo=ticket), claims=user(ALICE))
    assert act["status"] == "Provisioned" and act["ticketInfo"] == ticket
    env.error("POST", url, activation(ticketInfo=ticket), claims=user(ALICE), code="RoleAssignmentExists")
    inst = env.ok(
        "GET",
        f"{BASE}/roleAssignmentScheduleInstances",
        query={"$filter": f"principalId eq '{ALICE}'", "$expand": "activatedUsing"},
    )
    [i] = inst["value"]
    assert i["assignmentType"] == "Activated" and i["memberType"] == "Direct"
    assert i["activatedUsing"]["id"].endswith("-1-e")
    end = parse_datetime(i["endDateTime"]) - parse_datetime(i["startDateTime"])
    assert end == timedelta(hours=4)
    sched = env.ok("GET", f"{BASE}/roleAssignmentSchedules/{act['id']}", query={"$expand": "activatedUsing"})
    assert sched["assignmentType"] == "Activated" and sched["activatedUsing"]["principalId"] == ALICE


def test_deactivation_is_refused_within_five_minutes(env):
    url = f"{BASE}/roleAssignmentScheduleRequests"
    _eligible(env)
    deactivate = {
        "action": "selfDeactivate",
        "principalId": ALICE,
        "roleDefinitionId": USER_ADMIN,
        "directoryScopeId": "/",
    }
    env.error("POST", url, deactivate, claims=user(ALICE), code="RoleAssignmentDoesNotExist")
    env.ok("POST", url, activation(), claims=user(ALICE))
    err = env.error("POST", url, deactivate, claims=user(ALICE), code="ActiveDurationTooShort")
    assert err["message"] == "The Active duration is too short. Miniumum Required is 5 minutes."
    env.advance(minutes=5, seconds=1)
    done = env.ok("POST", url, deactivate, claims=user(ALICE))
    assert done["status"] == "Revoked" and done["scheduleInfo"] is None and done["targetScheduleId"] is None
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{ALICE}'"})[
            "value"
        ]
        == []
    )
    # the eligibility is untouched
    assert len(env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"]) == 1


def test_activation_expires_with_the_clock(env):
    _eligible(env)
    env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", activation(duration="PT1H"), claims=user(ALICE))
    assert len(env.ok("GET", f"{BASE}/roleAssignments", query={"$filter": f"principalId eq '{ALICE}'"})["value"]) == 1
    env.advance(hours=1, minutes=1)
    assert env.ok("GET", f"{BASE}/roleAssignments", query={"$filter": f"principalId eq '{ALICE}'"})["value"] == []
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentSchedules", query={"$filter": f"principalId eq '{ALICE}'"})["value"] == []
    )
    env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", activation(duration="PT1H"), claims=user(ALICE))


def test_approval_approve_deny_cancel(env):
    _eligible(env)
    _eligible(env, principal=BOB)
    patch_rule(
        env,
        USER_ADMIN,
        "Approval_EndUser_Assignment",
        "Approval",
        setting={"isApprovalRequired": True, "approvalMode": "SingleStage"},
    )
    url = f"{BASE}/roleAssignmentScheduleRequests"
    pending = env.ok("POST", url, activation(), claims=user(ALICE))
    assert pending["status"] == "PendingApproval" and pending["approvalId"] and pending["completedDateTime"] is None
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{ALICE}'"})[
            "value"
        ]
        == []
    )
    env.error("POST", url, activation(), claims=user(ALICE), code="PendingRoleAssignmentRequest")
    approved = env.ok("POST", f"/_emulator/approvals/{pending['id']}", {"decision": "approve"}, status=200)
    assert approved["status"] == "Provisioned"
    assert (
        len(
            env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{ALICE}'"})[
                "value"
            ]
        )
        == 1
    )
    env.error("POST", f"/_emulator/approvals/{pending['id']}", {"decision": "approve"}, code="BadRequest")
    bobs = env.ok("POST", url, activation(principal=BOB), claims=user(BOB))
    denied = env.ok("POST", f"/_emulator/approvals/{bobs['id']}", {"decision": "deny"}, status=200)
    assert denied["status"] == "Denied"
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": f"principalId eq '{BOB}'"})["value"]
        == []
    )
    again = env.ok("POST", url, activation(principal=BOB), claims=user(BOB))
    env.ok("POST", f"{url}/{again['id']}/cancel", status=204)
    assert env.ok("GET", f"{url}/{again['id']}")["status"] == "Canceled"
    env.error("POST", "/_emulator/approvals/nope", {"decision": "approve"}, status=404)
    env.error("POST", f"/_emulator/approvals/{again['id']}", {"decision": "maybe"}, code="BadRequest")


def test_authentication_context_rule(env):
    _eligible(env)
    patch_rule(
        env,
        USER_ADMIN,
        "AuthenticationContext_EndUser_Assignment",
        "AuthenticationContext",
        isEnabled=True,
        claimValue="c1",
    )
    url = f"{BASE}/roleAssignmentScheduleRequests"
    err = env.error("POST", url, activation(), claims=user(ALICE), code="RoleAssignmentRequestAcrsValidationFailed")
    assert "c1" in err["message"] and "claims=" in err["message"]
    env.error(
        "POST", url, activation(), claims=user(ALICE, acrs=["c2"]), code="RoleAssignmentRequestAcrsValidationFailed"
    )
    env.ok("POST", url, activation(), claims=user(ALICE, acrs=["c1"]))


def test_group_eligibility_lets_members_activate(env):
    _eligible(env, principal=HELPDESK)
    mine = env.ok(
        "GET", f"{BASE}/roleEligibilityScheduleInstances/filterByCurrentUser(on='principal')", claims=user(DAVE)
    )
    assert [i["principalId"] for i in mine["value"]] == [HELPDESK]
    act = env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", activation(principal=DAVE), claims=user(DAVE))
    assert act["status"] == "Provisioned"
    err = env.error("POST", f"{BASE}/roleAssignmentScheduleRequests", activation(principal=BOB), claims=user(BOB))
    assert "EligibilityRule" in err["message"]


def test_filter_by_current_user_on_all_six_collections(env):
    _eligible(env)
    _eligible(env, principal=BOB)
    env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", activation(), claims=user(ALICE))
    names = [
        "roleEligibilityScheduleRequests",
        "roleAssignmentScheduleRequests",
        "roleEligibilitySchedules",
        "roleAssignmentSchedules",
        "roleEligibilityScheduleInstances",
        "roleAssignmentScheduleInstances",
    ]
    for name in names:
        url = f"{BASE}/{name}/filterByCurrentUser(on='principal')"
        got = env.ok("GET", url, claims=user(ALICE))
        assert got["value"] and {i["principalId"] for i in got["value"]} == {ALICE}, name
        assert got["@odata.context"].endswith(f"#roleManagement/directory/{name}")
        env.error("GET", url, claims=APP, status=403)
        env.error("GET", url.replace("principal", "nonsense"), claims=user(ALICE), code="BadRequest")
    created = env.ok(
        "GET", f"{BASE}/roleAssignmentScheduleRequests/filterByCurrentUser(on='createdBy')", claims=user(ALICE)
    )
    assert len(created["value"]) == 1


def test_delegated_admin_needs_a_privileged_role(env):
    info = {"expiration": {"type": "noExpiration"}}
    env.error(
        "POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(principal=BOB), claims=user(ALICE), status=403
    )
    got = env.ok("POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(principal=BOB), claims=user(ADMIN))
    assert got["createdBy"] == {"application": None, "device": None, "user": {"displayName": None, "id": ADMIN}}
    env.ok(
        "POST",
        f"{BASE}/roleAssignmentScheduleRequests",
        elig_body(principal=BOB, scheduleInfo=info),
        claims=user(ADMIN),
    )


def test_remove_only_permission(env):
    remover = APP | {"roles": ["RoleAssignmentSchedule.Remove.Directory"]}
    info = {"expiration": {"type": "noExpiration"}}
    url = f"{BASE}/roleAssignmentScheduleRequests"
    env.error("POST", url, elig_body(scheduleInfo=info), claims=remover, status=403)
    env.ok("POST", url, elig_body(scheduleInfo=info))
    gone = env.ok(
        "POST",
        url,
        {"action": "adminRemove", "principalId": ALICE, "roleDefinitionId": USER_ADMIN, "directoryScopeId": "/"},
        claims=remover,
    )
    assert gone["status"] == "Revoked"


def test_direct_role_assignments_api(env):
    url = f"{BASE}/roleAssignments"
    body = {
        "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
        "principalId": BOB,
        "roleDefinitionId": GLOBAL_READER,
        "directoryScopeId": "/",
    }
    made = env.ok("POST", url, body)
    assert made["id"] == ids.assignment_id(GLOBAL_READER, BOB) and made["principalOrganizationId"] == TENANT
    env.error("POST", url, body, code="Request_BadRequest")
    sched = env.ok("GET", f"{BASE}/roleAssignmentSchedules/{made['id']}")
    assert sched["assignmentType"] == "Assigned" and sched["memberType"] == "Direct"
    # it exists, so a PIM adminAssign of the same thing conflicts (notes §6.2)
    env.error(
        "POST",
        f"{BASE}/roleAssignmentScheduleRequests",
        elig_body(principal=BOB, role=GLOBAL_READER, scheduleInfo={}),
        code="RoleAssignmentExists",
    )
    listed = env.ok("GET", url, query={"$filter": f"roleDefinitionId eq '{GLOBAL_READER}'", "$expand": "principal"})
    assert [(r["id"], r["principal"]["userPrincipalName"]) for r in listed["value"]] == [
        (made["id"], "bob@contoso.example")
    ]
    env.error("POST", url, {**body, "principalId": "00000000-0000-4000-8000-000000000099"}, status=404)
    env.error("POST", url, {**body, "extra": True}, code="BadRequest")
    env.error("POST", url, body, claims=READONLY, status=403)
    env.ok("DELETE", f"{url}/{made['id']}")
    env.error("DELETE", f"{url}/{made['id']}", status=404)


def test_unknown_filter_property_is_400(env):
    env.error("GET", f"{BASE}/roleEligibilitySchedules", query={"$filter": "colour eq 'blue'"}, code="BadRequest")
    env.error(
        "GET", f"{BASE}/roleAssignmentScheduleInstances", query={"$filter": "colour eq 'blue'"}, code="BadRequest"
    )


def test_state_dump_has_no_secrets(env):
    state = env.ok("GET", "/_emulator/state")
    text = json.dumps(state)
    assert "Sandbox-Admin-Pass" not in text and "sandbox-primary-secret" not in text
    assert state["tenantId"] == TENANT and len(state["roleAssignmentScheduleInstances"]) == 1


def test_eight_threads_times_one_hundred_distinct_creates(env):
    env.settings["page_size"] = 999
    users = [
        ADMIN,
        ALICE,
        BOB,
        OBRIEN,
        ZOE,
        "10000000-0000-4000-8000-000000000006",
        DAVE,
        "10000000-0000-4000-8000-000000000008",
    ]
    role_ids = [r["id"] for r in env.ok("GET", f"{BASE}/roleDefinitions")["value"]][:100]
    failures = []

    def worker(principal):
        for role_id in role_ids:
            code, data = env.call(
                "POST", f"{BASE}/roleEligibilityScheduleRequests", elig_body(principal=principal, role=role_id)
            )
            if code != 201:
                failures.append((code, data))

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and failures == []
    scheds = env.ok("GET", f"{BASE}/roleEligibilitySchedules")
    pairs = {(s["principalId"], s["roleDefinitionId"]) for s in scheds["value"]}
    assert pairs == {(u, r) for u in users for r in role_ids} and len(scheds["value"]) == 800
    assert len(env.ok("GET", f"{BASE}/roleEligibilityScheduleRequests")["value"]) == 800
    assert len(env.ok("GET", f"{BASE}/roleEligibilityScheduleInstances")["value"]) == 800


def test_self_extend_waits_for_an_admin_decision(env):
    """selfExtend/selfRenew: PendingAdminDecision until the control API decides (sandbox choice)."""
    url = f"{BASE}/roleAssignmentScheduleRequests"
    info = {"expiration": {"type": "afterDuration", "duration": "P1D"}}
    first = env.ok("POST", url, elig_body(scheduleInfo=info))
    longer = {"expiration": {"type": "afterDuration", "duration": "P10D"}}
    ext = env.ok("POST", url, elig_body(action="selfExtend", scheduleInfo=longer), claims=user(ALICE))
    assert ext["status"] == "PendingAdminDecision" and ext["targetScheduleId"] == first["id"]
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentSchedules/{first['id']}")["scheduleInfo"]["expiration"]["duration"]
        == "P1D"
    )
    env.ok("POST", f"/_emulator/approvals/{ext['id']}", {"decision": "approve"}, status=200)
    assert (
        env.ok("GET", f"{BASE}/roleAssignmentSchedules/{first['id']}")["scheduleInfo"]["expiration"]["duration"]
        == "P10D"
    )
    env.error(
        "POST",
        url,
        elig_body(principal=BOB, action="selfRenew", scheduleInfo=longer),
        claims=user(BOB),
        code="RoleAssignmentDoesNotExist",
    )


def test_mfa_on_admin_assignment_applies_to_app_tokens(env):
    """Enablement_Admin_Assignment with MultiFactorAuthentication (how-to example 6): an app token has no amr."""
    patch_rule(
        env,
        USER_ADMIN,
        "Enablement_Admin_Assignment",
        "Enablement",
        enabledRules=["Justification", "MultiFactorAuthentication"],
    )
    info = {"expiration": {"type": "noExpiration"}}
    err = env.error(
        "POST",
        f"{BASE}/roleAssignmentScheduleRequests",
        elig_body(scheduleInfo=info),
        code="RoleAssignmentRequestPolicyValidationFailed",
    )
    assert err["message"] == 'The following policy rules failed: ["MfaRule"]'
    env.ok("POST", f"{BASE}/roleAssignmentScheduleRequests", elig_body(scheduleInfo=info), claims=user(ADMIN))
