"""_bulk: the pure helpers, and whole reconciliations against an in-memory fake of Graph.

The fake answers the routes pim_access uses (role list, packed user lookups, getByIds,
schedule and request lists with $filter, schedule requests, cancel), pages at 100, applies
writes the way the sandbox does (notes §3.1, §8), counts $batch round trips, and can lose a
chunk's answer after carrying it out (notes §6.2) or answer an item 504.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _bulk, _pim, _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError, PimError

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc)
GA = "62e90394-69f5-4237-9190-012177145e10"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
HELPDESK_ADMIN = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
ROLES = [
    {"id": GA, "displayName": "Global Administrator", "templateId": GA, "isBuiltIn": True},
    {"id": USER_ADMIN, "displayName": "User Administrator", "templateId": USER_ADMIN, "isBuiltIn": True},
    {"id": HELPDESK_ADMIN, "displayName": "Helpdesk Administrator", "templateId": HELPDESK_ADMIN, "isBuiltIn": True},
]
ROLE_UA = _resolve.Role(USER_ADMIN, "User Administrator", USER_ADMIN, True)
PAGE = 100
SALES_AU = "50000000-0000-4000-8000-000000000001"
BASE = "/roleManagement/directory/"


def user(i):
    return {
        "@odata.type": "#microsoft.graph.user",
        "id": "10000000-0000-4000-8000-%012d" % i,
        "displayName": "User %d" % i,
        "userPrincipalName": "u%d@contoso.example" % i,
        "mail": "u%d@contoso.example" % i,
    }


SP = {
    "@odata.type": "#microsoft.graph.servicePrincipal",
    "id": "30000000-0000-4000-8000-000000000001",
    "displayName": "Deploy Pipeline",
    "appId": "40000000-0000-4000-8000-000000000001",
}

_LITERAL = r"'((?:[^']|'')*)'"


def _values(text):
    return [m.replace("''", "'") for m in re.findall(_LITERAL, text)]


def matches(flt, obj):
    """Clauses `f eq 'x'` / `f in ('x','y')` joined by all-`and` or all-`or` (what _bulk and _pim send)."""
    if not flt:
        return True
    joiner = " and " if re.search(r"' and \w", flt) else " or "
    results = []
    for clause in re.split(r"(?<=[')]) (?:and|or) (?=\w+ (?:eq|in) )", flt):
        match = re.fullmatch(r"(\w+) (eq|in) (.*)", clause.strip())
        assert match, clause
        field, _op, rest = match.groups()
        wanted = {v.lower() for v in _values(rest)}
        results.append(str(obj.get(field) or "").lower() in wanted)
    return all(results) if joiner == " and " else any(results)


class FakeGraph:
    graph_url = "https://fake.graph"
    auth_method = "client_secret"

    def __init__(self, users=0):
        self.objects = {u["id"]: u for u in (user(i) for i in range(users))}
        self.objects[SP["id"]] = SP
        self.schedules = {"eligibility": [], "assignment": []}
        self.requests = {"eligibility": [], "assignment": []}
        self.batches = 0
        self.plain = 0
        self.writes = 0
        self.lose_write_chunks = 0  # how many chunks of writes lose their answer after being carried out
        self.fail_items = {}  # (principal id, action) -> (status, code)
        self.drop_write_chunks = 0  # how many chunks of writes are lost before Graph runs them
        self.fail_schedule_reads = 0  # how many schedule reads (batch items) after the first write answer 503
        self.race = {}  # principal id -> scheduleInfo another writer gives it just before our write
        # role id -> (isExpirationRequired, maximumDuration) of Expiration_Admin_Eligibility and _Assignment
        self.expiry = {}
        self.policy_reads = 0
        self.units = {SALES_AU}  # administrative unit ids
        self.add_assignment("10000000-0000-4000-8000-999999999999", GA)  # the tenant's only GA

    # ------------------------------------------------------------ state helpers

    def add_assignment(self, pid, rid, assignment_type="Assigned", member_type="Direct"):
        self._add("assignment", pid, rid, None, member_type, assignmentType=assignment_type)

    def add_eligibility(self, pid, rid, end=None, member_type="Direct"):
        self._add("eligibility", pid, rid, end, member_type)

    def _add(self, kind, pid, rid, end, member_type, **extra):
        exp = {"type": "afterDateTime", "endDateTime": end} if end else {"type": "noExpiration"}
        schedule = {
            "id": str(uuid.uuid4()),
            "principalId": pid,
            "roleDefinitionId": rid,
            "directoryScopeId": "/",
            "memberType": member_type,
            "status": "Provisioned",
            "scheduleInfo": {"startDateTime": "2026-01-01T00:00:00Z", "expiration": exp},
        }
        self.schedules[kind].append(dict(schedule, **extra))

    def keys(self, kind):
        return sorted((s["principalId"], s["roleDefinitionId"]) for s in self.schedules[kind])

    # ------------------------------------------------------------ the client interface

    def list(self, path, params=None):
        self.plain += 1
        body = self._get(path, params or {})
        items = list(body["value"])
        while body.get("@odata.nextLink"):
            self.plain += 1
            body = self._get_url(body["@odata.nextLink"])
            items.extend(body["value"])
        return items

    def post(self, path, body, params=None, idempotent=False):
        self.plain += 1
        status, answer = self._dispatch("POST", path, {}, body)
        if status >= 400:
            raise GraphError("refused", status=status, code=answer["error"]["code"])
        return answer

    def raise_for_item(self, resp):
        status = int(resp.get("status") or 0)
        if 200 <= status < 400:
            return resp
        err = (resp.get("body") or {}).get("error") or {}
        raise GraphError("Graph answered %d %s" % (status, err.get("code")), status=status, code=err.get("code"))

    def batch(self, requests):
        assert len(requests) <= 20
        self.batches += 1
        writes = any(r["method"] == "POST" and "ScheduleRequests" in r["url"] for r in requests)
        if self.drop_write_chunks and writes:
            self.drop_write_chunks -= 1
            raise GraphError("lost before it ran", code="ResponseLost")
        out = []
        for req in requests:
            reread = self.writes and req["method"] == "GET" and "Schedules?" in req["url"]
            if self.fail_schedule_reads and reread:
                self.fail_schedule_reads -= 1
                error = {"error": {"code": "serviceNotAvailable", "message": "try later"}}
                out.append({"id": req["id"], "status": 503, "headers": {}, "body": error})
                continue
            status, body = self._dispatch(req["method"], req["url"], None, req.get("body"))
            out.append({"id": req["id"], "status": status, "headers": {}, "body": body})
        if self.lose_write_chunks and any(r["method"] == "POST" and "ScheduleRequests" in r["url"] for r in requests):
            self.lose_write_chunks -= 1
            raise GraphError("lost", code="ResponseLost")
        return out

    # ------------------------------------------------------------ routes

    def _get_url(self, url):
        parts = urlsplit(url)
        path = unquote(parts.path)
        if path.startswith("/v1.0"):
            path = path[len("/v1.0") :]
        return self._get(path, dict(parse_qsl(parts.query)))

    def _page(self, path, items, params):
        skip = int(params.get("$skiptoken") or 0)
        body = {"value": items[skip : skip + PAGE]}
        if skip + PAGE < len(items):
            rest = {k: v for k, v in params.items() if k != "$skiptoken"}
            rest["$skiptoken"] = str(skip + PAGE)
            body["@odata.nextLink"] = self.graph_url + "/v1.0" + _resolve.encode_url(path, rest)
        return body

    def _get(self, path, params):
        flt = params.get("$filter")
        if path == BASE + "roleDefinitions":
            return self._page(path, ROLES, params)
        if path in ("/users", "/groups", "/servicePrincipals"):
            kind = {"/users": "user", "/groups": "group", "/servicePrincipals": "servicePrincipal"}[path]
            items = [o for o in self.objects.values() if o["@odata.type"].endswith(kind) and matches(flt, o)]
            return self._page(path, items, params)
        for kind in ("eligibility", "assignment"):
            noun = "Eligibility" if kind == "eligibility" else "Assignment"
            if path == BASE + "role%sSchedules" % noun:
                return self._page(path, [s for s in self.schedules[kind] if matches(flt, s)], params)
            if path == BASE + "role%sScheduleRequests" % noun:
                return self._page(path, [r for r in self.requests[kind] if matches(flt, r)], params)
        if path == "/policies/roleManagementPolicyAssignments":
            role_id = _values(flt)[-1]
            self.policy_reads += 1
            required, maximum = self.expiry.get(role_id, (False, "P365D"))
            rules = [
                {"id": "Expiration_Admin_%s" % level, "isExpirationRequired": required, "maximumDuration": maximum}
                for level in ("Eligibility", "Assignment")
            ]
            return {"value": [{"roleDefinitionId": role_id, "policy": {"rules": rules}}]}
        raise AssertionError("unexpected GET " + path)

    def _dispatch(self, method, url, params, body):
        parts = urlsplit(url)
        path = unquote(parts.path)
        if method == "GET" and path.startswith("/directory/administrativeUnits/"):
            unit = path.rsplit("/", 1)[-1]
            if unit in self.units:
                return 200, {"id": unit}
            return 404, {
                "error": {"code": "Request_ResourceNotFound", "message": "Resource '%s' does not exist" % unit}
            }
        if method == "GET":
            return 200, self._get(path, dict(parse_qsl(parts.query)))
        if path == "/directoryObjects/getByIds":
            return 200, {"value": [self.objects[i] for i in body["ids"] if i in self.objects]}
        self.writes += 1
        match = re.fullmatch(BASE + r"role(Eligibility|Assignment)ScheduleRequests(?:/([^/]+)/cancel)?", path)
        assert match, path
        kind = match.group(1).lower().replace("eligibility", "eligibility")
        kind = "eligibility" if match.group(1) == "Eligibility" else "assignment"
        if match.group(2):
            for req in self.requests[kind]:
                if req["id"] == match.group(2):
                    req["status"] = "Revoked" if kind == "eligibility" else "Canceled"
                    # Cancelling a Granted request takes away the schedule it created (emulator README, Cancel).
                    self.schedules[kind] = [s for s in self.schedules[kind] if s.get("createdUsing") != req["id"]]
            return 204, None
        return self._request(kind, body)

    def _request(self, kind, body):
        scope = body["directoryScopeId"]
        if scope.startswith("/administrativeUnits/") and scope.rsplit("/", 1)[-1] not in self.units:
            return 400, {"error": {"code": "BadRequest", "message": "Invalid directoryScopeId '%s'" % scope}}
        if body["principalId"] in self.race:
            # Another writer (the same task in parallel) gets there first.
            info = self.race.pop(body["principalId"])
            self._add(kind, body["principalId"], body["roleDefinitionId"], None, "Direct")
            self.schedules[kind][-1]["scheduleInfo"] = info
            if kind == "assignment":
                self.schedules[kind][-1]["assignmentType"] = "Assigned"
        key = (body["principalId"], body["action"])
        if key in self.fail_items:
            status, code = self.fail_items.pop(key)
            return status, {"error": {"code": code, "message": code}}
        same = [
            s
            for s in self.schedules[kind]
            if s["principalId"] == body["principalId"]
            and s["roleDefinitionId"] == body["roleDefinitionId"]
            and s["directoryScopeId"] == body["directoryScopeId"]
            and s["memberType"] == "Direct"
            and s.get("assignmentType", "Assigned") == "Assigned"
        ]
        action = body["action"]
        rid = str(uuid.uuid4())
        if action == "adminAssign":
            if same:
                return 400, {
                    "error": {"code": "RoleAssignmentExists", "message": "The Role assignment already exists."}
                }
            sched = dict(
                id=rid,
                principalId=body["principalId"],
                roleDefinitionId=body["roleDefinitionId"],
                directoryScopeId=body["directoryScopeId"],
                memberType="Direct",
                status="Provisioned",
                scheduleInfo=body["scheduleInfo"],
            )
            if kind == "assignment":
                sched["assignmentType"] = "Assigned"
            self.schedules[kind].append(sched)
        elif action == "adminUpdate":
            if not same:
                return 400, {"error": {"code": "RoleAssignmentDoesNotExist", "message": "does not exist"}}
            same[0]["scheduleInfo"] = body["scheduleInfo"]
        elif action == "adminRemove":
            # An administrator's removal ends an activation too (emulator README, adminRemove).
            same = same or [
                s
                for s in self.schedules[kind]
                if s["principalId"] == body["principalId"]
                and s["roleDefinitionId"] == body["roleDefinitionId"]
                and s["directoryScopeId"] == body["directoryScopeId"]
                and s["memberType"] == "Direct"
            ]
            if not same:
                return 400, {"error": {"code": "RoleAssignmentDoesNotExist", "message": "does not exist"}}
            self.schedules[kind].remove(same[0])
        req = dict(body, id=rid, status="Revoked" if action == "adminRemove" else "Provisioned")
        self.requests[kind].append(req)
        return 201, req


@pytest.fixture(autouse=True)
def no_role_cache():
    _resolve._ROLE_CACHE.clear()
    yield
    _resolve._ROLE_CACHE.clear()


def params(**kw):
    base = dict(
        grants=[],
        boundary={},
        purge=False,
        protected_principals=[],
        protect_last_global_admin=True,
        fail_fast=True,
        justification="unit test",
        ticket_number=None,
        ticket_system=None,
    )
    base.update(kw)
    return base


def grant(i, role="User Administrator", **kw):
    out = dict(principal="u%d@contoso.example" % i, principal_type="auto", role=role, directory_scope="/")
    out.update(type="eligible", duration="P180D")
    out.update(kw)
    return out


def run(fake, check_mode=False, diff_mode=False, **kw):
    return _bulk.reconcile(
        fake, params(**kw), check_mode=check_mode, diff_mode=diff_mode, now=NOW, sleep=lambda s: None
    )


# ------------------------------------------------------------------ pure helpers


def test_pack_values_dedupes_case_insensitively_and_groups_by_15():
    values = ["B@x", "a@x", "b@X"] + ["u%02d@x" % i for i in range(30)]
    groups = _bulk.pack_values(values)
    assert [len(g) for g in groups] == [15, 15, 2]
    assert sum(1 for g in groups for v in g if v.lower() == "b@x") == 1


def test_in_filter_quotes_every_value_and_uses_eq_for_one():
    assert _bulk.in_filter(("userPrincipalName",), ["o'brien@x"]) == "userPrincipalName eq 'o''brien@x'"
    text = _bulk.in_filter(("userPrincipalName", "mail"), ["a@x", "x' or 1 eq 1"])
    assert text == "userPrincipalName in ('a@x','x'' or 1 eq 1') or mail in ('a@x','x'' or 1 eq 1')"


@pytest.mark.parametrize(
    "value, ptype",
    [
        ("alice@contoso.example", "auto"),
        ("alice@contoso.example", "user"),
        ("alice@contoso.example", "group"),
        ("PIM-Helpdesk", "auto"),
        ("Alice Anders", "user"),
        ("Deploy Pipeline", "service_principal"),
        ("10000000-0000-4000-8000-000000000002", "auto"),
        ("10000000-0000-4000-8000-000000000002", "group"),
    ],
)
def test_lookup_shape_mirrors_the_resolver(value, ptype):
    """The packed lookups ask the same collections as Resolver.principal_requests (no second resolver)."""
    kinds = [k for k, dummy in _resolve.Resolver(None).principal_requests(value, ptype)]
    assert [k for k, _c, _f in _bulk._lookup_shape(value, ptype)] == kinds


def test_choose_read_strategy_by_cost():
    # onboarding one person: one filtered read per type
    assert _bulk.choose_read_strategy(1, 3, 2, 3)[0] == "principal"
    # nightly job over 5 roles and 1000 grants: role-sliced pages in parallel
    assert _bulk.choose_read_strategy(None, 5, 1, 1000) == ("role", 3)
    # 1000 principals but only 5 roles: per-principal would cost 51 round trips
    assert _bulk.choose_read_strategy(1000, 5, 1, 1000)[0] == "role"
    # an unbounded boundary: the whole collection, paged
    assert _bulk.choose_read_strategy(None, None, 2, 40) == ("whole", 1)


def test_in_boundary_each_dimension():
    b = _bulk.Boundary({"p1"}, {"r1"}, {"/"}, {"eligibility"})
    assert _bulk.in_boundary(b, "eligibility", "P1", "R1", None)
    assert not _bulk.in_boundary(b, "assignment", "p1", "r1", "/")
    assert not _bulk.in_boundary(b, "eligibility", "p2", "r1", "/")
    assert not _bulk.in_boundary(b, "eligibility", "p1", "r2", "/")
    assert not _bulk.in_boundary(b, "eligibility", "p1", "r1", "/administrativeUnits/x")
    assert _bulk.in_boundary(_bulk.Boundary(None, None, None, {"eligibility"}), "eligibility", "a", "b", "/x")


def test_parse_grants_reports_each_bad_item_and_falls_back_to_task_values():
    grants, errors = _bulk.parse_grants(
        [
            dict(principal="a@x", role="r", duration="P1M"),
            dict(principal="b@x", role="r", end="2026-01-01T00:00:00Z", duration="P1D"),
            dict(principal="c@x", role="r", ticket_number="1"),
            dict(principal="d@x", role="r"),
        ],
        {"justification": "task", "ticket_number": None, "ticket_system": None},
        NOW,
    )
    assert set(errors) == {0, 1, 2}
    assert "months" in errors[0]
    assert "cannot be combined" in errors[1]
    assert "together" in errors[2]
    assert grants[3].desired.justification == "task"
    assert grants[3].type == "eligible"


@pytest.mark.parametrize("blank", ["", "   "])
def test_parse_grants_refuses_an_empty_directory_scope_per_item(blank):
    """Issue 14, point 3: '' used to become '/', a tenant-wide grant; an omitted scope still is '/'."""
    grants, errors = _bulk.parse_grants(
        [dict(principal="a@x", role="r", directory_scope=blank), dict(principal="b@x", role="r")],
        {"justification": None, "ticket_number": None, "ticket_system": None},
        NOW,
    )
    assert set(errors) == {0} and errors[0].startswith("directory_scope is empty")
    assert grants[1].directory_scope == "/"


# ------------------------------------------------------------------ whole runs against the fake


def test_first_apply_and_rerun_round_trips_and_state():
    fake = FakeGraph(users=100)
    grants = [grant(i, role=ROLES[1 + i % 2]["displayName"]) for i in range(100)]
    boundary = {"roles": ["User Administrator", "Helpdesk Administrator"], "types": ["eligible"]}
    check = run(fake, check_mode=True, grants=grants, boundary=boundary, purge=True)
    assert check["summary"]["added"] == 100 and fake.writes == 0
    assert check["changed"]

    fake.batches = 0
    result = run(fake, grants=grants, boundary=boundary, purge=True)
    assert result["summary"]["added"] == 100
    assert {c["status"] for c in result["changes"]} == {"applied"}
    assert len(fake.keys("eligibility")) == 100
    # reads: role list + 7 packed lookups (100 UPNs / 15) + pending + 2 role reads + page 2s → 1 batch;
    # the 2 roles' policies (writes are planned) → 1 batch; writes: 100 / 20 = 5 batches
    assert fake.batches == 7
    assert fake.plain == 0

    fake.batches = 0
    again = run(fake, grants=grants, boundary=boundary, purge=True)
    assert not again["changed"] and again["summary"]["unchanged"] == 100
    assert fake.batches == 1 and fake.writes == 100


def test_update_in_place_and_diff():
    fake = FakeGraph(users=3)
    pid = user(0)["id"]
    fake.add_eligibility(pid, USER_ADMIN, end="2026-12-31T00:00:00Z")
    result = run(fake, diff_mode=True, grants=[grant(0, duration=None, permanent=True)])
    assert result["summary"]["updated"] == 1
    assert fake.requests["eligibility"][-1]["action"] == "adminUpdate"
    key = "eligible | User Administrator | / | u0@contoso.example"
    assert result["diff"]["before"][key]["permanent"] is False
    assert result["diff"]["after"][key]["permanent"] is True


def test_purge_stays_inside_the_boundary_and_spares_protected_inherited_and_activated():
    fake = FakeGraph(users=5)
    ids = [user(i)["id"] for i in range(5)]
    fake.add_eligibility(ids[0], USER_ADMIN)  # kept: in grants
    fake.add_eligibility(ids[1], USER_ADMIN)  # removed: inside, not in grants
    fake.add_eligibility(ids[2], USER_ADMIN)  # protected
    fake.add_eligibility(ids[3], GA)  # outside the boundary (role)
    fake.add_eligibility(ids[4], USER_ADMIN, member_type="Group")  # inherited: never touched
    fake.add_assignment(ids[1], USER_ADMIN, assignment_type="Activated")  # activation: never removed
    result = run(
        fake,
        grants=[grant(0, duration=None)],
        boundary={"roles": ["User Administrator"]},
        purge=True,
        protected_principals=["u2@contoso.example"],
    )
    assert result["summary"]["removed"] == 1
    assert result["summary"]["protected"] == 1
    assert [c["principal_id"] for c in result["changes"] if c["action"] == "remove"] == [ids[1]]
    remaining = fake.keys("eligibility")
    assert (ids[1], USER_ADMIN) not in remaining
    assert {(ids[0], USER_ADMIN), (ids[2], USER_ADMIN), (ids[3], GA), (ids[4], USER_ADMIN)} <= set(remaining)
    assert (ids[1], USER_ADMIN) in fake.keys("assignment")


def test_fail_fast_stops_before_any_write_and_lists_every_bad_item():
    fake = FakeGraph(users=3)
    bad = [grant(0), grant(1), dict(grant(2), principal="nobody@contoso.example"), grant(2, duration="P1Y")]
    with pytest.raises(InputError) as exc:
        run(fake, grants=bad)
    assert fake.writes == 0
    errors = exc.value.details["errors"]
    assert len(errors) == 2
    assert "nobody@contoso.example" in errors[0]["item"] and "not found" in errors[0]["msg"]
    assert "years or months" in errors[1]["msg"]


def test_fail_fast_false_applies_the_rest_and_never_purges_a_skipped_grant():
    fake = FakeGraph(users=3)
    pid = user(1)["id"]
    fake.add_eligibility(pid, USER_ADMIN)
    grants = [grant(0), grant(1, duration="bogus"), dict(grant(2), principal="Deploy Pipeline")]
    result = run(fake, grants=grants, boundary={"roles": ["User Administrator"]}, purge=True, fail_fast=False)
    assert result["summary"]["added"] == 1
    assert result["summary"]["skipped"] == 2
    assert result["summary"]["removed"] == 0  # u1's eligibility is held by its skipped grant
    assert (pid, USER_ADMIN) in fake.keys("eligibility")
    assert "service principal" in result["errors"][1]["msg"]


def test_grants_longer_than_the_policy_allows_are_refused_before_any_write():
    """Expiration_Admin_Eligibility requiring expiry within P90D (notes §3.10 rule 1, §6.2): refused locally."""
    fake = FakeGraph(users=3)
    fake.expiry[USER_ADMIN] = (True, "P90D")
    grants = [grant(0, duration="P90D"), grant(1, duration="P120D"), grant(2, duration=None, permanent=True)]
    with pytest.raises(InputError) as exc:
        run(fake, grants=grants)
    assert fake.writes == 0
    errors = exc.value.details["errors"]
    assert [e["item"].split(" ")[0] for e in errors] == ["grants[1]", "grants[2]"]
    assert errors[0]["msg"].startswith("duration 'P120D' is outside what the role's PIM policy allows")
    assert "at most P90D; the request asked for an eligibility of P120D" in errors[0]["msg"]
    assert "requires eligible assignments to expire within P90D" in errors[1]["msg"]
    assert "settings.eligible_assignment" in errors[1]["msg"]

    # fail_fast false: the grant within the policy is written; a refused grant is never purged.
    fake.add_eligibility(user(1)["id"], USER_ADMIN)
    result = run(fake, grants=grants, boundary={"roles": ["User Administrator"]}, purge=True, fail_fast=False)
    assert result["summary"]["added"] == 1 and result["summary"]["skipped"] == 2
    assert result["summary"]["removed"] == 0
    assert fake.keys("eligibility") == sorted([(user(0)["id"], USER_ADMIN), (user(1)["id"], USER_ADMIN)])


def test_policies_are_read_only_when_a_write_is_planned():
    fake = FakeGraph(users=1)
    fake.add_eligibility(user(0)["id"], USER_ADMIN)
    result = run(fake, grants=[grant(0, duration=None)])
    assert not result["changed"] and fake.policy_reads == 0
    result = run(fake, grants=[grant(0, duration=None), grant(0, role="Helpdesk Administrator")])
    assert result["changed"] and fake.policy_reads == 1


def test_grant_outside_the_boundary_is_a_bad_item():
    fake = FakeGraph(users=1)
    with pytest.raises(InputError) as exc:
        run(fake, grants=[grant(0, role="Global Administrator")], boundary={"roles": ["User Administrator"]})
    assert "outside the boundary" in exc.value.details["errors"][0]["msg"]


def test_last_global_admin_is_refused():
    fake = FakeGraph(users=1)
    params_ = dict(boundary={"roles": ["Global Administrator"], "types": ["active"]}, purge=True)
    with pytest.raises(InputError):
        run(fake, **params_)
    result = run(fake, fail_fast=False, **params_)
    assert result["summary"]["failed"] == 1 and not result["changed"]
    assert result["changes"][0]["status"] == "refused"
    assert len(fake.keys("assignment")) == 1 and fake.writes == 0
    # with a new active GA in the same run, the old one may go
    grants = [grant(0, role="Global Administrator", type="active", duration=None, permanent=True)]
    result = run(fake, grants=grants, **params_)
    assert result["summary"]["added"] == 1 and result["summary"]["removed"] == 1


def test_lost_chunk_is_confirmed_by_reading_again_with_no_duplicate():
    fake = FakeGraph(users=40)
    grants = [grant(i) for i in range(40)]
    fake.lose_write_chunks = 1  # the first chunk of 20 writes is carried out, its answer lost
    result = run(fake, grants=grants, boundary={"roles": ["User Administrator"]})
    statuses = [c["status"] for c in result["changes"]]
    assert statuses.count("confirmed") == 20 and statuses.count("applied") == 20
    assert len(fake.requests["eligibility"]) == 40  # nothing sent twice
    assert len(fake.keys("eligibility")) == 40


def test_504_item_not_carried_out_is_sent_once_more():
    fake = FakeGraph(users=2)
    fake.fail_items[(user(1)["id"], "adminAssign")] = (504, "gatewayTimeout")
    result = run(fake, grants=[grant(0), grant(1)])
    assert [c["status"] for c in result["changes"]] == ["applied", "applied"]
    assert len(fake.keys("eligibility")) == 2


@pytest.mark.parametrize("code", ["SubjectNotFound", "RoleNotFound"])
def test_replication_lag_is_waited_out_and_sent_again(code):
    """A principal or role PIM does not know yet (notes §6.2) is sent again after LAG_DELAYS; the rest is not."""
    fake = FakeGraph(users=2)
    fake.fail_items[(user(1)["id"], "adminAssign")] = (400, code)
    slept = []
    result = _bulk.reconcile(fake, params(grants=[grant(0), grant(1)]), now=NOW, sleep=slept.append)
    assert [c["status"] for c in result["changes"]] == ["applied", "applied"]
    assert len(fake.keys("eligibility")) == 2 and fake.writes == 3
    assert slept == list(_pim.LAG_DELAYS[:1])


def test_exists_after_retry_counts_as_done_only_when_state_matches():
    fake = FakeGraph(users=1)
    fake.fail_items[(user(0)["id"], "adminAssign")] = (400, "RoleAssignmentExists")
    with pytest.raises(PimError) as exc:
        run(fake, grants=[grant(0)])
    assert exc.value.details["summary"]["failed"] == 1
    assert "RoleAssignmentExists" in exc.value.details["errors"][0]["msg"]


def test_unknown_role_in_boundary_fails_the_task():
    fake = FakeGraph(users=1)
    with pytest.raises(InputError, match="boundary.roles: role 'Nope' not found"):
        run(fake, boundary={"roles": ["Nope"]}, purge=True)


def test_apostrophe_upn_and_object_id_principals():
    fake = FakeGraph(users=2)
    obrien = dict(user(7), id="10000000-0000-4000-8000-000000000777", userPrincipalName="o'brien@contoso.example")
    obrien["mail"] = obrien["userPrincipalName"]
    fake.objects[obrien["id"]] = obrien
    result = run(fake, grants=[grant(0, principal="o'brien@contoso.example"), grant(1, principal=user(1)["id"])])
    assert result["summary"]["added"] == 2
    assert sorted(c["principal_id"] for c in result["changes"]) == sorted([obrien["id"], user(1)["id"]])


def test_group_and_service_principal_active_assignment():
    fake = FakeGraph(users=1)
    result = run(fake, grants=[dict(grant(0), principal="Deploy Pipeline", type="active", duration="P30D")])
    assert result["summary"]["added"] == 1
    assert fake.keys("assignment")[-1][0] == SP["id"] or (SP["id"], USER_ADMIN) in fake.keys("assignment")


def _pending(fake, pid, rid, start="2027-01-01T00:00:00Z"):
    req = {
        "id": str(uuid.uuid4()),
        "action": "adminAssign",
        "status": "Granted",
        "principalId": pid,
        "roleDefinitionId": rid,
        "directoryScopeId": "/",
        "scheduleInfo": {"startDateTime": start, "expiration": {"type": "noExpiration"}},
    }
    fake.requests["eligibility"].append(req)
    return req


def test_purge_cancels_a_pending_request_and_a_matching_one_counts_as_there():
    """notes §4: a request not yet in effect is cancelled, not removed; one asking for the grant is 'there'."""
    fake = FakeGraph(users=2)
    stale = _pending(fake, user(0)["id"], USER_ADMIN)
    wanted = _pending(fake, user(1)["id"], USER_ADMIN)
    grants = [grant(1, duration=None, permanent=True, start="2027-01-01T00:00:00Z")]
    result = run(fake, grants=grants, boundary={"roles": ["User Administrator"]}, purge=True)
    actions = {c["principal_id"]: c["action"] for c in result["changes"]}
    assert actions == {user(1)["id"]: "none", user(0)["id"]: "cancel"}
    assert result["summary"]["cancelled"] == 1
    assert stale["status"] == "Revoked" and wanted["status"] == "Granted"
    assert fake.writes == 1


def test_end_activations_ends_an_uncovered_activation_with_the_same_planner():
    """end_activations: an activation no grant covers gets adminRemove on the assignment requests (notes §8)."""
    fake = FakeGraph(users=3)
    ids = [user(i)["id"] for i in range(3)]
    fake.add_assignment(ids[0], USER_ADMIN, assignment_type="Activated")  # ended
    fake.add_assignment(ids[1], USER_ADMIN, assignment_type="Activated")  # covered: u1 stays eligible
    fake.add_eligibility(ids[1], USER_ADMIN)
    fake.add_assignment(ids[2], USER_ADMIN, assignment_type="Activated", member_type="Group")  # inherited
    kw = dict(grants=[grant(1, duration=None)], boundary={"roles": ["User Administrator"]}, purge=True)

    # Without end_activations, or without purge, nothing is ended.
    assert run(fake, check_mode=True, **kw)["summary"]["removed"] == 0
    no_purge = {"grants": kw["grants"], "boundary": kw["boundary"], "purge": False}
    assert run(fake, check_mode=True, end_activations=True, **no_purge)["summary"]["removed"] == 0
    # With no grant at all, u1's activation is not covered either: u0's and u1's activations and u1's eligibility.
    bare = run(fake, check_mode=True, end_activations=True, grants=[], boundary=kw["boundary"], purge=True)
    assert bare["summary"]["removed"] == 3

    plan = run(fake, check_mode=True, diff_mode=True, end_activations=True, **kw)
    ended = [c for c in plan["changes"] if c["action"] == "remove"]
    assert [(c["principal_id"], c["type"], c["activated"], c["status"]) for c in ended] == [
        (ids[0], "active", True, "planned")
    ]
    assert ended[0]["before"]["assignment_type"] == "Activated" and ended[0]["after"] is None
    assert "activated | User Administrator | / | User 0" in plan["diff"]["before"]
    assert fake.writes == 0

    result = run(fake, end_activations=True, **kw)
    assert result["changed"] and result["summary"]["removed"] == 1
    sent = fake.requests["assignment"][-1]
    assert (sent["action"], sent["principalId"], sent["roleDefinitionId"]) == ("adminRemove", ids[0], USER_ADMIN)
    assert "scheduleInfo" in sent  # assignment requests need it (notes §3.1, §8)
    assert [c["activated"] for c in result["changes"]] == [False, True]
    assert (ids[0], USER_ADMIN) not in fake.keys("assignment")
    assert {(ids[1], USER_ADMIN), (ids[2], USER_ADMIN)} <= set(fake.keys("assignment"))

    again = run(fake, end_activations=True, **kw)
    assert not again["changed"] and again["summary"]["removed"] == 0


def test_end_activations_spares_protected_and_the_last_global_admin():
    fake = FakeGraph(users=2)
    fake.schedules["assignment"].clear()  # the only Global Administrator is an activation of u0
    fake.add_assignment(user(0)["id"], GA, assignment_type="Activated")
    fake.add_assignment(user(1)["id"], USER_ADMIN, assignment_type="Activated")
    kw = dict(boundary={"types": ["active"]}, purge=True, end_activations=True, fail_fast=False)
    result = run(fake, protected_principals=["u1@contoso.example"], **kw)
    statuses = {c["role_id"]: c["status"] for c in result["changes"]}
    assert statuses == {GA: "refused", USER_ADMIN: "protected"}
    assert fake.writes == 0 and len(fake.keys("assignment")) == 2


def test_purge_removals_carry_the_task_justification_and_ticket():
    """Every adminRemove purge sends names why (the offboarding ticket) for Graph's audit trail (notes §3.1)."""
    fake = FakeGraph(users=2)
    pid = user(0)["id"]
    fake.add_eligibility(pid, USER_ADMIN)
    fake.add_assignment(pid, HELPDESK_ADMIN)
    fake.add_assignment(pid, USER_ADMIN, assignment_type="Activated")
    result = run(
        fake,
        boundary={"principals": ["u0@contoso.example"]},
        purge=True,
        end_activations=True,
        justification="Offboarding of u0",
        ticket_number="HR-9",
        ticket_system="HR",
    )
    assert result["summary"]["removed"] == 3
    sent = fake.requests["eligibility"] + fake.requests["assignment"]
    assert len(sent) == 3
    for req in sent:
        assert req["action"] == "adminRemove"
        assert req["justification"] == "Offboarding of u0"
        assert req["ticketInfo"] == {"ticketNumber": "HR-9", "ticketSystem": "HR"}


