"""pim_role_assignment and pim_role_assignment_info module logic with an in-memory fake of Graph.

The fake keeps active assignment schedules (Assigned and Activated) and requests the way the
PIM notes describe (notes §3.1, §3.3, §4, §8): scheduleInfo is required on every assignment
request, an activation blocks adminAssign (RoleAssignmentExists), and policy refusals carry
Graph's raw rule list.
"""

from __future__ import annotations

import uuid

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.modules import pim_role_assignment, pim_role_assignment_info
from graph_fake import FakeClient, matches, run

ALICE = "10000000-0000-4000-8000-000000000002"
HELPDESK = "20000000-0000-4000-8000-000000000001"
ENGINEERING = "20000000-0000-4000-8000-000000000003"
PIPELINE = "30000000-0000-4000-8000-000000000004"
APP_ADMIN = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
BASE = "/roleManagement/directory/"
RAW = "The following policy rules failed"

OBJECTS = {
    ALICE: ("user", {"id": ALICE, "displayName": "Alice Anders", "userPrincipalName": "alice@contoso.example", "mail": "alice@contoso.example"}),
    HELPDESK: ("group", {"id": HELPDESK, "displayName": "PIM-Helpdesk", "isAssignableToRole": True}),
    ENGINEERING: ("group", {"id": ENGINEERING, "displayName": "Engineering", "isAssignableToRole": False}),
    PIPELINE: ("servicePrincipal", {"id": PIPELINE, "displayName": "Deploy Pipeline", "appId": "40000000-0000-4000-8000-000000000004"}),
}  # fmt: skip
ROLES = [
    {"id": APP_ADMIN, "displayName": "Application Administrator", "templateId": APP_ADMIN, "isBuiltIn": True},
    {"id": USER_ADMIN, "displayName": "User Administrator", "templateId": USER_ADMIN, "isBuiltIn": True},
]
TABLES = {"/users": "user", "/groups": "group", "/servicePrincipals": "servicePrincipal"}


class FakeGraph(FakeClient):
    auth_method = "client_secret"

    def __init__(self):
        super().__init__()
        self.schedules = {}
        self.require_justification = True  # Enablement_Admin_Assignment default (notes §3.10)
        self.posted = []  # every schedule request body that reached the fake, refused or not
        self.policy_denied = False  # True: reading the role's policy is refused (403)
        self.claims = {"roles": ["RoleManagement.ReadWrite.Directory"], "idtyp": "app"}

    def token_claims(self):
        return self.claims

    def add_activation(self, principal=ALICE, role=USER_ADMIN):
        sid = str(uuid.uuid4())
        self.schedules[sid] = {
            "id": sid, "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/", "appScopeId": None,
            "assignmentType": "Activated", "memberType": "Direct", "status": "Provisioned",
            "scheduleInfo": {"startDateTime": "2026-11-29T10:00:00Z", "expiration": {"type": "afterDateTime", "endDateTime": "2099-01-01T00:00:00Z"}},
        }  # fmt: skip
        return sid

    def _collection(self, path, params):
        flt = (params or {}).get("$filter")
        if path == BASE + "roleDefinitions":
            return ROLES
        if path in TABLES:
            return [o for k, o in OBJECTS.values() if k == TABLES[path] and matches(flt, o)]
        if path.startswith(BASE + "roleAssignmentSchedules"):
            return [s for s in self.schedules.values() if matches(flt, s)]
        if path.startswith(BASE + "roleAssignmentScheduleInstances"):
            return [
                dict(s, id=s["id"] + "-i", roleAssignmentScheduleId=s["id"], roleAssignmentOriginId=s["id"] + "-o",
                     activatedUsing={"id": "ei", "roleEligibilityScheduleId": "es"} if s["assignmentType"] == "Activated" else None)
                for s in self.schedules.values() if matches(flt, s)
            ]  # fmt: skip
        if path == BASE + "roleAssignmentScheduleRequests":
            return [r for r in self.requests if matches(flt, r)]
        if path == "/policies/roleManagementPolicyAssignments":
            if self.policy_denied:
                raise GraphError("denied", status=403, code="Authorization_RequestDenied")
            return [{"policy": {"rules": [{"id": "Enablement_Admin_Assignment", "enabledRules": ["Justification"]}]}}]
        raise AssertionError("unexpected GET " + path)

    def _post(self, path, body):
        if path == "/directoryObjects/getByIds":
            out = []
            for oid in body["ids"]:
                if oid in OBJECTS:
                    kind, obj = OBJECTS[oid]
                    out.append(dict(obj, **{"@odata.type": "#microsoft.graph." + kind}))
            return {"value": out}
        assert path == BASE + "roleAssignmentScheduleRequests", path
        action = body["action"]
        self.posted.append(body)
        assert "scheduleInfo" in body, "Graph requires scheduleInfo on assignment requests (notes §8)"
        key = (body["principalId"], body["roleDefinitionId"], body["directoryScopeId"])
        same = [s for s in self.schedules.values() if (s["principalId"], s["roleDefinitionId"], s["directoryScopeId"]) == key]  # fmt: skip
        assigned = next((s for s in same if s["assignmentType"] == "Assigned"), None)
        if action in ("adminAssign", "adminUpdate") and self.require_justification and not body.get("justification"):
            raise GraphError("x", status=400, code="RoleAssignmentRequestPolicyValidationFailed", graph_message=RAW + ': ["JustificationRule"]')  # fmt: skip
        if action == "adminAssign" and same:
            raise GraphError("x", status=400, code="RoleAssignmentExists")
        if action in ("adminUpdate", "adminRemove") and not assigned:
            raise GraphError("x", status=400, code="RoleAssignmentDoesNotExist")
        rid = str(uuid.uuid4())
        answer = dict(
            body, id=rid, status="Provisioned" if action != "adminRemove" else "Revoked", targetScheduleId=rid
        )
        if body.get("isValidationOnly"):
            return answer
        self.writes.append(action)
        if action == "adminAssign":
            self.schedules[rid] = dict(
                {k: body[k] for k in ("principalId", "roleDefinitionId", "directoryScopeId")},
                id=rid, memberType="Direct", assignmentType="Assigned", status="Provisioned", appScopeId=None,
                scheduleInfo=body["scheduleInfo"],
            )  # fmt: skip
        elif action == "adminUpdate":
            assigned["scheduleInfo"] = body["scheduleInfo"]
            answer["targetScheduleId"] = assigned["id"]
        else:
            del self.schedules[assigned["id"]]
        self.requests.append(answer)
        return answer


