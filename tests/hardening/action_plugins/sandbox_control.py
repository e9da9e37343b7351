# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only action: call the PIM sandbox's control API from a play, on the controller.

Used by the hardening matrix to arm and disarm fault rules between tasks without paying for a
module process. Arguments: ``method`` (default GET), ``path`` (under /_emulator), ``body``,
and ``restart: true`` (asks the pytest process that owns the sandbox to restart it once the
next Graph request arrives; see tests/hardening/test_fault_matrix.py). Reads
HARDENING_CONTROL_URL, HARDENING_CA and HARDENING_RESTART_FILE from the environment.

The control key (header X-PIM-Sandbox-Key) is read for every call from the connection.json
next to the CA bundle (both live in the sandbox's data directory): the sandbox makes a new key
at every start, and the matrix restarts it between tasks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests
from ansible.plugins.action import ActionBase


def _control_key(ca_bundle: str) -> str:
    """The key of the sandbox running now; waits (bounded) while a restart rewrites connection.json."""
    path = Path(ca_bundle).parent / "connection.json"
    deadline = time.monotonic() + 30
    while True:
        try:
            return json.loads(path.read_text(encoding="utf-8"))["control_key"]
        except (FileNotFoundError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        base = os.environ["HARDENING_CONTROL_URL"]
        verify = os.environ["HARDENING_CA"]
        headers = {"X-PIM-Sandbox-Key": _control_key(verify)}
        if args.get("restart"):
            stats = requests.get(base + "/stats", headers=headers, verify=verify, timeout=30).json()
            marker = os.environ["HARDENING_RESTART_FILE"]
            with open(marker + ".tmp", "w", encoding="utf-8") as handle:
                json.dump({"after_graph_requests": stats["graph_requests"], "at": time.time()}, handle)
            os.replace(marker + ".tmp", marker)
            result.update(changed=False, armed_restart=True)
            return result
        resp = requests.request(
            args.get("method", "GET"),
            base + args["path"],
            json=args.get("body"),
            headers=headers,
            verify=verify,
            timeout=30,
        )
        result["status"] = resp.status_code
        result["json"] = resp.json() if resp.content else None
        result["changed"] = False
        if resp.status_code >= 400:
            result.update(failed=True, msg="control API %s answered %d" % (args["path"], resp.status_code))
        return result
