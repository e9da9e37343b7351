"""What the module tests' in-memory Graph fakes share: the client interface, the filter matcher, the runner.

Each test file keeps its own ``FakeGraph`` (the routes and state it models differ: schedules
and activations, eligibilities, the self-activation state machine) on top of ``FakeClient``,
which answers the way ``GraphClient`` does: ``list``, ``post`` (a ``/cancel`` marks the
request), ``batch`` (items answered in order, errors as items) and ``raise_for_item``.

A plain module, not conftest.py: test files import it by name, and a second conftest module
on sys.path would be ambiguous when pytest is given files from several test folders.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, unquote

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError


def matches(flt, obj):
    """`a eq 'x'` clauses joined by `and` / `or` (no nesting): enough for what the modules send."""
    if not flt:
        return True
    literal = r"'((?:[^']|'')*)'"
    for alternative in re.split(r" or (?=\w+ eq ')", flt):
        ok = True
        for clause in re.split(r" and (?=\w+ eq ')", alternative):
            match = re.fullmatch(r"(\w+) eq " + literal, clause.strip())
            assert match, clause
            if str(obj.get(match.group(1)) or "").lower() != match.group(2).replace("''", "'").lower():
                ok = False
        if ok:
            return True
    return False


class FakeClient:
    """GraphClient's interface over ``_collection(path, params)`` (GETs) and ``_post(path, body)``.

    ``round_trips`` counts list/post/batch calls; ``writes`` records each write action.
    """

    graph_url = "https://fake.graph"
    canceled_status = "Canceled"  # what a cancelled request's status becomes

    def __init__(self):
        self.requests = []
        self.writes = []
        self.round_trips = 0

    def _collection(self, path, params):
        raise AssertionError("unexpected GET " + path)

    def _post(self, path, body):
        raise AssertionError("unexpected POST " + path)

    def _get_in_batch(self, path, params):
        """A GET inside $batch: a collection, unless a fake also answers single items."""
        return {"value": self._collection(path, params)}

    def list(self, path, params=None):
        self.round_trips += 1
        return list(self._collection(path, params))

    def get(self, path, params=None):
        raise AssertionError("modules use list() and batch()")

    def post(self, path, body, params=None, idempotent=False):
        self.round_trips += 1
        if path.endswith("/cancel"):
            rid = path.split("/")[-2]
            for r in self.requests:
                if r["id"] == rid:
                    r["status"] = self.canceled_status
            self.writes.append("cancel")
            return None
        return self._post(path, body)

    def batch(self, requests):
        self.round_trips += 1
        out = []
        for req in requests:
            path, _sep, query = req["url"].partition("?")
            params = {k: unquote(v) for k, v in parse_qsl(query, keep_blank_values=True)}
            try:
                post = req["method"] == "POST"
                body = self._post(path, req["body"]) if post else self._get_in_batch(path, params)
                out.append({"id": req["id"], "status": 200, "body": body})
            except GraphError as err:
                out.append({"id": req["id"], "status": err.status or 400, "body": {"error": {"code": err.code}}})
        return out

    def raise_for_item(self, resp):
        if resp["status"] >= 400:
            raise GraphError("item", status=resp["status"], code=resp["body"]["error"]["code"])
        return resp


def run(module, capsys, check_mode=False, diff=False, **args):
    """One task with client-secret style options (tenant_id defaults to "t"); see run_module."""
    args.setdefault("tenant_id", "t")
    return run_module(module, capsys, check_mode=check_mode, diff=diff, **args)


def run_module(module, capsys, check_mode=False, diff=False, **args):
    """One task: the module's main() with these options, its JSON result back (each task is a new process)."""
    args.update(_ansible_check_mode=check_mode, _ansible_diff=diff)
    _resolve._ROLE_CACHE.clear()
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)
