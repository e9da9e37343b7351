# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pim_policy and pim_policy_info through patch_module_args, against a fake Graph client.

The fake answers only the reads these modules make (role list, policy assignments, directory
lookups) and applies rule PATCHes sent through $batch, so round trips can be counted exactly.
"""

from __future__ import annotations

import copy
import itertools
import json
import re

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.entra.pim.plugins.module_utils import _graph
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.modules import pim_policy, pim_policy_info

TENANT = "a1b2c3d4-0000-4000-8000-000000000000"
ROLES = {
    "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
    "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
    "729827e3-9c14-49f7-bb1b-9608f156bbb8": "Helpdesk Administrator",
    "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
    "fdd7a751-b60b-444a-984c-02652fe8fa1c": "Groups Administrator",
    "5d6b6bb7-de71-4623-b4af-96380a352509": "Security Reader",
    "4a5d8f65-41da-4de4-8968-e035b65339cf": "Reports Reader",
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3": "Application Administrator",
    "158c047a-c907-4556-b7ef-446551a6b5f7": "Cloud Application Administrator",
    "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
    "f28a1f50-f6e7-4571-818b-6a12f2af6b6c": "SharePoint Administrator",
}
ALICE = {
    "@odata.type": "#microsoft.graph.user",
    "id": "11111111-1111-4111-8111-111111111111",
    "displayName": "Alice Adams",
    "userPrincipalName": "alice@contoso.example",
    "mail": "alice@contoso.example",
}
HELPDESK = {
    "@odata.type": "#microsoft.graph.group",
    "id": "22222222-2222-4222-8222-222222222222",
    "displayName": "PIM-Helpdesk",
    "isAssignableToRole": True,
}
PIPELINE = {
    "@odata.type": "#microsoft.graph.servicePrincipal",
    "id": "33333333-3333-4333-8333-333333333333",
    "displayName": "Deploy Pipeline",
    "appId": "44444444-4444-4444-8444-444444444444",
}

_counter = itertools.count()


def default_rules():
    """The documented 17 directory-role rules (notes §3.10), as the sandbox seeds them."""
    rules = []

    def target(caller, level):
        return {
            "caller": caller,
            "operations": ["all"],
            "level": level,
            "inheritableSettings": [],
            "enforcedSettings": [],
        }

    t = "#microsoft.graph.unifiedRoleManagementPolicy%sRule"
    for caller, level, required, maximum, enabled in (
        ("Admin", "Eligibility", False, "P365D", []),
        ("Admin", "Assignment", False, "P180D", ["Justification"]),
        ("EndUser", "Assignment", True, "PT8H", ["MultiFactorAuthentication", "Justification"]),
    ):
        suffix = "%s_%s" % (caller, level)
        rules.append(
            {
                "@odata.type": t % "Expiration",
                "id": "Expiration_" + suffix,
                "isExpirationRequired": required,
                "maximumDuration": maximum,
                "target": target(caller, level),
            }
        )
        rules.append(
            {
                "@odata.type": t % "Enablement",
                "id": "Enablement_" + suffix,
                "enabledRules": list(enabled),
                "target": target(caller, level),
            }
        )
        if caller == "EndUser":
            rules.append(
                {
                    "@odata.type": t % "Approval",
                    "id": "Approval_" + suffix,
                    "target": target(caller, level),
                    "setting": {
                        "isApprovalRequired": False,
                        "isApprovalRequiredForExtension": False,
                        "isRequestorJustificationRequired": True,
                        "approvalMode": "SingleStage",
                        "approvalStages": [
                            {
                                "approvalStageTimeOutInDays": 1,
                                "isApproverJustificationRequired": True,
                                "escalationTimeInMinutes": 0,
                                "isEscalationEnabled": False,
                                "primaryApprovers": [],
                                "escalationApprovers": [],
                            }
                        ],
                    },
                }
            )
            rules.append(
                {
                    "@odata.type": t % "AuthenticationContext",
                    "id": "AuthenticationContext_" + suffix,
                    "isEnabled": False,
                    "claimValue": None,
                    "target": target(caller, level),
                }
            )
        for recipient in ("Admin", "Requestor", "Approver"):
            rules.append(
                {
                    "@odata.type": t % "Notification",
                    "id": "Notification_%s_%s" % (recipient, suffix),
                    "notificationType": "Email",
                    "recipientType": recipient,
                    "notificationLevel": "All",
                    "isDefaultRecipientsEnabled": True,
                    "notificationRecipients": [],
                    "target": target(caller, level),
                }
            )
    return rules


def policy_id(role_id):
    return "DirectoryRole_%s_%s" % (TENANT, role_id[::-1])


class FakeClient:
    """Records every call; one call here is one Graph round trip (batch = one POST /$batch)."""

    auth_method = "client_secret"

    def __init__(self, patch_status=204):
        self.graph_url = "https://fake-graph-%d.example" % next(_counter)
        self.calls = []
        self.patch_status = patch_status
        self.directory = [ALICE, HELPDESK, PIPELINE]
        self.policies = {rid: default_rules() for rid in ROLES}

    # --- the GraphClient interface used by the modules

    def list(self, path, params=None):
        self.calls.append(("GET", path, dict(params or {})))
        return self._list(path, params or {})

    def post(self, path, body, params=None, idempotent=False):
        self.calls.append(("POST", path, body))
        return self._post(path, body)

    def batch(self, requests):
        self.calls.append(("BATCH", len(requests), copy.deepcopy(requests)))
        out = []
        for req in requests:
            status, body = self._dispatch(req)
            out.append(
                {
                    "id": req["id"],
                    "status": status,
                    "headers": {},
                    "body": body,
                    "method": req["method"],
                    "url": req["url"],
                }
            )
        return out

    def raise_for_item(self, resp):
        return _graph.raise_for_item(resp)

    def close(self):
        return None

    def secret_values(self):
        return []

    # --- helpers for tests

    def round_trips(self):
        return len(self.calls)

    def patches(self):
        return [item for call in self.calls if call[0] == "BATCH" for item in call[2] if item["method"] == "PATCH"]

    def rules(self, role_id):
        return {r["id"]: r for r in self.policies[role_id]}

    # --- behaviour

    def _list(self, path, params):
        if path == "/roleManagement/directory/roleDefinitions":
            return [
                {"id": rid, "displayName": name, "templateId": rid, "isBuiltIn": True} for rid, name in ROLES.items()
            ]
        if path == "/policies/roleManagementPolicyAssignments":
            flt = params["$filter"]
            assert flt.startswith("scopeId eq '/' and scopeType eq 'DirectoryRole'"), flt
            assert params["$expand"] == "policy($expand=rules)"
            wanted = re.search(r"roleDefinitionId eq '([^']+)'", flt)
            out = []
            for rid in ROLES:
                if wanted and wanted.group(1) != rid:
                    continue
                pid = policy_id(rid)
                out.append(
                    {
                        "id": "%s_%s" % (pid, rid),
                        "policyId": pid,
                        "scopeId": "/",
                        "scopeType": "DirectoryRole",
                        "roleDefinitionId": rid,
                        "policy": {
                            "id": pid,
                            "scopeId": "/",
                            "scopeType": "DirectoryRole",
                            "rules": copy.deepcopy(self.policies[rid]),
                        },
                    }
                )
            return out
        value = re.search(r"eq '((?:[^']|'')*)'", params.get("$filter", ""))
        value = value.group(1).replace("''", "'") if value else None
        kinds = {
            "/users": "#microsoft.graph.user",
            "/groups": "#microsoft.graph.group",
            "/servicePrincipals": "#microsoft.graph.servicePrincipal",
        }
        if path in kinds:
            found = []
            for obj in self.directory:
                if obj["@odata.type"] != kinds[path]:
                    continue
                if value in (obj.get("userPrincipalName"), obj.get("mail"), obj.get("displayName"), obj.get("appId")):
                    found.append(copy.deepcopy(obj))
            return found
        raise AssertionError("unexpected GET %s" % path)

    def _post(self, path, body):
        if path == "/directoryObjects/getByIds":
            ids = {i.lower() for i in body["ids"]}
            return {"value": [copy.deepcopy(o) for o in self.directory if o["id"] in ids]}
        raise AssertionError("unexpected POST %s" % path)

    def _dispatch(self, req):
        if req["method"] == "PATCH":
            match = re.match(r"^/policies/roleManagementPolicies/([^/]+)/rules/([^/]+)$", req["url"])
            assert match, req["url"]
            assert req["headers"]["Content-Type"] == "application/json"
            if self.patch_status == 403:
                return 403, {
                    "error": {
                        "code": "Authorization_RequestDenied",
                        "message": "Insufficient privileges to complete the operation.",
                    }
                }
            rid = next(r for r in ROLES if policy_id(r) == match.group(1))
            body = req["body"]
            assert body["id"] == match.group(2) and body["@odata.type"] and body["target"]
            rules = self.policies[rid]
            index = next(i for i, r in enumerate(rules) if r["id"] == body["id"])
            rules[index] = dict(rules[index], **copy.deepcopy(body))
            return 204, None
        if req["method"] == "GET":
            path, _sep, query = req["url"].partition("?")
            from urllib.parse import parse_qsl

            return 200, {"value": self._list(path, dict(parse_qsl(query)))}
        if req["method"] == "POST":
            return 200, self._post(req["url"], req["body"])
        raise AssertionError(req)


def run_module(module, args, client, monkeypatch, capsys):
    """Run ``module.main()`` with ``args`` against ``client``; returns the parsed result."""
    monkeypatch.setattr(PimModule, "client", property(lambda self: client))
    with patch_module_args(args):
        try:
            module.main()
        except SystemExit:
            pass
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


GA = "62e90394-69f5-4237-9190-012177145e10"
PRA = "e8611ab8-c189-46e8-94e1-60213ab1f814"
HD = "729827e3-9c14-49f7-bb1b-9608f156bbb8"


@pytest.fixture
def client():
    return FakeClient()


@pytest.fixture
def run(monkeypatch, capsys):
    def _run(module, args, fake):
        return run_module(module, args, fake, monkeypatch, capsys)

    return _run


# ----------------------------------------------------------------- pim_policy_info


def test_info_all_roles_in_one_request(client, run):
    result = run(pim_policy_info, {}, client)
    assert result["changed"] is False
    policy_reads = [c for c in client.calls if c[1] == "/policies/roleManagementPolicyAssignments"]
    assert len(policy_reads) == 1
    assert "roleDefinitionId" not in policy_reads[0][2]["$filter"]
    # role names come from one role-list read; no per-role request at all
    assert client.round_trips() == 2
    names = [p["role_name"] for p in result["policies"]]
    assert names == sorted(names, key=str.casefold) and len(names) == len(ROLES)
    ga = next(p for p in result["policies"] if p["role_id"] == GA)
    assert ga["policy_id"] == policy_id(GA)
    assert ga["settings"]["activation"]["max_duration"] == "PT8H"
    assert len(ga["rules"]) == 17
    assert "@odata" not in json.dumps(result["policies"])
    assert {"id", "is_expiration_required", "maximum_duration", "target"} <= set(ga["rules"][0])


def test_info_one_role_filters_on_the_server(client, run):
    result = run(pim_policy_info, {"role": "global administrator"}, client)
    read = next(c for c in client.calls if c[1] == "/policies/roleManagementPolicyAssignments")
    assert read[2]["$filter"].endswith("and roleDefinitionId eq '%s'" % GA)
    assert [p["role_name"] for p in result["policies"]] == ["Global Administrator"]


def test_info_several_roles_one_request_in_the_given_order(client, run):
    result = run(pim_policy_info, {"roles": ["User Administrator", GA, "helpdesk administrator"]}, client)
    assert [p["role_name"] for p in result["policies"]] == [
        "User Administrator",
        "Global Administrator",
        "Helpdesk Administrator",
    ]
    assert len([c for c in client.calls if c[1] == "/policies/roleManagementPolicyAssignments"]) == 1


def test_info_names_approvers_in_one_lookup(client, run):
    for rid in (GA, PRA):
        stage = client.rules(rid)["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
        stage["primaryApprovers"] = [
            {"@odata.type": "#microsoft.graph.singleUser", "userId": ALICE["id"]},
            {"@odata.type": "#microsoft.graph.groupMembers", "groupId": HELPDESK["id"]},
        ]
    result = run(pim_policy_info, {}, client)
    lookups = [c for c in client.calls if c[1] == "/directoryObjects/getByIds"]
    assert len(lookups) == 1
    ga = next(p for p in result["policies"] if p["role_id"] == GA)
    assert ga["settings"]["activation"]["approvers"] == [
        {"type": "user", "id": ALICE["id"], "name": "Alice Adams"},
        {"type": "group", "id": HELPDESK["id"], "name": "PIM-Helpdesk"},
    ]


def test_info_unknown_role_fails_cleanly(client, run):
    result = run(pim_policy_info, {"roles": ["Global Admin"]}, client)
    assert result["failed"] is True
    assert "role 'Global Admin' not found" in result["msg"]
    assert "Traceback" not in json.dumps(result)


# ----------------------------------------------------------------- pim_policy


def test_check_mode_reports_the_change_and_writes_nothing(client, run):
    args = {
        "role": "Helpdesk Administrator",
        "settings": {"activation": {"max_duration": "PT4H"}},
        "_ansible_check_mode": True,
    }
    result = run(pim_policy, args, client)
    assert result["changed"] is True
    assert client.patches() == []
    assert result["diff"] == {
        "before": {"Helpdesk Administrator": {"activation": {"max_duration": "PT8H"}}},
        "after": {"Helpdesk Administrator": {"activation": {"max_duration": "PT4H"}}},
    }
    assert result["updated_rules"] == [
        {"role_id": HD, "role_name": "Helpdesk Administrator", "rule_id": "Expiration_EndUser_Assignment"}
    ]
    assert result["policies"][0]["settings"]["activation"]["max_duration"] == "PT4H"
    assert client.rules(HD)["Expiration_EndUser_Assignment"]["maximumDuration"] == "PT8H"


def test_apply_then_rerun_is_unchanged(client, run):
    args = {
        "role": "Helpdesk Administrator",
        "settings": {"activation": {"max_duration": "PT4H", "require_ticket": True}},
    }
    result = run(pim_policy, args, client)
    assert result["changed"] is True
    patches = client.patches()
    assert [p["body"]["id"] for p in patches] == ["Expiration_EndUser_Assignment", "Enablement_EndUser_Assignment"]
    assert patches[0]["url"] == "/policies/roleManagementPolicies/%s/rules/Expiration_EndUser_Assignment" % policy_id(
        HD
    )
    assert client.rules(HD)["Expiration_EndUser_Assignment"]["maximumDuration"] == "PT4H"
    # 1 role list + 1 policy read + 1 batch
    assert client.round_trips() == 3

    again = FakeClient()
    again.policies = client.policies
    result = run(
        pim_policy, dict(args, settings={"activation": {"max_duration": "PT240M", "require_ticket": True}}), again
    )
    assert result["changed"] is False
    assert again.patches() == [] and result["updated_rules"] == []
    assert result["diff"] == {"before": {}, "after": {}}


def test_bulk_ten_roles_twenty_rules_in_three_round_trips(client, run):
    roles = [rid for rid in ROLES if rid != GA][:10]
    args = {
        "roles": roles,
        "settings": {"activation": {"max_duration": "PT2H"}, "active_assignment": {"require_mfa": True}},
    }
    result = run(pim_policy, args, client)
    assert result["changed"] is True
    assert len(result["updated_rules"]) == 20
    batches = [c for c in client.calls if c[0] == "BATCH"]
    assert len(batches) == 1 and batches[0][1] == 20
    assert client.round_trips() == 3
    assert [p["role_id"] for p in result["policies"]] == roles
    for rid in roles:
        assert set(client.rules(rid)["Enablement_Admin_Assignment"]["enabledRules"]) == {
            "Justification",
            "MultiFactorAuthentication",
        }


def test_approvers_by_upn_and_group_name_are_resolved_together(client, run):
    args = {
        "role": "Privileged Role Administrator",
        "settings": {"activation": {"require_approval": True, "approvers": ["alice@contoso.example", "PIM-Helpdesk"]}},
    }
    result = run(pim_policy, args, client)
    assert result["changed"] is True, result
    # one $batch resolves both (the UPN, and the name among groups and service principals)
    lookup = [c for c in client.calls if c[0] == "BATCH"][0]
    assert all(item["method"] == "GET" for item in lookup[2])
    stage = client.rules(PRA)["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
    assert stage["primaryApprovers"] == [
        {"@odata.type": "#microsoft.graph.singleUser", "userId": ALICE["id"]},
        {"@odata.type": "#microsoft.graph.groupMembers", "groupId": HELPDESK["id"]},
    ]
    assert result["policies"][0]["settings"]["activation"]["approvers"] == [
        {"type": "user", "id": ALICE["id"], "name": "Alice Adams"},
        {"type": "group", "id": HELPDESK["id"], "name": "PIM-Helpdesk"},
    ]
    # export shape as input: {type, id, name} needs no lookup and changes nothing
    again = FakeClient()
    again.policies = client.policies
    args["settings"]["activation"]["approvers"] = result["policies"][0]["settings"]["activation"]["approvers"]
    result = run(pim_policy, args, again)
    assert result["changed"] is False
    assert not [c for c in again.calls if c[1] in ("/users", "/groups")]


def test_approver_that_is_a_service_principal_is_refused(client, run):
    args = {"role": GA, "settings": {"activation": {"approvers": ["Deploy Pipeline"]}}}
    result = run(pim_policy, args, client)
    assert result["failed"] is True
    assert "settings.activation.approvers[0]" in result["msg"] and "users or groups" in result["msg"]
    assert client.patches() == []


def test_unknown_approver_is_refused(client, run):
    result = run(
        pim_policy, {"role": GA, "settings": {"activation": {"approvers": ["nobody@contoso.example"]}}}, client
    )
    assert result["failed"] is True and "not found" in result["msg"]


def test_403_on_patch_is_explained(run):
    client = FakeClient(patch_status=403)
    result = run(
        pim_policy, {"role": "Helpdesk Administrator", "settings": {"activation": {"max_duration": "PT1H"}}}, client
    )
    assert result["failed"] is True
    assert "refused to update role settings for 'Helpdesk Administrator' (403" in result["msg"]
    assert "RoleManagementPolicy.ReadWrite.Directory" in result["msg"]
    assert "Privileged Role Administrator" in result["msg"]
    assert result["status"] == 403 and result["error_code"] == "Authorization_RequestDenied"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"activation": {"max_duration": "PT10M"}}, "settings.activation.max_duration: 'PT10M' is outside the range"),
        ({"activation": {"max_duration": "eight hours"}}, "is not an ISO 8601 duration"),
        ({"notifications": {"activation": {"admin": {"level": "Sometimes"}}}}, "expected one of None, Critical, All"),
        (
            {"activation": {"require_mfa": True, "authentication_context": {"enabled": True, "claim_value": "c1"}}},
            "cannot both be true",
        ),
    ],
)
def test_validation_fails_before_any_request(client, run, settings, message):
    result = run(pim_policy, {"role": GA, "settings": settings}, client)
    assert result["failed"] is True
    assert message in result["msg"]
    assert client.calls == []


def test_approval_without_approvers_fails_before_writing(client, run):
    result = run(pim_policy, {"roles": [GA, PRA], "settings": {"activation": {"require_approval": True}}}, client)
    assert result["failed"] is True and "without any approver" in result["msg"]
    assert client.patches() == []


def test_unmanageable_requests_fail_clearly(client, run):
    result = run(pim_policy, {"role": GA, "settings": {}}, client)
    assert result["failed"] is True and "nothing to do" in result["msg"]
    result = run(
        pim_policy,
        {"role": GA, "scope": "/administrativeUnits/x", "settings": {"activation": {"require_ticket": True}}},
        client,
    )
    assert result["failed"] is True and "tenant scope '/'" in result["msg"]
    result = run(pim_policy, {"role": GA, "settings": {"activation": {"max_minutes": 5}}}, client)
    assert result["failed"] is True and "max_minutes" in result["msg"]


def test_raw_rules_patch_a_second_approval_stage(client, run):
    args = {
        "role": GA,
        "rules": [
            {
                "id": "Approval_EndUser_Assignment",
                "setting": {
                    "is_approval_required": True,
                    "approval_mode": "Serial",
                    "approval_stages": [
                        {"approval_stage_time_out_in_days": 1, "primary_approvers": [{"user_id": ALICE["id"]}]},
                        {"approval_stage_time_out_in_days": 2, "primary_approvers": [{"group_id": HELPDESK["id"]}]},
                    ],
                },
            }
        ],
    }
    result = run(pim_policy, args, client)
    assert result["changed"] is True
    setting = client.rules(GA)["Approval_EndUser_Assignment"]["setting"]
    assert setting["approvalMode"] == "Serial" and len(setting["approvalStages"]) == 2
    assert setting["approvalStages"][1]["primaryApprovers"] == [
        {"groupId": HELPDESK["id"], "@odata.type": "#microsoft.graph.groupMembers"}
    ]
    rule = next(r for r in result["policies"][0]["rules"] if r["id"] == "Approval_EndUser_Assignment")
    assert rule["setting"]["approval_mode"] == "Serial"
    assert "rules" in result["diff"]["after"]["Global Administrator"]


class LosingClient(FakeClient):
    """Applies the first $batch of PATCHes but loses its answer (notes: ResponseLost from the client)."""

    def __init__(self):
        super().__init__()
        self.lost = False

    def batch(self, requests):
        result = super().batch(requests)
        if not self.lost and any(r["method"] == "PATCH" for r in requests):
            self.lost = True
            raise _graph.GraphError("answer lost", code="ResponseLost")
        return result


def test_a_lost_batch_answer_is_sent_again_safely(run):
    client = LosingClient()
    result = run(pim_policy, {"role": GA, "settings": {"activation": {"max_duration": "PT3H"}}}, client)
    assert result["changed"] is True
    assert len([c for c in client.calls if c[0] == "BATCH"]) == 2
    assert client.rules(GA)["Expiration_EndUser_Assignment"]["maximumDuration"] == "PT3H"


class OneRuleRefused(FakeClient):
    def _dispatch(self, req):
        if req["method"] == "PATCH" and req["url"].endswith("/Enablement_EndUser_Assignment"):
            return 400, {"error": {"code": "InvalidPolicy", "message": "The policy is invalid."}}
        return super()._dispatch(req)


def test_a_partial_failure_says_what_was_applied(run):
    client = OneRuleRefused()
    args = {"role": GA, "settings": {"activation": {"max_duration": "PT3H", "require_ticket": True}}}
    result = run(pim_policy, args, client)
    assert result["failed"] is True
    assert "Updating rule Enablement_EndUser_Assignment of role 'Global Administrator' failed" in result["msg"]
    assert "InvalidPolicy" in result["msg"]
    assert (
        "1 other rule update(s) in this task succeeded: Global Administrator/Expiration_EndUser_Assignment"
        in result["msg"]
    )
    assert result["status"] == 400 and result["error_code"] == "InvalidPolicy"


# ----------------------------------------------------------------- issue 14: bad input, named, before any request


@pytest.mark.parametrize(
    "module, args, message",
    [
        # Point 7: roles: [] used to end in AttributeError ('NoneType' object has no attribute 'display_name').
        (pim_policy, {"roles": [], "settings": {"activation": {"require_mfa": True}}}, "roles is an empty list"),
        (pim_policy_info, {"roles": []}, "roles is an empty list; omit it to read every role"),
        # Point 3: an empty scope is refused like every scope option, never read as '/'.
        (pim_policy, {"role": GA, "scope": "", "settings": {"activation": {"require_mfa": True}}}, "scope is empty"),
        # Point 5: one duration parser; below one second once cut, or beyond Graph's last date.
        (pim_policy, {"role": GA, "settings": {"active_assignment": {"max_duration": "PT0.6S"}}}, "longer than zero"),
        (
            pim_policy,
            {"role": GA, "settings": {"eligible_assignment": {"max_duration": "P99999999D"}}},
            "settings.eligible_assignment.max_duration 'P99999999D' is too long",
        ),
        # Point 6: a null, list or dict where a string belongs is refused by type.
        (pim_policy_info, {"roles": [None]}, "roles[0] must be a string, got null"),
        (pim_policy_info, {"roles": [["Global Administrator"]]}, "roles[0] must be a string, got a list"),
        (
            pim_policy,
            {"role": GA, "settings": {"activation": {"max_duration": ["PT8H"]}}},
            "settings.activation.max_duration must be a single string, got a list",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_option_before_any_request(client, run, module, args, message):
    result = run(module, args, client)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert "Traceback" not in json.dumps(result) and "exception" not in result
    assert client.calls == []
