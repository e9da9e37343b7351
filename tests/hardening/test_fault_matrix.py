"""Fault matrix (issue 8): every fault the sandbox can inject × every write operation.

One play per fault runs every operation through ``ansible-playbook`` (the real module path):
for each operation it arms the fault (control API, from the play), applies the operation,
snapshots the sandbox stats, disarms, applies it again, and snapshots again. Each matrix cell
is then one parametrized test that reads its part of that play:

* converged: the apply succeeded, the sandbox state is the desired state, no request was
  created twice (state), and the re-run wrote nothing (stats ``writes``) and reports no change;
* clear error (only where the fault outlasts the configured retries): the apply failed with a
  message naming the fault and the number of attempts, nothing of that operation was written,
  and the re-run (fault gone) converges.

Retries are bounded for every run (ENTRA_PIM_MAX_RETRIES=3, ENTRA_PIM_MAX_RETRY_WAIT=1).
Behaviour references: notes §6.2 (lost answers, RoleAssignmentExists/DoesNotExist, legacy
SubjectNotFound), §6.6 (throttling, Retry-After).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import (
    ASG_REQ,
    ELIG_REQ,
    ROLES,
    ROOT,
    SandboxProc,
    finish_playbook,
    start_playbook,
    total_writes,
)

RESULTS_DIR = ROOT / ".tmp" / "hardening-results"
JUSTIFICATION = "hardening matrix"

# ----------------------------------------------------------------------------- operations

OPS = [
    "eligibility_create",
    "eligibility_update",
    "eligibility_remove",
    "assignment_create",
    "assignment_update",
    "assignment_remove",
    "activation",
    "deactivation",
    "policy_update",
    "bulk_reconcile",
    "onboard_role",
    "offboard_role",
]

FAULTS = [
    "429_retry_after",
    "429_no_retry_after",
    "503",
    "504",
    "503_beyond_retries",
    "connection_reset",
    "lost_response",
    "token_expired",
    "sandbox_restart",
    "replication_lag",
]

# Which faults are expected to end in a clear error rather than convergence.
EXPECT_ERROR = {"503_beyond_retries"}

MAX_RETRIES = 3
ELIG_POST = {"method": "POST", "path": "roleEligibilityScheduleRequests$"}
ASG_POST = {"method": "POST", "path": "roleAssignmentScheduleRequests$"}
ANY_REQUEST_POST = {"method": "POST", "path": "Schedule[Rr]equests$"}
POLICY_PATCH = {"method": "PATCH", "path": "/rules/"}
BULK_OPS = {"bulk_reconcile", "onboard_role", "offboard_role"}


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def upn(op: str) -> str:
    return "hx-%s@contoso.example" % op.replace("_", "-")


def password(op: str) -> str:
    return "Hx-Pass-%s-1!" % op


def write_match(op: str) -> dict:
    if op.startswith("eligibility"):
        return ELIG_POST
    if op.startswith("assignment") or op in ("activation", "deactivation"):
        return ASG_POST
    if op == "policy_update":
        return POLICY_PATCH
    return ANY_REQUEST_POST


def fault_rules(fault: str, op: str) -> list[dict]:
    match = write_match(op)
    batched = op in BULK_OPS or op == "policy_update"
    if fault == "429_retry_after":
        return [{"kind": "429", "count": 2, "retry_after": 1, "match": match}]
    if fault == "429_no_retry_after":
        return [{"kind": "429", "count": 2, "match": match}]
    if fault == "503":
        return [{"kind": "503", "count": 2, "match": match}]
    if fault == "504":
        return [{"kind": "504", "count": 1, "match": match}]
    if fault == "503_beyond_retries":
        return [{"kind": "503", "count": 50, "match": match}]
    if fault == "connection_reset":
        # A reset hits whole requests only: for batched writers that is the $batch POST itself.
        return [{"kind": "reset", "count": 1, "match": {"method": "POST", "path": r"\$batch$"} if batched else match}]
    if fault == "lost_response":
        rule = {"kind": "lost_response", "count": 1, "match": match}
        if batched:
            rule["scope"] = "batch_item"
        return [rule]
    if fault == "token_expired":
        # Graph checks the token of a $batch once, on the outer POST: batched writers meet it there.
        where = {"method": "POST", "path": r"\$batch$"} if batched else match
        return [{"kind": "token_expired", "count": 1, "match": where}]
    if fault == "replication_lag":
        # Counted, not timed: the first write naming the new principal meets SubjectNotFound however
        # slow the machine is (a time window can pass before the module's first write).
        return [{"kind": "subject_not_found", "count": 1, "match": match}]
    raise AssertionError(fault)


def ops_for(fault: str) -> list[str]:
    """The operations a fault applies to: a policy write names no principal, so it cannot lag behind one."""
    return [op for op in OPS if not (fault == "replication_lag" and op == "policy_update")]


# ----------------------------------------------------------------------------- setup


class Ctx:
    """What one fault's play needs: the users of each operation and fixed schedule values."""

    def __init__(self, sb: SandboxProc):
        self.sb = sb
        now = _parse(sb.control("GET", "/clock")["now"])
        self.created_at = _iso(now - timedelta(minutes=30))
        self.end = _iso(now + timedelta(days=90))
        self.users = {}
        for op in OPS:
            obj = sb.control(
                "POST",
                "/objects",
                json={
                    "type": "user",
                    "displayName": "Hardening %s" % op,
                    "userPrincipalName": upn(op),
                    "password": password(op),
                    "createdAt": self.created_at,
                },
            )
            self.users[op] = obj["id"]
        self.app_token = sb.token()

    def request(self, path, body, token=None):
        return self.sb.graph("POST", path, body, token=token or self.app_token)

    def eligible(self, op, role, duration="P30D"):
        expiration = {"type": "afterDuration", "duration": duration}
        self.sb.admin_assign(ELIG_REQ, self.users[op], ROLES[role], expiration, token=self.app_token)

    def active(self, op, role, duration="P30D"):
        expiration = {"type": "afterDuration", "duration": duration}
        self.sb.admin_assign(ASG_REQ, self.users[op], ROLES[role], expiration, token=self.app_token)

    def activation_without_mfa(self, role):
        """Let activation of ``role`` need a justification only, so a password sign-in can activate."""
        changes = {"enabledRules": ["Justification"]}
        self.sb.patch_rule(ROLES[role], "Enablement_EndUser_Assignment", changes, token=self.app_token)

    def setup_all(self):
        self.activation_without_mfa("Helpdesk Administrator")
        self.eligible("eligibility_update", "Security Reader")
        self.eligible("eligibility_remove", "Security Reader")
        self.active("assignment_update", "Global Reader")
        self.active("assignment_remove", "Global Reader")
        self.eligible("activation", "Helpdesk Administrator")
        self.eligible("deactivation", "Helpdesk Administrator")
        user_token = self.sb.token(user=upn("deactivation"), claims={"amr": ["pwd", "mfa"]})
        self.request(
            ASG_REQ,
            {
                "action": "selfActivate",
                "principalId": self.users["deactivation"],
                "roleDefinitionId": ROLES["Helpdesk Administrator"],
                "directoryScopeId": "/",
                "justification": "setup",
                "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT4H"}},
            },
            token=user_token,
        )
        self.eligible("bulk_reconcile", "User Administrator")
        self.eligible("offboard_role", "Security Reader")
        self.active("offboard_role", "Global Reader")
        # selfDeactivate is refused within 5 minutes of activating (notes §6.2): move past that.
        self.sb.control("POST", "/clock", json={"advance": "PT10M"})


