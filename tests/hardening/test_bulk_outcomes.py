"""Bulk outcomes as Graph holds them (issue 14 points 12 and 14), through ``ansible-playbook``.

* Combined faults: one ``pim_access`` run of 100 items (70 adds, 20 updates, 10 purge removals)
  while the sandbox loses ``$batch`` answers after committing, answers write items 429/503/504,
  resets connections and fails some re-reads. For every item, its reported status is compared with
  what Graph holds, read out of band (``GET /_emulator/state``): applied/confirmed/unchanged ⇒ held as
  desired, failed ⇒ not held, unknown ⇒ counted apart. The run is repeated with several fault seeds
  (bounded) and the three tallies (mismatches, duplicates, lost acknowledged writes) are recorded
  for tests/hardening/report.py (docs/reliability.md).
* Parallel writers: two identical tasks run at the same moment (two ``ansible-playbook``
  processes that meet at a file barrier, with sandbox latency so both read before either writes);
  exactly one reports ``changed``.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROLES, ROOT, finish_playbook, run_playbook, start_playbook

RESULTS_DIR = ROOT / ".tmp" / "hardening-results"
ROLE = "Security Reader"
N_ADD, N_UPDATE, N_REMOVE = 70, 20, 10
SEEDS = (11, 23, 37)
HELD_STATUSES = ("applied", "confirmed", "unchanged")


def _iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _users(sb, prefix, count):
    now = _parse(sb.control("GET", "/clock")["now"])
    out = []
    for i in range(count):
        obj = sb.control(
            "POST",
            "/objects",
            json={
                "type": "user",
                "displayName": "%s %03d" % (prefix, i),
                "userPrincipalName": "%s-%03d@contoso.example" % (prefix, i),
                "createdAt": _iso(now - timedelta(hours=1)),
            },
        )
        out.append((obj["userPrincipalName"], obj["id"]))
    return out


def _eligible(sb, token, principal_id, duration):
    body = {
        "action": "adminAssign",
        "principalId": principal_id,
        "roleDefinitionId": ROLES[ROLE],
        "directoryScopeId": "/",
        "justification": "setup",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": duration}},
    }
    sb.graph("POST", "/v1.0/roleManagement/directory/roleEligibilityScheduleRequests", body, token=token)


def combined_rules():
    """Every fault at once, by rate (seeded): on write items, on whole $batch requests and on re-reads."""
    write_item = {"method": "POST", "path": "roleEligibilityScheduleRequests$"}
    return [
        {"kind": "lost_response", "rate": 0.08, "scope": "batch_item", "match": write_item},
        {"kind": "504", "rate": 0.06, "match": write_item},
        {"kind": "503", "rate": 0.06, "match": write_item},
        {"kind": "429", "rate": 0.06, "retry_after": 1, "match": write_item},
        {"kind": "reset", "rate": 0.1, "match": {"method": "POST", "path": r"\$batch$"}},
        {"kind": "503", "rate": 0.1, "match": {"method": "GET", "path": "roleEligibilitySchedules$"}},
    ]


def held(state, principal_id):
    """The principal's live eligibilities of ROLE in Graph (the sandbox store), read out of band."""
    return [
        s
        for s in state["roleEligibilitySchedules"]
        if s["principalId"] == principal_id and s["roleDefinitionId"] == ROLES[ROLE]
    ]


def _end(schedule):
    exp = schedule["scheduleInfo"]["expiration"]
    return _parse(exp["endDateTime"]) if exp.get("endDateTime") else None