def _future_eligibility(fake, pid, rid, start="2027-01-01T00:00:00Z"):
    """An adminAssign with a future start: its request is Granted and its schedule is not started (notes §4)."""
    req = _pending(fake, pid, rid, start=start)
    req["targetScheduleId"] = req["id"]
    fake.schedules["eligibility"].append(
        {
            "id": req["id"],  # notes §5: the schedule a request creates has the request's id
            "principalId": pid,
            "roleDefinitionId": rid,
            "directoryScopeId": "/",
            "memberType": "Direct",
            "status": "Granted",
            "createdUsing": req["id"],
            "scheduleInfo": req["scheduleInfo"],
        }
    )
    return req


def test_planner_cancels_a_schedule_that_has_not_started_instead_of_removing_it():
    """notes §4, §8 (status-aware removal): the single modules and pim_access share this decision."""
    fake = FakeGraph()
    pid = user(0)["id"]
    req = _future_eligibility(fake, pid, USER_ADMIN)
    target = _pim.Target(_resolve.Principal(pid, "user", "User 0", None, None), ROLE_UA, "/", None)
    current = _pim.current_from_answers("eligibility", target, fake.schedules["eligibility"], [req])
    p = _pim.plan("eligibility", target, _pim.Desired("absent"), current, NOW)
    assert (p.action, p.cancel_ids, p.body) == ("cancel", [req["id"]], None)
    assert p.before["status"] == "Granted" and p.after is None
    # Once the start has passed, it is a schedule like any other: adminRemove.
    later = datetime(2027, 1, 2, tzinfo=timezone.utc)
    assert _pim.plan("eligibility", target, _pim.Desired("absent"), current, later).action == "remove"
    # Without the Granted request that created it, cancelling could not take it away: adminRemove.
    bare = _pim.current_from_answers("eligibility", target, fake.schedules["eligibility"], [])
    assert _pim.plan("eligibility", target, _pim.Desired("absent"), bare, NOW).action == "remove"