# ----------------------------------------------------------------------------- the tasks


def op_tasks(op: str, ctx: Ctx, label: str, workdir: Path) -> list[dict]:
    """The task(s) that apply ``op``; every one tolerates failure so the play goes on."""
    user = upn(op)
    name = "%s %s" % (label, op)
    if op.startswith("eligibility") or op.startswith("assignment"):
        module = "entra.pim.pim_role_eligibility" if op.startswith("eligibility") else "entra.pim.pim_role_assignment"
        role = "Security Reader" if op.startswith("eligibility") else "Global Reader"
        args = {"principal": user, "role": role, "justification": JUSTIFICATION}
        if op.endswith("remove"):
            args["state"] = "absent"
        else:
            args["end"] = ctx.end
        return [{"name": name, module: args, "ignore_errors": True}]
    if op in ("activation", "deactivation"):
        args = {
            "auth_method": "username_password",
            "username": user,
            "password": password(op),
            "role": "Helpdesk Administrator",
            "justification": JUSTIFICATION,
        }
        if op == "activation":
            args["duration"] = "PT2H"
        else:
            args["state"] = "inactive"
        return [{"name": name, "entra.pim.pim_role_activation": args, "ignore_errors": True}]
    if op == "policy_update":
        args = {
            "roles": ["Groups Administrator"],
            "settings": {"activation": {"max_duration": "PT4H", "require_ticket": True}},
        }
        return [{"name": name, "entra.pim.pim_policy": args, "ignore_errors": True}]
    if op == "bulk_reconcile":
        args = {
            "grants": [
                {"principal": user, "role": "Security Reader", "type": "eligible", "end": ctx.end},
                {"principal": user, "role": "Global Reader", "type": "active", "end": ctx.end},
            ],
            "boundary": {"principals": [user]},
            "purge": True,
            "justification": JUSTIFICATION,
        }
        return [{"name": name, "entra.pim.pim_access": args, "ignore_errors": True}]
    if op == "onboard_role":
        role_vars = {
            "onboard_principals": [user],
            "onboard_profiles": ["hx"],
            "onboard_access_profiles": {
                "hx": [
                    {"role": "Security Reader", "type": "eligible", "end": ctx.end},
                    {"role": "Global Reader", "type": "eligible", "end": ctx.end},
                ]
            },
            "onboard_report_path": "",
        }
        return [_role_block(name, "entra.pim.onboard", role_vars)]
    if op == "offboard_role":
        role_vars = {"offboard_principal": user, "offboard_report_dir": str(workdir / "reports")}
        return [_role_block(name, "entra.pim.offboard", role_vars)]
    raise AssertionError(op)


