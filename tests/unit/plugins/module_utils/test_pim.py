"""PIM domain: reading schedules into Current, the pure planner, writes with confirmation, error explanations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError
from ansible_collections.entra.pim.plugins.module_utils._resolve import Principal, Role
from hypothesis import given
from hypothesis import strategies as st

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
ALICE = Principal("10000000-0000-4000-8000-000000000002", "user", "Alice Anders", "alice@contoso.example", None)
HELPDESK = Principal("20000000-0000-4000-8000-000000000001", "group", "PIM-Helpdesk", None, None, True)
ENGINEERING = Principal("20000000-0000-4000-8000-000000000003", "group", "Engineering", None, None, False)
PIPELINE = Principal("30000000-0000-4000-8000-000000000004", "service_principal", "Deploy Pipeline", None, "4000")
USER_ADMIN = Role(
    "fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1", True
)
TARGET = pim.Target(ALICE, USER_ADMIN, "/", None)
AU = "/administrativeUnits/50000000-0000-4000-8000-000000000001"


def schedule(start="2026-11-01T08:00:00Z", end=None, scope="/", member="Direct", sid="sched-1", **extra):
    expiration = {"type": "afterDateTime", "endDateTime": end, "duration": None} if end else {"type": "noExpiration"}
    item = {
        "id": sid,
        "principalId": ALICE.id,
        "roleDefinitionId": USER_ADMIN.id,
        "directoryScopeId": scope,
        "appScopeId": None,
        "memberType": member,
        "status": "Provisioned",
        "createdDateTime": "2026-11-01T08:00:00Z",
        "scheduleInfo": {"startDateTime": start, "expiration": expiration, "recurrence": None},
    }
    item.update(extra)
    return item


def request(rid="req-1", status="PendingApproval", action="adminAssign", end=None, scope="/"):
    expiration = {"type": "afterDateTime", "endDateTime": end} if end else {"type": "noExpiration"}
    return {
        "id": rid,
        "status": status,
        "action": action,
        "principalId": ALICE.id,
        "roleDefinitionId": USER_ADMIN.id,
        "directoryScopeId": scope,
        "scheduleInfo": {"startDateTime": "2026-11-29T09:00:00Z", "expiration": expiration},
    }


def current_of(schedules=(), requests=(), kind="eligibility", target=TARGET):
    return pim.current_from_answers(kind, target, list(schedules), list(requests))


def want(state="present", **kwargs):
    justification = kwargs.pop("justification", None)
    return pim.Desired(state, sched.desired_schedule(now=NOW, **kwargs), justification)


# ------------------------------------------------------------------ reading state


def test_current_sorts_direct_inherited_and_other_scopes():
    cur = current_of(
        [
            schedule(sid="direct"),
            schedule(sid="via-group", member="Group"),
            schedule(sid="au", scope=AU),
            schedule(sid="gone", status="Revoked"),
            dict(schedule(sid="someone-else"), principalId=HELPDESK.id),
        ]
    )
    assert cur.schedule["id"] == "direct"
    assert [s["id"] for s in cur.inherited] == ["via-group"]
    assert cur.window == sched.Window(sched.parse_datetime("2026-11-01T08:00:00Z"), None)
    au = current_of(
        [
            schedule(sid="direct"),
            schedule(sid="au", scope=AU.upper().replace("ADMINISTRATIVEUNITS", "administrativeUnits")),
        ],
        target=TARGET._replace(directory_scope_id=AU),
    )
    assert au.schedule["id"] == "au"


def test_current_for_assignments_leaves_activations_alone():
    target = TARGET
    cur = current_of(
        [schedule(sid="activated", assignmentType="Activated"), schedule(sid="assigned", assignmentType="Assigned")],
        kind="assignment",
        target=target,
    )
    assert cur.schedule["id"] == "assigned"
    assert [s["id"] for s in cur.other] == ["activated"]


def test_current_app_scope_must_match():
    target = TARGET._replace(app_scope_id="/apps/a")
    cur = current_of([schedule(sid="dir"), schedule(sid="app", appScopeId="/apps/a")], target=target)
    assert cur.schedule["id"] == "app"


def test_current_keeps_only_pending_requests_at_the_scope():
    cur = current_of(
        [],
        [
            request("r1", "PendingApproval"),
            request("r2", "Provisioned"),
            request("r3", "Granted"),
            request("r4", "Revoked", action="adminRemove"),
            request("r5", "Granted", action="adminRemove"),
            request("r6", "PendingApproval", scope=AU),
        ],
    )
    assert [r["id"] for r in cur.pending] == ["r1", "r3"]


def test_read_requests_filters_server_side_with_quoted_ids():
    named = pim.read_requests("eligibility", TARGET, include_pending=True)
    assert [n for n, dummy in named] == ["schedules", "requests"]
    flt = "principalId eq '%s' and roleDefinitionId eq '%s'" % (ALICE.id, USER_ADMIN.id)
    assert named[0][1]["path"] == "/roleManagement/directory/roleEligibilitySchedules"
    assert named[0][1]["params"] == {"$filter": flt}
    assert named[1][1]["path"] == "/roleManagement/directory/roleEligibilityScheduleRequests"
    bad = TARGET._replace(principal=ALICE._replace(id="x' or 1 eq 1"))
    with pytest.raises(InputError, match="principal id 'x' or 1 eq 1' is not a valid GUID"):
        pim.read_requests("eligibility", bad)


# ------------------------------------------------------------------ planner: present


def test_plan_create_builds_admin_assign():
    p = pim.plan("eligibility", TARGET, want(duration="P30D", justification="on call"), current_of(), NOW)
    assert p.action == "create"
    assert p.before is None
    assert p.body == {
        "action": "adminAssign",
        "principalId": ALICE.id,
        "roleDefinitionId": USER_ADMIN.id,
        "directoryScopeId": "/",
        "justification": "on call",
        "scheduleInfo": {
            "startDateTime": "2026-11-29T10:00:00Z",
            "expiration": {"type": "afterDuration", "duration": "P30D"},
        },
    }
    assert p.after["end"] == "2026-12-29T10:00:00Z" and p.after["permanent"] is False
    assert p.after["role_name"] == "User Administrator" and p.after["principal_name"] == "Alice Anders"


def test_plan_create_with_ticket_and_app_scope():
    target = TARGET._replace(app_scope_id="/apps/a", directory_scope_id=AU)
    desired = pim.Desired("present", sched.desired_schedule(permanent=True, now=NOW), None, "CHG-1", "ServiceNow")
    p = pim.plan("eligibility", target, desired, current_of(target=target), NOW)
    assert p.body["ticketInfo"] == {"ticketNumber": "CHG-1", "ticketSystem": "ServiceNow"}
    assert p.body["appScopeId"] == "/apps/a" and p.body["directoryScopeId"] == AU
    assert "justification" not in p.body


def test_plan_unchanged_when_equal_by_meaning():
    cur = current_of([schedule(end="2027-01-01T00:00:30.1234567Z")])
    p = pim.plan("eligibility", TARGET, want(end="2027-01-01T00:00:00Z"), cur, NOW)
    assert (p.action, p.body) == ("none", None)
    assert p.before == p.after and p.before["id"] == "sched-1"


def test_plan_update_in_place_keeps_the_schedule():
    cur = current_of([schedule(end="2027-01-01T00:00:00Z")])
    p = pim.plan("eligibility", TARGET, want(permanent=True), cur, NOW)
    assert p.action == "update"
    assert p.reasons == ["end: 2027-01-01T00:00:00Z -> permanent"]
    assert p.body["action"] == "adminUpdate"
    # the schedule began in the past: Graph counts the update from now, and the request says so
    assert p.body["scheduleInfo"] == {"startDateTime": "2026-11-29T10:00:00Z", "expiration": {"type": "noExpiration"}}
    assert p.before["id"] == p.after["id"] == "sched-1"
    assert (p.before["permanent"], p.after["permanent"]) == (False, True)


def test_plan_update_duration_counts_from_schedule_start():
    cur = current_of([schedule(start="2026-11-01T08:00:00Z", end="2026-11-11T08:00:00Z")])
    p = pim.plan("eligibility", TARGET, want(duration="P30D"), cur, NOW)
    assert p.action == "update"
    # Graph applies the update from now (a past start counts from processing time), so the plan
    # shows that, never 2026-12-01 (start + 30 days) which the write would not produce (issue 14 point 16).
    assert p.body["scheduleInfo"] == {
        "startDateTime": "2026-11-29T10:00:00Z",
        "expiration": {"type": "afterDuration", "duration": "P30D"},
    }
    assert (p.after["start"], p.after["end"]) == ("2026-11-29T10:00:00Z", "2026-12-29T10:00:00Z")
    same = current_of([schedule(start="2026-11-01T08:00:00Z", end="2026-12-01T08:00:00Z")])
    assert pim.plan("eligibility", TARGET, want(duration="P30D"), same, NOW).action == "none"


def test_plan_nothing_managed_keeps_whatever_is_there():
    for cur in (current_of([schedule()]), current_of([schedule(end="2027-01-01T00:00:00Z")])):
        assert pim.plan("eligibility", TARGET, want(), cur, NOW).action == "none"
    p = pim.plan("eligibility", TARGET, want(), current_of(), NOW)
    assert p.action == "create" and p.body["scheduleInfo"]["expiration"] == {"type": "noExpiration"}


def test_plan_pending_request_for_the_same_schedule_is_not_recreated():
    cur = current_of([], [request("r1", "PendingApproval", end="2027-01-01T00:00:00Z")])
    p = pim.plan("eligibility", TARGET, want(end="2027-01-01T00:00:00Z"), cur, NOW)
    assert p.action == "none" and "request r1 (PendingApproval) already asks for this" in p.reasons[0]
    assert p.after["request_id"] == "r1" and p.after["status"] == "PendingApproval"
    # a pending request for something else does not stop a create
    assert pim.plan("eligibility", TARGET, want(permanent=True), cur, NOW).action == "create"


def test_plan_ignores_inherited_eligibility():
    cur = current_of([schedule(member="Group")])
    assert pim.plan("eligibility", TARGET, want(permanent=True), cur, NOW).action == "create"
    assert pim.plan("eligibility", TARGET, want(state="absent"), cur, NOW).action == "none"


# ------------------------------------------------------------------ planner: absent


def test_plan_remove_existing():
    p = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of([schedule()]), NOW)
    assert p.action == "remove"
    assert p.body == {
        "action": "adminRemove",
        "principalId": ALICE.id,
        "roleDefinitionId": USER_ADMIN.id,
        "directoryScopeId": "/",
    }
    assert p.after is None and p.before["id"] == "sched-1"
    assert pim.diff(p) == {"before": p.before, "after": {}}


def test_plan_remove_assignment_always_sends_schedule_info():
    cur = current_of([schedule(assignmentType="Assigned")], kind="assignment")
    p = pim.plan("assignment", TARGET, pim.Desired("absent"), cur, NOW)
    assert p.body["scheduleInfo"]["expiration"] == {"type": "noExpiration"}
    assert p.before["assignment_type"] == "Assigned"


def test_plan_cancel_pending_instead_of_remove():
    cur = current_of([], [request("r1", "PendingApproval"), request("r2", "Granted")])
    p = pim.plan("eligibility", TARGET, pim.Desired("absent"), cur, NOW)
    assert (p.action, p.cancel_ids, p.body) == ("cancel", ["r1", "r2"], None)
    assert p.before["request_id"] == "r1"


def test_plan_absent_already():
    p = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of(), NOW)
    assert (p.action, p.before, p.after, p.body) == ("none", None, None, None)
    assert not pim.changed(p)


# ------------------------------------------------------------------ planner properties

ends = st.one_of(st.none(), st.integers(min_value=1, max_value=3 * 365 * 24).map(lambda h: NOW + timedelta(hours=h)))


@given(ends, ends)
def test_plan_is_idempotent_after_applying(current_end, desired_end):
    """Whatever the current end, applying the plan and re-planning yields none (no flapping)."""
    cur_sched = schedule(end=sched.format_datetime(current_end)) if current_end else schedule()
    desired = want(end=sched.format_datetime(desired_end)) if desired_end else want(permanent=True)
    p = pim.plan("eligibility", TARGET, desired, current_of([cur_sched]), NOW)
    assert p.action in ("none", "update")
    assert (p.action == "none") == sched.ends_equal(current_end, desired_end)
    if p.action == "update":
        applied = dict(cur_sched, scheduleInfo=p.body["scheduleInfo"])
        again = pim.plan("eligibility", TARGET, desired, current_of([applied]), NOW + timedelta(seconds=20))
        assert again.action == "none"
        assert pim.plan_satisfied(p, desired, current_of([applied]), NOW)


# ------------------------------------------------------------------ writes


class Recorder:
    def __init__(self, answers):
        self.answers = list(answers)
        self.posts = []

    def post(self, path, body, params=None, idempotent=False):
        self.posts.append((path, body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def lost():
    return GraphError("lost", code="ResponseLost")


def test_execute_posts_the_plan_body():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    client = Recorder([{"id": "req-9", "status": "Provisioned", "targetScheduleId": "req-9"}])
    out = pim.execute(client, "eligibility", p)
    assert out == pim.Outcome({"id": "req-9", "status": "Provisioned", "targetScheduleId": "req-9"}, False)
    assert client.posts == [("/roleManagement/directory/roleEligibilityScheduleRequests", p.body)]
    after = pim.result_from_request("eligibility", TARGET, out.request, p, NOW)
    assert after["id"] == "req-9" and after["status"] == "Provisioned"


def test_execute_lost_answer_confirmed_by_reread():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    client = Recorder([lost()])
    assert pim.execute(client, "eligibility", p, confirm=lambda: True) == pim.Outcome(None, True)
    assert len(client.posts) == 1  # never sent twice when the first one worked


def test_execute_lost_answer_not_applied_is_sent_once_more():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    client = Recorder([lost(), {"id": "req-2"}])
    assert pim.execute(client, "eligibility", p, confirm=lambda: False).request == {"id": "req-2"}
    client = Recorder([lost(), lost()])
    with pytest.raises(GraphError, match="lost"):
        pim.execute(client, "eligibility", p, confirm=lambda: False)
    assert len(client.posts) == 2


@pytest.mark.parametrize("code", ["RoleAssignmentExists", "RoleAssignmentDoesNotExist"])
def test_execute_exists_codes_are_confirmation_when_state_matches(code):
    p = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of([schedule()]), NOW)
    err = GraphError("x", status=400, code=code)
    assert pim.execute(Recorder([err]), "eligibility", p, confirm=lambda: True).confirmed
    with pytest.raises(GraphError):
        pim.execute(Recorder([err]), "eligibility", p, confirm=lambda: False)


def test_execute_retries_replication_lag_with_bounded_waits():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    waits = []
    lag = GraphError("lag", status=400, code="SubjectNotFound")
    assert pim.execute(Recorder([lag, lag, {"id": "r"}]), "eligibility", p, sleep=waits.append).request == {"id": "r"}
    assert waits == [2, 5]
    with pytest.raises(GraphError, match="lag"):
        pim.execute(Recorder([lag] * 10), "eligibility", p, sleep=waits.append)


def test_execute_cancel_posts_to_each_request():
    p = pim.plan(
        "eligibility", TARGET, pim.Desired("absent"), current_of([], [request("r1"), request("r2", "Granted")]), NOW
    )
    client = Recorder([None, None])
    pim.execute(client, "eligibility", p)
    assert [path for path, dummy in client.posts] == [
        "/roleManagement/directory/roleEligibilityScheduleRequests/r1/cancel",
        "/roleManagement/directory/roleEligibilityScheduleRequests/r2/cancel",
    ]
    assert pim.execute(
        client, "eligibility", pim.plan("eligibility", TARGET, want(), current_of([schedule()]), NOW)
    ) == pim.Outcome(None, False)


def test_plan_satisfied():
    create = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    assert pim.plan_satisfied(create, want(permanent=True), current_of([schedule()]), NOW)
    assert not pim.plan_satisfied(create, want(permanent=True), current_of(), NOW)
    remove = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of([schedule()]), NOW)
    assert pim.plan_satisfied(remove, pim.Desired("absent"), current_of(), NOW)
    cancel = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of([], [request("r1")]), NOW)
    assert not pim.plan_satisfied(cancel, pim.Desired("absent"), current_of([], [request("r1")]), NOW)
    assert pim.plan_satisfied(cancel, pim.Desired("absent"), current_of([], [request("r1", "Revoked")]), NOW)


def test_validate_sends_is_validation_only_and_returns_the_refusal():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    ok = Recorder([{"id": "v"}])
    assert pim.validate(ok, "eligibility", p) is None
    assert ok.posts[0][1] == dict(p.body, isValidationOnly=True)
    refusal = GraphError("x", status=400, code="RoleAssignmentRequestPolicyValidationFailed")
    assert pim.validate(Recorder([refusal]), "eligibility", p) is refusal
    with pytest.raises(GraphError):
        pim.validate(Recorder([GraphError("denied", status=403)]), "eligibility", p)
    none = pim.plan("eligibility", TARGET, pim.Desired("absent"), current_of(), NOW)
    assert pim.validate(Recorder([]), "eligibility", none) is None


# ------------------------------------------------------------------ explaining errors

RULES = [
    {"id": "Expiration_Admin_Eligibility", "isExpirationRequired": True, "maximumDuration": "P365D"},
    {"id": "Expiration_Admin_Assignment", "isExpirationRequired": False, "maximumDuration": "P180D"},
    {"id": "Expiration_EndUser_Assignment", "isExpirationRequired": True, "maximumDuration": "PT8H"},
]


def policy_error(rules='["ExpirationRule"]'):
    return GraphError(
        "Graph said no",
        status=400,
        code="RoleAssignmentRequestPolicyValidationFailed",
        graph_message="The following policy rules failed: %s" % rules,
        request_id="rid-1",
    )


def test_failed_rules_parsing():
    assert pim.failed_rules('The following policy rules failed: ["EligibilityRule","ExpirationRule"]') == [
        "EligibilityRule",
        "ExpirationRule",
    ]
    assert pim.failed_rules("The following policy rules failed: [ExpirationRule, MfaRule]") == [
        "ExpirationRule",
        "MfaRule",
    ]
    assert pim.failed_rules("something else") == []
    assert pim.failed_rules(None) == []


def test_expiration_rule_for_a_permanent_eligibility():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    err = pim.explain_graph_error(policy_error(), "eligibility", TARGET, p.body, RULES)
    assert err.msg == (
        "ExpirationRule: role 'User Administrator' requires eligible assignments to expire within P365D; "
        "the request asked for a permanent eligibility."
    )
    assert (err.code, err.request_id, err.details["failed_rules"]) == (
        "RoleAssignmentRequestPolicyValidationFailed",
        "rid-1",
        ["ExpirationRule"],
    )


def test_expiration_rule_too_long_and_for_activation():
    p = pim.plan("eligibility", TARGET, want(duration="P400D"), current_of(), NOW)
    msg = pim.explain_policy_error(policy_error(), USER_ADMIN, RULES, p.body, "Eligibility")
    assert msg == (
        "ExpirationRule: role 'User Administrator' allows eligible assignments of at most P365D; "
        "the request asked for an eligibility of P400D."
    )
    p = pim.plan("eligibility", TARGET, want(end="2028-01-01T10:00:00Z"), current_of(), NOW)
    assert "(until 2028-01-01T10:00:00Z)" in pim.explain_policy_error(
        policy_error(), USER_ADMIN, RULES, p.body, "Eligibility"
    )
    activation = {
        "action": "selfActivate",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT10H"}},
    }
    msg = pim.explain_policy_error(policy_error(), USER_ADMIN, RULES, activation, "Assignment")
    assert (
        msg
        == "ExpirationRule: role 'User Administrator' allows activations of at most PT8H; the request asked for an activation of PT10H."
    )


def test_expiration_rule_without_readable_policy():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    msg = pim.explain_policy_error(policy_error(), USER_ADMIN, None, p.body, "Eligibility")
    assert msg == (
        "ExpirationRule: role 'User Administrator' limits how long eligible assignments may last; "
        "the request asked for a permanent eligibility."
    )


@pytest.mark.parametrize(
    "rule, expected",
    [
        (
            "JustificationRule",
            "JustificationRule: role 'User Administrator' requires a justification for eligible assignments; set justification.",
        ),
        (
            "TicketingRule",
            "TicketingRule: role 'User Administrator' requires ticket information for eligible assignments; set ticket_number and ticket_system.",
        ),
        (
            "MfaRule",
            "MfaRule: role 'User Administrator' requires multi-factor authentication for eligible assignments (rule Enablement_Admin_Eligibility)",
        ),
        (
            "EligibilityRule",
            "EligibilityRule: the principal is not eligible for role 'User Administrator' at scope '/'",
        ),
        (
            "AdminRequestRule",
            "AdminRequestRule: role 'User Administrator' refused the request (policy rule AdminRequestRule).",
        ),
    ],
)
def test_other_rules(rule, expected):
    body = {"action": "adminAssign", "directoryScopeId": "/"}
    assert pim.explain_policy_error(policy_error('["%s"]' % rule), USER_ADMIN, RULES, body, "Eligibility").startswith(
        expected
    )


def test_several_rules_and_mfa_for_activation():
    body = {
        "action": "selfActivate",
        "directoryScopeId": "/",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT1H"}},
    }
    msg = pim.explain_policy_error(
        policy_error('["MfaRule","JustificationRule"]'), USER_ADMIN, RULES, body, "Assignment"
    )
    assert msg.startswith("MfaRule: role 'User Administrator' requires multi-factor authentication for activations")
    assert "JustificationRule: role 'User Administrator' requires a justification for activations" in msg


@pytest.mark.parametrize(
    "code, expected",
    [
        (
            "RoleAssignmentExists",
            "'Alice Anders' already has an eligibility for role 'User Administrator' at scope '/'",
        ),
        (
            "RoleAssignmentDoesNotExist",
            "'Alice Anders' has no eligibility for role 'User Administrator' at scope '/' to change or remove",
        ),
        (
            "ActiveDurationTooShort",
            "ActiveDurationTooShort: Graph does not end an activation of role 'User Administrator' within 5 minutes",
        ),
        ("SubjectNotFound", "SubjectNotFound: PIM does not know 'Alice Anders' yet"),
        ("RoleNotFound", "RoleNotFound: PIM does not know role 'User Administrator' yet"),
    ],
)
def test_explain_graph_error_codes(code, expected):
    err = pim.explain_graph_error(GraphError("raw", status=400, code=code, request_id="r"), "eligibility", TARGET)
    assert err.msg.startswith(expected)
    assert err.code == code and err.request_id == "r"


def test_explain_graph_error_403_and_passthrough():
    denied = GraphError(
        "Graph refused: needs RoleEligibilitySchedule.ReadWrite.Directory",
        status=403,
        code="Authorization_RequestDenied",
    )
    err = pim.explain_graph_error(denied, "eligibility", TARGET)
    assert err.msg == (
        "Could not manage the eligibility of 'Alice Anders' for role 'User Administrator': "
        "Graph refused: needs RoleEligibilitySchedule.ReadWrite.Directory"
    )
    other = GraphError("boom", status=500, code="InternalServerError")
    assert pim.explain_graph_error(other, "eligibility", TARGET) is other


# ------------------------------------------------------------------ principal checks


def test_service_principals_cannot_be_eligible():
    with pytest.raises(InputError) as err:
        pim.check_principal_for("eligibility", PIPELINE)
    assert err.value.msg == (
        "principal 'Deploy Pipeline' is a service principal (30000000-0000-4000-8000-000000000004); service principals "
        "can only hold active assignments; use entra.pim.pim_role_assignment"
    )
    pim.check_principal_for("assignment", PIPELINE)
    pim.check_principal_for("eligibility", HELPDESK)
    pim.check_principal_for("eligibility", ALICE)
    with pytest.raises(InputError, match="group 'Engineering' .* is not role-assignable"):
        pim.check_principal_for("eligibility", ENGINEERING)


# ------------------------------------------------------------------ one round trip for resolution and reading


class BatchClient:
    """A fake client that answers plain calls and $batch from one routing function, counting round trips."""

    graph_url = "https://fake.graph"

    def __init__(self, route):
        self.route = route
        self.round_trips = []

    def list(self, path, params=None):
        self.round_trips.append(("GET", path))
        return self.route("GET", path, params, None)["value"]

    def post(self, path, body, params=None, idempotent=False):
        self.round_trips.append(("POST", path))
        return self.route("POST", path, params, body)

    def batch(self, requests):
        self.round_trips.append(("BATCH", [r["url"].split("?")[0] for r in requests]))
        out = []
        for r in requests:
            body = self.route(r["method"], r["url"].split("?")[0], None, r.get("body"))
            status = body.pop("_status", 200) if isinstance(body, dict) else 200
            out.append({"id": r["id"], "status": status, "body": body})
        return out

    def raise_for_item(self, resp):
        if resp["status"] >= 400:
            raise GraphError("item failed", status=resp["status"], code=resp["body"]["error"]["code"])
        return resp


def fake_route(method, path, params, body):
    if path == _resolve.ROLE_DEFINITIONS:
        return {
            "value": [
                {
                    "id": USER_ADMIN.id,
                    "displayName": USER_ADMIN.display_name,
                    "templateId": USER_ADMIN.id,
                    "isBuiltIn": True,
                }
            ]
        }
    if path == "/users":
        return {
            "value": [{"id": ALICE.id, "displayName": "Alice Anders", "userPrincipalName": "alice@contoso.example"}]
        }
    if path == "/directory/administrativeUnits":
        return {"value": [{"id": "50000000-0000-4000-8000-000000000001", "displayName": "Sales AU"}]}
    if path.endswith("roleEligibilitySchedules"):
        return {"value": [schedule()]}
    if path.endswith("roleEligibilityScheduleRequests"):
        return {"value": [request("r1")]}
    raise AssertionError(path)


@pytest.fixture()
def clean_roles():
    _resolve._ROLE_CACHE.clear()
    yield
    _resolve._ROLE_CACHE.clear()


def test_resolve_target_is_one_batch_and_read_is_one_more(clean_roles):
    client = BatchClient(fake_route)
    target = pim.resolve_target(
        client, _resolve.Resolver(client), "user administrator", "alice@contoso.example", "auto", "Sales AU"
    )
    assert target == pim.Target(ALICE._replace(display_name="Alice Anders"), USER_ADMIN, AU, None)
    assert client.round_trips == [("BATCH", [_resolve.ROLE_DEFINITIONS, "/users", "/directory/administrativeUnits"])]
    cur = pim.read_current(client, "eligibility", target._replace(directory_scope_id="/"), include_pending=True)
    assert cur.schedule["id"] == "sched-1" and [r["id"] for r in cur.pending] == ["r1"]
    assert len(client.round_trips) == 2
    # roles are cached for the run: the next resolution is a single plain call
    pim.resolve_target(client, _resolve.Resolver(client), "User Administrator", "alice@contoso.example")
    assert client.round_trips[-1] == ("GET", "/users")
    assert len(client.round_trips) == 3


def test_resolve_target_scope_permission_error(clean_roles):
    def route(method, path, params, body):
        if path == "/directory/administrativeUnits":
            return {"_status": 403, "error": {"code": "Authorization_RequestDenied"}}
        return fake_route(method, path, params, body)

    client = BatchClient(route)
    with pytest.raises(InputError, match="reading administrative units was refused"):
        pim.resolve_target(
            client, _resolve.Resolver(client), "User Administrator", "alice@contoso.example", "auto", "Sales AU"
        )


def test_read_policy_rules():
    calls = []

    class C:
        def list(self, path, params=None):
            calls.append((path, params))
            return [{"policy": {"rules": RULES}}]

    assert pim.read_policy_rules(C(), USER_ADMIN.id) == RULES
    assert calls == [
        (
            "/policies/roleManagementPolicyAssignments",
            {
                "$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole' and roleDefinitionId eq '%s'"
                % USER_ADMIN.id,
                "$expand": "policy($expand=rules)",
            },
        )
    ]

    class Denied:
        def list(self, path, params=None):
            raise GraphError("no", status=403)

    assert pim.read_policy_rules(Denied(), USER_ADMIN.id) is None


def id_route(method, path, params, body):
    if path == _resolve.ROLE_DEFINITIONS + "/" + USER_ADMIN.id:
        return {
            "id": USER_ADMIN.id,
            "displayName": USER_ADMIN.display_name,
            "templateId": USER_ADMIN.id,
            "isBuiltIn": True,
        }
    if path.startswith(_resolve.ROLE_DEFINITIONS + "/"):
        return {"_status": 404, "error": {"code": "Request_ResourceNotFound"}}
    if path == "/directoryObjects/getByIds":
        known = {ALICE.id: {"id": ALICE.id, "displayName": "Alice Anders", "@odata.type": "#microsoft.graph.user"}}
        return {"value": [known[i] for i in body["ids"] if i in known]}
    return fake_route(method, path, params, body)


def test_resolve_and_read_by_ids_is_one_batch(clean_roles):
    client = BatchClient(id_route)
    target, cur, rules = pim.resolve_and_read(client, _resolve.Resolver(client), "eligibility", USER_ADMIN.id, ALICE.id)
    assert rules is None
    assert client.round_trips == [
        (
            "BATCH",
            [
                _resolve.ROLE_DEFINITIONS + "/" + USER_ADMIN.id,
                "/directoryObjects/getByIds",
                "/roleManagement/directory/roleEligibilitySchedules",
                "/roleManagement/directory/roleEligibilityScheduleRequests",
            ],
        )
    ]
    assert (target.role.display_name, target.principal.display_name) == ("User Administrator", "Alice Anders")
    assert cur.schedule["id"] == "sched-1" and [r["id"] for r in cur.pending] == ["r1"]


def test_resolve_and_read_template_id_reads_again_for_the_real_id(clean_roles):
    custom = {
        "id": "aaaaaaaa-0000-4000-8000-000000000001",
        "displayName": "Custom",
        "templateId": "bbbbbbbb-0000-4000-8000-000000000001",
        "isBuiltIn": False,
    }

    def route(method, path, params, body):
        if path == _resolve.ROLE_DEFINITIONS:
            return {"value": [custom]}
        if path.endswith("roleEligibilitySchedules"):
            # answers whatever role the filter named: the module must not trust a read for the wrong id
            return {"value": [dict(schedule(), roleDefinitionId=custom["id"])]}
        return id_route(method, path, params, body)

    client = BatchClient(route)
    target, cur, dummy = pim.resolve_and_read(
        client, _resolve.Resolver(client), "eligibility", custom["templateId"], ALICE.id
    )
    assert target.role.id == custom["id"]
    # one batch (404 for the template id as an id), the role list, then the state for the real id
    assert [rt[0] for rt in client.round_trips] == ["BATCH", "GET", "BATCH"]
    assert cur.schedule["roleDefinitionId"] == custom["id"]


def test_resolve_and_read_by_names_is_two_round_trips(clean_roles):
    client = BatchClient(fake_route)
    target, cur, dummy = pim.resolve_and_read(
        client, _resolve.Resolver(client), "eligibility", "User Administrator", "alice@contoso.example"
    )
    assert [rt[0] for rt in client.round_trips] == ["BATCH", "BATCH"]
    assert target.principal.id == ALICE.id and cur.schedule["id"] == "sched-1"


POLICY_RULES = [{"id": "Expiration_Admin_Eligibility", "isExpirationRequired": True, "maximumDuration": "P90D"}]


def policy_route(method, path, params, body):
    if path == pim.POLICY_ASSIGNMENTS:
        return {"value": [{"policyId": "p1", "policy": {"id": "p1", "rules": POLICY_RULES}}]}
    return id_route(method, path, params, body)


@pytest.mark.parametrize("by_ids", [True, False])
def test_the_policy_rides_along_with_the_state_read(clean_roles, by_ids):
    """A task that may write reads the role's policy in the same $batch as the state: no extra round trip."""
    client = BatchClient(policy_route)
    role, principal = (USER_ADMIN.id, ALICE.id) if by_ids else ("User Administrator", "alice@contoso.example")
    dummy, cur, rules = pim.resolve_and_read(
        client, _resolve.Resolver(client), "eligibility", role, principal, include_policy=True
    )
    assert rules == POLICY_RULES and cur.schedule["id"] == "sched-1"
    assert [rt[0] for rt in client.round_trips] == (["BATCH"] if by_ids else ["BATCH", "BATCH"])
    assert pim.POLICY_ASSIGNMENTS in client.round_trips[-1][1]


