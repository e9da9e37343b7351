"""pim_role_eligibility and pim_role_eligibility_info module logic, with an in-memory fake of Graph.

The fake answers the handful of routes the modules use, keeps schedules and requests the way
Graph does (notes §3.1, §4), counts round trips, and can refuse a write with a policy error.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.modules import pim_role_eligibility, pim_role_eligibility_info
from graph_fake import FakeClient, matches, run

ALICE = "10000000-0000-4000-8000-000000000002"
HELPDESK = "20000000-0000-4000-8000-000000000001"
PIPELINE = "30000000-0000-4000-8000-000000000004"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
GLOBAL_READER = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
SALES_AU = "50000000-0000-4000-8000-000000000001"
BASE = "/roleManagement/directory/"

OBJECTS = {
    ALICE: (
        "user",
        {
            "id": ALICE,
            "displayName": "Alice Anders",
            "userPrincipalName": "alice@contoso.example",
            "mail": "alice@contoso.example",
        },
    ),
    HELPDESK: ("group", {"id": HELPDESK, "displayName": "PIM-Helpdesk", "isAssignableToRole": True}),
    PIPELINE: (
        "servicePrincipal",
        {"id": PIPELINE, "displayName": "Deploy Pipeline", "appId": "40000000-0000-4000-8000-000000000004"},
    ),
}
ROLES = [
    {"id": USER_ADMIN, "displayName": "User Administrator", "templateId": USER_ADMIN, "isBuiltIn": True},
    {"id": GLOBAL_READER, "displayName": "Global Reader", "templateId": GLOBAL_READER, "isBuiltIn": True},
]
TABLES = {"/users": "user", "/groups": "group", "/servicePrincipals": "servicePrincipal"}


class FakeGraph(FakeClient):
    auth_method = "client_secret"
    canceled_status = "Revoked"

    def __init__(self):
        super().__init__()
        self.schedules = {}
        self.require_expiration = False  # Expiration_Admin_Eligibility.isExpirationRequired
        self.policy_readable = True  # False: reading the policy is denied (no RoleManagementPolicy.Read.Directory)
        self.sent = []  # the action of every schedule request that reached the fake
        self.bodies = []  # the body of every schedule request that reached the fake
        self.enabled_rules = []  # Enablement_Admin_Eligibility.enabledRules
        self.unit_reads = 0  # GETs of an administrative unit by id
        self.lose_next_answer = False

    # --------------------------------------------------------------- routes

    def _collection(self, path, params):
        flt = (params or {}).get("$filter")
        if path == BASE + "roleDefinitions":
            return ROLES
        if path in TABLES:
            kind = TABLES[path]
            return [o for k, o in OBJECTS.values() if k == kind and matches(flt, o)]
        if path == "/directory/administrativeUnits":
            return [o for o in [{"id": SALES_AU, "displayName": "Sales AU"}] if matches(flt, o)]
        if path == BASE + "roleEligibilitySchedules":
            return [s for s in self.schedules.values() if matches(flt, s)]
        if path == BASE + "roleEligibilityScheduleInstances":
            return [
                dict(
                    s,
                    id=s["id"] + "-i",
                    roleEligibilityScheduleId=s["id"],
                    startDateTime=s["scheduleInfo"]["startDateTime"],
                    endDateTime=s["scheduleInfo"]["expiration"].get("endDateTime"),
                )
                for s in self.schedules.values()
                if matches(flt, s)
            ]
        if path == BASE + "roleEligibilityScheduleRequests":
            return [r for r in self.requests if matches(flt, r)]
        if path == "/policies/roleManagementPolicyAssignments":
            if not self.policy_readable:
                raise GraphError("denied", status=403, code="Authorization_RequestDenied")
            return [
                {
                    "policy": {
                        "rules": [
                            {
                                "id": "Expiration_Admin_Eligibility",
                                "isExpirationRequired": self.require_expiration,
                                "maximumDuration": "P365D",
                            },
                            {"id": "Enablement_Admin_Eligibility", "enabledRules": list(self.enabled_rules)},
                        ]
                    }
                }
            ]
        raise AssertionError("unexpected GET " + path)

    def _post(self, path, body):
        if path == "/directoryObjects/getByIds":
            out = []
            for oid in body["ids"]:
                if oid in OBJECTS and OBJECTS[oid][0] in body.get("types", ["user", "group", "servicePrincipal"]):
                    kind, obj = OBJECTS[oid]
                    out.append(dict(obj, **{"@odata.type": "#microsoft.graph." + kind}))
            return {"value": out}
        assert path == BASE + "roleEligibilityScheduleRequests", path
        return self._schedule_request(body)

    def _schedule_request(self, body):
        key = (body["principalId"], body["roleDefinitionId"], body["directoryScopeId"])
        existing = next(
            (
                s
                for s in self.schedules.values()
                if (s["principalId"], s["roleDefinitionId"], s["directoryScopeId"]) == key
            ),
            None,
        )
        action = body["action"]
        self.sent.append(action)
        self.bodies.append(body)
        info = body.get("scheduleInfo")
        if (
            action in ("adminAssign", "adminUpdate")
            and self.require_expiration
            and info["expiration"]["type"] == "noExpiration"
        ):
            raise GraphError(
                "x",
                status=400,
                code="RoleAssignmentRequestPolicyValidationFailed",
                graph_message='The following policy rules failed: ["ExpirationRule"]',
            )
        if action == "adminAssign" and existing:
            raise GraphError("x", status=400, code="RoleAssignmentExists")
        if action in ("adminUpdate", "adminRemove") and not existing:
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
                id=rid,
                memberType="Direct",
                status="Provisioned",
                appScopeId=None,
                scheduleInfo=info,
            )
        elif action == "adminUpdate":
            existing["scheduleInfo"] = info
            answer["targetScheduleId"] = existing["id"]
        else:
            del self.schedules[existing["id"]]
            answer["targetScheduleId"] = None
        self.requests.append(answer)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise GraphError("lost", code="ResponseLost")
        return answer

    # --------------------------------------------------------------- client interface

    def _get_in_batch(self, path, params):
        if path.startswith("/directory/administrativeUnits/"):
            self.unit_reads += 1
            if path.rsplit("/", 1)[1] != SALES_AU:
                raise GraphError("no unit", status=404, code="Request_ResourceNotFound")
            return {"id": SALES_AU, "displayName": "Sales AU"}
        if path.startswith(BASE + "roleDefinitions/"):
            role = next((r for r in ROLES if r["id"] == path.rsplit("/", 1)[1]), None)
            if role is None:
                raise GraphError("no role", status=404, code="Request_ResourceNotFound")
            return role
        return super()._get_in_batch(path, params)


@pytest.fixture()
def graph(monkeypatch):
    fake = FakeGraph()
    monkeypatch.setattr(PimModule, "client", property(lambda self: fake))
    _resolve._ROLE_CACHE.clear()
    yield fake
    _resolve._ROLE_CACHE.clear()


def eligibility(capsys, **args):
    args.setdefault("principal", "alice@contoso.example")
    args.setdefault("role", "User Administrator")
    return run(pim_role_eligibility, capsys, **args)


# ------------------------------------------------------------------ lifecycle


def test_lifecycle(graph, capsys):
    out = eligibility(capsys, duration="P30D", check_mode=True, diff=True)
    assert out["changed"] and out["eligibility"]["id"] is None and graph.writes == []
    assert out["diff"]["before"] == {} and out["diff"]["after"]["role_name"] == "User Administrator"

    out = eligibility(capsys, duration="P30D", justification="rota")
    assert out["changed"] and graph.writes == ["adminAssign"]
    sid = out["eligibility"]["id"]
    assert out["eligibility"]["status"] == "Provisioned" and out["request"]["justification"] == "rota"

    graph.round_trips = 0
    out = eligibility(capsys, duration="P30D")
    assert not out["changed"] and out["eligibility"]["id"] == sid
    # one $batch for role list + principal, one for schedules + pending requests
    assert graph.round_trips == 2

    out = eligibility(capsys, permanent=True, diff=True)
    assert out["changed"] and graph.writes[-1] == "adminUpdate"
    assert out["eligibility"]["id"] == sid and out["eligibility"]["permanent"]
    assert out["diff"]["before"]["permanent"] is False and out["diff"]["after"]["permanent"] is True

    out = eligibility(capsys, state="absent")
    assert out["changed"] and graph.writes[-1] == "adminRemove" and out["eligibility"] is None
    out = eligibility(capsys, state="absent")
    assert not out["changed"] and len(graph.writes) == 3


def test_ids_make_a_no_change_run_one_round_trip(graph, capsys):
    out = eligibility(capsys, principal=ALICE, role=USER_ADMIN, permanent=True)
    assert out["changed"] and out["eligibility"]["role_name"] == "User Administrator"
    graph.round_trips = 0
    out = eligibility(capsys, principal=ALICE, role=USER_ADMIN, permanent=True)
    assert not out["changed"] and out["eligibility"]["principal_name"] == "Alice Anders"
    assert graph.round_trips == 1  # role, principal, schedules and pending requests in one $batch


def test_check_mode_update_writes_nothing(graph, capsys):
    eligibility(capsys, end="2099-01-01T00:00:00Z")
    out = eligibility(capsys, end="2099-06-01T00:00:00Z", check_mode=True)
    assert out["changed"] and out["changes"] == ["end: 2099-01-01T00:00:00Z -> 2099-06-01T00:00:00Z"]
    assert graph.writes == ["adminAssign"]


def test_check_mode_shows_the_schedule_the_real_run_sends(graph, capsys):
    """Issue 14 point 16: a duration on a schedule that began long ago is applied from now; check mode
    must show that very schedule (not start + duration, an end in the past)."""
    now = datetime.now(timezone.utc)
    began = now - timedelta(days=60)
    graph.schedules["old"] = dict(
        id="old",
        principalId=ALICE,
        roleDefinitionId=USER_ADMIN,
        directoryScopeId="/",
        appScopeId=None,
        memberType="Direct",
        status="Provisioned",
        scheduleInfo={
            "startDateTime": sched.format_datetime(began),
            "expiration": {"type": "afterDateTime", "endDateTime": sched.format_datetime(now + timedelta(days=10))},
        },
    )
    check = eligibility(capsys, duration="P30D", check_mode=True, diff=True)
    assert check["changed"] and graph.sent == []
    planned = check["diff"]["after"]
    assert check["eligibility"] == planned
    assert sched.parse_datetime(planned["end"]) > now  # never an end in the past

    real = eligibility(capsys, duration="P30D", diff=True)
    assert real["changed"] and graph.sent == ["adminUpdate"]
    info = graph.bodies[-1]["scheduleInfo"]
    # what check mode showed is what the write sent (and what Graph applies from it), to the clock's tick
    sent = sched.applied_window(info, sched.parse_datetime(info["startDateTime"]))
    assert abs(sched.parse_datetime(planned["start"]) - sent.start) <= timedelta(seconds=5)
    assert abs(sched.parse_datetime(planned["end"]) - sent.end) <= timedelta(seconds=5)
    assert sched.parse_datetime(info["startDateTime"]) >= now - timedelta(seconds=1)
    assert real["diff"]["after"]["end"] == real["eligibility"]["end"]
    # and it holds: the next run finds nothing to change
    assert not eligibility(capsys, duration="P30D")["changed"]


def test_check_and_diff_show_every_change(graph, capsys):
    """Issue 14 point 18: each change shows a non-empty diff in check mode, and check mode writes nothing."""
    out = eligibility(capsys, duration="P30D", check_mode=True, diff=True)
    assert out["diff"]["before"] == {} and out["diff"]["after"]["end"]
    eligibility(capsys, duration="P30D")
    out = eligibility(capsys, permanent=True, check_mode=True, diff=True)
    assert out["changed"] and out["diff"]["before"]["permanent"] is False and out["diff"]["after"]["permanent"] is True
    out = eligibility(capsys, state="absent", check_mode=True, diff=True)
    assert out["changed"] and out["diff"]["before"]["role_name"] == "User Administrator"
    assert out["diff"]["after"] == {}
    assert graph.writes == ["adminAssign"]
    out = eligibility(capsys, duration="P30D", check_mode=True, diff=True)
    assert not out["changed"] and out["diff"]["before"] == out["diff"]["after"]


def test_pending_request_is_cancelled_on_absent(graph, capsys):
    graph.requests.append(
        {
            "id": "req-p",
            "status": "PendingApproval",
            "action": "adminAssign",
            "principalId": ALICE,
            "roleDefinitionId": USER_ADMIN,
            "directoryScopeId": "/",
            "scheduleInfo": None,
        }
    )
    out = eligibility(capsys, state="absent", check_mode=True, diff=True)
    assert out["changed"] and out["diff"]["before"]["request_id"] == "req-p" and out["diff"]["after"] == {}
    out = eligibility(capsys, state="absent")
    assert out["changed"] and graph.writes == ["cancel"]
    assert out["changes"][0].startswith("a pending request (PendingApproval req-p)")
    assert not eligibility(capsys, state="absent")["changed"]


def test_lost_answer_is_confirmed_by_rereading(graph, capsys):
    graph.lose_next_answer = True
    out = eligibility(capsys, permanent=True)
    assert out["changed"] and graph.writes == ["adminAssign"]  # not sent twice
    assert out["eligibility"]["id"] == next(iter(graph.schedules))


def test_group_scope_and_ticket(graph, capsys):
    out = eligibility(
        capsys,
        principal="PIM-Helpdesk",
        role="global reader",
        directory_scope="Sales AU",
        ticket_number="CHG-1",
        ticket_system="SNOW",
        permanent=True,
    )
    assert out["eligibility"]["principal_type"] == "group"
    assert out["eligibility"]["directory_scope_id"] == "/administrativeUnits/" + SALES_AU
    assert out["request"]["ticket_info"] == {"ticket_number": "CHG-1", "ticket_system": "SNOW"}


# ------------------------------------------------------------------ refusals


def test_service_principal_is_refused_before_any_write(graph, capsys):
    out = eligibility(capsys, principal="Deploy Pipeline")
    assert out["failed"] and "use entra.pim.pim_role_assignment" in out["msg"]
    assert graph.writes == []


def test_longer_than_the_policy_allows_is_refused_before_any_request(graph, capsys):
    """Expiration_Admin_Eligibility requires expiry within P365D (notes §3.10 rule 1, §6.2 ExpirationRule)."""
    graph.require_expiration = True
    out = eligibility(capsys, permanent=True)
    assert out["failed"] and "error_code" not in out
    assert out["msg"] == (
        "permanent=true is outside what the role's PIM policy allows, so nothing was sent. ExpirationRule: role "
        "'User Administrator' requires eligible assignments to expire within P365D; the request asked for a "
        "permanent eligibility. Give an end or duration of at most P365D, or change settings.eligible_assignment "
        "(max_duration, allow_permanent) with entra.pim.pim_policy."
    )
    out = eligibility(capsys, duration="P400D")
    assert out["failed"] and out["msg"].startswith("duration 'P400D' is outside what the role's PIM policy allows")
    assert "allows eligible assignments of at most P365D; the request asked for an eligibility of P400D." in out["msg"]
    out = eligibility(capsys, duration="P400D", check_mode=True)
    assert out["failed"] and "at most P365D" in out["msg"]
    assert graph.sent == [] and graph.writes == []
    # At the maximum exactly: accepted.
    out = eligibility(capsys, duration="P365D")
    assert out["changed"] and graph.sent == ["adminAssign"]


@pytest.mark.parametrize("ids", [False, True])
def test_unknown_administrative_unit_id_is_refused_before_any_write(graph, capsys, ids):
    """Issue 14 point 8: '/administrativeUnits/<id>' of no unit is refused, the check riding in an existing batch."""
    principal, role = (ALICE, USER_ADMIN) if ids else ("alice@contoso.example", "User Administrator")
    ghost = "59999999-0000-4000-8000-000000000009"
    for check_mode in (True, False):
        graph.round_trips = 0
        out = eligibility(
            capsys,
            principal=principal,
            role=role,
            directory_scope="/administrativeUnits/" + ghost,
            check_mode=check_mode,
        )
        assert out["failed"] and out["msg"] == (
            "directory_scope '/administrativeUnits/%s': no administrative unit with the id '%s' exists in this tenant; "
            "give '/' for the whole tenant, '/administrativeUnits/{id}' of an existing administrative unit, or its name"
            % (ghost, ghost)
        )
        assert graph.sent == [] and graph.round_trips == 1
    graph.round_trips = 0
    out = eligibility(
        capsys, principal=principal, role=role, directory_scope="/administrativeUnits/" + SALES_AU.upper()
    )
    assert out["changed"] and graph.sent == ["adminAssign"]
    assert out["eligibility"]["directory_scope_id"] == "/administrativeUnits/" + SALES_AU
    # the unit is read in the batch that also reads the state (ids) or looks up role and principal (names)
    assert graph.round_trips == (2 if ids else 3) and graph.unit_reads == 3


def test_ticket_and_justification_required_by_the_policy_are_refused_before_any_request(graph, capsys):
    """Issue 14 point 8: Enablement_Admin_Eligibility's Ticketing and Justification, in the policy's words."""
    graph.enabled_rules = ["Justification", "Ticketing"]
    for check_mode in (True, False):
        out = eligibility(capsys, permanent=True, check_mode=check_mode)
        assert out["failed"] and out["msg"] == (
            "The role's PIM policy would refuse this request, so nothing was sent. Enablement_Admin_Eligibility: "
            "role 'User Administrator' requires a justification for eligible assignments (enabledRules: "
            "Justification, Ticketing); set justification, or set settings.eligible_assignment.require_justification: "
            "false with entra.pim.pim_policy. Enablement_Admin_Eligibility: role 'User Administrator' requires ticket "
            "information for eligible assignments (enabledRules: Justification, Ticketing); set ticket_number and "
            "ticket_system, or remove Ticketing from the rule's enabledRules with entra.pim.pim_policy (option rules)."
        )
        assert graph.sent == []
    out = eligibility(capsys, permanent=True, justification="rota", ticket_number="CHG-7", ticket_system="SNOW")
    assert out["changed"] and graph.sent == ["adminAssign"]
    # removing needs neither (Graph checks the Enablement rules on assign and update)
    assert eligibility(capsys, state="absent")["changed"]


def test_maximum_binds_only_when_expiry_is_required(graph, capsys):
    """isExpirationRequired false: permanent is allowed and maximumDuration is not enforced (as Graph does)."""
    out = eligibility(capsys, duration="P400D")
    assert out["changed"] and graph.sent == ["adminAssign"]


def test_graph_refusal_explained_when_the_policy_cannot_be_read(graph, capsys):
    graph.require_expiration = True
    graph.policy_readable = False
    out = eligibility(capsys, permanent=True)
    assert out["failed"] and out["error_code"] == "RoleAssignmentRequestPolicyValidationFailed"
    assert out["msg"] == (
        "ExpirationRule: role 'User Administrator' limits how long eligible assignments may last; "
        "the request asked for a permanent eligibility."
    )
    assert out["failed_rules"] == ["ExpirationRule"]
    assert graph.sent == ["adminAssign"] and graph.writes == []


def test_validate_only_reports_and_changes_nothing(graph, capsys):
    graph.require_expiration = True
    out = eligibility(capsys, permanent=True, validate_only=True)
    assert not out.get("failed") and out["changed"]
    assert out["validation"]["valid"] is False and out["validation"]["failed_rules"] == ["ExpirationRule"]
    assert "requires eligible assignments to expire within P365D" in out["validation"]["message"]
    out = eligibility(capsys, duration="P90D", validate_only=True, check_mode=True)
    assert out["validation"] == {"valid": True, "message": None, "failed_rules": [], "error_code": None}
    assert graph.writes == [] and graph.schedules == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(role="User Adminstrator"), "did you mean 'User Administrator'"),
        (
            dict(start="2099-02-01", end="2099-01-01"),
            "end '2099-01-01T00:00:00Z' is not after start '2099-02-01T00:00:00Z'",
        ),
        (dict(duration="30 days"), "duration '30 days' is not an ISO 8601 duration"),
        (dict(permanent=True, duration="P1D"), "permanent and duration cannot be combined"),
        (dict(directory_scope="/administrativeUnits/nope"), "administrative unit id 'nope' is not a valid GUID"),
        (dict(principal="nobody@contoso.example"), "principal 'nobody@contoso.example' not found"),
        (dict(app_scope=" "), "app_scope is empty"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(graph, capsys, args, message):
    out = eligibility(capsys, **args)
    assert out["failed"] and message in out["msg"]
    assert "Traceback" not in json.dumps(out)
    assert graph.writes == []


def test_ticket_options_go_together(graph, capsys):
    out = eligibility(capsys, ticket_number="CHG-1")
    assert out["failed"] and "ticket_number" in out["msg"] and "ticket_system" in out["msg"]


# ------------------------------------------------------------------ info


def test_info_lists_with_names_and_filters(graph, capsys):
    eligibility(capsys, end="2099-01-01T00:00:00Z")
    eligibility(capsys, principal="PIM-Helpdesk", role="Global Reader", permanent=True)
    out = run(pim_role_eligibility_info, capsys)
    assert [(e["role_name"], e["principal_name"]) for e in out["eligibilities"]] == [
        ("Global Reader", "PIM-Helpdesk"),
        ("User Administrator", "Alice Anders"),
    ]
    assert all(e["in_effect"] for e in out["eligibilities"])
    out = run(pim_role_eligibility_info, capsys, principal="alice@contoso.example", role="user administrator")
    assert [e["principal_type"] for e in out["eligibilities"]] == ["user"]
    out = run(pim_role_eligibility_info, capsys, role="Global Reader")
    assert [e["principal_id"] for e in out["eligibilities"]] == [HELPDESK]
    out = run(pim_role_eligibility_info, capsys, expiring_within="P36500D")
    assert [e["permanent"] for e in out["eligibilities"]] == [False]
    out = run(pim_role_eligibility_info, capsys, expiring_within="P1D")
    assert out["eligibilities"] == []
    out = run(pim_role_eligibility_info, capsys, directory_scope="Sales AU")
    assert out["eligibilities"] == []


def test_info_bad_duration(graph, capsys):
    out = run(pim_role_eligibility_info, capsys, expiring_within="soon")
    assert out["failed"] and out["msg"].startswith("expiring_within 'soon' is not an ISO 8601 duration")
    assert graph.round_trips == 0
