# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role settings mapping and planner (pure), against the documented default rules (notes §3.10)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _policy as policy
from ansible_collections.entra.pim.plugins.module_utils._errors import InputError
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

DEFAULTS_FILE = Path("/work/shared/reference/graph/default-rules-from-docs.json")


def _target(caller, level):
    return {"caller": caller, "operations": ["all"], "level": level, "inheritableSettings": [], "enforcedSettings": []}


def _built_defaults():
    """The 17 directory-role rules of notes §3.10, for machines without the shared reference."""
    t = "#microsoft.graph.unifiedRoleManagementPolicy%sRule"
    rules = []
    for caller, level in (("Admin", "Eligibility"), ("Admin", "Assignment"), ("EndUser", "Assignment")):
        suffix = "%s_%s" % (caller, level)
        if caller == "Admin":
            rules.append(
                {
                    "@odata.type": t % "Expiration",
                    "id": "Expiration_" + suffix,
                    "isExpirationRequired": False,
                    "maximumDuration": "P365D" if level == "Eligibility" else "P180D",
                    "target": _target(caller, level),
                }
            )
            rules.append(
                {
                    "@odata.type": t % "Enablement",
                    "id": "Enablement_" + suffix,
                    "enabledRules": [] if level == "Eligibility" else ["Justification"],
                    "target": _target(caller, level),
                }
            )
        else:
            rules += [
                {
                    "@odata.type": t % "Expiration",
                    "id": "Expiration_" + suffix,
                    "isExpirationRequired": True,
                    "maximumDuration": "PT8H",
                    "target": _target(caller, level),
                },
                {
                    "@odata.type": t % "Enablement",
                    "id": "Enablement_" + suffix,
                    "enabledRules": ["MultiFactorAuthentication", "Justification"],
                    "target": _target(caller, level),
                },
                {
                    "@odata.type": t % "Approval",
                    "id": "Approval_" + suffix,
                    "target": _target(caller, level),
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
                },
                {
                    "@odata.type": t % "AuthenticationContext",
                    "id": "AuthenticationContext_" + suffix,
                    "isEnabled": False,
                    "claimValue": None,
                    "target": _target(caller, level),
                },
            ]
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
                    "target": _target(caller, level),
                }
            )
    return rules


def _load_defaults():
    if DEFAULTS_FILE.exists():
        return json.loads(DEFAULTS_FILE.read_text())
    return {"directoryRole_defaults": _built_defaults(), "group_defaults": None}


DOCS = _load_defaults()
USER_ID = "10a08e2e-3ea2-4ce0-80cb-d5fdd4b05ea6"
GROUP_ID = "14f2746d-7d6f-4ac6-acd8-8cac318b041b"


@pytest.fixture
def rules():
    return copy.deepcopy(DOCS["directoryRole_defaults"])


def by_id(rules):
    return {r["id"]: r for r in rules}


# --- rules -> settings: every setting read from the documented Global Administrator defaults


def test_rules_to_settings_reads_every_setting_from_the_documented_defaults(rules):
    s = policy.rules_to_settings(rules)
    assert s["activation"] == {
        "max_duration": "PT8H",  # rule 11
        "require_mfa": True,  # rule 12
        "require_justification": True,
        "require_ticket": False,
        "require_approval": False,  # rule 13
        "approvers": [],
        "authentication_context": {"enabled": False, "claim_value": None},  # rule 14
    }
    # rule 1: isExpirationRequired false -> permanent allowed
    assert s["eligible_assignment"] == {
        "allow_permanent": True,
        "max_duration": "P365D",
        "require_mfa": False,
        "require_justification": False,
    }
    # rules 6 and 7
    assert s["active_assignment"] == {
        "allow_permanent": True,
        "max_duration": "P180D",
        "require_mfa": False,
        "require_justification": True,
    }
    for kind in ("eligible_assignment", "active_assignment", "activation"):
        for recipient in ("admin", "requestor", "approver"):
            assert s["notifications"][kind][recipient] == {
                "default_recipients": True,
                "level": "All",
                "additional_recipients": [],
            }


def test_built_defaults_match_the_docs_file():
    built = by_id(_built_defaults())
    assert len(built) == 17
    for rule in DOCS["directoryRole_defaults"]:
        assert policy.rules_equal(rule, built[rule["id"]]), rule["id"]


