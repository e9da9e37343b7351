"""Run every integration target (tests/integration/targets/<name>/tasks/main.yml) as a play.

Each target runs as a role against a freshly reset sandbox, with the collection's
environment pointing at it (the same export lines `python -m pim_emulator env` prints).
Targets get these variables: ``sandbox`` (connection.json), ``sandbox_control_url``,
``sandbox_control_key`` and ``sandbox_ca``. The play sends the control key with every
``ansible.builtin.uri`` task (``module_defaults``), so a control call needs no header of its
own; a ``lookup('ansible.builtin.url', ...)`` of the control API passes
``headers={'X-PIM-Sandbox-Key': sandbox_control_key}``. A target passes when ansible-playbook exits 0; its own assert tasks check
behaviour, and the sandbox state is checked out of band inside the target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TARGETS_DIR = Path(__file__).parent / "targets"
ROOT = Path(__file__).resolve().parents[2]
TARGETS = sorted(p.parent.parent.name for p in TARGETS_DIR.glob("*/tasks/main.yml"))


@pytest.mark.parametrize("target", TARGETS)
def test_target(target, sandbox, tmp_path):
    sandbox.control("POST", "/reset")
    playbook = tmp_path / "play.yml"
    extra = {
        "sandbox": sandbox.conn,
        "sandbox_control_url": sandbox.control_url,
        "sandbox_control_key": sandbox.conn["control_key"],
        "sandbox_ca": sandbox.ca,
    }
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  connection: local\n"
        "  vars_files: [vars.json]\n"
        "  module_defaults:\n"
        "    ansible.builtin.uri:\n"
        "      headers: {X-PIM-Sandbox-Key: '{{ sandbox_control_key }}'}\n"
        "  roles: [%s]\n" % json.dumps(target)
    )
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = sandbox.playbook_env(tmp_path, ANSIBLE_ROLES_PATH=str(TARGETS_DIR))
    sandbox.ansible_playbook(tmp_path, playbook, timeout=900, env=env)
