"""Export every role's PIM policy, restore it onto fresh defaults, compare rule by rule (issue 14 point 17).

The two shipped playbooks do the work (playbooks/export_policies.yml, playbooks/restore_policies.yml)
against a real sandbox (HTTPS, MSAL). Before the export, a few roles get non-default values in
every rule type: two approval stages with user, group and requestor-manager approvers, escalation,
approval of extensions, notifications, an authentication context, durations and enablement rules.
The sandbox is then reset (every policy back to its defaults), the export restored, and each rule
of each built-in role's policy must be what it was, read out of band from the sandbox's state.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"

ALICE = "10000000-0000-4000-8000-000000000002"
BOB = "10000000-0000-4000-8000-000000000003"
CAROL = "10000000-0000-4000-8000-000000000006"
HELPDESK = "20000000-0000-4000-8000-000000000001"
SECURITY = "20000000-0000-4000-8000-000000000002"

TWO_STAGES = {
    "id": "Approval_EndUser_Assignment",
    "setting": {
        "approval_mode": "Serial",
        "is_approval_required_for_extension": True,
        "is_requestor_justification_required": False,
        "approval_stages": [
            {
                "approval_stage_time_out_in_days": 2,
                "is_approver_justification_required": True,
                "escalation_time_in_minutes": 180,
                "is_escalation_enabled": True,
                "primary_approvers": [{"user_id": ALICE}, {"group_id": HELPDESK}],
                "escalation_approvers": [{"user_id": BOB}],
            },
            {
                "approval_stage_time_out_in_days": 1,
                "is_approver_justification_required": False,
                "escalation_time_in_minutes": 0,
                "is_escalation_enabled": False,
                "primary_approvers": [{"user_id": CAROL}, {"group_id": SECURITY}, {"manager_level": 1}],
                "escalation_approvers": [],
            },
        ],
    },
}

MUTATIONS = [
    {
        "name": "Two approval stages, escalation, auth context and notifications on Helpdesk Administrator",
        "entra.pim.pim_policy": {
            "roles": ["Helpdesk Administrator"],
            "settings": {
                "activation": {
                    "max_duration": "PT2H",
                    "require_mfa": False,
                    "require_ticket": True,
                    "require_approval": True,
                    "approvers": [ALICE],
                    "authentication_context": {"enabled": True, "claim_value": "c1"},
                },
                "notifications": {
                    "activation": {
                        "approver": {"level": "Critical", "default_recipients": False},
                        "admin": {"additional_recipients": ["soc@contoso.example", "audit@contoso.example"]},
                    }
                },
            },
            "rules": [TWO_STAGES],
        },
    },
    {
        "name": "Assignment limits, enablement and notifications on User Administrator and Groups Administrator",
        "entra.pim.pim_policy": {
            "roles": ["User Administrator", "Groups Administrator"],
            "settings": {
                "eligible_assignment": {"allow_permanent": False, "max_duration": "P90D", "require_mfa": True},
                "active_assignment": {
                    "allow_permanent": False,
                    "max_duration": "P14D",
                    "require_justification": False,
                    "require_mfa": True,
                },
                "activation": {"max_duration": "PT4H30M", "require_justification": False},
                "notifications": {
                    "eligible_assignment": {"requestor": {"level": "Critical", "additional_recipients": ["hr@x.ex"]}},
                    "active_assignment": {"admin": {"default_recipients": False}},
                },
            },
            "rules": [
                {
                    "id": "Approval_EndUser_Assignment",
                    "setting": {
                        "is_approval_required": True,
                        "approval_mode": "SingleStage",
                        "approval_stages": [
                            {
                                "approval_stage_time_out_in_days": 3,
                                "is_approver_justification_required": False,
                                "escalation_time_in_minutes": 60,
                                "is_escalation_enabled": True,
                                "primary_approvers": [{"manager_level": 1}, {"group_id": SECURITY}],
                                "escalation_approvers": [{"group_id": HELPDESK}, {"user_id": CAROL}],
                            }
                        ],
                    },
                }
            ],
        },
    },
]


def _play(sandbox, tmp_path, playbook, *extra):
    return sandbox.ansible_playbook(tmp_path, playbook, *extra)


def _policies(sandbox):
    """{role id: {rule id: rule}} for every directory role, read out of band from the sandbox's state."""
    state = sandbox.control("GET", "/state")
    by_id = {p["id"]: p for p in state["roleManagementPolicies"]}
    out = {}
    for assignment in state["roleManagementPolicyAssignments"]:
        if assignment.get("scopeId") != "/" or assignment.get("scopeType") != "DirectoryRole":
            continue
        rules = by_id[assignment["policyId"]]["rules"]
        out[assignment["roleDefinitionId"]] = {r["id"]: r for r in rules}
    return out


def _fresh(sandbox):
    sandbox.control("POST", "/reset")
    # Rule PATCHes with the sandbox's app-only token (Graph documents them as delegated).
    sandbox.control("PATCH", "/settings", json={"app_only_policy_patch": True})


def test_export_then_restore_onto_defaults_is_lossless(sandbox, tmp_path):
    _fresh(sandbox)
    defaults = _policies(sandbox)
    assert len(defaults) >= 10  # every built-in role has its policy

    mutate = tmp_path / "mutate.yml"
    mutate.write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": MUTATIONS}])
    )
    _play(sandbox, tmp_path, mutate)
    wanted = _policies(sandbox)
    changed = {rid for rid in wanted if wanted[rid] != defaults[rid]}
    assert len(changed) == 3
    stages = wanted["729827e3-9c14-49f7-bb1b-9608f156bbb8"]["Approval_EndUser_Assignment"]["setting"]
    assert len(stages["approvalStages"]) == 2 and stages["approvalStages"][1]["primaryApprovers"][2] == {
        "@odata.type": "#microsoft.graph.requestorManager",
        "managerLevel": 1,
    }

    export = tmp_path / "role-settings.yml"
    _play(sandbox, tmp_path, PLAYBOOKS / "export_policies.yml", "-e", "export_file=%s" % export)
    assert export.stat().st_mode & 0o777 == 0o600

    _fresh(sandbox)
    assert _policies(sandbox) == defaults
    _play(sandbox, tmp_path, PLAYBOOKS / "restore_policies.yml", "-e", "export_file=%s" % export)
    restored = _policies(sandbox)

    assert set(restored) == set(wanted)
    lost = [
        (role_id, rule_id, wanted[role_id][rule_id], restored[role_id].get(rule_id))
        for role_id in sorted(wanted)
        for rule_id in sorted(wanted[role_id])
        if restored[role_id].get(rule_id) != wanted[role_id][rule_id]
    ]
    assert lost == [], json.dumps(lost[:3], indent=1)

    # and a second restore finds nothing to change
    out = _play(sandbox, tmp_path, PLAYBOOKS / "restore_policies.yml", "-e", "export_file=%s" % export)
    assert "0 rule(s) changed" in out