def tally(changes, users, before, after, end):
    """Compare every reported item with Graph. Returns the tallies and the first problems found."""
    by_id = {c["principal_id"]: c for c in changes}
    old_requests = {r["id"] for r in before["roleEligibilityScheduleRequests"]}
    out = {
        "items": 0,
        "mismatches": 0,
        "failed_but_applied": 0,
        "lost_acknowledged": 0,
        "duplicates": 0,
        "unknown": 0,
        "statuses": {},
    }
    problems = []
    for kind, group in users.items():
        for upn, pid in group:
            entry = by_id.get(pid)
            out["items"] += 1
            if entry is None:
                out["mismatches"] += 1
                problems.append("%s (%s): not reported" % (upn, kind))
                continue
            status = entry["status"]
            out["statuses"][status] = out["statuses"].get(status, 0) + 1
            schedules = held(after, pid)
            if len(schedules) > 1:
                out["duplicates"] += 1
                problems.append("%s: %d schedules" % (upn, len(schedules)))
            if kind == "remove":
                as_desired = not schedules
            else:
                as_desired = len(schedules) == 1 and abs((_end(schedules[0]) - end).total_seconds()) <= 60
            if status == "unknown":
                out["unknown"] += 1
            elif status in HELD_STATUSES and not as_desired:
                out["mismatches"] += 1
                out["lost_acknowledged"] += 1
                problems.append("%s (%s): reported %s, Graph holds %s" % (upn, kind, status, schedules))
            elif status not in HELD_STATUSES and as_desired:
                out["mismatches"] += 1
                out["failed_but_applied"] += 1
                problems.append("%s (%s): reported %s (%s), but Graph holds it" % (upn, kind, status, entry["error"]))
            accepted = {}
            for req in after["roleEligibilityScheduleRequests"]:
                if req["id"] not in old_requests and req["principalId"] == pid:
                    accepted[req["action"]] = accepted.get(req["action"], 0) + 1
            if any(n > 1 for n in accepted.values()):
                out["duplicates"] += 1
                problems.append("%s: requests created twice %s" % (upn, accepted))
    return out, problems


def record(seed, tallies, detail):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "combined.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"seed": seed, "tallies": tallies, "detail": detail}) + "\n")


@pytest.mark.parametrize("seed", SEEDS)
def test_combined_faults_every_outcome_is_what_graph_holds(sandbox, tmp_path, seed):
    sb = sandbox
    sb.reset()
    token = sb.token()
    users = {
        "add": _users(sb, "cf%d-add" % seed, N_ADD),
        "update": _users(sb, "cf%d-upd" % seed, N_UPDATE),
        "remove": _users(sb, "cf%d-rm" % seed, N_REMOVE),
    }
    for _upn, pid in users["update"]:
        _eligible(sb, token, pid, "P30D")
    for _upn, pid in users["remove"]:
        _eligible(sb, token, pid, "P30D")
    end = _parse(sb.control("GET", "/clock")["now"]) + timedelta(days=90)
    grants = [
        {"principal": upn, "role": ROLE, "type": "eligible", "end": _iso(end)}
        for upn, _pid in users["add"] + users["update"]
    ]
    every = [upn for group in users.values() for upn, _pid in group]
    task = {
        "name": "bulk under combined faults",
        "entra.pim.pim_access": {
            "grants": grants,
            "boundary": {"principals": every, "roles": [ROLE], "types": ["eligible"]},
            "purge": True,
            "justification": "combined faults",
        },
        "ignore_errors": True,
    }
    before = sb.state()
    sb.settings(fault_seed=seed)
    sb.faults(combined_rules())
    sb.control("POST", "/stats/reset")
    try:
        result = run_playbook(sb, tmp_path / "apply", [task], timeout=600)
    finally:
        faults = sb.control("GET", "/faults")
        sb.control("DELETE", "/faults")
    after = sb.state()
    records = [r for name, r in result.tasks() if name == task["name"]]
    assert records, result.describe()
    outcome = records[-1]
    assert "changes" in outcome, "no per-item result: %s" % outcome.get("msg")
    fired = {r["kind"]: r["hits"] for r in faults["rules"]}
    assert sum(fired.values()) >= 5, "the faults hardly fired: %s" % faults["rules"]

    tallies, problems = tally(outcome["changes"], users, before, after, end)
    tallies["faults_fired"] = faults.get("injected")
    record(seed, tallies, problems[:5])
    assert tallies["items"] == N_ADD + N_UPDATE + N_REMOVE
    assert not problems, "%s\n%s" % (tallies, "\n".join(problems[:20]))
    assert tallies["mismatches"] == tallies["duplicates"] == tallies["lost_acknowledged"] == 0
    for entry in outcome["changes"]:
        if entry["status"] == "unknown":
            assert "the answer was lost" in entry["error"]

    # Without faults a re-run converges and changes nothing that was reported done.
    rerun = dict(task, name="bulk re-run")
    again = run_playbook(sb, tmp_path / "rerun", [rerun], timeout=300)
    second = [r for name, r in again.tasks() if name == "bulk re-run"][-1]
    assert second["_status"] == "ok", second.get("msg")
    redone = [c for c in second["changes"] if c["action"] != "none"]
    done_before = {c["principal_id"] for c in outcome["changes"] if c["status"] in HELD_STATUSES}
    assert not [c for c in redone if c["principal_id"] in done_before], redone[:3]


