"""Bad-input matrix (issues 8 and 14): every option of every module and role refuses bad input before any write.

One play per module (or role) runs every case as its own task through ``ansible-playbook``,
with a sandbox stats snapshot after each. Each case is one parametrized test that asserts:

* the task failed, without a traceback;
* the message names the option and the value (never a secret) and says what is expected
  (the ``expect`` fragments of the case, matched case-insensitively);
* the sandbox counted no write (stats ``writes``) for that task, so nothing was sent that
  could change the tenant; the PIM part of the state dump is also the same after the play as
  before it.

``test_every_option_has_a_case`` reads every module's argument spec (suboptions included) and
both roles' argument specs, and fails when an option has no case, so the matrix stays complete.
The shared connection options (the ``_auth`` doc fragment, the same code in every module) need a
case in one module. Each run records every case in ``.tmp/hardening-results/bad_input.jsonl``
and the tally (cases, tracebacks, partial writes, silent widenings) in
``bad_input_tally.json``; ``tests/hardening/report.py`` renders both into docs/reliability.md.

A few inputs are valid and must work (an apostrophe in a UPN, a timezone-less date read as
UTC); they are asserted as such.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import ELIG_REQ, ROLES, ROOT, SandboxProc, run_playbook, total_writes

RESULTS_DIR = ROOT / ".tmp" / "hardening-results"
ALICE_UPN = "alice@contoso.example"
ALICE_ID = "10000000-0000-4000-8000-000000000002"
INJECTION = "x' or 1 eq 1"
PATHY = "../users/x?y"

E = "entra.pim.pim_role_eligibility"
EI = "entra.pim.pim_role_eligibility_info"
A = "entra.pim.pim_role_assignment"
AI = "entra.pim.pim_role_assignment_info"
ACT = "entra.pim.pim_role_activation"
POL = "entra.pim.pim_policy"
POLI = "entra.pim.pim_policy_info"
ACC = "entra.pim.pim_access"
ONB = "entra.pim.onboard"
OFF = "entra.pim.offboard"

BASE = {"principal": ALICE_UPN, "role": "User Administrator", "justification": "hardening"}
GRANT = {"principal": ALICE_UPN, "role": "Security Reader"}
ENTRY = {"role": "Security Reader", "type": "eligible", "duration": "P30D"}
# alice already holds this (the play's setup), so a role run with it changes nothing in Graph.
HELD = {"role": "Helpdesk Administrator", "type": "eligible", "permanent": True}
LONG = "x" * 100000
NO_DIR = "/proc/entra-pim-no-such-dir/report.md"

# What a case sets only to reach the option it tests: these (path, value) pairs are not "covered".
BASELINE = {
    E: {"principal": ALICE_UPN, "role": "User Administrator", "justification": "hardening"},
    A: {"principal": ALICE_UPN, "role": "User Administrator", "justification": "hardening"},
    ACC: {"grants.principal": ALICE_UPN, "grants.role": "Security Reader"},
    POL: {"roles": ["Groups Administrator"], "settings.activation.require_ticket": True},
    ONB: {
        "onboard_principals": [ALICE_UPN],
        "onboard_entries.role": "Security Reader",
        "onboard_entries.type": "eligible",
        "onboard_entries.duration": "P30D",
    },
    OFF: {"offboard_principal": ALICE_UPN, "offboard_roles": ["Security Reader"]},
}


def _flatten(args, prefix=""):
    """(option path, value) for every value in ``args``: dicts and lists of dicts are walked (``grants.role``)."""
    for key, value in args.items():
        path = prefix + key
        if isinstance(value, dict) and value:
            yield from _flatten(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) and v for v in value):
            for item in value:
                yield from _flatten(item, path + ".")
        else:
            yield path, value


def _covered_by(target, args):
    baseline = BASELINE.get(target, {})
    return {path for path, value in _flatten(args) if not (path in baseline and baseline[path] == value)}


def case(target, cid, args, expect, covers=None):
    """One bad input. ``covers``: the option paths it tests (default: what ``args`` sets beyond the baseline)."""
    param = pytest.param(target, cid, args, expect, id="%s-%s" % (target.rsplit(".", 1)[-1], cid))
    COVERS[(target, cid)] = set(covers) if covers is not None else _covered_by(target, args)
    return param


COVERS: dict = {}


def schedule_cases(mod):
    """The inputs every schedule-taking module shares (eligibility and assignment)."""
    return [
        case(mod, "wrong_type_permanent", dict(BASE, permanent="sometimes"), ["permanent", "sometimes", "bool"]),
        case(mod, "empty_principal", dict(BASE, principal=""), ["principal", "empty|''"]),
        case(mod, "empty_role", dict(BASE, role=""), ["role", "empty|''"]),
        case(
            mod,
            "invalid_guid_scope",
            dict(BASE, directory_scope="/administrativeUnits/not-a-guid"),
            ["directory_scope", "not-a-guid"],
        ),
        case(mod, "path_chars_principal", dict(BASE, principal=PATHY), ["principal", re.escape(PATHY)]),
        case(
            mod, "path_chars_role", dict(BASE, role="../roleDefinitions/x"), ["role", re.escape("../roleDefinitions/x")]
        ),
        case(
            mod,
            "path_chars_scope",
            dict(BASE, directory_scope="/administrativeUnits/../users"),
            ["directory_scope", re.escape("../users")],
        ),
        case(
            mod,
            "unknown_principal",
            dict(BASE, principal="nobody@contoso.example"),
            ["principal", "nobody@contoso.example"],
        ),
        case(mod, "unknown_role", dict(BASE, role="No Such Role"), ["role", "No Such Role"]),
        case(
            mod,
            "ambiguous_group",
            dict(BASE, principal="Duplicate Team", role="Groups Administrator"),
            [
                "principal",
                "Duplicate Team",
                "20000000-0000-4000-8000-000000000004",
                "20000000-0000-4000-8000-000000000005",
            ],
        ),
        case(mod, "odata_injection_principal", dict(BASE, principal=INJECTION), ["principal", re.escape(INJECTION)]),
        case(mod, "odata_injection_role", dict(BASE, role=INJECTION), ["role", re.escape(INJECTION)]),
        case(
            mod,
            "quotes_unicode_principal",
            dict(BASE, principal='Zoë "the" Åkesson'),
            ["principal", re.escape('Zoë "the" Åkesson')],
        ),
        case(mod, "duration_not_iso", dict(BASE, duration="8 hours"), ["duration", "8 hours", "ISO 8601"]),
        case(mod, "duration_zero", dict(BASE, duration="PT0S"), ["duration", "PT0S"]),
        case(mod, "duration_negative", dict(BASE, duration="-P1D"), ["duration", re.escape("-P1D")]),
        case(
            mod,
            "end_before_start",
            dict(BASE, start="2031-01-02T00:00:00Z", end="2031-01-01T00:00:00Z"),
            ["end", "2031-01-01", "start|after|later"],
        ),
        case(mod, "permanent_with_end", dict(BASE, permanent=True, end="2031-01-01T00:00:00Z"), ["permanent", "end"]),
        case(mod, "start_not_a_date", dict(BASE, start="next tuesday"), ["start", "next tuesday", "ISO 8601"]),
        case(mod, "ticket_without_system", dict(BASE, ticket_number="CHG-1"), ["ticket_number", "ticket_system"]),
    ]


CASES = (
    schedule_cases(E)
    + [
        case(
            E,
            "above_policy_maximum",
            dict(BASE, role="Security Reader", duration="P400D"),
            ["ExpirationRule|P365D|maximum", "P400D|400"],
        ),
    ]
    + schedule_cases(A)
    + [
        case(
            A,
            "above_policy_maximum",
            dict(BASE, role="Security Reader", duration="P400D"),
            ["ExpirationRule|P180D|maximum", "P400D|400"],
        ),
    ]
    + [
        case(EI, "wrong_type_expiring", {"expiring_within": "soon"}, ["expiring_within", "soon", "ISO 8601"]),
        case(EI, "odata_injection_principal", {"principal": INJECTION}, ["principal", re.escape(INJECTION)]),
        case(EI, "path_chars_role", {"role": PATHY}, ["role", re.escape(PATHY)]),
        case(EI, "invalid_guid_scope", {"directory_scope": "/administrativeUnits/nope"}, ["directory_scope", "nope"]),
        case(AI, "wrong_type_expiring", {"expiring_within": "-PT1H"}, ["expiring_within", re.escape("-PT1H")]),
        case(AI, "odata_injection_role", {"role": INJECTION}, ["role", re.escape(INJECTION)]),
        case(AI, "path_chars_principal", {"principal": PATHY}, ["principal", re.escape(PATHY)]),
        case(AI, "wrong_type_assignment_type", {"assignment_type": "sometimes"}, ["assignment_type", "sometimes"]),
    ]
    + [
        case(ACT, "duration_above_policy_maximum", {"duration": "PT10H"}, ["duration|ExpirationRule", "PT10H", "PT8H"]),
        case(ACT, "duration_not_iso", {"duration": "2h"}, ["duration", "2h", "ISO 8601"]),
        case(ACT, "duration_zero", {"duration": "PT0M"}, ["duration", "PT0M"]),
        case(ACT, "duration_negative", {"duration": "-PT1H"}, ["duration", re.escape("-PT1H")]),
        case(ACT, "unknown_role", {"role": "No Such Role"}, ["role", "No Such Role"]),
        case(ACT, "odata_injection_role", {"role": INJECTION}, ["role", re.escape(INJECTION)]),
        case(
            ACT,
            "path_chars_scope",
            {"directory_scope": "/administrativeUnits/../x"},
            ["directory_scope", re.escape("../x")],
        ),
        case(ACT, "min_remaining_not_iso", {"min_remaining": "15 minutes"}, ["min_remaining", "15 minutes"]),
        case(ACT, "wrong_type_wait_timeout", {"wait_timeout": "forever"}, ["wait_timeout", "forever", "int"]),
    ]
    + [
        case(
            POL,
            "max_duration_above_bound",
            {"settings": {"activation": {"max_duration": "P2D"}}},
            ["max_duration", "P2D", "PT30M|P1D|PT24H"],
        ),
        case(
            POL,
            "max_duration_below_bound",
            {"settings": {"activation": {"max_duration": "PT10M"}}},
            ["max_duration", "PT10M", "PT30M"],
        ),
        case(
            POL,
            "max_duration_not_iso",
            {"settings": {"eligible_assignment": {"max_duration": "a year"}}},
            ["max_duration", "a year", "ISO 8601"],
        ),
        case(POL, "approval_without_approvers", {"settings": {"activation": {"require_approval": True}}}, ["approver"]),
        case(
            POL,
            "mfa_and_auth_context",
            {
                "settings": {
                    "activation": {
                        "require_mfa": True,
                        "authentication_context": {"enabled": True, "claim_value": "c1"},
                    }
                }
            },
            ["require_mfa", "authentication_context"],
        ),
        case(
            POL,
            "unknown_approver",
            {"settings": {"activation": {"require_approval": True, "approvers": [INJECTION]}}},
            ["approver", re.escape(INJECTION)],
        ),
        case(
            POL,
            "wrong_type_require_mfa",
            {"settings": {"activation": {"require_mfa": "perhaps"}}},
            ["require_mfa", "perhaps"],
        ),
        case(POL, "empty_role", {"roles": [""], "settings": {"activation": {"require_ticket": True}}}, ["role"]),
        case(
            POL,
            "path_chars_role",
            {"roles": [PATHY], "settings": {"activation": {"require_ticket": True}}},
            ["role", re.escape(PATHY)],
        ),
        case(POLI, "odata_injection_role", {"roles": [INJECTION]}, ["role", re.escape(INJECTION)]),
        case(POLI, "unknown_role", {"roles": ["No Such Role"]}, ["role", "No Such Role"]),
    ]
    + [
        case(ACC, "wrong_type_grants", {"grants": "alice"}, ["grants"]),
        case(
            ACC,
            "unknown_principal",
            {"grants": [{"principal": "nobody@contoso.example", "role": "Security Reader"}]},
            ["nobody@contoso.example"],
        ),
        case(
            ACC,
            "odata_injection_principal",
            {"grants": [{"principal": INJECTION, "role": "Security Reader"}]},
            [re.escape(INJECTION)],
        ),
        case(
            ACC,
            "bad_duration",
            {"grants": [{"principal": ALICE_UPN, "role": "Security Reader", "duration": "soon"}]},
            ["duration", "soon"],
        ),
        case(
            ACC,
            "end_before_start",
            {
                "grants": [
                    {
                        "principal": ALICE_UPN,
                        "role": "Security Reader",
                        "start": "2031-01-02T00:00:00Z",
                        "end": "2031-01-01T00:00:00Z",
                    }
                ]
            },
            ["end", "start|after|later"],
        ),
        case(
            ACC,
            "permanent_with_end",
            {
                "grants": [
                    {
                        "principal": ALICE_UPN,
                        "role": "Security Reader",
                        "permanent": True,
                        "end": "2031-01-01T00:00:00Z",
                    }
                ]
            },
            ["permanent", "end"],
        ),
        case(
            ACC,
            "ambiguous_principal",
            {"grants": [{"principal": "Duplicate Team", "role": "Security Reader"}]},
            ["Duplicate Team"],
        ),
        case(
            ACC,
            "wrong_type_in_list",
            {"grants": [{"principal": ALICE_UPN, "role": "Security Reader", "type": "forever"}]},
            ["type", "forever"],
        ),
        case(
            ACC,
            "last_global_admin",
            {
                "grants": [],
                "purge": True,
                "boundary": {"principals": ["admin@contoso.example"], "roles": ["Global Administrator"]},
            },
            ["Global Administrator", "last"],
        ),
    ]
    + [
        case(
            ONB,
            "unknown_principal",
            {
                "onboard_principals": ["nobody@contoso.example"],
                "onboard_entries": [{"role": "Security Reader", "type": "eligible", "duration": "P30D"}],
            },
            ["nobody@contoso.example"],
        ),
        case(ONB, "unknown_profile", {"onboard_principals": [ALICE_UPN], "onboard_profiles": ["nope"]}, ["nope"]),
        case(
            ONB,
            "bad_entry_type",
            {"onboard_principals": [ALICE_UPN], "onboard_entries": [{"role": "Security Reader", "type": "forever"}]},
            ["forever", "type"],
        ),
        case(
            ONB,
            "bad_duration",
            {
                "onboard_principals": [ALICE_UPN],
                "onboard_entries": [{"role": "Security Reader", "type": "eligible", "duration": "a month"}],
            },
            ["duration", "a month"],
        ),
        case(
            ONB,
            "unknown_role",
            {
                "onboard_principals": [ALICE_UPN],
                "onboard_entries": [{"role": "No Such Role", "type": "eligible", "duration": "P30D"}],
            },
            ["No Such Role"],
        ),
        case(
            ONB,
            "odata_injection_principal",
            {
                "onboard_principals": [INJECTION],
                "onboard_entries": [{"role": "Security Reader", "type": "eligible", "duration": "P30D"}],
            },
            [re.escape(INJECTION)],
        ),
        case(
            OFF, "principal_does_not_exist", {"offboard_principal": "ghost@contoso.example"}, ["ghost@contoso.example"]
        ),
        case(
            OFF,
            "protected_principal",
            {"offboard_principal": ALICE_UPN, "offboard_protected_principals": [ALICE_UPN]},
            ["protected", ALICE_UPN],
        ),
        case(OFF, "odata_injection_principal", {"offboard_principal": INJECTION}, [re.escape(INJECTION)]),
        case(
            OFF,
            "unknown_role_filter",
            {"offboard_principal": ALICE_UPN, "offboard_roles": ["No Such Role"]},
            ["No Such Role"],
        ),
        case(
            OFF, "last_global_admin", {"offboard_principal": "admin@contoso.example"}, ["Global Administrator", "last"]
        ),
    ]
)

A_TOO = {
    "duration_rounds_to_zero",
    "duration_overflows",
    "principal_is_a_list",
    "role_is_a_dict",
    "justification_is_a_list",
    "ticket_system_is_a_dict",
    "app_scope_blank",
    "wrong_principal_type",
    "wrong_state",
    "wrong_type_validate_only",
}

ISSUE14_CASES = (
    [
        # Point 3: an empty or blank scope is refused, never read as the tenant.
        case(m, cid, dict(BASE, directory_scope=v), ["directory_scope", "empty", "omit it or give '/'"])
        for m in (E, A)
        for cid, v in (("empty_scope", ""), ("blank_scope", "   "), ("null_scope", None))
        if m == E or cid == "empty_scope"
    ]
    + [
        case(m, cid, dict(BASE, **args), expect)
        for m in (E, A)
        for cid, args, expect in (
            # Point 5: what rounds to zero, and a duration past Graph's last date (point 7).
            ("duration_rounds_to_zero", {"duration": "PT0.5S"}, ["duration", "PT0.5S", "longer than zero"]),
            ("duration_overflows", {"duration": "P99999999D"}, ["duration", "P99999999D", "9999-12-31"]),
            ("duration_huge_digits", {"duration": "P" + "9" * 400 + "D"}, ["duration", "too long", "characters"]),
            ("duration_empty", {"duration": ""}, ["duration", "empty", "omit it"]),
            ("end_empty", {"end": "  "}, ["end", "empty", "omit it"]),
            ("start_empty", {"start": ""}, ["start", "empty", "now"]),
            ("end_year_10000", {"end": "10000-01-01T00:00:00Z"}, ["end", "10000-01-01", "ISO 8601"]),
            ("start_month_13", {"start": "2031-13-01T00:00:00Z"}, ["start", "2031-13-01", "not a valid datetime"]),
            (
                "start_late_9999_plus_duration",
                {"start": "9999-12-31T00:00:00Z", "duration": "P2D"},
                ["duration", "P2D", "9999-12-31"],
            ),
            # Point 6: a list or dict where one string belongs is refused by type.
            (
                "principal_is_a_list",
                {"principal": [ALICE_UPN, "bob@contoso.example"]},
                ["principal", "single string", "list"],
            ),
            ("role_is_a_dict", {"role": {"name": "User Administrator"}}, ["role", "single string", "dictionary"]),
            ("justification_is_a_list", {"justification": ["a", "b"]}, ["justification", "single string", "list"]),
            (
                "ticket_system_is_a_dict",
                {"ticket_number": "1", "ticket_system": {"a": 1}},
                ["ticket_system", "single string"],
            ),
            ("app_scope_blank", {"app_scope": "   "}, ["app_scope", "empty"]),
            ("wrong_principal_type", {"principal_type": "robot"}, ["principal_type", "robot", "auto, user"]),
            ("wrong_state", {"state": "gone"}, ["state", "gone", "present, absent"]),
            ("wrong_type_validate_only", {"validate_only": "perhaps"}, ["validate_only", "perhaps", "bool"]),
            ("very_long_principal", {"principal": LONG}, ["principal", "100000 characters", "not found"]),
            ("very_long_role", {"role": LONG}, ["role", "100000 characters", "not found"]),
        )
        # pim_role_assignment runs the same code (_pim.run_schedule_module): the cases its own options need.
        if m == E or cid in A_TOO
    ]
    + [
        case(m, cid, args, expect)
        for m in (EI, AI)
        for cid, args, expect in (
            ("empty_scope_filter", {"directory_scope": ""}, ["directory_scope", "empty"]),
            ("blank_scope_filter", {"directory_scope": " "}, ["directory_scope", "empty"]),
            ("empty_principal_filter", {"principal": ""}, ["principal", "empty"]),
            ("empty_role_filter", {"role": ""}, ["role", "empty"]),
            ("expiring_within_overflows", {"expiring_within": "P99999999D"}, ["expiring_within", "9999-12-31"]),
            ("expiring_within_rounds_to_zero", {"expiring_within": "PT0.5S"}, ["expiring_within", "longer than zero"]),
            ("principal_is_a_list", {"principal": [ALICE_UPN]}, ["principal", "single string"]),
            ("wrong_principal_type", {"principal_type": "robot"}, ["principal_type", "robot"]),
        )
    ]
    + [
        case(AI, "wrong_type_current_user", {"current_user": "perhaps"}, ["current_user", "perhaps", "bool"]),
        case(
            AI,
            "principal_with_current_user",
            {"principal": ALICE_UPN, "current_user": True},
            ["principal", "current_user"],
            covers=["current_user"],
        ),
    ]
    + [
        case(ACT, "duration_rounds_to_zero", {"duration": "PT0.5S"}, ["duration", "PT0.5S", "longer than zero"]),
        case(ACT, "duration_below_5_minutes", {"duration": "PT4M59S"}, ["duration", "PT4M59S", "PT5M"]),
        case(ACT, "duration_overflows", {"duration": "P99999999D"}, ["duration", "P99999999D", "9999-12-31"]),
        case(ACT, "duration_empty", {"duration": ""}, ["duration", "''", "ISO 8601"]),
        case(ACT, "empty_scope", {"directory_scope": ""}, ["directory_scope", "empty"]),
        case(ACT, "blank_scope", {"directory_scope": "  "}, ["directory_scope", "empty"]),
        case(ACT, "role_is_a_list", {"role": ["Helpdesk Administrator"]}, ["role", "single string", "list"]),
        case(ACT, "justification_is_a_dict", {"justification": {"why": 1}}, ["justification", "single string"]),
        case(
            ACT, "ticket_number_is_a_list", {"ticket_number": ["1"], "ticket_system": "x"}, ["ticket_number", "single"]
        ),
        case(ACT, "ticket_system_alone", {"ticket_system": "ServiceNow"}, ["ticket_number", "ticket_system"]),
        case(ACT, "wrong_state", {"state": "asleep"}, ["state", "asleep", "active, inactive"]),
        case(ACT, "min_remaining_rounds_to_zero", {"min_remaining": "PT0.5S"}, ["min_remaining", "longer than zero"]),
        case(ACT, "wait_timeout_negative", {"wait_timeout": -1}, ["wait_timeout", "-1", "negative"]),
        case(ACT, "wrong_type_wait", {"wait": "perhaps"}, ["wait", "perhaps", "bool"]),
        case(ACT, "wrong_type_require_active", {"require_active": "perhaps"}, ["require_active", "perhaps", "bool"]),
        case(
            ACT,
            "duration_when_inactive",
            {"state": "inactive", "duration": "PT1H"},
            ["duration", "state=active"],
            covers=["state"],
        ),
    ]
    + [
        # pim_policy: point 7 (roles: [] was an AttributeError), point 3 (scope), point 5 (durations), point 6 (types).
        case(
            POL,
            "roles_empty_list",
            {"roles": [], "settings": {"activation": {"require_ticket": True}}},
            ["roles", "empty"],
        ),
        case(POL, "roles_null_item", {"roles": [None]}, ["roles\\[0\\]", "null"]),
        case(POL, "roles_list_item", {"roles": [["Groups Administrator"]]}, ["roles\\[0\\]", "list"]),
        case(
            POL, "scope_empty", {"scope": "", "settings": {"activation": {"require_ticket": True}}}, ["scope", "empty"]
        ),
        case(
            POL,
            "scope_not_tenant",
            {"scope": "/administrativeUnits/x", "settings": {"activation": {"require_ticket": True}}},
            ["scope", "tenant scope"],
        ),
        case(POL, "nothing_to_do", {"settings": {}}, ["settings", "nothing to do"]),
        case(POL, "settings_not_a_dict", {"settings": "strict"}, ["settings", "dict"]),
        case(POL, "activation_not_a_dict", {"settings": {"activation": "strict"}}, ["activation", "dict"]),
        case(
            POL,
            "max_duration_rounds_to_zero",
            {"settings": {"active_assignment": {"max_duration": "PT0.6S"}}},
            ["max_duration", "PT0.6S", "longer than zero"],
        ),
        case(
            POL,
            "max_duration_overflows",
            {"settings": {"eligible_assignment": {"max_duration": "P99999999D"}}},
            ["max_duration", "P99999999D", "Edm.Duration", "P10675199D"],
        ),
        case(
            POL, "max_duration_empty", {"settings": {"activation": {"max_duration": ""}}}, ["max_duration", "ISO 8601"]
        ),
        case(
            POL,
            "max_duration_is_a_list",
            {"settings": {"activation": {"max_duration": ["PT8H"]}}},
            ["max_duration", "single string"],
        ),
        case(
            POL,
            "wrong_type_require_justification",
            {"settings": {"activation": {"require_justification": "perhaps"}}},
            ["require_justification", "perhaps"],
        ),
        case(
            POL,
            "wrong_type_require_ticket",
            {"settings": {"activation": {"require_ticket": "perhaps"}}},
            ["require_ticket", "perhaps"],
        ),
        case(
            POL,
            "wrong_type_require_approval",
            {"settings": {"activation": {"require_approval": "perhaps"}}},
            ["require_approval", "perhaps"],
        ),
        case(
            POL,
            "approver_blank",
            {"settings": {"activation": {"require_approval": True, "approvers": [" "]}}},
            ["approvers\\[0\\]", "empty"],
        ),
        case(
            POL,
            "approver_null",
            {"settings": {"activation": {"require_approval": True, "approvers": [None]}}},
            ["approvers\\[0\\]", "not an approver"],
        ),
        case(
            POL, "approvers_not_a_list", {"settings": {"activation": {"approvers": {"id": "x"}}}}, ["approvers", "list"]
        ),
        case(
            POL,
            "auth_context_enabled_wrong_type",
            {"settings": {"activation": {"authentication_context": {"enabled": "perhaps"}}}},
            ["enabled", "perhaps"],
        ),
        case(
            POL,
            "auth_context_claim_blank",
            {"settings": {"activation": {"authentication_context": {"enabled": True, "claim_value": " "}}}},
            ["claim_value", "authentication context id"],
        ),
        case(POL, "rules_null_item", {"rules": [None]}, ["rules\\[0\\]", "null"]),
        case(POL, "rules_without_id", {"rules": [{"maximum_duration": "PT1H"}]}, ["rules\\[0\\]", "id"]),
        case(POL, "rules_unknown_rule", {"rules": [{"id": "No_Such_Rule"}]}, ["rules\\[0\\]", "No_Such_Rule"]),
        case(
            POL,
            "rules_duration_overflows",
            {"rules": [{"id": "Expiration_EndUser_Assignment", "maximum_duration": "P99999999D"}]},
            ["rules\\[0\\].maximum_duration", "Edm.Duration", "P10675199D"],
        ),
        case(
            POL,
            "rules_duration_not_iso",
            {"rules": [{"id": "Expiration_EndUser_Assignment", "maximum_duration": 5}]},
            ["rules\\[0\\].maximum_duration", "ISO 8601"],
        ),
    ]
    + [
        case(POL, "%s_%s_%s" % (section, field, cid), {"settings": {section: {field: value}}}, expect)
        for section in ("eligible_assignment", "active_assignment")
        for field, cid, value, expect in (
            ("allow_permanent", "wrong_type", "perhaps", ["allow_permanent", "perhaps", "bool"]),
            ("max_duration", "months", "P6M", ["max_duration", "P6M", "years or months"]),
            ("require_mfa", "wrong_type", "perhaps", ["require_mfa", "perhaps", "bool"]),
            ("require_justification", "wrong_type", "perhaps", ["require_justification", "perhaps", "bool"]),
        )
    ]
    + [
        case(
            POL,
            "notify_%s_%s_%s" % (kind, recipient, field),
            {"settings": {"notifications": {kind: {recipient: {field: value}}}}},
            [field, expect],
        )
        for kind in ("eligible_assignment", "active_assignment", "activation")
        for recipient in ("admin", "requestor", "approver")
        for field, value, expect in (
            ("level", "Loud", "Loud.*None, Critical, All"),
            ("default_recipients", "perhaps", "perhaps.*bool"),
            ("additional_recipients", ["not-an-address"], "not-an-address.*email address"),
        )
    ]
    + [
        case(POLI, "roles_empty_list", {"roles": []}, ["roles", "empty", "omit it"]),
        case(POLI, "roles_null_item", {"roles": [None]}, ["roles\\[0\\]", "null"]),
        case(POLI, "roles_blank_item", {"roles": ["  "]}, ["roles\\[0\\]", "empty"]),
        case(
            POLI,
            "role_alias_is_a_dict_item",
            {"role": [{"name": "x"}]},
            ["role\\[0\\]", "dictionary"],
            covers=["roles"],
        ),
    ]
    + [
        case(ACC, "grant_empty_scope", {"grants": [dict(GRANT, directory_scope="")]}, ["directory_scope", "empty"]),
        case(ACC, "grant_blank_scope", {"grants": [dict(GRANT, directory_scope="  ")]}, ["directory_scope", "empty"]),
        case(ACC, "grant_null_scope", {"grants": [dict(GRANT, directory_scope=None)]}, ["directory_scope", "empty"]),
        case(
            ACC,
            "boundary_empty_scope",
            {"grants": [], "boundary": {"directory_scopes": [""]}},
            ["boundary.directory_scopes", "empty"],
        ),
        case(
            ACC,
            "grant_duration_rounds_to_zero",
            {"grants": [dict(GRANT, duration="PT0.5S")]},
            ["duration", "PT0.5S", "longer than zero"],
        ),
        case(
            ACC,
            "grant_duration_overflows",
            {"grants": [dict(GRANT, duration="P99999999D")]},
            ["duration", "P99999999D", "9999-12-31"],
        ),
        case(ACC, "grant_start_empty", {"grants": [dict(GRANT, start="")]}, ["start", "empty"]),
        case(
            ACC,
            "grant_start_not_a_date",
            {"grants": [dict(GRANT, start="tomorrow")]},
            ["start", "tomorrow", "ISO 8601"],
        ),
        case(
            ACC,
            "grant_principal_is_a_list",
            {"grants": [dict(GRANT, principal=[ALICE_UPN, "bob@contoso.example"])]},
            ["grants\\[0\\].principal", "single string", "list"],
        ),
        case(
            ACC,
            "grant_role_is_a_dict",
            {"grants": [dict(GRANT, role={"name": "Security Reader"})]},
            ["grants\\[0\\].role", "single string", "dictionary"],
        ),
        case(ACC, "grant_null_item", {"grants": [GRANT, None]}, ["grants\\[1\\]", "null"]),
        case(
            ACC,
            "grant_missing_role",
            {"grants": [{"principal": ALICE_UPN}]},
            ["role", "grants"],
            covers=["grants.principal"],
        ),
        case(
            ACC,
            "grant_wrong_principal_type",
            {"grants": [dict(GRANT, principal_type="robot")]},
            ["principal_type", "robot"],
        ),
        case(
            ACC,
            "grant_wrong_type_permanent",
            {"grants": [dict(GRANT, permanent="perhaps")]},
            ["permanent", "perhaps", "bool"],
        ),
        case(
            ACC,
            "grant_justification_is_a_list",
            {"grants": [dict(GRANT, justification=["a"])]},
            ["grants\\[0\\].justification", "single string"],
        ),
        case(
            ACC,
            "grant_ticket_number_alone",
            {"grants": [dict(GRANT, ticket_number="CHG-1")]},
            ["ticket_number", "ticket_system"],
        ),
        case(
            ACC,
            "grant_ticket_system_alone",
            {"grants": [dict(GRANT, ticket_system="ServiceNow")]},
            ["ticket_number", "ticket_system"],
        ),
        case(
            ACC,
            "grant_unknown_key",
            {"grants": [dict(GRANT, bogus=1)]},
            ["grants.bogus", "Supported parameters"],
            covers=[],
        ),
        case(
            ACC,
            "boundary_blank_principal",
            {"grants": [], "boundary": {"principals": [" "]}},
            ["boundary.principals\\[0\\]", "empty"],
        ),
        case(
            ACC, "boundary_blank_role", {"grants": [], "boundary": {"roles": [""]}}, ["boundary.roles\\[0\\]", "empty"]
        ),
        case(
            ACC,
            "boundary_wrong_type",
            {"grants": [], "boundary": {"types": ["sometimes"]}},
            ["types", "sometimes", "eligible, active"],
        ),
        case(ACC, "boundary_not_a_dict", {"grants": [], "boundary": ["principals"]}, ["boundary", "dict"]),
        case(
            ACC,
            "protected_blank",
            {"grants": [], "protected_principals": [""]},
            ["protected_principals\\[0\\]", "empty"],
        ),
        case(
            ACC,
            "protected_null",
            {"grants": [], "protected_principals": [None]},
            ["protected_principals\\[0\\]", "null"],
        ),
        case(ACC, "wrong_type_purge", {"grants": [], "purge": "perhaps"}, ["purge", "perhaps", "bool"]),
        case(
            ACC,
            "wrong_type_end_activations",
            {"grants": [], "end_activations": "perhaps"},
            ["end_activations", "perhaps", "bool"],
        ),
        case(
            ACC,
            "wrong_type_protect_last_ga",
            {"grants": [], "protect_last_global_admin": "perhaps"},
            ["protect_last_global_admin", "perhaps"],
        ),
        case(ACC, "wrong_type_fail_fast", {"grants": [], "fail_fast": "perhaps"}, ["fail_fast", "perhaps", "bool"]),
        case(
            ACC,
            "justification_is_a_dict",
            {"grants": [], "justification": {"a": 1}},
            ["justification", "single string"],
        ),
        case(ACC, "ticket_number_alone", {"grants": [], "ticket_number": "CHG-1"}, ["ticket_number", "ticket_system"]),
        case(
            ACC, "ticket_system_is_a_list", {"grants": [], "ticket_system": ["x"]}, ["ticket_system", "single string"]
        ),
        case(ACC, "grants_not_a_list", {"grants": {"principal": ALICE_UPN}}, ["grants", "list"]),
    ]
    + [
        # The shared connection options (_auth doc fragment, PimModule): one case each, on pim_role_eligibility_info.
        case(EI, "auth_method_unknown", {"auth_method": "magic"}, ["auth_method", "magic", "client_secret"]),
        case(EI, "tenant_id_empty", {"tenant_id": ""}, ["tenant_id", "missing"]),
        case(EI, "client_id_empty", {"client_id": ""}, ["client_id", "missing"]),
        case(EI, "client_secret_empty", {"client_secret": ""}, ["client_secret", "missing"]),
        case(
            EI,
            "client_certificate_path_missing",
            {"auth_method": "certificate", "client_certificate_path": "/nonexistent/cert.pem"},
            ["client_certificate_path", "/nonexistent/cert.pem"],
            covers=["auth_method", "client_certificate_path"],
        ),
        case(
            EI,
            "client_certificate_password_is_a_list",
            {"client_certificate_password": ["x"]},
            ["client_certificate_password", "single string"],
        ),
        case(
            EI,
            "federated_token_file_missing",
            {"auth_method": "federated_token", "federated_token_file": "/nonexistent/token", "token_cache": False},
            ["federated_token_file", "/nonexistent/token"],
            covers=["federated_token_file"],
        ),
        case(
            EI,
            "managed_identity_client_id_is_a_list",
            {"managed_identity_client_id": ["x"]},
            ["managed_identity_client_id", "single string"],
        ),
        case(
            EI,
            "access_token_not_a_token",
            {"auth_method": "access_token", "access_token": "not-a-token"},
            ["access_token", "not accepted"],
            covers=["access_token"],
        ),
        case(
            EI,
            "username_without_password",
            {"auth_method": "username_password", "username": ALICE_UPN},
            ["password", "missing"],
            covers=["username"],
        ),
        case(
            EI,
            "password_without_username",
            {"auth_method": "username_password", "password": "Sandbox-Alice-Pass-1!"},
            ["username", "missing"],
            covers=["password"],
        ),
        case(
            EI,
            "azure_cli_path_missing",
            {"auth_method": "azure_cli", "azure_cli_path": "/nonexistent/az"},
            ["azure_cli_path", "/nonexistent/az"],
            covers=["azure_cli_path"],
        ),
        case(EI, "cloud_unknown", {"cloud": "mars"}, ["cloud", "mars", "public"]),
        case(
            EI,
            "authority_host_not_https",
            {"authority_host": "ftp://login.example"},
            ["authority_host", "ftp://login.example", "https"],
        ),
        case(
            EI,
            "graph_url_not_https",
            {"graph_url": "ftp://graph.example"},
            ["graph_url", "ftp://graph.example", "https"],
        ),
        case(
            EI, "ca_bundle_missing", {"ca_bundle": "/nonexistent/ca.pem"}, ["ca_bundle", "/nonexistent/ca.pem", "PEM"]
        ),
        case(EI, "validate_certs_wrong_type", {"validate_certs": "perhaps"}, ["validate_certs", "perhaps", "bool"]),
        case(EI, "token_cache_wrong_type", {"token_cache": "perhaps"}, ["token_cache", "perhaps", "bool"]),
        case(EI, "token_cache_path_is_a_list", {"token_cache_path": ["a", "b"]}, ["token_cache_path", "single string"]),
        case(EI, "request_timeout_negative", {"request_timeout": -1}, ["request_timeout", "-1", "1 to 3600"]),
        case(
            EI,
            "request_timeout_huge",
            {"request_timeout": 10**20},
            ["request_timeout", "100000000000000000000", "1 to 3600"],
        ),
        case(EI, "max_retries_negative", {"max_retries": -1}, ["max_retries", "-1", "0 to 100"]),
        case(EI, "max_retry_wait_negative", {"max_retry_wait": -5}, ["max_retry_wait", "-5", "0 to 3600"]),
    ]
    + [
        case(
            ONB,
            "empty_scope_in_profile_entry",
            {"onboard_principals": [ALICE_UPN], "onboard_entries": [dict(ENTRY, directory_scope="")]},
            ["invalid entry", "directory_scope", "not empty"],
            covers=["onboard_entries"],
        ),
        case(
            ONB,
            "null_scope_in_profile_entry",
            {
                "onboard_principals": [ALICE_UPN],
                "onboard_access_profiles": {"p": [dict(ENTRY, directory_scope=None)]},
                "onboard_profiles": ["p"],
            },
            ["invalid entry", "directory_scope"],
            covers=["onboard_access_profiles"],
        ),
        case(
            ONB,
            "profile_not_a_list",
            {
                "onboard_principals": [ALICE_UPN],
                "onboard_access_profiles": {"p": "Security Reader"},
                "onboard_profiles": ["p"],
            },
            ["onboard_access_profiles", "list of entries", "Security Reader"],
            covers=["onboard_access_profiles", "onboard_profiles"],
        ),
        case(
            ONB,
            "no_principals",
            {"onboard_principals": [], "onboard_entries": [ENTRY]},
            ["onboard_principals", "empty"],
        ),
        case(
            ONB,
            "wrong_principal_type",
            {"onboard_principals": [ALICE_UPN], "onboard_principal_type": "robot", "onboard_entries": [ENTRY]},
            ["onboard_principal_type", "robot"],
        ),
        case(
            ONB,
            "wrong_type_exclusive",
            {"onboard_principals": [ALICE_UPN], "onboard_exclusive": "perhaps", "onboard_entries": [ENTRY]},
            ["onboard_exclusive", "perhaps"],
        ),
        case(
            ONB,
            "protected_blank",
            {"onboard_principals": [ALICE_UPN], "onboard_protected_principals": [""], "onboard_entries": [ENTRY]},
            ["protected_principals\\[0\\]", "empty"],
        ),
        case(
            ONB,
            "justification_is_a_dict",
            {"onboard_principals": [ALICE_UPN], "onboard_justification": {"a": 1}, "onboard_entries": [ENTRY]},
            ["justification", "single string"],
        ),
        case(
            ONB,
            "ticket_number_alone",
            {"onboard_principals": [ALICE_UPN], "onboard_ticket_number": "CHG-1", "onboard_entries": [ENTRY]},
            ["ticket_number", "ticket_system"],
        ),
        case(
            ONB,
            "ticket_system_alone",
            {"onboard_principals": [ALICE_UPN], "onboard_ticket_system": "ServiceNow", "onboard_entries": [ENTRY]},
            ["ticket_number", "ticket_system"],
        ),
        case(
            ONB,
            "report_path_unwritable",
            {"onboard_principals": [ALICE_UPN], "onboard_entries": [HELD], "onboard_report_path": NO_DIR},
            [re.escape(NO_DIR.rsplit("/", 1)[0])],
            covers=["onboard_report_path"],
        ),
        case(
            ONB,
            "wrong_report_format",
            {"onboard_principals": [ALICE_UPN], "onboard_report_format": "pdf", "onboard_entries": [ENTRY]},
            ["onboard_report_format", "pdf"],
        ),
        case(
            ONB,
            "wrong_type_report_in_check_mode",
            {"onboard_principals": [ALICE_UPN], "onboard_report_in_check_mode": "perhaps", "onboard_entries": [ENTRY]},
            ["onboard_report_in_check_mode", "perhaps"],
        ),
        case(
            ONB,
            "wrong_type_show_summary",
            {"onboard_principals": [ALICE_UPN], "onboard_show_summary": "perhaps", "onboard_entries": [ENTRY]},
            ["onboard_show_summary", "perhaps"],
        ),
        case(
            ONB,
            "duration_rounds_to_zero",
            {"onboard_principals": [ALICE_UPN], "onboard_entries": [dict(ENTRY, duration="PT0.5S")]},
            ["duration", "PT0.5S", "longer than zero"],
            covers=["onboard_entries"],
        ),
    ]
    + [
        case(
            OFF,
            "wrong_principal_type",
            {"offboard_principal": ALICE_UPN, "offboard_principal_type": "robot"},
            ["offboard_principal_type", "robot"],
        ),
        case(OFF, "empty_principal", {"offboard_principal": ""}, ["offboard_principal", "empty"]),
        case(
            OFF,
            "empty_scope_filter",
            {"offboard_principal": ALICE_UPN, "offboard_directory_scopes": [""]},
            ["offboard_directory_scopes"],
        ),
        case(
            OFF,
            "wrong_types",
            {"offboard_principal": ALICE_UPN, "offboard_types": ["sometimes"]},
            ["offboard_types", "sometimes"],
        ),
        case(
            OFF, "empty_types", {"offboard_principal": ALICE_UPN, "offboard_types": []}, ["offboard_types", "eligible"]
        ),
        case(
            OFF,
            "wrong_type_end_activations",
            {"offboard_principal": ALICE_UPN, "offboard_end_activations": "perhaps"},
            ["offboard_end_activations", "perhaps"],
        ),
        case(
            OFF,
            "wrong_type_protect_last_ga",
            {"offboard_principal": ALICE_UPN, "offboard_protect_last_global_admin": "perhaps"},
            ["offboard_protect_last_global_admin", "perhaps"],
        ),
        case(
            OFF,
            "justification_is_a_dict",
            {"offboard_principal": ALICE_UPN, "offboard_justification": {"a": 1}},
            ["justification", "single string"],
        ),
        case(
            OFF,
            "ticket_number_alone",
            {"offboard_principal": ALICE_UPN, "offboard_ticket_number": "CHG-1"},
            ["ticket_number", "ticket_system"],
        ),
        case(
            OFF,
            "ticket_system_alone",
            {"offboard_principal": ALICE_UPN, "offboard_ticket_system": "ServiceNow"},
            ["ticket_number", "ticket_system"],
        ),
        case(
            OFF,
            "wrong_type_report",
            {"offboard_principal": ALICE_UPN, "offboard_report": "perhaps"},
            ["offboard_report", "perhaps"],
        ),
        case(
            OFF,
            "report_dir_unwritable",
            {
                "offboard_principal": ALICE_UPN,
                "offboard_roles": ["Security Reader"],
                "offboard_report_dir": NO_DIR.rsplit("/", 1)[0],
            },
            [re.escape(NO_DIR.rsplit("/", 1)[0])],
            covers=["offboard_report_dir"],
        ),
        case(
            OFF,
            "report_path_unwritable",
            {"offboard_principal": ALICE_UPN, "offboard_roles": ["Security Reader"], "offboard_report_path": NO_DIR},
            [re.escape(NO_DIR.rsplit("/", 1)[0])],
            covers=["offboard_report_path"],
        ),
        case(
            OFF,
            "wrong_report_format",
            {"offboard_principal": ALICE_UPN, "offboard_report_format": "pdf"},
            ["offboard_report_format", "pdf"],
        ),
        case(
            OFF,
            "wrong_type_show_summary",
            {"offboard_principal": ALICE_UPN, "offboard_show_summary": "perhaps"},
            ["offboard_show_summary", "perhaps"],
        ),
    ]
)
UNKNOWN_AU = "/administrativeUnits/50000000-0000-4000-8000-0000000000ff"

# Inputs fixed on other parts of issue 14: an explicitly empty boundary (point 4), an unknown
# administrative unit among good grants (point 10), and report paths that would fail only after
# grants changed (point 9: ENTRY is not held, so these would write without the early check).
MERGED_CASES = [
    *[
        case(
            ACC,
            "empty_boundary_%s" % key,
            {"grants": [GRANT], "purge": True, "boundary": {key: []}},
            ["boundary.%s is an empty list" % key, "omit boundary.%s" % key],
        )
        for key in ("principals", "roles", "directory_scopes", "types")
    ],
    case(
        ACC,
        "blank_boundary_principals",
        {"grants": [GRANT], "purge": True, "boundary": {"principals": ["", " "]}},
        ["boundary.principals"],
    ),
    case(
        ACC,
        "unknown_administrative_unit_among_good_grants",
        {"grants": [dict(GRANT, role="User Administrator"), dict(GRANT, directory_scope=UNKNOWN_AU)]},
        ["directory_scope", "no administrative unit with the id '50000000-0000-4000-8000-0000000000ff' exists"],
    ),
    case(
        ONB,
        "report_path_no_extension_with_changes",
        {"onboard_principals": [ALICE_UPN], "onboard_entries": [ENTRY], "onboard_report_path": "/tmp/entra-pim-report"},
        ["onboard_report_path", "has no extension"],
    ),
    case(
        ONB,
        "report_path_unknown_extension_with_changes",
        {"onboard_principals": [ALICE_UPN], "onboard_entries": [ENTRY], "onboard_report_path": "/tmp/x.pdf"},
        ["ends in '.pdf'"],
    ),
    case(
        ONB,
        "report_format_contradicts_extension_with_changes",
        {
            "onboard_principals": [ALICE_UPN],
            "onboard_entries": [ENTRY],
            "onboard_report_path": "/tmp/x.json",
            "onboard_report_format": "markdown",
        },
        ["onboard_report_format is markdown"],
    ),
    case(
        OFF,
        "report_path_no_extension",
        {"offboard_principal": ALICE_UPN, "offboard_report_path": "/tmp/entra-pim-report"},
        ["has no extension"],
    ),
    # Point 8: what the role's policy or the directory would refuse, refused before any write.
    case(
        E,
        "unknown_administrative_unit",
        dict(BASE, directory_scope="/administrativeUnits/59999999-0000-4000-8000-000000000009"),
        ["directory_scope", "59999999-0000-4000-8000-000000000009", "no administrative unit"],
    ),
    case(
        A,
        "justification_required_by_policy",
        {"principal": ALICE_UPN, "role": "Groups Administrator", "duration": "P7D"},
        ["Enablement_Admin_Assignment", "justification"],
    ),
    case(ACT, "not_eligible", {"role": "Global Reader"}, ["not eligible", "eligible for"]),
    case(
        ACT,
        "justification_required_by_policy",
        {"justification": None},
        ["Enablement_EndUser_Assignment", "justification"],
    ),
    case(
        POL,
        "raw_rule_activation_maximum_out_of_range",
        {"rules": [{"id": "Expiration_EndUser_Assignment", "maximum_duration": "P2D"}]},
        ["rules\\[0\\]", "Expiration_EndUser_Assignment", "P2D", "PT30M"],
    ),
    case(
        POL,
        "raw_rule_duration_beyond_edm",
        {"rules": [{"id": "Expiration_Admin_Eligibility", "maximum_duration": "P99999999D"}]},
        ["P99999999D", "Edm.Duration"],
    ),
    case(
        POL,
        "raw_rule_approver_of_no_kind",
        {
            "rules": [
                {
                    "id": "Approval_EndUser_Assignment",
                    "setting": {"approval_stages": [{"primary_approvers": [{"x": 1}]}]},
                }
            ]
        },
        ["primary_approvers\\[0\\]", "not an approver"],
    ),
    case(
        POL,
        "raw_rule_three_approval_stages",
        {"rules": [{"id": "Approval_EndUser_Assignment", "setting": {"approval_stages": [{}, {}, {}]}}]},
        ["3 approval stages"],
    ),
    case(
        POL,
        "raw_rule_auth_context_without_claim",
        {"rules": [{"id": "AuthenticationContext_EndUser_Assignment", "is_enabled": True}]},
        ["claim_value"],
    ),
]
CASES = CASES + ISSUE14_CASES + MERGED_CASES

TARGETS = sorted({p.values[0] for p in CASES})


def _task(target, cid, args, ctx):
    name = "case %s" % cid
    if target in (ONB, OFF):
        role_vars = dict(args)
        if target == OFF:
            role_vars.setdefault("offboard_report_dir", str(ctx["workdir"] / "reports"))
        return {
            "name": name,
            "block": [{"name": name + " (role)", "ansible.builtin.include_role": {"name": target}, "vars": role_vars}],
            "rescue": [{"name": name + " rescued", "ansible.builtin.debug": {"msg": "rescued"}}],
        }
    args = dict(args)
    if target == ACT:
        args = dict({"role": "Helpdesk Administrator", "justification": "hardening"}, **args)
        args.update(auth_method="access_token", access_token=ctx["alice_token"])
    if target == POL:
        args.setdefault("roles", ["Groups Administrator"])
    return {"name": name, target: args, "ignore_errors": True}


_PLAYS: dict = {}


def _play(sb: SandboxProc, target: str, tmp_root: Path) -> dict:
    if target in _PLAYS:
        return _PLAYS[target]
    sb.reset()
    token = sb.token()
    # alice may activate Helpdesk Administrator (for the activation cases); a Security Reader
    # policy that requires expiry within its maximum (for the above-maximum cases).
    sb.admin_assign(ELIG_REQ, ALICE_ID, ROLES["Helpdesk Administrator"], {"type": "noExpiration"}, token=token)
    for rule_id in ("Expiration_Admin_Eligibility", "Expiration_Admin_Assignment"):
        changes = {"isExpirationRequired": True}
        sb.patch_rule(ROLES["Security Reader"], rule_id, changes, keep=("maximumDuration",), token=token)
    ctx = {
        "workdir": tmp_root / target.rsplit(".", 1)[-1],
        "alice_token": sb.token(user=ALICE_UPN, claims={"amr": ["pwd", "mfa"]}),
    }
    tasks = [{"name": "stats start", "sandbox_control": {"method": "GET", "path": "/stats"}}]
    for p in CASES:
        t, cid, args, _expect = p.values
        if t != target:
            continue
        tasks.append(_task(t, cid, args, ctx))
        tasks.append({"name": "stats %s" % cid, "sandbox_control": {"method": "GET", "path": "/stats"}})
    before = sb.state()
    result = run_playbook(
        sb,
        ctx["workdir"],
        tasks,
        extra_env={
            "HARDENING_CONTROL_URL": sb.control_url,
            "HARDENING_CA": sb.ca,
            "ANSIBLE_ACTION_PLUGINS": str(Path(__file__).parent / "action_plugins"),
        },
        timeout=900,
    )
    _PLAYS[target] = {"result": result, "before": before, "after": sb.state(), "ctx": ctx}
    return _PLAYS[target]


def _records_of(result, cid):
    """Every task result from ``case cid`` up to its stats snapshot."""
    out, inside = [], False
    for name, res in result.tasks():
        if name in ("case %s" % cid, "case %s (role)" % cid):
            inside = True
        if name == "stats %s" % cid:
            return out, res["json"]
        if inside or name.startswith("case %s " % cid):
            out.append((name, res))
    raise AssertionError("no stats after case %s:\n%s" % (cid, result.describe()))


def _previous_stats(result, cid):
    prev = None
    for name, res in result.tasks():
        if name == "stats %s" % cid:
            return prev
        if name.startswith("stats "):
            prev = res["json"]
    raise AssertionError(cid)


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-input")


class _BadInputCells:
    """One class per module or role (below), so ``--dist loadscope`` keeps its play on one worker."""

    target = ""

    def test_fails_before_any_write(self, sandbox, bad_dir, cid):
        target, args, expect = BY_ID[(self.target, cid)]
        check_bad_input(sandbox, bad_dir, target, cid, args, expect)


BY_ID = {(p.values[0], p.values[1]): (p.values[0], p.values[2], p.values[3]) for p in CASES}


def pytest_generate_tests(metafunc):
    if "cid" in metafunc.fixturenames:
        target = metafunc.cls.target
        metafunc.parametrize("cid", [cid for (t, cid) in BY_ID if t == target])


for _target in TARGETS:
    _name = "TestBadInput_" + _target.rsplit(".", 1)[-1]
    globals()[_name] = type(_name, (_BadInputCells,), {"target": _target})


# The PIM part of the sandbox state: what a bad input must leave exactly as it was.
PIM_STATE_KEYS = (
    "roleEligibilitySchedules",
    "roleEligibilityScheduleRequests",
    "roleEligibilityScheduleInstances",
    "roleAssignmentSchedules",
    "roleAssignmentScheduleRequests",
    "roleAssignmentScheduleInstances",
    "roleManagementPolicies",
    "roleManagementPolicyAssignments",
)


def pim_state(state):
    return {key: state.get(key) for key in PIM_STATE_KEYS}


def _has_traceback(records):
    # ansible-core puts "(traceback unavailable)" in every failure; a real one starts with "Traceback".
    return any("Traceback" in str(r.get("msg", "")) + str(r.get("exception", "")) for _n, r in records)


def check_bad_input(sandbox, bad_dir, target, cid, args, expect):
    play = _play(sandbox, target, bad_dir)
    result = play["result"]
    records, stats_after = _records_of(result, cid)
    stats_before = _previous_stats(result, cid)
    failed = [r for _n, r in records if r["_status"] == "failed"]
    msg = " ".join(str(r.get("msg", "")) for r in failed)
    missing = [e for e in expect if not re.search(e, msg, re.IGNORECASE)]
    writes = total_writes(stats_after) - total_writes(stats_before)
    traceback = _has_traceback(records)
    if traceback:
        outcome = "traceback"
    elif not failed:
        # Accepted instead of refused: with a write, the module acted on something else than asked.
        outcome = "silent widening" if writes else "not refused"
    elif writes:
        outcome = "partial write"
    else:
        outcome = "fails before any write" if not missing else "FALLS SHORT"
    _record(target, cid, outcome, msg[:300], writes)
    assert failed, "case %s did not fail: %s" % (cid, [r for _n, r in records])
    assert not traceback and "Traceback" not in result.stdout, msg
    assert not missing, "message %r lacks %s" % (msg, missing)
    assert writes == 0, "case %s wrote %s" % (cid, stats_after["writes"])
    assert pim_state(play["after"]) == pim_state(play["before"]), "the play changed the PIM state"


def _record(target, cid, outcome, msg, writes):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "bad_input.jsonl", "a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"row": target, "col": cid, "outcome": outcome, "detail": msg, "writes": writes}) + "\n"
        )
    tally = bad_input_tally(RESULTS_DIR / "bad_input.jsonl")
    (RESULTS_DIR / "bad_input_tally.json").write_text(json.dumps(tally, indent=2, sort_keys=True) + "\n")


def bad_input_tally(path):
    """Cases, tracebacks, partial writes and silent widenings over the last record of each case."""
    latest = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[(rec["row"], rec["col"])] = rec
    outcomes = [rec["outcome"] for rec in latest.values()]
    return {
        "cases": len(latest),
        "fails_before_any_write": outcomes.count("fails before any write"),
        "tracebacks": outcomes.count("traceback"),
        "partial_writes": outcomes.count("partial write"),
        "silent_widenings": outcomes.count("silent widening"),
        "not_refused": outcomes.count("not refused"),
        "message_falls_short": outcomes.count("FALLS SHORT"),
        "modules_and_roles": len({rec["row"] for rec in latest.values()}),
    }


# ----------------------------------------------------------------------------- completeness

MODULES = (E, EI, A, AI, ACT, POL, POLI, ACC)


def _spec_paths(spec, prefix=""):
    out = set()
    for name, opt in spec.items():
        out.add(prefix + name)
        if opt.get("options"):
            out |= _spec_paths(opt["options"], prefix + name + ".")
    return out


def module_spec(fqcn):
    """The argument spec a module passes to PimModule (its own options, without the shared ones)."""
    import importlib

    from ansible_collections.entra.pim.plugins.module_utils import _module

    captured = {}

    class Captured(Exception):
        pass

    def capture(self, argument_spec, **_kwargs):
        captured.update(argument_spec)
        raise Captured()

    module = importlib.import_module("ansible_collections.entra.pim.plugins.modules." + fqcn.rsplit(".", 1)[-1])
    original = _module.PimModule.__init__
    _module.PimModule.__init__ = capture
    try:
        module.main()
    except Captured:
        pass
    finally:
        _module.PimModule.__init__ = original
    return captured


def role_spec(fqcn):
    import yaml

    path = ROOT / "roles" / fqcn.rsplit(".", 1)[-1] / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]


def _uncovered(paths, covered):
    return sorted(p for p in paths if not any(c == p or c.startswith(p + ".") for c in covered))


def test_every_option_has_a_case():
    """Every option (and suboption) of every module and of both roles has at least one bad-input case."""
    from ansible_collections.entra.pim.plugins.module_utils._auth import AUTH_ARGSPEC

    covered = {}
    for (target, _cid), paths in COVERS.items():
        covered.setdefault(target, set()).update(paths)
    missing = {}
    for target in MODULES:
        spec = module_spec(target)
        assert spec, target
        holes = _uncovered(_spec_paths(spec), covered.get(target, set()))
        if holes:
            missing[target] = holes
    for target in (ONB, OFF):
        holes = _uncovered(_spec_paths(role_spec(target)), covered.get(target, set()))
        if holes:
            missing[target] = holes
    everywhere = set().union(*(covered.get(t, set()) for t in MODULES))
    holes = _uncovered(set(AUTH_ARGSPEC), everywhere)
    if holes:
        missing["shared connection options"] = holes
    assert not missing, "options without a bad-input case: %s" % missing
    assert len(CASES) >= 150


# ----------------------------------------------------------------------------- valid edge inputs


def test_apostrophe_upn_and_timezone_less_dates_are_accepted_as_utc(sandbox, tmp_path):
    """o'brien's UPN resolves (OData quote doubled); a start without a zone is UTC (brief conventions)."""
    sandbox.reset()
    tasks = [
        {
            "name": "apostrophe and naive dates",
            E: {
                "principal": "o'brien@contoso.example",
                "role": "Security Reader",
                "start": "2031-03-01T10:00:00",
                "end": "2031-04-01T10:00:00",
                "justification": "hardening",
            },
        }
    ]
    result = run_playbook(sandbox, tmp_path, tasks)
    assert result.rc == 0, result.describe()
    schedules = [
        s
        for s in sandbox.state()["roleEligibilitySchedules"]
        if s["principalId"] == "10000000-0000-4000-8000-000000000004"
    ]
    assert len(schedules) == 1
    info = schedules[0]["scheduleInfo"]
    start = datetime.fromisoformat(info["startDateTime"].replace("Z", "+00:00"))
    assert start == datetime(2031, 3, 1, 10, 0, tzinfo=timezone.utc)
    end = datetime.fromisoformat(info["expiration"]["endDateTime"].replace("Z", "+00:00"))
    assert end == datetime(2031, 4, 1, 10, 0, tzinfo=timezone.utc)
    # ... and the documentation says so, in every schedule-taking module.
    for module in ("pim_role_eligibility", "pim_role_assignment", "pim_access"):
        doc = (ROOT / "plugins" / "modules" / ("%s.py" % module)).read_text()
        options = " ".join(doc.split("options:", 1)[1].split("EXAMPLES", 1)[0].split())
        assert re.search(r"without a time ?zone is UTC", options, re.IGNORECASE), module