def _role_block(name, role, role_vars):
    return {
        "name": name,
        "block": [{"name": name + " (role)", "ansible.builtin.include_role": {"name": role}, "vars": role_vars}],
        "rescue": [{"name": name + " rescued", "ansible.builtin.debug": {"msg": "rescued"}}],
    }


def control(name, method, path, body=None):
    args = {"method": method, "path": path}
    if body is not None:
        args["body"] = body
    return {"name": name, "sandbox_control": args}


def fault_play(fault: str, ctx: Ctx, workdir: Path) -> list[dict]:
    tasks = []
    for op in ops_for(fault):
        tasks.append(control("stats0 %s" % op, "GET", "/stats"))
        if fault == "sandbox_restart":
            tasks.append(control("slow %s" % op, "PATCH", "/settings", {"latency_ms": 300}))
            tasks.append({"name": "arm %s" % op, "sandbox_control": {"restart": True}})
        else:
            tasks.append(control("arm %s" % op, "POST", "/faults", {"rules": fault_rules(fault, op)}))
        tasks.extend(op_tasks(op, ctx, "apply", workdir))
        tasks.append(control("statsA %s" % op, "GET", "/stats"))
        tasks.append(control("faultsA %s" % op, "GET", "/faults"))
        tasks.append(control("stateA %s" % op, "GET", "/state"))
        tasks.append(control("disarm %s" % op, "DELETE", "/faults"))
        tasks.append(control("settle %s" % op, "PATCH", "/settings", {"latency_ms": 0}))
        tasks.extend(op_tasks(op, ctx, "rerun", workdir))
        tasks.append(control("statsB %s" % op, "GET", "/stats"))
    return tasks