# ----------------------------------------------------------------------------- parallel writers


def _barrier_tasks(workdir: Path, me: str, other: str) -> list[dict]:
    """Each play marks itself ready, then waits (bounded) for the other: both modules start together."""
    return [
        {"name": "ready", "ansible.builtin.file": {"path": str(workdir.parent / me), "state": "touch"}},
        {"name": "wait", "ansible.builtin.wait_for": {"path": str(workdir.parent / other), "timeout": 120}},
    ]


def _parallel(sb, tmp_path, attempt, task_for):
    """Run the task in two plays at once. Returns (results, writes to ScheduleRequests) of the attempt."""
    base = tmp_path / ("attempt%d" % attempt)
    procs = []
    for me, other in (("a", "b"), ("b", "a")):
        workdir = base / me
        tasks = _barrier_tasks(workdir, me, other) + [task_for()]
        procs.append((workdir, start_playbook(sb, workdir, tasks)))
    results = [finish_playbook(proc, workdir, timeout=300) for workdir, proc in procs]
    return results


def _write_task(module, args):
    return {"name": "the write", "entra.pim." + module: args}


@pytest.mark.parametrize("module", ["pim_role_eligibility", "pim_access"])
def test_two_identical_tasks_in_parallel_exactly_one_reports_changed(sandbox, tmp_path, module):
    sb = sandbox
    sb.reset()
    # Latency on every Graph request: both plays read (absent) before either writes, so the second
    # writer meets RoleAssignmentExists. The race is checked (two writes reached Graph), and retried
    # a bounded number of times on a machine too busy to start both modules within the latency.
    sb.settings(latency_ms=2500)
    try:
        for attempt in range(3):
            ((upn, pid),) = _users(sb, "race%s%d" % (module[-4:], attempt), 1)
            if module == "pim_role_eligibility":
                args = {"principal": upn, "role": ROLE, "duration": "P30D", "justification": "race"}
            else:
                args = {
                    "grants": [{"principal": upn, "role": ROLE, "duration": "P30D"}],
                    "boundary": {"principals": [upn]},
                    "justification": "race",
                }

            task_for = functools.partial(_write_task, module, args)

            sb.control("POST", "/stats/reset")
            results = _parallel(sb, tmp_path, attempt, task_for)
            stats = sb.stats()
            outcomes = []
            for result in results:
                found = [r for name, r in result.tasks() if name == "the write"]
                assert found, result.describe()
                outcomes.append(found[-1])
            writes = sum(n for route, n in stats["writes"].items() if route.endswith("roleEligibilityScheduleRequests"))
            if writes < 2:
                continue  # one play wrote before the other read: no race this time
            assert [o["_status"] for o in outcomes] == ["ok", "ok"], [o.get("msg") for o in outcomes]
            assert sorted(bool(o["changed"]) for o in outcomes) == [False, True], outcomes
            state = sb.state()
            assert len(held(state, pid)) == 1
            accepted = [r for r in state["roleEligibilityScheduleRequests"] if r["principalId"] == pid]
            assert len(accepted) == 1, accepted  # one write made it; the other was Graph's RoleAssignmentExists
            unchanged = next(o for o in outcomes if not o["changed"])
            if module == "pim_access":
                assert unchanged["changes"][0]["status"] == "unchanged"
                assert "already there" in unchanged["changes"][0]["reasons"][0]
            else:
                assert "already there" in unchanged["changes"][0]
            return
        pytest.fail("the two plays never raced (each time one wrote before the other read)")
    finally:
        sb.settings(latency_ms=0)
