"""Check mode shows the schedule the real run applies (issue 14 point 16), against the real sandbox.

An eligibility is created 60 days in the past (the sandbox clock is set back for that one write,
then reset), ending in 10 days. ``duration: P30D`` then differs from it; Graph applies the update
from now, so ``--check --diff`` must show an end 30 days from now (never start + 30 days, which is
in the past), and that end must be what the real run sends and what Graph then holds.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
ALICE = "10000000-0000-4000-8000-000000000002"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"


def _fmt(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(text):
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def _play(sandbox, tmp_path, task, *args):
    """One module task (with ``args`` such as --check), its result back through a file the play writes."""
    out = tmp_path / "result.json"
    out.unlink(missing_ok=True)
    tasks = [
        dict(task, register="result"),
        {
            "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out), "mode": "0600"},
            "check_mode": False,
            "diff": False,
        },
    ]
    playbook = tmp_path / "play.json"
    playbook.write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": tasks}])
    )
    sandbox.ansible_playbook(tmp_path, playbook, *args, timeout=300)
    return json.loads(out.read_text())


def _eligibility(sandbox):
    state = sandbox.control("GET", "/state")
    found = [
        s
        for s in state["roleEligibilitySchedules"]
        if s["principalId"] == ALICE and s["roleDefinitionId"] == USER_ADMIN and s.get("status") == "Provisioned"
    ]
    assert len(found) == 1, found
    return found[0]["scheduleInfo"]


def test_check_mode_shows_what_the_real_run_applies(sandbox, tmp_path):
    sandbox.control("POST", "/reset")
    began = datetime.now(UTC) - timedelta(days=60)
    # Out of band, with the sandbox's clock 60 days back: the eligibility began then.
    body = {
        "action": "adminAssign",
        "principalId": ALICE,
        "roleDefinitionId": USER_ADMIN,
        "directoryScopeId": "/",
        "justification": "setup",
        "scheduleInfo": {
            "expiration": {"type": "afterDateTime", "endDateTime": _fmt(began + timedelta(days=70))},
        },
    }
    sandbox.control("POST", "/clock", json={"set": _fmt(began)})
    try:
        token = sandbox.control("POST", "/tokens", json={})["access_token"]
        resp = requests.post(
            sandbox.conn["graph_url"] + "/v1.0/roleManagement/directory/roleEligibilityScheduleRequests",
            json=body,
            headers={"Authorization": "Bearer " + token},
            verify=sandbox.ca,
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
    finally:
        sandbox.control("POST", "/clock", json={"reset": True})
    assert abs(_utc(_eligibility(sandbox)["startDateTime"]) - began) < timedelta(minutes=5)

    task = {
        "entra.pim.pim_role_eligibility": {
            "principal": "alice@contoso.example",
            "role": "User Administrator",
            "duration": "P30D",
        }
    }
    before = datetime.now(UTC)
    check = _play(sandbox, tmp_path, task, "--check", "--diff")
    assert check["changed"] and check["diff"]["before"]["end"] != check["diff"]["after"]["end"]
    planned_end = _utc(check["diff"]["after"]["end"])
    assert planned_end > before + timedelta(days=29)  # from now, not from the start 60 days ago
    assert abs(sched.window_from_schedule_info(_eligibility(sandbox)).end - (began + timedelta(days=70))) < timedelta(
        minutes=5
    )  # check mode wrote nothing

    real = _play(sandbox, tmp_path, task, "--diff")
    sent = real["request"]["schedule_info"]
    assert abs(_utc(sent["start_date_time"]) - _utc(check["diff"]["after"]["start"])) < timedelta(minutes=2)
    held = _eligibility(sandbox)
    held_end = sched.window_from_schedule_info(held).end
    # what check mode showed is what Graph holds after the real run, to the minute the two runs are apart
    assert abs(held_end - planned_end) < timedelta(minutes=2)
    assert abs(_utc(real["diff"]["after"]["end"]) - held_end) <= timedelta(seconds=60)
    # and it holds: nothing more to change
    assert not _play(sandbox, tmp_path, task)["changed"]