def test_purge_cancels_a_future_eligibility_in_one_run():
    fake = FakeGraph(users=1)
    pid = user(0)["id"]
    req = _future_eligibility(fake, pid, USER_ADMIN)
    kw = dict(boundary={"principals": ["u0@contoso.example"]}, purge=True, justification="leaver")
    result = run(fake, **kw)
    assert [(c["action"], c["type"], c["status"]) for c in result["changes"]] == [("cancel", "eligible", "applied")]
    assert result["summary"]["cancelled"] == 1 and result["summary"]["removed"] == 0
    assert fake.writes == 1 and req["status"] == "Revoked"
    assert not any(r["action"] == "adminRemove" for r in fake.requests["eligibility"])
    assert fake.keys("eligibility") == []
    again = run(fake, **kw)
    assert not again["changed"] and again["changes"] == [] and fake.writes == 1


# ------------------------------------------------------------------ issue 14


@pytest.mark.parametrize("key", ["principals", "roles", "directory_scopes", "types"])
@pytest.mark.parametrize("value", [[], ["", "  "]])
def test_empty_boundary_list_is_refused_before_any_request(key, value):
    """Issue 14 point 4: ``boundary.<key>: []`` used to own everything and, with purge, remove it all."""
    fake = FakeGraph(users=2)
    fake.add_eligibility(user(0)["id"], USER_ADMIN)
    fake.add_eligibility(user(1)["id"], USER_ADMIN)
    with pytest.raises(InputError) as exc:
        run(fake, boundary={key: value}, purge=True)
    msg = exc.value.msg
    assert msg.startswith("boundary.%s is an empty list" % key)
    assert "omit boundary.%s to own" % key in msg
    assert fake.batches == 0 and fake.plain == 0 and fake.writes == 0
    assert len(fake.keys("eligibility")) == 2


