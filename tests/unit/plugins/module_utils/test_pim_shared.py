"""The parts of _pim that the role modules share: list filters and naming, activation reporting, reworded errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError
from ansible_collections.entra.pim.plugins.module_utils._resolve import Principal, Role

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
ALICE = Principal("10000000-0000-4000-8000-000000000002", "user", "Alice Anders", "alice@contoso.example", None)
BOB = Principal("10000000-0000-4000-8000-000000000003", "user", "Bob Berg", "bob@contoso.example", None)
USER_ADMIN = Role(
    "fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1", True
)
TARGET = pim.Target(ALICE, USER_ADMIN, "/", None)


def window(end):
    return sched.Window(NOW, end)


def item(principal_id=ALICE.id, **extra):
    return dict(
        {"id": "s-" + principal_id[-1], "principalId": principal_id, "roleDefinitionId": USER_ADMIN.id}, **extra
    )


class Names:
    """A resolver stand-in: principals by id, one role, or a refusal."""

    def __init__(self, principals=(), refuse=None):
        self.principals = {p.id.lower(): p for p in principals}
        self.refuse = refuse
        self.asked = []

    def principals_by_ids(self, ids):
        self.asked.append(sorted(ids))
        if self.refuse:
            raise self.refuse
        return {i: self.principals[i] for i in ids if i in self.principals}

    def role_by_id(self, role_id):
        return USER_ADMIN if role_id == USER_ADMIN.id else None


# ------------------------------------------------------------------ listing


def test_check_list_filters_refuses_bad_input_before_any_request():
    pim.check_list_filters("/", "P7D")
    pim.check_list_filters(None, None)
    with pytest.raises(InputError, match="expiring_within"):
        pim.check_list_filters(None, "soon")
    with pytest.raises(InputError, match="directory_scope"):
        pim.check_list_filters("/administrativeUnits/nope", None)


def test_expiring_keeps_rows_ending_within_the_window_and_none_without_end():
    rows = [
        (item(), window(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))),
        (item(), window(datetime(2026, 12, 9, 10, 0, tzinfo=UTC))),
        (item(), window(None)),
    ]
    assert pim.expiring(rows, None, NOW) == rows
    assert pim.expiring(rows, "P1D", NOW) == rows[:1]
    assert pim.expiring(rows, "P10D", NOW) == rows[:2]


def test_name_principals_asks_once_for_unknown_ids_only():
    names = Names([ALICE, BOB])
    rows = [(item(ALICE.id), None), (item(BOB.id.upper()), None), (item(ALICE.id), None)]
    found = pim.name_principals(names, rows, known={ALICE.id: ALICE})
    assert names.asked == [[BOB.id]] and set(found) == {ALICE.id, BOB.id}
    assert pim.name_principals(names, [], known={}) == {} and len(names.asked) == 1


def test_name_principals_denied_leaves_names_out_only_when_allowed():
    refused = GraphError("no", status=403, code="Authorization_RequestDenied")
    rows = [(item(BOB.id), None)]
    assert pim.name_principals(Names(refuse=refused), rows, {ALICE.id: ALICE}, denied_ok=True) == {ALICE.id: ALICE}
    with pytest.raises(GraphError):
        pim.name_principals(Names(refuse=refused), rows)
    with pytest.raises(GraphError):
        pim.name_principals(Names(refuse=GraphError("x", status=500)), rows, denied_ok=True)


def test_describe_listed_names_principal_and_role_and_sorts_by_names():
    names = Names([ALICE, BOB])
    found = {ALICE.id: ALICE, BOB.id: BOB}
    end = datetime(2026, 12, 1, tzinfo=UTC)
    entries = [
        pim.describe_listed(names, found, item(BOB.id, directoryScopeId=None), window(end), True),
        pim.describe_listed(
            names, found, item(ALICE.id, status="Provisioned", roleDefinitionId="x"), window(None), False
        ),
    ]
    bob = entries[0]
    assert bob["principal_name"] == "Bob Berg" and bob["principal_type"] == "user" and bob["in_effect"]
    assert bob["role_name"] == "User Administrator" and bob["directory_scope_id"] == "/"
    assert bob["member_type"] == "Direct" and bob["end"] == "2026-12-01T00:00:00Z" and not bob["permanent"]
    assert entries[1]["role_name"] is None and entries[1]["permanent"]
    # No role name sorts first (""), then by principal name.
    assert [e["principal_name"] for e in pim.sort_listed(entries)] == ["Alice Anders", "Bob Berg"]


# ------------------------------------------------------------------ assignments and activations


def activation(end="2027-01-01T00:00:00Z"):
    return item(
        assignmentType="Activated",
        memberType="Direct",
        status="Provisioned",
        directoryScopeId="/",
        scheduleInfo={
            "startDateTime": "2026-11-29T09:00:00Z",
            "expiration": {"type": "afterDateTime", "endDateTime": end},
        },
    )


def test_is_admin_request():
    assert pim.is_admin_request({"action": "adminAssign"}) and pim.is_admin_request({"action": "AdminRemove"})
    assert not pim.is_admin_request({"action": "selfActivate"}) and not pim.is_admin_request({})


def test_report_activation_adds_it_and_says_it_is_not_managed():
    current = pim.current_from_answers("assignment", TARGET, [activation()], [])
    result = {"changes": ["the active assignment does not exist"]}
    pim.report_activation(pim.KINDS["assignment"], TARGET, current, result)
    assert result["activation"]["assignment_type"] == "Activated"
    assert result["changes"][0] == "the active assignment does not exist"
    assert "until 2027-01-01T00:00:00Z" in result["changes"][1] and "not managed" in result["changes"][1]

    result = {"changes": []}
    pim.report_activation(pim.KINDS["assignment"], TARGET, pim.empty_current(), result)
    assert result == {"changes": [], "activation": None}


def test_explain_assignment_error_names_the_blocking_activation_and_keeps_graph_fields():
    err = GraphError("raw", status=400, code="RoleAssignmentExists", graph_message="exists", request_id="r-1")
    current = pim.current_from_answers("assignment", TARGET, [activation()], [])
    explained = pim.explain_assignment_error(None, "assignment", err, TARGET, {}, current)
    assert "activated at scope '/'" in explained.msg and "until 2027-01-01T00:00:00Z" in explained.msg
    assert (explained.status, explained.code, explained.graph_message, explained.request_id) == (
        400,
        "RoleAssignmentExists",
        "exists",
        "r-1",
    )
    # Without an activation it is the generic explanation.
    plain = pim.explain_assignment_error(None, "assignment", err, TARGET, {}, pim.empty_current())
    assert "would not replace" in plain.msg


def test_reworded_keeps_every_graph_field_and_adds_details():
    err = GraphError(
        "raw",
        status=403,
        code="Denied",
        graph_message="g",
        request_id="r",
        client_request_id="c",
        method="POST",
        url="/u",
    )
    out = pim.reworded(err, "ours", attempts=3)
    assert out.msg == "ours" and out.attempts == 3
    assert out.to_fail_kwargs() == dict(err.to_fail_kwargs(), msg="ours", attempts=3)


def test_find_rule():
    rules = [{"id": "Expiration_Admin_Eligibility"}, {"id": "Enablement_Admin_Eligibility", "enabledRules": []}]
    assert pim.find_rule(rules, "Enablement_Admin_Eligibility") is rules[1]
    assert pim.find_rule(rules, "Approval_EndUser_Assignment") is None and pim.find_rule(None, "x") is None