class Restarter(threading.Thread):
    """Restarts the sandbox (same data dir and port) once the armed operation has sent a Graph request."""

    def __init__(self, sb: SandboxProc, marker: Path):
        super().__init__(daemon=True)
        self.sb, self.marker = sb, marker
        self.stop_event = threading.Event()
        self.restarted = []
        self.errors = []

    def run(self):
        while not self.stop_event.is_set():
            if not self.marker.exists():
                time.sleep(0.05)
                continue
            try:
                armed = json.loads(self.marker.read_text())
                self.marker.unlink()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not self.stop_event.is_set():
                    if self.sb.stats()["graph_requests"] > armed["after_graph_requests"]:
                        break
                    time.sleep(0.02)
                self.sb.restart()
                self.restarted.append(time.time())
            except Exception as exc:  # reported by the test, never swallowed
                self.errors.append(repr(exc))
                return


# ----------------------------------------------------------------------------- running a fault's play

_PLAYS: dict[str, dict] = {}


def run_fault(sb: SandboxProc, fault: str, tmp_root: Path) -> dict:
    if fault in _PLAYS:
        return _PLAYS[fault]
    sb.reset()
    ctx = Ctx(sb)
    ctx.setup_all()
    before = sb.state()
    workdir = tmp_root / fault
    workdir.mkdir(parents=True, exist_ok=True)
    marker = workdir / "restart.json"
    extra_env = {
        "HARDENING_CONTROL_URL": sb.control_url,
        "HARDENING_CA": sb.ca,
        "HARDENING_RESTART_FILE": str(marker),
        "ANSIBLE_ACTION_PLUGINS": str(Path(__file__).parent / "action_plugins"),
    }
    if fault == "sandbox_restart":
        # The sandbox is down for a second or two: allow enough (bounded) retries to span it.
        extra_env.update(ENTRA_PIM_MAX_RETRIES="10", ENTRA_PIM_MAX_RETRY_WAIT="1")
    restarter = Restarter(sb, marker) if fault == "sandbox_restart" else None
    if restarter:
        restarter.start()
    started = time.monotonic()
    proc = start_playbook(sb, workdir, fault_play(fault, ctx, workdir), extra_env=extra_env)
    try:
        result = finish_playbook(proc, workdir, timeout=600)
    finally:
        if restarter:
            restarter.stop_event.set()
            restarter.join(timeout=30)
    _PLAYS[fault] = {
        "ctx": ctx,
        "result": result,
        "before": before,
        "after": sb.state(),
        "seconds": time.monotonic() - started,
        "restarts": list(restarter.restarted) if restarter else [],
        "restart_errors": list(restarter.errors) if restarter else [],
    }
    return _PLAYS[fault]


@pytest.fixture(scope="module")
def plays_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fault-plays")


# ----------------------------------------------------------------------------- checking a cell


def _schedules(state, kind, principal, assignment_type="Assigned"):
    coll = "roleEligibilitySchedules" if kind == "eligibility" else "roleAssignmentSchedules"
    out = [s for s in state[coll] if s["principalId"] == principal]
    if kind == "assignment":
        out = [s for s in out if s.get("assignmentType") == assignment_type]
    return {next(n for n, i in ROLES.items() if i == s["roleDefinitionId"]): s for s in out}


def _end_of(schedule):
    exp = schedule["scheduleInfo"]["expiration"]
    if exp.get("endDateTime"):
        return _parse(exp["endDateTime"])
    return None


def _policy_rules(state, role):
    pid = next(a["policyId"] for a in state["roleManagementPolicyAssignments"] if a["roleDefinitionId"] == ROLES[role])
    policy = next(p for p in state["roleManagementPolicies"] if p["id"] == pid)
    return {r["id"]: r for r in policy["rules"]}