def test_omitted_boundary_key_still_owns_everything():
    fake = FakeGraph(users=2)
    fake.add_eligibility(user(0)["id"], USER_ADMIN)
    result = run(fake, grants=[grant(1)], boundary={"roles": ["User Administrator"], "principals": None}, purge=True)
    assert result["summary"]["added"] == 1 and result["summary"]["removed"] == 1


BAD_AU = "50000000-0000-4000-8000-0000000000ff"


@pytest.mark.parametrize("fail_fast", [True, False])
def test_unknown_administrative_unit_is_a_bad_item_before_any_write(fail_fast):
    """Issue 14 point 10: a scope id Graph only refuses at write time is checked with the lookups.

    With fail_fast (the default) nothing at all is written; without it the bad grant is skipped.
    """
    fake = FakeGraph(users=3)
    grants = [
        grant(0),
        grant(1, directory_scope="/administrativeUnits/" + SALES_AU),
        grant(2, directory_scope="/administrativeUnits/" + BAD_AU),
    ]
    if fail_fast:
        with pytest.raises(InputError) as exc:
            run(fake, grants=grants)
        assert fake.writes == 0 and fake.keys("eligibility") == []
        assert "nothing was changed" in exc.value.msg
        errors = exc.value.details["errors"]
    else:
        result = run(fake, grants=grants, fail_fast=False)
        assert result["summary"]["added"] == 2 and result["summary"]["skipped"] == 1 and fake.writes == 2
        errors = result["errors"]
    assert len(errors) == 1 and errors[0]["item"].startswith("grants[2]")
    assert "no administrative unit with the id '%s' exists" % BAD_AU in errors[0]["msg"]


