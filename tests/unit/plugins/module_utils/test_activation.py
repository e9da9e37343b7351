"""The activation planner (pure) and the wait loop, with a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _activation as act
from ansible_collections.entra.pim.plugins.module_utils import _pim
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError
from ansible_collections.entra.pim.plugins.module_utils._resolve import Principal, Role

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
ALICE = "10000000-0000-4000-8000-000000000002"
GROUP = "20000000-0000-4000-8000-000000000001"
SEC_ADMIN = "194ae4cb-b126-40b2-bd5b-6091b380977d"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
TARGET = _pim.Target(
    Principal(ALICE, "user", "Alice Anders", "alice@contoso.example", None),
    Role(SEC_ADMIN, "Security Administrator", SEC_ADMIN, True),
    "/",
    None,
)
RAW = "The following policy rules failed"


def ts(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def schedule(kind="Activated", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1), principal=ALICE, **kw):
    info = {
        "startDateTime": ts(start),
        "expiration": {"type": "afterDateTime", "endDateTime": ts(end) if end else None},
    }
    if end is None:
        info["expiration"] = {"type": "noExpiration"}
    doc = {
        "id": "sched-1",
        "principalId": principal,
        "roleDefinitionId": SEC_ADMIN,
        "directoryScopeId": "/",
        "appScopeId": None,
        "assignmentType": kind,
        "memberType": "Direct",
        "status": "Provisioned",
        "scheduleInfo": info,
    }
    doc.update(kw)
    return doc


def request(status="PendingApproval", action="selfActivate", **kw):
    doc = {
        "id": "req-1",
        "status": status,
        "action": action,
        "principalId": ALICE,
        "roleDefinitionId": SEC_ADMIN,
        "directoryScopeId": "/",
        "appScopeId": None,
        "createdDateTime": ts(NOW),
    }
    doc.update(kw)
    return doc


def state(schedules=(), requests=(), eligibilities=()):
    return act.state_from_answers(ALICE, SEC_ADMIN, "/", None, list(schedules), list(requests), list(eligibilities))


DESIRED = act.Desired("active", timedelta(hours=8), timedelta(minutes=15), "incident", None, None)


# ------------------------------------------------------------------ the token (notes §6.4)


@pytest.mark.parametrize(
    "claims, app_only",
    [
        ({"scp": "RoleAssignmentSchedule.ReadWrite.Directory", "oid": ALICE, "idtyp": "user"}, False),
        ({"scp": "User.Read"}, False),
        ({"roles": ["RoleManagement.ReadWrite.Directory"], "idtyp": "app"}, True),
        ({"roles": ["RoleManagement.ReadWrite.Directory"]}, True),
        ({"scp": "x", "idtyp": "app"}, True),
        ({}, True),
    ],
)
def test_app_only_detection(claims, app_only):
    assert act.token_is_app_only(claims) is app_only


def test_app_only_token_is_refused_with_the_way_out():
    with pytest.raises(AuthError) as err:
        act.require_delegated({"roles": ["x"], "idtyp": "app"}, "client_secret")
    msg = err.value.msg
    assert "application token (auth_method=client_secret)" in msg and "signed-in user" in msg
    for way in (
        "access_token",
        "az account get-access-token --resource-type ms-graph",
        "azure_cli",
        "username_password",
    ):
        assert way in msg
    act.require_delegated({"scp": "x", "oid": ALICE}, "access_token")  # no error


def test_signed_in_user_needs_a_guid_oid():
    assert act.signed_in_user({"oid": ALICE, "name": "Alice Anders"}) == (ALICE, "Alice Anders")
    assert act.signed_in_user({"oid": ALICE, "upn": "a@x"}) == (ALICE, "a@x")
    with pytest.raises(Exception, match="not a valid GUID"):
        act.signed_in_user({"oid": "nope"})


# ------------------------------------------------------------------ policy (notes §3.10)


RULES = [
    {"id": "Expiration_EndUser_Assignment", "isExpirationRequired": True, "maximumDuration": "PT8H"},
    {"id": "Enablement_EndUser_Assignment", "enabledRules": ["MultiFactorAuthentication", "Justification"]},
    {
        "id": "Approval_EndUser_Assignment",
        "setting": {"isApprovalRequired": False, "isApprovalRequiredForExtension": True},
    },
    {"id": "AuthenticationContext_EndUser_Assignment", "isEnabled": True, "claimValue": "c1"},
    {"id": "Expiration_Admin_Assignment", "isExpirationRequired": False, "maximumDuration": "P180D"},
]


def test_policy_from_rules():
    policy = act.policy_from_rules(RULES)
    assert policy.max_duration == timedelta(hours=8) and policy.expiration_required
    assert policy.require_mfa and policy.require_justification and not policy.require_ticket
    assert not policy.require_approval and policy.approval_for_extension and policy.auth_context == "c1"
    assert act.policy_from_rules(None) is None
    approval = [{"id": "Approval_EndUser_Assignment", "setting": {"isApprovalRequired": True, "isRequestorJustificationRequired": True}}]  # fmt: skip
    assert act.policy_from_rules(approval).require_justification  # approval with justification implies it


def test_duration_task_then_policy_then_fallback():
    policy = act.policy_from_rules(RULES)
    assert act.activation_duration("PT2H", policy) == (timedelta(hours=2), "task")
    assert act.activation_duration(None, policy) == (timedelta(hours=8), "policy")
    assert act.activation_duration(None, None) == (act.FALLBACK_DURATION, "fallback")
    assert act.activation_duration(None, act.policy_from_rules([])) == (act.FALLBACK_DURATION, "fallback")


# ------------------------------------------------------------------ reading


def test_reads_go_through_filter_by_current_user():
    named = dict(act.read_requests(SEC_ADMIN))
    assert set(named) == {"schedules", "requests", "eligibilities"}
    for req in named.values():
        assert "/filterByCurrentUser(on='principal')" in req["path"] and req["method"] == "GET"
    assert named["schedules"]["params"]["$filter"] == "roleDefinitionId eq '%s'" % SEC_ADMIN
    assert "status eq 'PendingApproval'" in named["requests"]["params"]["$filter"]
    with pytest.raises(Exception, match="not a valid GUID"):
        act.read_requests("x' or 1 eq 1")


def test_state_sorts_activation_assignment_pending_and_eligibility():
    elig = {"id": "e-i", "roleDefinitionId": SEC_ADMIN, "directoryScopeId": "/", "roleEligibilityScheduleId": "e-s"}
    other_scope = schedule(directoryScopeId="/administrativeUnits/x", id="other")
    other_role = schedule(roleDefinitionId=USER_ADMIN, id="other-role")
    found = state(
        [other_scope, other_role, schedule(), schedule("Assigned", principal=GROUP, memberType="Group", id="g")],
        [request(), request(status="Provisioned", id="done"), request(action="selfDeactivate", id="deact")],
        [elig, {"id": "x", "roleDefinitionId": USER_ADMIN, "directoryScopeId": "/"}],
    )
    assert found.activation["id"] == "sched-1"
    assert found.assigned["id"] == "g"
    assert [r["id"] for r in found.pending] == ["req-1"]
    assert found.eligibility is elig and len(found.eligibilities) == 2


# ------------------------------------------------------------------ planning


def test_inactive_role_is_activated_for_the_duration():
    p = act.plan(DESIRED, state(), TARGET, NOW)
    assert p.action == "activate"
    assert p.body["action"] == "selfActivate" and p.body["principalId"] == ALICE
    assert p.body["scheduleInfo"] == {
        "startDateTime": "2026-11-29T10:00:00Z",
        "expiration": {"type": "afterDuration", "duration": "PT8H"},
    }
    assert p.body["justification"] == "incident" and "ticketInfo" not in p.body


def test_ticket_goes_into_the_body():
    desired = DESIRED._replace(ticket_number="INC-1", ticket_system="SNOW")
    body = act.plan(desired, state(), TARGET, NOW).body
    assert body["ticketInfo"] == {"ticketNumber": "INC-1", "ticketSystem": "SNOW"}


@pytest.mark.parametrize(
    "left, action", [(timedelta(hours=1), "none"), (timedelta(minutes=15), "none"), (timedelta(minutes=14), "extend")]
)
def test_min_remaining_decides_between_unchanged_and_extend(left, action):
    p = act.plan(DESIRED, state([schedule(end=NOW + left)]), TARGET, NOW)
    assert p.action == action
    if action == "none":
        assert p.status == "active" and p.body is None
    else:
        assert p.body["action"] == "selfExtend" and p.fallback["action"] == "selfActivate"
        assert p.body["scheduleInfo"]["expiration"]["duration"] == "PT8H"


def test_permanent_activation_never_needs_extending():
    p = act.plan(DESIRED, state([schedule(end=None)]), TARGET, NOW)
    assert p.action == "none" and "does not expire" in p.reasons[0]


def test_pending_extension_is_not_sent_twice():
    p = act.plan(
        DESIRED,
        state([schedule(end=NOW + timedelta(minutes=5))], [request("PendingAdminDecision", "selfExtend")]),
        TARGET,
        NOW,
    )
    assert p.action == "none" and p.status == "pending_approval"


@pytest.mark.parametrize("status, word", [("PendingApproval", "pending_approval"), ("Granted", "provisioning")])
def test_pending_activation_is_not_sent_twice(status, word):
    p = act.plan(DESIRED, state(requests=[request(status)]), TARGET, NOW)
    assert p.action == "none" and p.status == word and "req-1" in p.reasons[0]


def test_a_role_held_through_an_assignment_is_already_active():
    p = act.plan(DESIRED, state([schedule("Assigned", end=None)]), TARGET, NOW)
    assert p.action == "none" and p.status == "assigned"
    p = act.plan(DESIRED._replace(state="inactive"), state([schedule("Assigned", end=None)]), TARGET, NOW)
    assert p.action == "none" and p.status == "assigned" and "pim_role_assignment" in p.reasons[0]


def test_future_activation_counts_as_provisioning():
    p = act.plan(DESIRED, state([schedule(start=NOW + timedelta(minutes=5))]), TARGET, NOW)
    assert p.action == "none" and p.status == "provisioning"


def test_deactivate_cancel_or_nothing():
    inactive = DESIRED._replace(state="inactive")
    p = act.plan(inactive, state([schedule()]), TARGET, NOW)
    assert p.action == "deactivate" and p.body["action"] == "selfDeactivate"
    assert "scheduleInfo" not in p.body and "justification" not in p.body
    p = act.plan(inactive, state(requests=[request()]), TARGET, NOW)
    assert p.action == "cancel" and p.cancel_ids == ["req-1"]
    p = act.plan(inactive, state(), TARGET, NOW)
    assert p.action == "none" and p.status == "inactive"


def test_plan_is_idempotent_after_its_own_effect():
    """Activating, then planning again against the result, plans nothing."""
    first = act.plan(DESIRED, state(), TARGET, NOW)
    made = schedule(start=NOW, end=NOW + DESIRED.duration)
    assert first.action == "activate"
    assert act.plan(DESIRED, state([made]), TARGET, NOW + timedelta(seconds=30)).action == "none"


def test_deactivation_possible_five_minutes_after_start():
    assert act.deactivation_possible_at(schedule(start=NOW)) == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    "status, word",
    [("Provisioned", "active"), ("PendingApproval", "pending_approval"), ("PendingAdminDecision", "pending_approval"),
     ("Granted", "provisioning"), ("PendingProvisioning", "provisioning"), ("Denied", "denied"), ("Canceled", "canceled")],
)  # fmt: skip
def test_status_words(status, word):
    assert act.status_of_request({"status": status}) == word


def test_settled():
    assert act.settled({"status": "Provisioned"}) and act.settled({"status": "Denied"})
    assert act.settled({"status": "PendingApproval"})
    assert not act.settled({"status": "PendingApproval"}, through_approval=True)
    assert not act.settled({"status": "Granted"}) and not act.settled(None)


# ------------------------------------------------------------------ waiting


class Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.t += seconds

    def monotonic(self):
        return self.t


def test_wait_polls_until_done_with_growing_intervals():
    clock = Clock()
    answers = iter(["a", "b", "c", "d", "done"])
    value, finished = act.wait_for(lambda: next(answers), lambda v: v == "done", 300, clock.sleep, clock.monotonic)
    assert (value, finished) == ("done", True)
    assert clock.sleeps == [2, 3, 5, 10]


def test_wait_gives_up_at_the_timeout():
    clock = Clock()
    calls = []
    value, finished = act.wait_for(lambda: calls.append(1) or "x", lambda v: False, 30, clock.sleep, clock.monotonic)
    assert not finished and value == "x"
    assert clock.t == 30 and sum(clock.sleeps) == 30 and len(calls) == len(clock.sleeps) + 1


def test_wait_is_bounded_even_when_the_clock_stands_still():
    calls = []
    _value, finished = act.wait_for(lambda: calls.append(1), lambda v: False, 10, lambda s: None, lambda: 0.0)
    assert not finished and len(calls) == int(10 / min(act.POLL_INTERVALS)) + 2


def test_wait_with_zero_timeout_polls_once():
    calls = []
    act.wait_for(lambda: calls.append(1), lambda v: False, 0, lambda s: pytest.fail("slept"), lambda: 0.0)
    assert calls == [1]


# ------------------------------------------------------------------ explaining (notes §6.2)


def policy_error(*rules):
    text = '["%s"]' % '","'.join(rules)
    return GraphError(
        "raw", status=400, code="RoleAssignmentRequestPolicyValidationFailed", graph_message=RAW + ": " + text
    )


def explain(err, **kw):
    body = act.plan(DESIRED._replace(duration=timedelta(hours=10)), state(), TARGET, NOW).body
    kw.setdefault("policy", act.policy_from_rules(RULES))
    kw.setdefault("rules", RULES)
    return act.explain_error(err, TARGET, body, **kw)


def test_mfa_rule_says_how_to_get_mfa():
    out = explain(policy_error("MfaRule"), claims={"amr": ["pwd"]})
    assert out.msg.startswith("MfaRule: role 'Security Administrator' requires multi-factor authentication")
    assert '["pwd"]' in out.msg and "az login" in out.msg and "never carry MFA" in out.msg
    assert out.code == "RoleAssignmentRequestPolicyValidationFailed" and out.details["failed_rules"] == ["MfaRule"]


def test_expiration_rule_names_the_maximum():
    out = explain(policy_error("ExpirationRule"))
    assert out.msg.startswith(
        "ExpirationRule: role 'Security Administrator' allows activations of at most PT8H; the request asked for PT10H."
    )
    unknown = explain(policy_error("ExpirationRule"), policy=None).msg
    assert unknown == (
        "ExpirationRule: role 'Security Administrator' limits how long an activation may last; the request asked for "
        "PT10H."
    )


def test_eligibility_rule_lists_what_you_are_eligible_for():
    names = {USER_ADMIN: "User Administrator"}
    text = act.describe_eligibilities(
        [{"roleDefinitionId": USER_ADMIN, "directoryScopeId": "/"}, {"roleDefinitionId": USER_ADMIN}], names.get
    )
    assert text == "'User Administrator' at '/'"
    out = explain(policy_error("EligibilityRule"), eligible_text=text)
    assert out.msg == (
        "EligibilityRule: you are not eligible for 'Security Administrator' at scope '/'; "
        "eligible roles: 'User Administrator' at '/'."
    )
    assert act.describe_eligibilities([], names.get) == "none"


def test_several_rules_each_explained_never_raw():
    out = explain(policy_error("JustificationRule", "TicketingRule", "MfaRule"))
    assert "JustificationRule: role 'Security Administrator' requires a justification to activate" in out.msg
    assert "TicketingRule: role 'Security Administrator' requires ticket information" in out.msg
    assert "MfaRule:" in out.msg and RAW not in out.msg


def test_auth_context_names_the_claim_from_the_challenge():
    err = GraphError(
        "raw",
        status=400,
        code="RoleAssignmentRequestAcrsValidationFailed",
        graph_message="The request requires the authentication context 'c7' in the token. Claims challenge: "
        "claims=%7B%22access_token%22%3A%7B%22acrs%22%3A%7B%22essential%22%3Atrue%2C%22value%22%3A%22c7%22%7D%7D%7D",
    )
    assert act.required_auth_context(err) == "c7"
    out = explain(err)
    assert "authentication context 'c7'" in out.msg and "--claims-challenge" in out.msg
    bare = GraphError("raw", status=400, code="RoleAssignmentRequestAcrsValidationFailed", graph_message="acrs missing")
    assert act.required_auth_context(bare, act.policy_from_rules(RULES)) == "c1"


def test_active_duration_too_short_says_when():
    err = GraphError("raw", status=400, code="ActiveDurationTooShort", graph_message="Miniumum Required is 5 minutes.")
    out = explain(err, activation=schedule(start=NOW))
    assert "deactivation becomes possible at 2026-11-29T10:05:00Z" in out.msg and "wait=true" in out.msg
    assert "Miniumum" not in out.msg


def test_other_errors_fall_back_to_the_shared_explanations():
    err = GraphError("Forbidden", status=403, code="Authorization_RequestDenied", graph_message="Insufficient")
    assert "Security Administrator" in explain(err).msg
    odd = GraphError("odd", status=400, code="Something")
    assert explain(odd) is odd