def test_group_policy_defaults_differ_where_the_docs_say():
    group = DOCS["group_defaults"]
    if group is None:  # no shared reference on this machine: derive it as notes §3.10 describes
        group = by_id(_built_defaults())
        group["Expiration_Admin_Eligibility"]["isExpirationRequired"] = True
        group["Expiration_Admin_Assignment"]["isExpirationRequired"] = True
        group["Enablement_EndUser_Assignment"]["enabledRules"] = ["Justification"]
        group = list(group.values())
    s = policy.rules_to_settings(group)
    assert s["eligible_assignment"]["allow_permanent"] is False
    assert s["active_assignment"]["allow_permanent"] is False
    assert s["activation"]["require_mfa"] is False
    assert s["activation"]["require_justification"] is True


def test_notification_rule_ids_follow_the_corrected_mapping():
    assert policy.notification_rule_id("eligible_assignment", "admin") == "Notification_Admin_Admin_Eligibility"
    assert policy.notification_rule_id("active_assignment", "requestor") == "Notification_Requestor_Admin_Assignment"
    assert policy.notification_rule_id("activation", "approver") == "Notification_Approver_EndUser_Assignment"
    ids = {r["id"] for r in DOCS["directoryRole_defaults"]}
    assert set(policy.SETTING_RULE_IDS) == ids  # every one of the 17 rules is covered by a setting


def test_missing_rule_gives_none():
    s = policy.rules_to_settings([])
    assert s["activation"]["max_duration"] is None
    assert s["notifications"]["activation"]["admin"]["level"] is None


# --- settings -> rules: each setting changes exactly its rule, and reads back

