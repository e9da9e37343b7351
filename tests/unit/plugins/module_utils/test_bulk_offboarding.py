"""pim_access purge of a principal's own pending requests, and outcomes of an interrupted write (issue 14).

Point 11: a selfActivate waiting for approval (or a selfExtend/selfRenew waiting for an admin
decision) would grant the role after an offboarding if nobody cancels it. Point 13: when the
writes stop on a task-level error, the failure still says which items were applied.
Uses the in-memory Graph of test_bulk.py.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _bulk, _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError, PimError

_spec = importlib.util.spec_from_file_location(
    "bulk_fakes_offboarding", Path(__file__).resolve().parent / "test_bulk.py"
)
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)

USER_ADMIN = fakes.USER_ADMIN
HELPDESK = fakes.HELPDESK_ADMIN


@pytest.fixture(autouse=True)
def no_role_cache():
    _resolve._ROLE_CACHE.clear()
    yield
    _resolve._ROLE_CACHE.clear()


def own_request(fake, kind, pid, rid, action="selfActivate", status="PendingApproval"):
    req = {
        "id": str(uuid.uuid4()),
        "action": action,
        "status": status,
        "principalId": pid,
        "roleDefinitionId": rid,
        "directoryScopeId": "/",
        "scheduleInfo": {"startDateTime": None, "expiration": {"type": "afterDuration", "duration": "PT8H"}},
    }
    fake.requests[kind].append(req)
    return req


def offboard(fake, who, check_mode=False, end_activations=True, **kw):
    """What the offboard role sends: no grants, purge inside a boundary of one principal."""
    params = dict(
        grants=[],
        boundary={"principals": [who], "types": ["eligible", "active"]},
        purge=True,
        end_activations=end_activations,
    )
    params.update(kw)
    return fakes.run(fake, check_mode=check_mode, **params)


def test_offboarding_cancels_the_principals_own_pending_requests():
    fake = fakes.FakeGraph(users=2)
    alice, bob = fakes.user(0)["id"], fakes.user(1)["id"]
    fake.add_eligibility(alice, USER_ADMIN)
    activate = own_request(fake, "assignment", alice, USER_ADMIN)
    extend = own_request(fake, "eligibility", alice, HELPDESK, action="selfExtend", status="PendingAdminDecision")
    renew = own_request(fake, "assignment", alice, HELPDESK, action="selfRenew", status="PendingAdminDecision")
    other = own_request(fake, "assignment", bob, USER_ADMIN)  # outside the boundary

    plan = offboard(fake, "u0@contoso.example", check_mode=True)
    cancels = [c for c in plan["changes"] if c["action"] == "cancel"]
    assert sorted(c["before"]["request_id"] for c in cancels) == sorted([activate["id"], extend["id"], renew["id"]])
    assert {c["before"]["request_action"] for c in cancels} == {"selfActivate", "selfExtend", "selfRenew"}
    assert all(c["status"] == "planned" and c["principal_id"] == alice for c in cancels)
    assert fake.writes == 0

    result = offboard(fake, "u0@contoso.example")
    assert result["summary"]["cancelled"] == 3 and result["summary"]["removed"] == 1
    assert activate["status"] == "Canceled" and renew["status"] == "Canceled" and extend["status"] == "Revoked"
    assert other["status"] == "PendingApproval"
    # A second run finds nothing left to cancel.
    again = offboard(fake, "u0@contoso.example")
    assert not again["changed"] and again["changes"] == []


def test_a_pending_activation_goes_with_the_eligibility_it_needs():
    """Without end_activations a selfActivate is kept while its eligibility stays, cancelled when it goes."""
    fake = fakes.FakeGraph(users=1)
    alice = fakes.user(0)["id"]
    fake.add_eligibility(alice, USER_ADMIN)
    activate = own_request(fake, "assignment", alice, USER_ADMIN)

    # Onboarding (exclusive) that keeps the eligibility: the user's own request is theirs.
    keep = fakes.run(
        fake,
        check_mode=True,
        grants=[fakes.grant(0, duration=None, permanent=True)],
        boundary={"principals": ["u0@contoso.example"]},
        purge=True,
    )
    assert [c["action"] for c in keep["changes"]] == ["none"]  # the eligibility as wanted; no cancel

    # Only active access in the boundary: eligibilities are not owned, the request is kept.
    active_only = offboard(
        fake,
        "u0@contoso.example",
        check_mode=True,
        end_activations=False,
        boundary={"principals": ["u0@contoso.example"], "types": ["active"]},
    )
    assert [c for c in active_only["changes"] if c["action"] == "cancel"] == []

    # Offboarding with end_activations false still removes the eligibility, so the request goes too.
    result = offboard(fake, "u0@contoso.example", end_activations=False)
    assert sorted(c["action"] for c in result["changes"]) == ["cancel", "remove"]
    assert activate["status"] == "Canceled"


def test_a_protected_principal_keeps_its_own_requests():
    fake = fakes.FakeGraph(users=1)
    activate = own_request(fake, "assignment", fakes.user(0)["id"], USER_ADMIN)
    result = offboard(fake, "u0@contoso.example", protected_principals=["u0@contoso.example"])
    assert activate["status"] == "PendingApproval" and fake.writes == 0
    assert [c["action"] for c in result["changes"] if c["action"] != "none"] == []


def test_an_interrupted_write_still_reports_what_was_applied(monkeypatch):
    """The writes stop on an error no item can carry (sign-in refused mid-run): applied items stay applied."""
    fake = fakes.FakeGraph(users=25)
    fake.lose_write_chunks = 0
    grants = [fakes.grant(i) for i in range(25)]
    real_batch = fake.batch
    calls = {"writes": 0}

    def batch(requests):
        if any(r["method"] == "POST" and "ScheduleRequests" in r["url"] for r in requests):
            calls["writes"] += 1
            if calls["writes"] == 2:  # the second chunk (5 items) never leaves: the token is refused
                raise AuthError("Authentication failed: the identity platform refused the new token")
        return real_batch(requests)

    monkeypatch.setattr(fake, "batch", batch)
    with pytest.raises(PimError) as info:
        fakes.run(fake, grants=grants)
    details = info.value.details
    statuses = [c["status"] for c in details["changes"]]
    assert statuses.count("applied") == 20 and statuses.count("unknown") == 5
    assert details["changed"] is True
    assert details["summary"]["added"] == 20 and details["summary"]["unknown"] == 5
    unknown = [c for c in details["changes"] if c["status"] == "unknown"]
    assert all("not known whether it was applied" in c["error"] for c in unknown)
    assert "Authentication failed" in info.value.msg


def test_reconcile_result_lists_an_interrupted_run_in_fail_kwargs(monkeypatch):
    """The module wrapper passes details to fail_json: changes must be among them."""
    fake = fakes.FakeGraph(users=1)

    def boom(changes):
        raise GraphError("Graph could not be reached", code="ConnectionError")

    monkeypatch.setattr(_bulk.Writer, "write", lambda self, changes: boom(changes))
    with pytest.raises(PimError) as info:
        fakes.run(fake, grants=[fakes.grant(0)])
    kwargs = info.value.to_fail_kwargs()
    assert kwargs["changes"][0]["status"] == "unknown" and kwargs["changed"] is False