def test_exists_from_another_writer_is_unchanged_and_a_different_one_is_updated():
    """Issue 14 point 14: RoleAssignmentExists to our first attempt, and a read agrees → changed: false."""
    fake = FakeGraph(users=2)
    pid0, pid1 = user(0)["id"], user(1)["id"]
    same = {"startDateTime": "2026-11-29T10:00:00Z", "expiration": {"type": "afterDuration", "duration": "P180D"}}
    other = {"startDateTime": "2026-11-29T10:00:00Z", "expiration": {"type": "afterDuration", "duration": "P30D"}}
    fake.race = {pid0: same}
    result = run(fake, grants=[grant(0)])
    assert not result["changed"]
    entry = result["changes"][0]
    assert (entry["action"], entry["status"]) == ("none", "unchanged")
    assert "already there" in entry["reasons"][0]
    assert result["summary"]["unchanged"] == 1 and result["summary"]["added"] == 0
    assert len(fake.requests["eligibility"]) == 0  # the other writer's schedule; ours was refused

    # Exists, but with another schedule: updated in place, reported as an update.
    fake.race = {pid1: other}
    result = run(fake, grants=[grant(1)])
    entry = result["changes"][0]
    assert result["changed"] and (entry["action"], entry["status"]) == ("update", "applied")
    assert result["summary"]["updated"] == 1 and result["summary"]["added"] == 0
    assert [r["action"] for r in fake.requests["eligibility"]] == ["adminUpdate"]
    assert [
        s["scheduleInfo"]["expiration"]["duration"] for s in fake.schedules["eligibility"] if s["principalId"] == pid1
    ] == ["P180D"]