def test_an_unreadable_policy_is_none_not_an_error(clean_roles):
    def route(method, path, params, body):
        if path == pim.POLICY_ASSIGNMENTS:
            return {"_status": 403, "error": {"code": "Authorization_RequestDenied"}}
        return id_route(method, path, params, body)

    client = BatchClient(route)
    dummy, cur, rules = pim.resolve_and_read(
        client, _resolve.Resolver(client), "eligibility", USER_ADMIN.id, ALICE.id, include_policy=True
    )
    assert rules is None and cur.schedule["id"] == "sched-1"


# ------------------------------------------------------------------ policy limits before a write (notes §6.2)


def _rules(required=True, maximum="P30D", caller="Admin", level="Assignment"):
    return [{"id": "Expiration_%s_%s" % (caller, level), "isExpirationRequired": required, "maximumDuration": maximum}]


def _body(start=None, end=None, duration=None, action="adminAssign"):
    if duration:
        expiration = {"type": "afterDuration", "duration": duration}
    elif end:
        expiration = {"type": "afterDateTime", "endDateTime": end}
    else:
        expiration = {"type": "noExpiration"}
    info = {"expiration": expiration}
    if start:
        info["startDateTime"] = start
    return {"action": action, "scheduleInfo": info}


@pytest.mark.parametrize(
    "body, refused",
    [
        (_body(duration="P30D"), False),
        (_body(duration="P31D"), True),
        (_body(), True),
        # the window counts from the later of start and now, as Graph counts it
        (_body(start="2026-11-01T10:00:00Z", end="2026-12-29T10:00:00Z"), False),
        (_body(start="2027-01-01T00:00:00Z", end="2027-01-31T00:00:00Z"), False),
        (_body(start="2027-01-01T00:00:00Z", end="2027-02-01T00:00:00Z"), True),
        # one second of slack for clock skew, not more
        (_body(end="2026-12-29T10:00:01Z"), False),
        (_body(end="2026-12-29T10:00:02Z"), True),
    ],
)
def test_expiration_refusal_mirrors_graph(body, refused):
    msg = pim.expiration_refusal("assignment", "User Administrator", _rules(), body, NOW)
    assert (msg is not None) == refused
    if refused:
        assert msg.startswith("ExpirationRule: role 'User Administrator'") and "P30D" in msg


