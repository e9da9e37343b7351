# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The directory cache (issue 7, warm paths): names → ids remembered next to the token cache.

What must hold: the file is private (0600, refused when others can read it, like the token
cache), keyed by tenant + graph_url, written only when its content changes, entries expire,
names that failed are never remembered, and a remembered id is only a guess that the resolver
verifies (a renamed role or a UPN that now belongs to someone else is caught, never acted on).
"""

from __future__ import annotations

import json
import os
import stat
import types

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, InputError

TENANT = "11111111-2222-3333-4444-555555555555"
GRAPH = "https://graph.example.test"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
HELPDESK = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
CUSTOM = "0b7e3d5c-0000-4000-8000-00000000c0de"
ALICE = "a11ce000-0000-4000-8000-000000000001"
ALICE_NEW = "a11ce000-0000-4000-8000-000000000002"
TEAM_1 = "d0000000-0000-4000-8000-000000000001"
TEAM_2 = "d0000000-0000-4000-8000-000000000002"


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeGraph:
    """Just enough of GraphClient for the resolver: role list, user/group filters, getByIds, $batch."""

    def __init__(self, tmp_path, token_cache=True, tenant_id=TENANT):
        self.graph_url = GRAPH
        self.settings = {
            "tenant_id": tenant_id,
            "token_cache": token_cache,
            "token_cache_path": str(tmp_path / "cache" / "token_cache.json"),
        }
        self.warnings = []
        self.round_trips = 0
        self.roles = [
            {"id": USER_ADMIN, "displayName": "User Administrator", "templateId": USER_ADMIN, "isBuiltIn": True},
            {"id": HELPDESK, "displayName": "Helpdesk Administrator", "templateId": HELPDESK, "isBuiltIn": True},
            {"id": CUSTOM, "displayName": "Tier 1 Support", "templateId": CUSTOM, "isBuiltIn": False},
        ]
        self.users = [{"id": ALICE, "displayName": "Alice Anders", "userPrincipalName": "alice@contoso.example"}]
        self.groups = [
            {"id": TEAM_1, "displayName": "Duplicate Team", "isAssignableToRole": False},
            {"id": TEAM_2, "displayName": "Duplicate Team", "isAssignableToRole": False},
        ]

    def warn(self, msg):
        self.warnings.append(msg)

    def _collection(self, path):
        if path.startswith(_resolve.ROLE_DEFINITIONS):
            return self.roles
        if path.startswith("/users"):
            return self.users
        if path.startswith("/groups"):
            return self.groups
        if path.startswith("/servicePrincipals"):
            return []
        raise AssertionError("unexpected GET " + path)

    def _answer(self, path, flt):
        items = self._collection(path)
        if not flt:
            return items
        out = []
        for item in items:
            for clause in flt.split(" or "):
                field, _eq, literal = clause.partition(" eq ")
                if str(item.get(field.strip()) or "").lower() == literal.strip("'").replace("''", "'").lower():
                    out.append(item)
                    break
        return out

    def list(self, path, params=None):
        self.round_trips += 1
        return list(self._answer(path, (params or {}).get("$filter")))

    def post(self, path, body, params=None, idempotent=False):
        self.round_trips += 1
        assert path == "/directoryObjects/getByIds"
        every = self.users + self.groups
        return {"value": [dict(o) for o in every if o["id"] in body["ids"]]}

    def get(self, path, params=None):
        self.round_trips += 1
        return self._entity(path)

    def _entity(self, path):
        wanted = path.rsplit("/", 1)[-1].split("?")[0]
        for role in self.roles:
            if role["id"] == wanted:
                return dict(role)
        return None

    def batch(self, requests):
        self.round_trips += 1
        out = []
        for req in requests:
            url = req["url"]
            path, _q, query = url.partition("?")
            if path.startswith(_resolve.ROLE_DEFINITIONS + "/"):
                body = self._entity(path)
                out.append({"id": req["id"], "status": 200 if body else 404, "body": body or {"error": {}}})
                continue
            flt = None
            for part in query.split("&"):
                if part.startswith("$filter="):
                    from urllib.parse import unquote

                    flt = unquote(part[len("$filter=") :])
            out.append({"id": req["id"], "status": 200, "body": {"value": self._answer(path, flt)}})
        return out

    def raise_for_item(self, resp):
        raise AssertionError("no failing items here: %r" % (resp,))


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test is a new module process: no roles read from Graph yet, and no exit hooks left behind."""
    monkeypatch.setattr(_resolve, "_ROLE_CACHE", {})
    registered = []
    monkeypatch.setattr(_resolve, "atexit", types.SimpleNamespace(register=registered.append))
    return registered


def task(graph, clock):
    """A new task (process): a resolver over a fresh DirectoryCache on the same file."""
    _resolve._ROLE_CACHE.clear()
    cache = _resolve.DirectoryCache.for_client(graph)
    if cache is not None:
        cache.now = clock
    return _resolve.Resolver(graph, cache=cache)


def cache_file(graph):
    return os.path.join(os.path.dirname(graph.settings["token_cache_path"]), "directory_cache.json")