def desired_problems(op, ctx, state) -> list[str]:
    """Why the sandbox state is not the desired state of ``op`` (empty: it is)."""
    uid = ctx.users[op]
    end = _parse(ctx.end)
    problems = []
    elig = _schedules(state, "eligibility", uid)
    asg = _schedules(state, "assignment", uid)
    act = _schedules(state, "assignment", uid, "Activated")

    def has_end(s, what):
        got = _end_of(s)
        if got is None or abs((got - end).total_seconds()) > 60:
            problems.append("%s ends %s, wanted %s" % (what, got, ctx.end))

    if op in ("eligibility_create", "eligibility_update"):
        if set(elig) != {"Security Reader"}:
            problems.append("eligibilities %s" % sorted(elig))
        else:
            has_end(elig["Security Reader"], "eligibility")
    elif op == "eligibility_remove":
        if elig:
            problems.append("eligibilities left: %s" % sorted(elig))
    elif op in ("assignment_create", "assignment_update"):
        if set(asg) != {"Global Reader"}:
            problems.append("assignments %s" % sorted(asg))
        else:
            has_end(asg["Global Reader"], "assignment")
    elif op == "assignment_remove":
        if asg:
            problems.append("assignments left: %s" % sorted(asg))
    elif op == "activation":
        if set(act) != {"Helpdesk Administrator"}:
            problems.append("activations %s" % sorted(act))
    elif op == "deactivation":
        if act:
            problems.append("activations left: %s" % sorted(act))
    elif op == "policy_update":
        rules = _policy_rules(state, "Groups Administrator")
        if rules["Expiration_EndUser_Assignment"]["maximumDuration"] != "PT4H":
            problems.append("activation maximum %s" % rules["Expiration_EndUser_Assignment"]["maximumDuration"])
        if "Ticketing" not in rules["Enablement_EndUser_Assignment"]["enabledRules"]:
            problems.append("ticket not required: %s" % rules["Enablement_EndUser_Assignment"]["enabledRules"])
    elif op == "bulk_reconcile":
        if set(elig) != {"Security Reader"} or set(asg) != {"Global Reader"}:
            problems.append("eligible %s active %s" % (sorted(elig), sorted(asg)))
    elif op == "onboard_role":
        if set(elig) != {"Security Reader", "Global Reader"}:
            problems.append("eligibilities %s" % sorted(elig))
    elif op == "offboard_role" and (elig or asg):
        problems.append("left: eligible %s active %s" % (sorted(elig), sorted(asg)))
    return problems


def untouched_problems(op, ctx, before, after) -> list[str]:
    """Why ``op``'s part of the state changed (for a cell that ends in an error: nothing may be written)."""
    uid = ctx.users[op]
    if op == "policy_update":
        b = _policy_rules(before, "Groups Administrator")
        a = _policy_rules(after, "Groups Administrator")
        return [] if a == b else ["policy rules changed"]
    problems = []
    for coll in ("roleEligibilitySchedules", "roleAssignmentSchedules"):
        b = sorted(json.dumps(s, sort_keys=True) for s in before[coll] if s["principalId"] == uid)
        a = sorted(json.dumps(s, sort_keys=True) for s in after[coll] if s["principalId"] == uid)
        if a != b:
            problems.append("%s of the principal changed" % coll)
    return problems


def duplicate_problems(op, ctx, before, after) -> list[str]:
    """Requests the operation created more than once (same kind, action, role)."""
    uid = ctx.users[op]
    seen = {}
    for coll in ("roleEligibilityScheduleRequests", "roleAssignmentScheduleRequests"):
        old = {r["id"] for r in before[coll]}
        for r in after[coll]:
            if r["id"] in old or r["principalId"] != uid or r.get("isValidationOnly"):
                continue
            key = (coll, r["action"], r["roleDefinitionId"], r["status"])
            seen[key] = seen.get(key, 0) + 1
    return ["%s %s x%d" % (k[0], k[1], n) for k, n in seen.items() if n > 1]


def _task_records(result, label, op):
    """Results recorded between the task ``label op`` marks: module tasks and the role's inner tasks."""
    names = [n for n, dummy in result.tasks()]
    out = []
    start = None
    for i, n in enumerate(names):
        if n == "%s %s" % (label, op) or n == "%s %s (role)" % (label, op):
            start = i if start is None else start
    if start is None:
        return out
    end_marker = "statsA %s" % op if label == "apply" else "statsB %s" % op
    for n, r in result.tasks()[start:]:
        if n == end_marker:
            break
        out.append((n, r))
    return out


def _stat(result, name):
    return result.task(name)["json"]