@pytest.fixture()
def graph(monkeypatch):
    fake = FakeGraph()
    monkeypatch.setattr(PimModule, "client", property(lambda self: fake))
    _resolve._ROLE_CACHE.clear()
    yield fake
    _resolve._ROLE_CACHE.clear()


def assignment(capsys, **args):
    args.setdefault("principal", "alice@contoso.example")
    args.setdefault("role", "User Administrator")
    return run(pim_role_assignment, capsys, **args)


@pytest.mark.parametrize(
    "principal, kind",
    [("alice@contoso.example", "user"), ("PIM-Helpdesk", "group"), ("Deploy Pipeline", "service_principal")],
)
def test_lifecycle_for_each_principal_kind(graph, capsys, principal, kind):
    out = assignment(capsys, principal=principal, duration="P30D", justification="j", check_mode=True, diff=True)
    assert out["changed"] and graph.writes == [] and out["diff"]["before"] == {}
    out = assignment(capsys, principal=principal, duration="P30D", justification="j")
    assert out["changed"] and graph.writes == ["adminAssign"]
    assert out["assignment"]["principal_type"] == kind and out["assignment"]["assignment_type"] == "Assigned"
    sid = out["assignment"]["id"]
    assert not assignment(capsys, principal=principal, duration="P30D", justification="j")["changed"]
    # check + diff shows the update and the removal before they happen (issue 14 point 18)
    out = assignment(capsys, principal=principal, permanent=True, justification="j", check_mode=True, diff=True)
    assert out["changed"] and out["diff"]["before"]["permanent"] is False and out["diff"]["after"]["permanent"]
    out = assignment(capsys, principal=principal, state="absent", check_mode=True, diff=True)
    assert out["changed"] and out["diff"]["before"]["id"] == sid and out["diff"]["after"] == {}
    assert graph.writes == ["adminAssign"]
    out = assignment(capsys, principal=principal, permanent=True, justification="j")
    assert out["changed"] and graph.writes[-1] == "adminUpdate" and out["assignment"]["id"] == sid
    out = assignment(capsys, principal=principal, state="absent", justification="j")
    assert out["changed"] and graph.writes[-1] == "adminRemove" and out["assignment"] is None
    assert not assignment(capsys, principal=principal, state="absent")["changed"]
    assert graph.writes == ["adminAssign", "adminUpdate", "adminRemove"]