def warm_up(graph, clock, principal="alice@contoso.example", role="User Administrator"):
    """A cold task by name: role list + principal lookup read from Graph, then remembered."""
    resolver = task(graph, clock)
    found = resolver.role(role), resolver.principal(principal)
    resolver.cache.flush()
    return found


# ------------------------------------------------------------------ the file


def test_file_is_private_next_to_the_token_cache_and_written_once(tmp_path, fresh_process):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    path = cache_file(graph)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(fresh_process) == 1  # flushed at exit, registered once per cache
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    section = data["tenants"]["%s|%s" % (TENANT, GRAPH)]
    assert {r["display_name"] for r in section["roles"]["items"]} == {
        "User Administrator",
        "Helpdesk Administrator",
        "Tier 1 Support",
    }
    assert section["principals"]["auto|alice@contoso.example"]["id"] == ALICE

    # The same answers a minute later: nothing to write (the file is replaced atomically, so a
    # write would show as a new inode).
    inode = os.stat(path).st_ino
    clock.now += 60
    warm_up(graph, clock)
    assert os.stat(path).st_ino == inode


def test_group_readable_file_is_refused_like_the_token_cache(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    os.chmod(cache_file(graph), 0o644)
    resolver = task(graph, clock)
    with pytest.raises(AuthError) as err:
        resolver.known_principal_id("alice@contoso.example")
    assert "directory cache" in err.value.msg and "0644" in err.value.msg and "token_cache=false" in err.value.msg
    assert "access tokens" not in err.value.msg


def test_token_cache_false_disables_it_and_so_does_an_unknown_tenant(tmp_path):
    assert _resolve.DirectoryCache.for_client(FakeGraph(tmp_path, token_cache=False)) is None
    assert _resolve.DirectoryCache.for_client(FakeGraph(tmp_path, tenant_id=None)) is None
    graph = FakeGraph(tmp_path, token_cache=False)
    resolver = _resolve.Resolver(graph)
    assert resolver.cache is None
    assert resolver.principal("alice@contoso.example").id == ALICE
    assert resolver.known_principal_id("alice@contoso.example") is None
    assert not os.path.exists(cache_file(graph))


def test_a_corrupt_file_is_ignored_and_rewritten(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    os.makedirs(os.path.dirname(cache_file(graph)), mode=0o700)
    with open(cache_file(graph), "w", encoding="utf-8") as handle:
        handle.write("{not json")
    os.chmod(cache_file(graph), 0o600)
    resolver = task(graph, clock)
    assert resolver.known_principal_id("alice@contoso.example") is None
    warm_up(graph, clock)
    with open(cache_file(graph), encoding="utf-8") as handle:
        assert json.load(handle)["version"] == 1


def test_sections_are_per_tenant_and_graph_url(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    other = FakeGraph(tmp_path, tenant_id="99999999-2222-3333-4444-555555555555")
    assert task(other, clock).known_principal_id("alice@contoso.example") is None
    assert task(other, clock).known_role_id("User Administrator") is None
    elsewhere = FakeGraph(tmp_path)
    elsewhere.graph_url = "https://graph.microsoft.us"
    assert task(elsewhere, clock).known_principal_id("alice@contoso.example") is None


def test_parallel_tasks_keep_each_others_entries(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    first, second = task(graph, clock), task(graph, clock)
    first.principal("alice@contoso.example")
    graph.groups = graph.groups[:1]
    second.principal("Duplicate Team", "group")
    first.cache.flush()
    second.cache.flush()
    later = task(graph, clock)
    assert later.known_principal_id("alice@contoso.example") == ALICE
    assert later.known_principal_id("Duplicate Team", "group") == TEAM_1


# ------------------------------------------------------------------ what is remembered, for how long


def test_entries_expire_roles_after_an_hour_principals_after_ten_minutes(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    clock.now += _resolve.PRINCIPAL_CACHE_TTL - 1
    resolver = task(graph, clock)
    assert resolver.known_principal_id("alice@contoso.example") == ALICE
    assert resolver.known_role_id("user administrator") == USER_ADMIN
    clock.now += 2
    resolver = task(graph, clock)
    assert resolver.known_principal_id("alice@contoso.example") is None
    assert resolver.known_role_id("User Administrator") == USER_ADMIN
    clock.now = clock.now - _resolve.PRINCIPAL_CACHE_TTL - 1 + _resolve.ROLE_CACHE_TTL + 1
    assert task(graph, clock).known_role_id("User Administrator") is None


def test_ids_need_no_cache_and_are_never_stored(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    resolver = task(graph, clock)
    assert resolver.known_principal_id(ALICE.upper()) == ALICE
    assert resolver.known_role_id(USER_ADMIN.upper()) == USER_ADMIN
    assert resolver.principal(ALICE).id == ALICE
    resolver.cache.flush()
    assert not os.path.exists(cache_file(graph))


def test_principal_type_is_part_of_the_key(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    resolver = task(graph, clock)
    assert resolver.known_principal_id("alice@contoso.example", "auto") == ALICE
    assert resolver.known_principal_id("alice@contoso.example", "group") is None
    assert resolver.known_principal_id("alice@contoso.example", "nonsense") is None


def test_names_that_fail_are_never_remembered_and_a_failing_name_is_forgotten(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    resolver = task(graph, clock)
    with pytest.raises(InputError, match="ambiguous"):
        resolver.principal("Duplicate Team", "group")
    with pytest.raises(InputError, match="not found"):
        resolver.principal("nobody@contoso.example")
    resolver.cache.flush()
    assert not os.path.exists(cache_file(graph))

    warm_up(graph, clock)
    graph.users = []  # Alice was deleted
    resolver = task(graph, clock)
    with pytest.raises(InputError, match="not found"):
        resolver.principal("alice@contoso.example")
    resolver.cache.flush()
    assert task(graph, clock).known_principal_id("alice@contoso.example") is None


def test_ambiguous_role_names_give_no_guess(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    graph.roles.append(dict(graph.roles[2], id="0b7e3d5c-0000-4000-8000-00000000c0df"))
    warm_up(graph, clock)
    assert task(graph, clock).known_role_id("Tier 1 Support") is None


# ------------------------------------------------------------------ guesses are verified


def warm_read(graph, clock, role, principal, principal_type="auto"):
    """The warm path as _pim.resolve_and_read runs it: guess, then verify in ONE round trip.

    Returns (role, principal, guessed ids, round trips). The batch carries the role by id (when
    this process has not read the list), the principal lookup, and (in _pim) the state read
    filtered by the guessed ids.
    """
    resolver = task(graph, clock)
    role_id, principal_id = resolver.known_role_id(role), resolver.known_principal_id(principal, principal_type)
    assert role_id and principal_id
    before = graph.round_trips
    requests = []
    if resolver.role_needs_check():
        requests.append(resolver.role_request(role_id))
    pairs = resolver.principal_requests(principal, principal_type)
    requests.extend(pair[1] for pair in pairs)
    answers = _resolve.send_all(graph, requests)
    role_answer = answers.pop(0) if resolver.role_needs_check() else None
    found_role = resolver.confirm_role(role, role_answer)
    found = resolver.principal_from_answers(principal, principal_type, [p[0] for p in pairs], answers)
    resolver.cache.flush()
    return found_role, found, (role_id, principal_id), graph.round_trips - before


def test_warm_by_name_is_one_round_trip_with_the_same_answers(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    cold_role, cold_principal = warm_up(graph, clock)
    role, principal, guess, trips = warm_read(graph, clock, "User Administrator", "alice@contoso.example")
    assert trips == 1
    assert (role, principal) == (cold_role, cold_principal)
    assert guess == (role.id, principal.id)


def test_a_upn_that_now_belongs_to_someone_else_is_caught(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock)
    # Alice left; the UPN was given to a new account within the cache lifetime.
    graph.users = [dict(graph.users[0], id=ALICE_NEW, displayName="Alice Anders (new)")]
    _role, principal, guess, _trips = warm_read(graph, clock, "User Administrator", "alice@contoso.example")
    assert guess[1] == ALICE  # the stale guess...
    assert principal.id == ALICE_NEW  # ...is not what the task acts on: the caller re-reads for this id
    assert task(graph, clock).known_principal_id("alice@contoso.example") == ALICE_NEW


def test_a_renamed_role_is_caught_and_the_catalogue_read_again(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    warm_up(graph, clock, role="Tier 1 Support")
    # The custom role was renamed and a new role took its old name.
    replacement = "0b7e3d5c-0000-4000-8000-00000000beef"
    graph.roles[2] = dict(graph.roles[2], displayName="Tier 1 Support (old)")
    graph.roles.append({"id": replacement, "displayName": "Tier 1 Support", "templateId": replacement})
    role, _principal, guess, trips = warm_read(graph, clock, "Tier 1 Support", "alice@contoso.example")
    assert guess[0] == CUSTOM
    assert role.id == replacement and not role.is_built_in
    assert trips == 2  # the batch, then the role list read again
    assert task(graph, clock).known_role_id("Tier 1 Support") == replacement


def test_a_role_id_answer_is_used_as_is_and_a_404_falls_back_to_the_list(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    resolver = task(graph, clock)
    role = resolver.confirm_role(USER_ADMIN, graph._entity("/x/" + USER_ADMIN))
    assert role == _resolve.Role(USER_ADMIN, "User Administrator", USER_ADMIN, True)
    assert graph.round_trips == 0
    assert resolver.confirm_role(HELPDESK, None).display_name == "Helpdesk Administrator"
    assert graph.round_trips == 1


def test_roles_read_this_process_need_no_check(tmp_path):
    graph, clock = FakeGraph(tmp_path), Clock()
    resolver = task(graph, clock)
    assert resolver.role_needs_check()
    resolver.all_roles()
    assert not resolver.role_needs_check()
    assert resolver.confirm_role("user administrator", None).id == USER_ADMIN
