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
import os
import subprocess
import sys
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
    env = dict(os.environ)
    env.update(sandbox.env())
    env.update(
        ANSIBLE_ROLES_PATH=str(TARGETS_DIR),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".tmp" / "collections"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        # Feed modules over stdin instead of temp files: several fewer processes per task.
        ANSIBLE_PIPELINING="1",
        ENTRA_PIM_TOKEN_CACHE_PATH=str(tmp_path / "token_cache.json"),
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail("target %s failed:\n%s\n%s" % (target, proc.stdout[-20000:], proc.stderr[-5000:]))
