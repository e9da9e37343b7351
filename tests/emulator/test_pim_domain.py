"""PIM-domain tests, in process: the route handlers of directory.py, roles.py, pim.py and
policies.py called through the real router, RequestContext, OData engine and Store, without
HTTP (the HTTPS replay lives in test_pim_http.py). References: graph-pim-notes.md (notes §N)
and the doc pages under /work/shared/reference/graph/.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pim_emulator import directory, pim, policies, roles, seed  # noqa: F401  (registers routes)
from pim_emulator.clock import Clock
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


def test_smoke(env):
    r = env.ok("POST", ELIG_REQ, elig_body())
    print(json.dumps(r, indent=1))