def record_cell(matrix, row, col, outcome, detail):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / ("%s.jsonl" % matrix), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"row": row, "col": col, "outcome": outcome, "detail": detail}) + "\n")


class _FaultCells:
    """One class per fault (below), so ``--dist loadscope`` keeps a fault's play on one worker."""

    fault = ""

    def test_cell(self, sandbox, plays_dir, op):
        check_cell(sandbox, plays_dir, self.fault, op)


def pytest_generate_tests(metafunc):
    if metafunc.cls is not None and issubclass(metafunc.cls, _FaultCells):
        metafunc.parametrize("op", ops_for(metafunc.cls.fault))


for _fault in FAULTS:
    globals()["TestFault_" + _fault] = type("TestFault_" + _fault, (_FaultCells,), {"fault": _fault})


def check_cell(sandbox, plays_dir, fault, op):
    """One cell; its outcome (or the first line of why it failed) goes to the measured report."""
    try:
        outcome, detail = _check_cell(sandbox, plays_dir, fault, op)
    except AssertionError as exc:
        record_cell("faults", op, fault, "failed", str(exc).splitlines()[0][:300])
        raise
    record_cell("faults", op, fault, outcome, detail)


def _check_cell(sandbox, plays_dir, fault, op):
    play = run_fault(sandbox, fault, plays_dir)
    result, ctx = play["result"], play["ctx"]
    assert not play["restart_errors"], play["restart_errors"]
    applied = _task_records(result, "apply", op)
    rerun = _task_records(result, "rerun", op)
    assert applied, "no apply result for %s:\n%s" % (op, result.describe())
    failures = [r for _n, r in applied if r["_status"] == "failed"]
    stats0, stats_a, stats_b = (_stat(result, "%s %s" % (s, op)) for s in ("stats0", "statsA", "statsB"))
    faults_a = _stat(result, "faultsA %s" % op)

    # The fault really happened during the apply.
    if fault == "sandbox_restart":
        assert len(play["restarts"]) == len(ops_for(fault)), play["restarts"]
    else:
        hits = sum(r["hits"] for r in faults_a["rules"])
        assert hits >= 1, "the %s rule never fired for %s: %s" % (fault, op, faults_a)

    rerun_failures = [r for _n, r in rerun if r["_status"] == "failed"]
    assert not rerun_failures, "re-run failed: %s" % [r.get("msg") for r in rerun_failures]
    rerun_module = [r for _n, r in rerun if str(r.get("_action", "")).startswith("entra.pim.")]
    assert rerun_module, "no module result recorded for the re-run of %s" % op
    if fault not in EXPECT_ERROR:  # after a clear error the re-run is the one that converges
        assert total_writes(stats_b) == total_writes(stats_a), "re-run wrote: %s -> %s" % (
            stats_a["writes"],
            stats_b["writes"],
        )
        assert not any(r.get("changed") for r in rerun_module), "re-run reported a change"

    state_a = _stat(result, "stateA %s" % op)
    dups = duplicate_problems(op, ctx, play["before"], play["after"])
    assert not dups, "duplicate requests: %s" % dups
    final_problems = desired_problems(op, ctx, play["after"])
    assert not final_problems, "not converged after the re-run: %s" % final_problems

    if fault in EXPECT_ERROR:
        assert failures, "expected a clear error for %s under %s, got success" % (op, fault)
        msg = " ".join(str(r.get("msg", "")) for r in failures)
        assert "503" in msg, msg
        assert "gave up after %d attempts" % (MAX_RETRIES + 1) in msg, msg
        # Nothing of this operation was written while the fault lasted; the re-run did it.
        untouched = untouched_problems(op, ctx, play["before"], state_a)
        assert not untouched, "a failed apply changed state: %s" % untouched
        return "clear error", msg[:400]
    assert not failures, "apply failed under %s: %s" % (fault, [r.get("msg") for r in failures])
    problems = desired_problems(op, ctx, state_a)
    assert not problems, "the apply did not converge: %s" % problems
    writes = total_writes(stats_a) - total_writes(stats0) if fault != "sandbox_restart" else None
    return "converged", {"writes_during_apply": writes}
