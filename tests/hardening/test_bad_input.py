"""Bad-input matrix (issue 8): every module and role refuses bad input before any write.

One play per module (or role) runs every case as its own task through ``ansible-playbook``,
with a sandbox stats snapshot after each. Each case is one parametrized test that asserts:

* the task failed, without a traceback;
* the message names the option and the value (never a secret) and says what is expected
  (the ``expect`` fragments of the case, matched case-insensitively);
* the sandbox counted no write (stats ``writes``) for that task, so nothing was sent that
  could change the tenant; the state dump is also compared at the end of each play.

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


def case(target, cid, args, expect):
    return pytest.param(target, cid, args, expect, id="%s-%s" % (target.rsplit(".", 1)[-1], cid))


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


def check_bad_input(sandbox, bad_dir, target, cid, args, expect):
    play = _play(sandbox, target, bad_dir)
    result = play["result"]
    records, stats_after = _records_of(result, cid)
    stats_before = _previous_stats(result, cid)
    failed = [r for _n, r in records if r["_status"] == "failed"]
    assert failed, "case %s did not fail: %s" % (cid, [r for _n, r in records])
    msg = " ".join(str(r.get("msg", "")) for r in failed)
    assert "Traceback" not in msg and "Traceback" not in result.stdout
    missing = [e for e in expect if not re.search(e, msg, re.IGNORECASE)]
    writes = total_writes(stats_after) - total_writes(stats_before)
    outcome = "fails before any write" if not missing and writes == 0 else "FALLS SHORT"
    _record(target, cid, outcome, msg[:300], writes)
    assert not missing, "message %r lacks %s" % (msg, missing)
    assert writes == 0, "case %s wrote %s" % (cid, stats_after["writes"])


def _record(target, cid, outcome, msg, writes):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "bad_input.jsonl", "a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"row": target, "col": cid, "outcome": outcome, "detail": msg, "writes": writes}) + "\n"
        )


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