def test_expiration_refusal_needs_the_rule_to_require_expiry_and_the_right_rule():
    assert pim.expiration_refusal("assignment", "X", _rules(required=False), _body(duration="P400D"), NOW) is None
    assert pim.expiration_refusal("assignment", "X", None, _body(duration="P400D"), NOW) is None
    # an eligibility is judged by the *_Eligibility rule only
    assert pim.expiration_refusal("eligibility", "X", _rules(), _body(duration="P400D"), NOW) is None
    eligible = _rules(maximum="P365D", level="Eligibility")
    assert "at most P365D" in pim.expiration_refusal("eligibility", "X", eligible, _body(duration="P400D"), NOW)
    # self-activation is judged by the EndUser rule
    end_user = _rules(maximum="PT8H", caller="EndUser")
    activation = _body(duration="PT9H", action="selfActivate")
    assert "activations of at most PT8H" in pim.expiration_refusal("assignment", "X", end_user, activation, NOW)


def test_above_policy_message_names_the_option_and_the_way_out():
    msg = pim.above_policy_message(
        "assignment",
        "User Administrator",
        _rules(),
        _body(duration="P45D"),
        NOW,
        pim.schedule_option({"duration": "P45D"}),
    )
    assert msg == (
        "duration 'P45D' is outside what the role's PIM policy allows, so nothing was sent. ExpirationRule: role "
        "'User Administrator' allows active assignments of at most P30D; the request asked for an active assignment "
        "of P45D. Give an end or duration of at most P30D, or change settings.active_assignment (max_duration, "
        "allow_permanent) with entra.pim.pim_policy."
    )
    assert pim.schedule_option({"end": "2027-01-01"}) == "end '2027-01-01'"
    assert pim.schedule_option({"permanent": True}) == "permanent=true"
    assert pim.schedule_option({}).startswith("no end")