def test_504_after_a_lost_answer_is_sent_again_when_graph_shows_it_absent():
    """Issue 14 point 12: a lost chunk (not run), then a 504 on the re-send, then the write lands."""
    fake = FakeGraph(users=2)
    fake.drop_write_chunks = 1
    fake.fail_items[(user(1)["id"], "adminAssign")] = (504, "gatewayTimeout")
    result = run(fake, grants=[grant(0), grant(1)])
    assert [c["status"] for c in result["changes"]] == ["applied", "applied"]
    assert len(fake.keys("eligibility")) == 2 and len(fake.requests["eligibility"]) == 2


def test_failed_reread_is_read_again_so_an_applied_item_is_never_failed():
    """Issue 14 point 12: the answer is lost after the write ran and the first re-read fails too."""
    fake = FakeGraph(users=2)
    fake.lose_write_chunks = 1
    fake.fail_schedule_reads = 2  # the first re-read of both targets answers 503 (past the client's retries)
    result = run(fake, grants=[grant(0), grant(1)])
    assert [c["status"] for c in result["changes"]] == ["confirmed", "confirmed"]
    assert len(fake.requests["eligibility"]) == 2  # nothing sent twice


def test_unreadable_outcome_is_unknown_and_says_the_answer_was_lost():
    fake = FakeGraph(users=1)
    fake.lose_write_chunks = 1
    fake.fail_schedule_reads = 1000
    with pytest.raises(PimError) as exc:
        run(fake, grants=[grant(0)])
    details = exc.value.details
    assert details["summary"]["unknown"] == 1 and details["summary"]["failed"] == 0
    assert details["changes"][0]["status"] == "unknown"
    assert "the answer was lost" in details["changes"][0]["error"]
    assert "unknown outcome (the answer was lost)" in exc.value.msg
    assert len(fake.requests["eligibility"]) == 1  # never re-sent blind


def test_absent_after_every_resend_is_failed_and_absent():
    fake = FakeGraph(users=1)
    fake.drop_write_chunks = 1 + _bulk.Writer.SETTLE_ROUNDS
    result = run(fake, grants=[grant(0)], fail_fast=False)
    entry = result["changes"][0]
    assert entry["status"] == "failed" and "shows it absent after" in entry["error"]
    assert fake.keys("eligibility") == []