CHANGES = [
    # (settings, rule id, check on the PATCH body)
    (
        {"activation": {"max_duration": "PT4H"}},
        "Expiration_EndUser_Assignment",
        lambda b: b["maximumDuration"] == "PT4H",
    ),
    (
        {"activation": {"require_mfa": False}},
        "Enablement_EndUser_Assignment",
        lambda b: b["enabledRules"] == ["Justification"],
    ),
    (
        {"activation": {"require_justification": False}},
        "Enablement_EndUser_Assignment",
        lambda b: b["enabledRules"] == ["MultiFactorAuthentication"],
    ),
    (
        {"activation": {"require_ticket": True}},
        "Enablement_EndUser_Assignment",
        lambda b: set(b["enabledRules"]) == {"MultiFactorAuthentication", "Justification", "Ticketing"},
    ),
    (
        {"activation": {"require_approval": True, "approvers": [{"type": "user", "id": USER_ID}]}},
        "Approval_EndUser_Assignment",
        lambda b: (
            b["setting"]["isApprovalRequired"] is True
            and b["setting"]["approvalStages"][0]["primaryApprovers"]
            == [{"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID}]
        ),
    ),
    (
        {"activation": {"approvers": [{"type": "group", "id": GROUP_ID}]}},
        "Approval_EndUser_Assignment",
        lambda b: (
            b["setting"]["approvalStages"][0]["primaryApprovers"]
            == [{"@odata.type": "#microsoft.graph.groupMembers", "groupId": GROUP_ID}]
        ),
    ),
    (
        {"activation": {"require_mfa": False, "authentication_context": {"enabled": True, "claim_value": "c1"}}},
        "AuthenticationContext_EndUser_Assignment",
        lambda b: b["isEnabled"] is True and b["claimValue"] == "c1",
    ),
    (
        {"eligible_assignment": {"allow_permanent": False}},
        "Expiration_Admin_Eligibility",
        lambda b: b["isExpirationRequired"] is True and b["maximumDuration"] == "P365D",
    ),
    (
        {"eligible_assignment": {"max_duration": "P90D"}},
        "Expiration_Admin_Eligibility",
        lambda b: b["maximumDuration"] == "P90D",
    ),
    (
        {"eligible_assignment": {"require_mfa": True}},
        "Enablement_Admin_Eligibility",
        lambda b: b["enabledRules"] == ["MultiFactorAuthentication"],
    ),
    (
        {"eligible_assignment": {"require_justification": True}},
        "Enablement_Admin_Eligibility",
        lambda b: b["enabledRules"] == ["Justification"],
    ),
    (
        {"active_assignment": {"allow_permanent": False, "max_duration": "P15D"}},
        "Expiration_Admin_Assignment",
        lambda b: b["isExpirationRequired"] is True and b["maximumDuration"] == "P15D",
    ),
    (
        {"active_assignment": {"require_mfa": True}},
        "Enablement_Admin_Assignment",
        lambda b: set(b["enabledRules"]) == {"Justification", "MultiFactorAuthentication"},
    ),
    (
        {"active_assignment": {"require_justification": False}},
        "Enablement_Admin_Assignment",
        lambda b: b["enabledRules"] == [],
    ),
]

for _kind, _suffix in policy.NOTIFICATION_KINDS.items():
    for _recipient, _name in policy.NOTIFICATION_RECIPIENTS.items():
        _rid = "Notification_%s_%s" % (_name, _suffix)
        CHANGES.append(
            (
                {"notifications": {_kind: {_recipient: {"default_recipients": False}}}},
                _rid,
                lambda b: b["isDefaultRecipientsEnabled"] is False,
            )
        )
        CHANGES.append(
            (
                {"notifications": {_kind: {_recipient: {"level": "critical"}}}},
                _rid,
                lambda b: b["notificationLevel"] == "Critical",
            )
        )
        CHANGES.append(
            (
                {"notifications": {_kind: {_recipient: {"additional_recipients": ["sec@contoso.example"]}}}},
                _rid,
                lambda b: b["notificationRecipients"] == ["sec@contoso.example"],
            )
        )


def _leaf_paths(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and key != "authentication_context_value":
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,), value


@pytest.mark.parametrize(
    ("desired", "rule_id", "check"), CHANGES, ids=lambda x: json.dumps(x) if isinstance(x, dict) else None
)
def test_each_setting_changes_exactly_its_rule_and_reads_back(rules, desired, rule_id, check):
    changed, diff = policy.plan_settings(desired, rules)
    assert [b["id"] for b in changed] == [rule_id] or (
        # enabling an auth context also switches MFA off on the enablement rule (the pair is exclusive)
        "authentication_context" in json.dumps(desired)
        and sorted(b["id"] for b in changed) == sorted([rule_id, "Enablement_EndUser_Assignment"])
    )
    body = next(b for b in changed if b["id"] == rule_id)
    assert check(body)
    # PATCH body per the docs: @odata.type, id and the full target
    original = by_id(rules)[rule_id]
    assert body["@odata.type"] == original["@odata.type"]
    assert body["target"] == original["target"]
    # reading the planned rules back gives what was asked for
    after = policy.rules_to_settings(policy.planned_rules(rules, changed))
    for path, value in _leaf_paths(desired):
        got = after
        for key in path:
            got = got[key]
        if path[-1] == "approvers":
            assert [(a["type"], a["id"]) for a in got] == [(a["type"], a["id"]) for a in value]
        elif path[-1] == "level":
            assert got == value.capitalize()
        else:
            assert got == value
    # and the diff shows the setting before and after
    assert diff["before"] and diff["after"]
    assert set(diff["before"]) == set(desired) and set(diff["after"]) == set(desired)


def test_rule_diff_is_per_setting(rules):
    _changes, diff = policy.plan_settings(
        {"activation": {"max_duration": "PT2H", "require_justification": True}, "eligible_assignment": {}}, rules
    )
    assert diff == {
        "before": {"activation": {"max_duration": "PT8H"}},
        "after": {"activation": {"max_duration": "PT2H"}},
    }


# --- round trip and minimality


def test_export_is_valid_input_and_changes_nothing(rules):
    exported = policy.rules_to_settings(rules)
    assert policy.plan_settings(exported, rules) == ([], {"before": {}, "after": {}})


def test_export_change_restore_gives_back_the_original_rules(rules):
    exported = policy.rules_to_settings(rules)
    changed, _diff = policy.plan_settings(
        {
            "activation": {
                "max_duration": "PT1H",
                "require_mfa": False,
                "require_ticket": True,
                "require_approval": True,
                "approvers": [{"type": "user", "id": USER_ID}, {"type": "group", "id": GROUP_ID}],
                "authentication_context": {"enabled": True, "claim_value": "c2"},
            },
            "eligible_assignment": {"allow_permanent": False, "max_duration": "P30D", "require_mfa": True},
            "active_assignment": {"allow_permanent": False, "max_duration": "P7D", "require_justification": False},
            "notifications": {
                "activation": {"approver": {"level": "Critical", "additional_recipients": ["a@b.example"]}}
            },
        },
        rules,
    )
    modified = policy.planned_rules(rules, changed)
    assert len(changed) == 9
    restored_changes, _diff = policy.plan_settings(exported, modified)
    restored = policy.planned_rules(modified, restored_changes)
    for original, back in zip(rules, restored, strict=True):
        assert policy.rules_equal(original, back), original["id"]
    assert policy.rules_to_settings(restored) == exported


def _every_rule_type_mutated(rules):
    """Non-default values in every rule: two approval stages (user, group, manager and service principal
    approvers, escalation), approval of extensions, notifications, auth context, durations, enablement."""
    out = copy.deepcopy(rules)
    rule = by_id(out)
    rule["Approval_EndUser_Assignment"]["setting"].update(
        isApprovalRequired=True,
        isApprovalRequiredForExtension=True,
        isRequestorJustificationRequired=False,
        approvalMode="Serial",
        approvalStages=[
            {
                "approvalStageTimeOutInDays": 2,
                "isApproverJustificationRequired": False,
                "escalationTimeInMinutes": 240,
                "isEscalationEnabled": True,
                "primaryApprovers": [
                    {"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID},
                    {"@odata.type": "#microsoft.graph.groupMembers", "groupId": GROUP_ID},
                ],
                "escalationApprovers": [{"@odata.type": "#microsoft.graph.requestorManager", "managerLevel": 1}],
            },
            {
                "approvalStageTimeOutInDays": 1,
                "isApproverJustificationRequired": True,
                "escalationTimeInMinutes": 0,
                "isEscalationEnabled": False,
                "primaryApprovers": [
                    {"@odata.type": "#microsoft.graph.groupMembers", "groupId": USER_ID[::-1]},
                    {"@odata.type": "#microsoft.graph.singleServicePrincipal", "servicePrincipalId": GROUP_ID[::-1]},
                ],
                "escalationApprovers": [],
            },
        ],
    )
    rule["AuthenticationContext_EndUser_Assignment"].update(isEnabled=True, claimValue="c3")
    rule["Enablement_EndUser_Assignment"]["enabledRules"] = ["Ticketing", "Justification"]
    rule["Expiration_EndUser_Assignment"]["maximumDuration"] = "PT3H30M"
    rule["Expiration_Admin_Eligibility"].update(isExpirationRequired=True, maximumDuration="P45D")
    rule["Enablement_Admin_Assignment"]["enabledRules"] = ["MultiFactorAuthentication"]
    rule["Notification_Approver_EndUser_Assignment"].update(
        notificationLevel="Critical", isDefaultRecipientsEnabled=False, notificationRecipients=["x@y.example"]
    )
    rule["Notification_Requestor_Admin_Eligibility"]["notificationRecipients"] = ["a@b.example", "c@d.example"]
    return out


def test_export_then_restore_onto_defaults_is_lossless_for_every_rule(rules):
    """Issue 14 point 17: rules -> export (settings and rules, as pim_policy_info returns them) -> rules."""
    from ansible_collections.entra.pim.plugins.module_utils._graph import snake_case_keys

    wanted = _every_rule_type_mutated(rules)
    exported = json.loads(
        json.dumps({"settings": policy.rules_to_settings(wanted), "rules": snake_case_keys(wanted)})
    )  # what a YAML/JSON export file holds: no @odata annotations
    assert "@odata.type" not in json.dumps(exported["rules"])

    changed, _diff = policy.plan_settings(exported["settings"], rules, raw_rules=exported["rules"])
    restored = policy.planned_rules(rules, changed)
    for want, back in zip(wanted, restored, strict=True):
        # exactly what the rule was, subject types included (what Graph would be sent and store)
        assert policy.patch_body(back) == policy.patch_body(want), want["id"]
    stages = by_id(restored)["Approval_EndUser_Assignment"]["setting"]["approvalStages"]
    assert len(stages) == 2 and stages[1]["primaryApprovers"][1] == {
        "@odata.type": "#microsoft.graph.singleServicePrincipal",
        "servicePrincipalId": GROUP_ID[::-1],
    }
    assert stages[0]["escalationApprovers"] == [{"@odata.type": "#microsoft.graph.requestorManager", "managerLevel": 1}]
    # restoring again onto the restored rules changes nothing
    assert policy.plan_settings(exported["settings"], restored, raw_rules=exported["rules"])[0] == []


def test_raw_rule_approver_of_no_known_kind_is_refused_before_any_patch(rules):
    raw = [{"id": "Approval_EndUser_Assignment", "setting": {"approval_stages": [{"primary_approvers": [{"x": 1}]}]}}]
    with pytest.raises(InputError, match=r"rules\[0\]\.setting\.approval_stages\[0\]\.primary_approvers\[0\]"):
        policy.plan_settings({}, rules, raw_rules=raw)


def test_durations_compare_by_meaning(rules):
    assert policy.plan_settings({"activation": {"max_duration": "PT480M"}}, rules)[0] == []
    assert policy.plan_settings({"activation": {"max_duration": "pt8h"}}, rules)[0] == []
    assert policy.plan_settings({"eligible_assignment": {"max_duration": "P52W1D"}}, rules)[0] == []
    assert policy.plan_settings({"eligible_assignment": {"max_duration": "PT8760H"}}, rules)[0] == []


def test_sets_are_order_insensitive(rules):
    current = by_id(rules)
    current["Enablement_EndUser_Assignment"]["enabledRules"] = ["Justification", "MultiFactorAuthentication"]
    current["Notification_Admin_Admin_Eligibility"]["notificationRecipients"] = ["B@x.example", "a@x.example"]
    stage = current["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
    stage["primaryApprovers"] = [
        {"@odata.type": "#microsoft.graph.groupMembers", "groupId": GROUP_ID},
        {"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID},
    ]
    desired = {
        "activation": {
            "require_mfa": True,
            "require_justification": True,
            "approvers": [{"type": "user", "id": USER_ID.upper()}, {"type": "group", "id": GROUP_ID}],
        },
        "notifications": {"eligible_assignment": {"admin": {"additional_recipients": ["a@x.example", "b@x.example"]}}},
    }
    assert policy.plan_settings(desired, rules) == ([], {"before": {}, "after": {}})


def test_only_given_settings_are_managed(rules):
    changed, _diff = policy.plan_settings({"activation": {"require_ticket": True}}, rules)
    assert len(changed) == 1
    assert set(changed[0]["enabledRules"]) == {"MultiFactorAuthentication", "Justification", "Ticketing"}


def test_empty_settings_change_nothing(rules):
    assert policy.plan_settings({}, rules)[0] == []
    assert policy.plan_settings(None, rules)[0] == []


def test_one_patch_per_rule_even_when_several_settings_touch_it(rules):
    changed, _diff = policy.plan_settings(
        {"activation": {"require_mfa": False, "require_justification": False, "require_ticket": True}}, rules
    )
    assert [b["id"] for b in changed] == ["Enablement_EndUser_Assignment"]
    assert changed[0]["enabledRules"] == ["Ticketing"]


def test_planning_does_not_touch_the_input(rules):
    snapshot = copy.deepcopy(rules)
    policy.plan_settings({"activation": {"max_duration": "PT1H"}}, rules)
    assert rules == snapshot


def test_patch_body_drops_annotations_but_keeps_types(rules):
    rule = copy.deepcopy(by_id(rules)["Approval_EndUser_Assignment"])
    rule["@odata.context"] = "x"
    rule["target"]["targetObjects"] = []
    rule["setting"]["approvalStages"][0]["primaryApprovers"] = [
        {"@odata.type": "#microsoft.graph.singleUser", "@odata.id": "x", "userId": USER_ID}
    ]
    body = policy.patch_body(rule)
    assert "@odata.context" not in body and "targetObjects" not in body["target"]
    assert body["setting"]["approvalStages"][0]["primaryApprovers"] == [
        {"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID}
    ]


def test_approval_on_a_policy_without_stages_creates_a_single_stage(rules):
    current = by_id(rules)
    current["Approval_EndUser_Assignment"]["setting"] = {
        "isApprovalRequired": False,
        "approvalMode": "NoApproval",
        "approvalStages": [],
    }
    changed, _diff = policy.plan_settings(
        {"activation": {"require_approval": True, "approvers": [{"type": "user", "id": USER_ID}]}}, rules
    )
    setting = changed[0]["setting"]
    assert setting["approvalMode"] == "SingleStage"
    assert len(setting["approvalStages"]) == 1
    assert setting["approvalStages"][0]["approvalStageTimeOutInDays"] == 1


def test_approval_uses_approvers_already_present(rules):
    stage = by_id(rules)["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
    stage["primaryApprovers"] = [{"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID}]
    changed, _diff = policy.plan_settings({"activation": {"require_approval": True}}, rules)
    assert changed[0]["setting"]["isApprovalRequired"] is True


def test_approvers_keep_subject_kinds_the_settings_do_not_model(rules):
    stage = by_id(rules)["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
    manager = {"@odata.type": "#microsoft.graph.requestorManager", "managerLevel": 1}
    stage["primaryApprovers"] = [manager]
    assert policy.rules_to_settings(rules)["activation"]["approvers"] == []
    changed, _diff = policy.plan_settings({"activation": {"approvers": [{"type": "user", "id": USER_ID}]}}, rules)
    assert changed[0]["setting"]["approvalStages"][0]["primaryApprovers"][1] == manager


def test_approver_names_are_filled_in_bulk(rules):
    stage = by_id(rules)["Approval_EndUser_Assignment"]["setting"]["approvalStages"][0]
    stage["primaryApprovers"] = [{"@odata.type": "#microsoft.graph.singleUser", "userId": USER_ID}]
    settings = policy.rules_to_settings(rules)
    assert policy.approver_ids([settings, settings]) == [USER_ID]
    policy.name_approvers(settings, {USER_ID.upper(): "Alice"})
    assert settings["activation"]["approvers"] == [{"type": "user", "id": USER_ID, "name": "Alice"}]


# --- validation


@pytest.mark.parametrize(
    ("desired", "message"),
    [
        ({"activation": {"max_duration": "PT10M"}}, "between PT30M (30 minutes) and P1D"),
        ({"activation": {"max_duration": "P2D"}}, "between PT30M (30 minutes) and P1D"),
        ({"activation": {"max_duration": "8 hours"}}, "'8 hours' is not an ISO 8601 duration"),
        ({"eligible_assignment": {"max_duration": "P1Y"}}, "write P365D rather than P1Y"),
        ({"active_assignment": {"max_duration": "PT0S"}}, "must be longer than zero"),
        ({"notifications": {"activation": {"admin": {"level": "Loud"}}}}, "expected one of None, Critical, All"),
        (
            {"notifications": {"activation": {"admin": {"additional_recipients": ["not-an-address"]}}}},
            "is not an email address",
        ),
        (
            {"activation": {"require_mfa": True, "authentication_context": {"enabled": True, "claim_value": "c1"}}},
            "cannot both be true",
        ),
        ({"activation": {"require_approval": True}}, "without any approver"),
        ({"activation": {"require_approval": True, "approvers": []}}, "without any approver"),
        ({"activation": {"approvers": ["alice@contoso.example"]}}, "is not a resolved approver"),
        ({"activation": {"require_mfa": False, "authentication_context": {"enabled": True}}}, "has no claim_value"),
        ({"activation": {"authentication_context": {"claim_value": " "}}}, "authentication context id"),
    ],
)
def test_validation_errors_name_the_setting_value_and_expectation(rules, desired, message):
    with pytest.raises(InputError) as err:
        policy.plan_settings(desired, rules, role_name="Helpdesk Administrator")
    assert message in err.value.msg
    assert err.value.msg.startswith("settings.")


def test_mfa_and_auth_context_conflict_with_current_state(rules):
    # The role requires MFA today (rule 12); turning on an auth context alone must fail and say what to do.
    with pytest.raises(InputError) as err:
        policy.plan_settings(
            {"activation": {"authentication_context": {"enabled": True, "claim_value": "c1"}}},
            rules,
            role_name="Global Administrator",
        )
    assert "'Global Administrator'" in err.value.msg
    assert "require_mfa: false" in err.value.msg


def test_unrelated_settings_do_not_trip_on_an_existing_conflict(rules):
    current = by_id(rules)
    current["AuthenticationContext_EndUser_Assignment"].update(isEnabled=True, claimValue="c1")
    changed, _diff = policy.plan_settings({"activation": {"max_duration": "PT2H"}}, rules)
    assert [b["id"] for b in changed] == ["Expiration_EndUser_Assignment"]


def test_limits_accept_the_bounds(rules):
    assert policy.plan_settings({"activation": {"max_duration": "PT30M"}}, rules)[0][0]["maximumDuration"] == "PT30M"
    assert policy.plan_settings({"activation": {"max_duration": "PT24H"}}, rules)[0][0]["maximumDuration"] == "P1D"


def test_missing_rule_is_an_error_naming_the_role():
    with pytest.raises(InputError, match="role 'X' has no policy rule Expiration_EndUser_Assignment"):
        policy.plan_settings({"activation": {"max_duration": "PT1H"}}, [], role_name="X")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("PT8H", 28800), ("PT480M", 28800), ("P1D", 86400), ("P1DT2H", 93600), ("PT1H30M", 5400), ("P2W", 1209600)],
)
def test_duration_parsing(value, seconds):
    assert policy.duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["", "P", "PT", "8H", "P1H", "PT-1H", None, 8, "P1Y", "P1M"])
def test_duration_rejects(value):
    assert policy.duration_seconds(value) is None


@pytest.mark.parametrize(("seconds", "text"), [(28800, "PT8H"), (93600, "P1DT2H"), (5400, "PT1H30M"), (0, "PT0S")])
def test_duration_formatting(seconds, text):
    assert policy.format_duration(seconds) == text


# --- raw rules (escape hatch)


def test_raw_rules_two_stage_approval_in_snake_case(rules):
    raw = [
        {
            "id": "Approval_EndUser_Assignment",
            "setting": {
                "is_approval_required": True,
                "approval_mode": "Serial",
                "approval_stages": [
                    {
                        "approval_stage_time_out_in_days": 1,
                        "is_approver_justification_required": True,
                        "escalation_time_in_minutes": 0,
                        "is_escalation_enabled": False,
                        "primary_approvers": [{"user_id": USER_ID}],
                        "escalation_approvers": [],
                    },
                    {
                        "approval_stage_time_out_in_days": 1,
                        "is_approver_justification_required": True,
                        "escalation_time_in_minutes": 0,
                        "is_escalation_enabled": False,
                        "primary_approvers": [{"group_id": GROUP_ID}],
                        "escalation_approvers": [],
                    },
                ],
            },
        }
    ]
    changed, diff = policy.plan_settings({}, rules, raw_rules=raw)
    assert [b["id"] for b in changed] == ["Approval_EndUser_Assignment"]
    setting = changed[0]["setting"]
    assert setting["approvalMode"] == "Serial"
    assert setting["isApprovalRequiredForExtension"] is False  # merged over the current rule
    assert setting["approvalStages"][1]["primaryApprovers"] == [
        {"groupId": GROUP_ID, "@odata.type": "#microsoft.graph.groupMembers"}
    ]
    assert changed[0]["@odata.type"] == "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule"
    assert "setting" in diff["after"]["rules"]["Approval_EndUser_Assignment"]
    # and applying it again changes nothing
    again, _diff = policy.plan_settings({}, policy.planned_rules(rules, changed), raw_rules=raw)
    assert again == []


def test_raw_rules_accept_camel_case_and_compare_by_meaning(rules):
    raw = [{"id": "Expiration_EndUser_Assignment", "maximumDuration": "PT480M"}]
    assert policy.plan_settings({}, rules, raw_rules=raw)[0] == []


def test_raw_rules_win_over_settings(rules):
    changed, _diff = policy.plan_settings(
        {"activation": {"max_duration": "PT2H"}},
        rules,
        raw_rules=[{"id": "Expiration_EndUser_Assignment", "maximum_duration": "PT3H"}],
    )
    assert changed[0]["maximumDuration"] == "PT3H"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"setting": {}}], "each entry needs the id"),
        ([{"id": "Nope"}], "has no policy rule 'Nope'"),
        (
            [
                {
                    "id": "Expiration_EndUser_Assignment",
                    "@odata.type": "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule",
                }
            ],
            "the type of a rule cannot change",
        ),
        ([{"id": "Expiration_EndUser_Assignment", "maximum_duration": "soon"}], "not an ISO 8601 duration"),
        # issue 14 point 8: what Graph refuses, refused before any PATCH, naming rule, role, value, expectation
        (
            [{"id": "Expiration_EndUser_Assignment", "maximum_duration": "P2D"}],
            r"^rules\[0\]: rule Expiration_EndUser_Assignment of role 'the role' would allow activations of P2D "
            r"\(maximumDuration\); Entra allows between PT30M \(30 minutes\) and P1D \(24 hours\)",
        ),
        ([{"id": "Expiration_EndUser_Assignment", "maximum_duration": "PT10M"}], "would allow activations of PT10M"),
        (
            [{"id": "Expiration_Admin_Eligibility", "maximum_duration": "P99999999D"}],
            r"'P99999999D' is too long: Graph holds a duration \(an Edm.Duration\) of at most P10675199D",
        ),
        (
            [{"id": "AuthenticationContext_EndUser_Assignment", "is_enabled": True}],
            "would be enabled .* without a claim_value",
        ),
        (
            [{"id": "Approval_EndUser_Assignment", "setting": {"approval_stages": [{}, {}, {}]}}],
            "would have 3 approval stages; Graph allows one or two",
        ),
    ],
)
def test_raw_rules_errors(rules, raw, message):
    with pytest.raises(InputError, match=message):
        policy.plan_settings({}, rules, raw_rules=raw)


def test_settings_argspec_covers_every_setting():
    spec = policy.settings_argspec()
    for leaf in policy.LEAVES:
        path = leaf[0]
        node = spec
        for key in path:
            node = node["options"][key]
        assert node["type"] in ("bool", "str", "list")


def test_disabling_the_auth_context_forgets_its_claim(rules):
    by_id(rules)["AuthenticationContext_EndUser_Assignment"].update(isEnabled=True, claimValue="c1")
    changed, diff = policy.plan_settings({"activation": {"authentication_context": {"enabled": False}}}, rules)
    assert changed[0]["isEnabled"] is False and changed[0]["claimValue"] is None
    assert diff["after"] == {"activation": {"authentication_context": {"enabled": False}}}


# --- property: whatever valid settings are applied, they read back and a second plan is empty


_durations = st.integers(min_value=30, max_value=24 * 60).map(lambda m: "PT%dM" % m)
_long_durations = st.integers(min_value=1, max_value=730).map(lambda d: "P%dD" % d)


def _maybe(strategy):
    return st.one_of(st.none(), strategy)


_recipient = st.fixed_dictionaries(
    {
        "default_recipients": _maybe(st.booleans()),
        "level": _maybe(st.sampled_from(["None", "Critical", "All", "all", "CRITICAL"])),
        "additional_recipients": _maybe(st.lists(st.sampled_from(["a@x.example", "b@x.example"]), unique=True)),
    }
)
_assignment = st.fixed_dictionaries(
    {
        "allow_permanent": _maybe(st.booleans()),
        "max_duration": _maybe(_long_durations),
        "require_mfa": _maybe(st.booleans()),
        "require_justification": _maybe(st.booleans()),
    }
)


@st.composite
def _settings(draw):
    ctx_enabled = draw(_maybe(st.booleans()))
    approvers = draw(
        _maybe(
            st.lists(
                st.sampled_from([{"type": "user", "id": USER_ID}, {"type": "group", "id": GROUP_ID}]),
                unique_by=lambda a: a["id"],
            )
        )
    )
    require_approval = draw(_maybe(st.booleans()))
    if require_approval:
        approvers = approvers or [{"type": "user", "id": USER_ID}]
    return {
        "activation": {
            "max_duration": draw(_maybe(_durations)),
            # the portal's rule: MFA and an auth context exclude each other
            "require_mfa": False if ctx_enabled else draw(_maybe(st.booleans())),
            "require_justification": draw(_maybe(st.booleans())),
            "require_ticket": draw(_maybe(st.booleans())),
            "require_approval": require_approval,
            "approvers": approvers,
            "authentication_context": {
                "enabled": ctx_enabled,
                "claim_value": "c%d" % draw(st.integers(1, 9)) if ctx_enabled else None,
            },
        },
        "eligible_assignment": draw(_assignment),
        "active_assignment": draw(_assignment),
        "notifications": {
            kind: {rec: draw(_recipient) for rec in policy.NOTIFICATION_RECIPIENTS}
            for kind in policy.NOTIFICATION_KINDS
        },
    }


@hsettings(max_examples=150, deadline=None)
@given(desired=_settings())
def test_any_valid_settings_read_back_and_are_idempotent(desired):
    rules = copy.deepcopy(DOCS["directoryRole_defaults"])
    changed, _diff = policy.plan_settings(desired, rules)
    after = policy.planned_rules(rules, changed)
    # each changed rule really differs, and no rule is sent twice
    assert len({b["id"] for b in changed}) == len(changed)
    for body in changed:
        assert not policy.rules_equal(body, by_id(rules)[body["id"]])
    # a second plan against the result changes nothing
    assert policy.plan_settings(desired, after)[0] == []
    # every managed setting reads back with the same meaning
    got = policy.rules_to_settings(after)
    for (path, _rule_id, _read, _write, eq), value in policy._desired_leaves(policy.validate_settings(desired)):
        node = got
        for key in path:
            node = node[key]
        assert policy._equal(eq, node, value), (path, node, value)