# ------------------------------------------------------------------ issue 14: "already so" from another writer


def test_settle_is_one_rule_for_already_there_confirmed_update_and_refused():
    exists = GraphError("x", status=400, code="RoleAssignmentExists")
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    there = current_of([schedule()])
    # Graph says it exists, a read agrees, and no attempt of ours can have made it: another writer did.
    assert pim.settle("eligibility", TARGET, p, want(permanent=True), there, NOW, exists, ours=False) == (
        "already",
        None,
    )
    # The same after our own lost answer: it may be ours, so it is reported as our change.
    assert pim.settle("eligibility", TARGET, p, want(permanent=True), there, NOW, exists, ours=True)[0] == "confirmed"
    assert pim.settle("eligibility", TARGET, p, want(permanent=True), there, NOW, None, ours=True)[0] == "confirmed"
    # It exists with another schedule: an adminUpdate in place.
    verdict, again = pim.settle(
        "eligibility", TARGET, p, want(permanent=True), current_of([schedule(end="2027-01-01T00:00:00Z")]), NOW, exists
    )
    assert verdict == "resend" and again.action == "update" and again.body["action"] == "adminUpdate"
    # Graph says it exists, the read shows nothing: the refusal stands; a lost answer and nothing there: send again.
    assert pim.settle("eligibility", TARGET, p, want(permanent=True), current_of(), NOW, exists) == ("refused", None)
    assert pim.settle("eligibility", TARGET, p, want(permanent=True), current_of(), NOW, lost()) == ("resend", p)
    # Removal: RoleAssignmentDoesNotExist to our first adminRemove, and it is gone: another writer removed it.
    gone = GraphError("x", status=400, code="RoleAssignmentDoesNotExist")
    rm = pim.plan("eligibility", TARGET, pim.Desired("absent"), there, NOW)
    assert pim.settle("eligibility", TARGET, rm, pim.Desired("absent"), current_of(), NOW, gone, False)[0] == "already"