def test_an_activation_is_reported_never_managed(graph, capsys):
    graph.add_activation()
    out = assignment(capsys, state="absent")
    assert not out["changed"] and graph.writes == []
    assert out["activation"]["assignment_type"] == "Activated" and out["assignment"] is None
    assert "not managed by this task" in out["changes"][-1]
    out = assignment(capsys, duration="P7D", justification="j")
    assert out["failed"] and "activated" in out["msg"] and "RoleAssignmentExists" in out["msg"]
    assert "until 2099-01-01T00:00:00Z" in out["msg"] and graph.writes == []


def test_pending_admin_request_cancelled_but_not_a_self_activation(graph, capsys):
    base = {"principalId": ALICE, "roleDefinitionId": USER_ADMIN, "directoryScopeId": "/", "scheduleInfo": None}
    graph.requests.append(dict(base, id="self", status="PendingApproval", action="selfActivate"))
    assert not assignment(capsys, state="absent")["changed"]
    graph.requests.append(dict(base, id="admin", status="Granted", action="adminAssign"))
    out = assignment(capsys, state="absent")
    assert out["changed"] and graph.writes == ["cancel"]
    assert [r["status"] for r in graph.requests] == ["PendingApproval", "Canceled"]


def test_policy_refusal_explained_and_validate_only(graph, capsys):
    # Issue 14 point 8: the role's Enablement rule is read with the state; the request is refused before it is
    # sent, in the policy's words (rule, role, value, way out), in check mode too.
    for check_mode in (True, False):
        out = assignment(capsys, duration="P7D", check_mode=check_mode)
        assert out["failed"] and out["msg"] == (
            "The role's PIM policy would refuse this request, so nothing was sent. Enablement_Admin_Assignment: "
            "role 'User Administrator' requires a justification for active assignments (enabledRules: "
            "Justification); set justification, or set settings.active_assignment.require_justification: false "
            "with entra.pim.pim_policy."
        )
        assert RAW not in out["msg"] and graph.writes == [] and graph.posted == []
    # Graph's own refusal (a policy the module could not read) is still explained after the write
    graph.policy_denied = True
    out = assignment(capsys, duration="P7D")
    assert out["failed"] and out["msg"].startswith(
        "JustificationRule: role 'User Administrator' requires a justification for active assignments"
    )
    assert len(graph.posted) == 1 and graph.writes == []
    graph.policy_denied = False
    out = assignment(capsys, duration="P7D", validate_only=True)
    assert not out.get("failed") and out["validation"]["valid"] is False
    assert out["validation"]["failed_rules"] == ["JustificationRule"] and graph.writes == []


def test_non_role_assignable_group_refused(graph, capsys):
    out = assignment(capsys, principal="Engineering", justification="j")
    assert out["failed"] and "not role-assignable" in out["msg"] and graph.writes == []


def test_info_lists_assigned_and_activated_with_filters(graph, capsys):
    assignment(capsys, principal="Deploy Pipeline", role="Application Administrator", end="2099-01-01T00:00:00Z", justification="j")  # fmt: skip
    graph.add_activation()
    out = run(pim_role_assignment_info, capsys)
    rows = [(a["role_name"], a["principal_name"], a["assignment_type"]) for a in out["assignments"]]
    assert rows == [
        ("Application Administrator", "Deploy Pipeline", "Assigned"),
        ("User Administrator", "Alice Anders", "Activated"),
    ]
    activated = out["assignments"][1]
    assert activated["eligibility_id"] == "es" and activated["in_effect"]
    assert out["assignments"][0]["activated_using"] is None and out["assignments"][0]["eligibility_id"] is None
    out = run(pim_role_assignment_info, capsys, assignment_type="activated")
    assert [a["principal_id"] for a in out["assignments"]] == [ALICE]
    out = run(pim_role_assignment_info, capsys, principal="Deploy Pipeline")
    assert [a["principal_type"] for a in out["assignments"]] == ["service_principal"]
    assert run(pim_role_assignment_info, capsys, expiring_within="P1D")["assignments"] == []


def test_info_current_user_needs_a_delegated_token(graph, capsys):
    out = run(pim_role_assignment_info, capsys, current_user=True)
    assert out["failed"] and "application token" in out["msg"]
    graph.claims = {"scp": "RoleAssignmentSchedule.Read.Directory", "oid": ALICE, "name": "Alice Anders"}
    graph.add_activation()
    out = run(pim_role_assignment_info, capsys, current_user=True)
    assert [a["principal_name"] for a in out["assignments"]] == ["Alice Anders"]
    out = run(pim_role_assignment_info, capsys, current_user=True, principal="alice@contoso.example")
    assert out["failed"] and "exclude each other" in out["msg"]
