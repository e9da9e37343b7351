"""pim_access through patch_module_args, against the in-memory Graph of test_bulk.py.

What the module adds on top of _bulk: option parsing (defaults, choices, sub-options), check
and diff mode flags, and turning a fail_fast stop into fail_json with every bad item listed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.modules import pim_access

_spec = importlib.util.spec_from_file_location(
    "bulk_fakes", Path(__file__).resolve().parents[1] / "module_utils" / "test_bulk.py"
)
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)


SALES_AU = "50000000-0000-4000-8000-000000000001"


class PolicyGraph(fakes.FakeGraph):
    """test_bulk's Graph, plus administrative units by id and the roles' Enablement rules."""

    def __init__(self, users=0):
        super().__init__(users)
        self.enabled = {}  # Enablement_Admin_Eligibility.enabledRules of every role
        self.unit_reads = 0

    def _dispatch(self, method, url, params, body):
        path = url.split("?", 1)[0]
        if method == "GET" and path.startswith("/directory/administrativeUnits/"):
            self.unit_reads += 1
            if path.rsplit("/", 1)[1] != SALES_AU:
                return 404, {"error": {"code": "Request_ResourceNotFound", "message": "no such unit"}}
            return 200, {"id": SALES_AU, "displayName": "Sales AU"}
        return super()._dispatch(method, url, params, body)

    def _get(self, path, params):
        answer = super()._get(path, params)
        if path == "/policies/roleManagementPolicyAssignments":
            answer["value"][0]["policy"]["rules"].append(
                {"id": "Enablement_Admin_Eligibility", "enabledRules": list(self.enabled)}
            )
        return answer


@pytest.fixture()
def graph(monkeypatch):
    fake = PolicyGraph(users=30)
    monkeypatch.setattr(PimModule, "client", property(lambda self: fake))
    yield fake
    _resolve._ROLE_CACHE.clear()


def run(capsys, check_mode=False, diff=False, **args):
    args.setdefault("tenant_id", "t")
    args.update(_ansible_check_mode=check_mode, _ansible_diff=diff)
    _resolve._ROLE_CACHE.clear()  # each task is a new process
    with patch_module_args(args), pytest.raises(SystemExit):
        pim_access.main()
    return json.loads(capsys.readouterr().out)


GRANTS = [{"principal": "u%d@contoso.example" % i, "role": "User Administrator", "duration": "P90D"} for i in range(30)]


def test_check_apply_rerun(graph, capsys):
    out = run(capsys, check_mode=True, diff=True, grants=GRANTS, boundary={"roles": ["User Administrator"]}, purge=True)
    assert out["changed"] and out["summary"]["added"] == 30 and graph.writes == 0
    assert len(out["diff"]["after"]) == 30 and out["diff"]["before"] == {}
    assert out["changes"][0]["type"] == "eligible" and out["changes"][0]["status"] == "planned"

    out = run(capsys, grants=GRANTS, boundary={"roles": ["User Administrator"]}, purge=True)
    assert out["changed"] and out["summary"]["added"] == 30 and graph.writes == 30
    assert set(out["summary"]) >= {"added", "updated", "removed", "cancelled", "unchanged", "failed", "skipped"}

    graph.batches = 0
    out = run(capsys, grants=GRANTS, boundary={"roles": ["User Administrator"]}, purge=True)
    # one $batch for the role list and the lookups, one for the reads that needed a role id
    assert not out["changed"] and out["summary"]["unchanged"] == 30 and graph.batches == 2


def test_check_and_diff_show_updates_and_removals(graph, capsys):
    """Issue 14 point 18: an update and a purge each show before and after in check + diff mode."""
    boundary = {"roles": ["User Administrator"]}
    run(capsys, grants=GRANTS[:3], boundary=boundary, purge=True)
    writes = graph.writes
    wanted = [dict(GRANTS[0], duration="P10D"), GRANTS[1]]
    out = run(capsys, check_mode=True, diff=True, grants=wanted, boundary=boundary, purge=True)
    assert out["changed"] and graph.writes == writes
    assert out["summary"]["updated"] == 1 and out["summary"]["removed"] == 1
    before, after = out["diff"]["before"], out["diff"]["after"]
    assert len(before) == 2 and len(after) == 1
    (updated,) = after
    assert before[updated]["end"] != after[updated]["end"]
    (removed,) = set(before) - set(after)
    assert removed.startswith("eligible | User Administrator | / |") and before[removed]["end"]


def test_unknown_administrative_unit_and_missing_justification_write_nothing(graph, capsys):
    """Issue 14 point 8: what Graph would refuse is refused before any write, the unit checked in the lookups."""
    ghost = "59999999-0000-4000-8000-000000000009"
    grants = [dict(GRANTS[0], directory_scope="/administrativeUnits/" + SALES_AU), dict(GRANTS[1])]
    bad = grants + [dict(GRANTS[2], directory_scope="/administrativeUnits/" + ghost)]
    for check_mode in (True, False):
        batches = graph.batches
        out = run(capsys, check_mode=check_mode, grants=bad)
        assert out["failed"] and graph.writes == 0
        assert out["errors"][0]["item"].startswith("grants[2]")
        assert "no administrative unit with the id '%s' exists in this tenant" % ghost in out["errors"][0]["msg"]
        # lookups (units included), the state, the policies of the roles to write; nothing else
        assert graph.batches - batches == 3
    assert graph.unit_reads == 4  # one GET per distinct unit, in each of the two runs

    graph.enabled = ["Justification"]
    for check_mode in (True, False):
        out = run(capsys, check_mode=check_mode, grants=grants)
        assert out["failed"] and graph.writes == 0
        assert [e["item"][:9] for e in out["errors"]] == ["grants[0]", "grants[1]"]
        assert out["errors"][0]["msg"].endswith(
            "Enablement_Admin_Eligibility: role 'User Administrator' requires a justification for eligible "
            "assignments (enabledRules: Justification); set justification, or set "
            "settings.eligible_assignment.require_justification: false with entra.pim.pim_policy."
        )
    out = run(capsys, grants=[dict(g, justification="rota") for g in grants])
    assert out["changed"] and graph.writes == 2


def test_fail_fast_is_a_clean_failure(graph, capsys):
    grants = GRANTS[:2] + [{"principal": "ghost@contoso.example", "role": "User Administrator"}]
    out = run(capsys, grants=grants)
    assert out["failed"] and "nothing was changed" in out["msg"]
    assert out["errors"][0]["item"].startswith("grants[2]")
    assert "exception" not in out and graph.writes == 0
    assert out["summary"]["skipped"] == 1


@pytest.mark.parametrize("grants", ["alice", ["alice"]])
def test_grants_of_the_wrong_type_name_the_option(graph, capsys, grants):
    # Ansible's first error here is its no_log scan failing on the value; the conversion error names the option.
    out = run(capsys, grants=grants)
    assert out["failed"] and "option 'grants'" in out["msg"] and "dict" in out["msg"]
    assert graph.writes == 0


def test_defaults_and_choices(graph, capsys):
    out = run(capsys, grants=[{"principal": "u1@contoso.example", "role": "User Administrator", "type": "sometimes"}])
    assert out["failed"] and "type" in out["msg"]
    out = run(capsys, grants=[{"principal": "u1@contoso.example", "role": "User Administrator"}], check_mode=True)
    assert "changes" in out, out
    change = out["changes"][0]
    assert change["type"] == "eligible" and change["directory_scope"] == "/" and change["action"] == "add"
    assert out["changes"][0]["after"]["permanent"] is True


def test_active_grant_for_a_service_principal(graph, capsys):
    grants = [{"principal": "Deploy Pipeline", "role": "Helpdesk Administrator", "type": "active", "duration": "P7D"}]
    out = run(capsys, grants=grants, justification="ci")
    assert out["summary"]["added"] == 1, out
    assert graph.requests["assignment"][-1]["justification"] == "ci"


def test_end_activations_defaults_to_false_and_is_a_boolean(graph, capsys):
    pid = fakes.user(3)["id"]
    graph.add_assignment(pid, fakes.USER_ADMIN, assignment_type="Activated")
    leaver = {"principals": ["u3@contoso.example"]}
    out = run(capsys, boundary=leaver, purge=True)
    assert not out["changed"] and graph.writes == 0
    out = run(capsys, boundary=leaver, purge=True, end_activations="maybe")
    assert out["failed"] and "end_activations" in out["msg"]
    out = run(capsys, boundary=leaver, purge=True, end_activations=True)
    assert out["changed"] and out["summary"]["removed"] == 1, out
    assert [(c["type"], c["activated"], c["action"]) for c in out["changes"]] == [("active", True, "remove")]
    assert graph.requests["assignment"][-1]["action"] == "adminRemove"


def test_ticket_number_needs_ticket_system(graph, capsys):
    out = run(capsys, boundary={"principals": ["u3@contoso.example"]}, purge=True, ticket_number="HR-1")
    assert out["failed"] and "ticket_number" in out["msg"] and "ticket_system" in out["msg"]
    assert graph.writes == 0