class _Settler:
    """A confirm() with the shared rule, answering from a fixed re-read."""

    def __init__(self, p, current):
        self.p, self.current = p, current

    def __call__(self):
        return pim.plan_satisfied(self.p, want(permanent=True), self.current, NOW)

    def settle(self, err, ours):
        return pim.settle("eligibility", TARGET, self.p, want(permanent=True), self.current, NOW, err, ours)


def test_execute_reports_already_when_another_writer_made_the_grant():
    p = pim.plan("eligibility", TARGET, want(permanent=True), current_of(), NOW)
    exists = GraphError("x", status=400, code="RoleAssignmentExists")
    client = Recorder([exists])
    out = pim.execute(client, "eligibility", p, confirm=_Settler(p, current_of([schedule()])))
    assert out.already and out.confirmed and len(client.posts) == 1
    # After our own lost answer, Exists on the re-send may be our first attempt: not "already".
    client = Recorder([lost(), exists])
    out = pim.execute(client, "eligibility", p, confirm=_Confirming(p))
    assert out.confirmed and not out.already and len(client.posts) == 2
    # Exists with another schedule: the same request becomes an adminUpdate.
    client = Recorder([exists, {"id": "upd"}])
    out = pim.execute(client, "eligibility", p, confirm=_Settler(p, current_of([schedule(end="2027-01-01T00:00:00Z")])))
    assert out.request == {"id": "upd"} and out.plan.action == "update"
    assert [body["action"] for _path, body in client.posts] == ["adminAssign", "adminUpdate"]


class _Confirming(_Settler):
    """Absent at the first read (the lost answer was not carried out), there afterwards."""

    def __init__(self, p):
        super().__init__(p, current_of())
        self.reads = 0

    def __call__(self):
        self.reads += 1
        result = super().__call__()
        self.current = current_of([schedule()])
        return result


# ------------------------------------------------------------------ issue 14: the info modules' filters


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"directory_scope": ""}, "directory_scope is empty"),
        ({"directory_scope": "  "}, "directory_scope is empty"),
        ({"expiring_within": "P99999999D"}, "expiring_within 'P99999999D' is too long"),
        ({"expiring_within": "PT0.5S"}, "expiring_within 'PT0.5S' must be longer than zero"),
        ({"expiring_within": ""}, "expiring_within '' is not an ISO 8601 duration"),
    ],
)
def test_list_filters_refuse_empty_and_out_of_range_values(kwargs, message):
    """An empty scope filter used to mean "every scope"; an empty one is refused, an omitted one is every scope."""
    with pytest.raises(InputError) as err:
        pim.check_list_filters(**kwargs)
    assert err.value.msg.startswith(message)
    pim.check_list_filters(directory_scope=None, expiring_within=None)
