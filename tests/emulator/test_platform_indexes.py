"""Read paths without copies and the store's secondary indexes (README "Performance").

The index only narrows the candidates of a ``$filter``; the answer must be the one a full scan
gives. The random test below runs the same requests through the real handlers twice, once with
the index and once with every listing handed to the OData layer as a plain list (the scan the
sandbox did before the indexes), and compares status and body.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from test_pim_domain import APP, ELIG_REQ, GA, USER_ADMIN, Env

from pim_emulator import odata, pim
from pim_emulator.store import Store

# ----------------------------------------------------------------------------- store


def test_find_is_case_insensitive_ordered_and_only_strings(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    with s.transaction() as tx:
        tx.put("u", "a", {"upn": "Ann@X.example", "n": 1})
        tx.put("u", "b", {"upn": "bob@x.example"})
        tx.put("u", "c", {"upn": "ann@x.EXAMPLE"})
        tx.put("u", "d", {"upn": None})
        tx.put("u", "e", {"upn": 5})
        assert tx.find("u", "upn", "ANN@x.example") == ["a", "c"]
        assert tx.find("u", "upn", "nobody") == []
        assert tx.find("u", "upn", None) == [] and tx.find("u", "upn", 5) == []
        assert [d["n"] for d in tx.find_docs("u", "upn", "ann@x.example")[:1]] == [1]
        tx.put("u", "a", {"upn": "zed@x.example"})  # a changed value moves between keys
        assert tx.find("u", "upn", "ann@x.example") == ["c"]
        assert tx.find("u", "upn", "zed@x.example") == ["a"]
        tx.put("u", "c", {"upn": "zed@x.example"})  # results follow insertion order, not index order
        assert tx.find("u", "upn", "zed@x.example") == ["a", "c"]
        assert tx.delete("u", "a")
        assert tx.find("u", "upn", "zed@x.example") == ["c"]
        assert tx.order("u", ["e", "missing", "b", "b"]) == ["b", "e"]
    s.close()


def test_index_follows_rollback_clear_and_restart(tmp_path):
    path = tmp_path / "s.sqlite3"
    s = Store(path)
    with s.transaction() as tx:
        for i in range(4):
            tx.put("u", f"id{i}", {"k": f"v{i % 2}"})
        assert tx.find("u", "k", "v0") == ["id0", "id2"]  # index built now, kept in step below
    with pytest.raises(RuntimeError), s.transaction() as tx:
        tx.put("u", "id0", {"k": "other"})
        tx.delete("u", "id2")
        tx.put("u", "id9", {"k": "v0"})
        assert tx.find("u", "k", "v0") == ["id9"]
        raise RuntimeError("roll back")
    with s.transaction() as tx:
        assert tx.find("u", "k", "v0") == ["id0", "id2"]
        assert tx.find("u", "k", "other") == [] and tx.peek("u", "id9") is None
    with pytest.raises(RuntimeError), s.transaction() as tx:
        tx.clear()
        assert tx.find("u", "k", "v0") == []
        raise RuntimeError("roll back the clear")
    with s.transaction() as tx:
        assert tx.find("u", "k", "v1") == ["id1", "id3"]
        tx.clear()
        tx.put("u", "new", {"k": "v1"})
        assert tx.find("u", "k", "v1") == ["new"]
    s.close()
    s = Store(path)
    with s.transaction() as tx:
        assert tx.find("u", "k", "v1") == ["new"]
    s.close()


def test_peek_and_iter_share_list_and_get_copy(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    with s.transaction() as tx:
        doc = {"a": [1]}
        tx.put("c", "x", doc)
        doc["a"].append(2)  # the caller's dict never aliases the mirror
        assert tx.peek("c", "x") == {"a": [1]}
        assert tx.peek("c", "x") is tx.peek("c", "x") is next(tx.iter("c")) is tx.list("c", copy=False)[0]
        assert tx.get("c", "x") is not tx.peek("c", "x") and tx.list("c")[0] is not tx.peek("c", "x")
        assert tx.key_union("c") == {"a"}
        tx.put("c", "y", {"b": 1})
        assert tx.key_union("c") == {"a", "b"}
        tx.delete("c", "y")
        assert tx.key_union("c") == {"a"}
    s.close()


# ----------------------------------------------------------------------------- single-value in


def test_in_with_one_value_parses_as_a_list():
    for text, values in (
        ("userPrincipalName in ('x')", ["x"]),
        ("userPrincipalName in ( 'x' )", ["x"]),
        ("userPrincipalName in ('x',)", ["x"]),
        ("userPrincipalName in ('x','y')", ["x", "y"]),
    ):
        tree = odata.parse_filter(text)
        assert [v.val for v in tree.right.val] == values, text
    tree = odata.parse_filter("a in ('x') and (b eq 'y') or c in (5)")
    assert tree.left.left.right.val[0].val == "x"  # and/or bind around the rewritten list
    assert tree.right.right.val[0].val == "5"


def test_in_with_one_value_over_http(sandbox):
    r = sandbox.get("/users", params={"$filter": "userPrincipalName in ('ALICE@contoso.example')"})
    assert r.status_code == 200, r.text
    assert [u["userPrincipalName"] for u in r.json()["value"]] == ["alice@contoso.example"]
    r = sandbox.get("/users", params={"$filter": "userPrincipalName in ('alice@contoso.example') or mail in ('x')"})
    assert [u["userPrincipalName"] for u in r.json()["value"]] == ["alice@contoso.example"]
    r = sandbox.get("/users", params={"$filter": "userPrincipalName in ('alice@contoso.example'"})
    assert r.status_code == 400  # still a syntax error when unbalanced


# ----------------------------------------------------------------------------- indexed == scanned

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _tenant(env: Env, rng: random.Random) -> dict:
    """Extra users, groups, SPs, schedules (some expired or future) and requests; -> values to query."""
    names = ["Ann", "ann", "Bob", "O'Brien", "Zoë", "Eve", "eve"]
    values: dict[str, list] = {"user": [], "group": [], "sp": [], "principal": [], "role": [GA, USER_ADMIN]}
    with env.store.transaction() as tx:
        for i in range(60):
            uid = f"60000000-0000-4000-8000-{i:012d}"
            name = rng.choice(names)
            upn = f"{name.lower().replace(' ', '')}{i % 9}@Contoso.example"
            upn = upn.upper() if i % 5 == 0 else upn
            mail = rng.choice([upn, upn.lower(), None, f"shared{i % 3}@contoso.example"])
            doc = {
                "id": uid,
                "userPrincipalName": upn,
                "displayName": name,
                "mail": mail,
                "jobTitle": rng.choice([None, "Dev", "dev"]),
            }
            doc["accountEnabled"] = rng.random() < 0.8
            tx.put("users", uid, doc)
            values["user"] += [upn, mail, name]
            values["principal"].append(uid)
        for i in range(15):
            gid = f"61000000-0000-4000-8000-{i:012d}"
            name = rng.choice(["Ops", "ops", "Sales", "Helpdesk"])
            tx.put(
                "groups",
                gid,
                {
                    "id": gid,
                    "displayName": name,
                    "mail": rng.choice([None, f"{name}@contoso.example"]),
                    "isAssignableToRole": i % 2 == 0,
                    "_members": [],
                },
            )
            values["group"] += [name, gid]
            values["principal"].append(gid)
        for i in range(10):
            sid = f"62000000-0000-4000-8000-{i:012d}"
            app = f"63000000-0000-4000-8000-{i % 4:012d}"
            tx.put(
                "servicePrincipals",
                sid,
                {
                    "id": sid,
                    "appId": app,
                    "displayName": rng.choice(["Deploy", "deploy", "CI"]),
                    "servicePrincipalType": "Application",
                },
            )
            values["sp"] += [app, "Deploy"]
        for uid in values["principal"][:70]:
            for role in rng.sample(values["role"], rng.randint(0, 2)):
                end = rng.choice([None, NOW + timedelta(days=30), NOW - timedelta(days=1)])
                pim.seed_eligibility(tx, uid, role, "/", NOW - timedelta(days=2), pim.ts(end) if end else None)
            if rng.random() < 0.2:
                pim.seed_direct_assignment(tx, None, uid, rng.choice(values["role"]), "/", NOW - timedelta(days=1))
    for uid in values["principal"][:20:3]:  # requests, one of them scheduled for the future
        start = NOW + timedelta(days=3) if uid.endswith("3") else NOW
        body = {
            "action": "adminAssign",
            "principalId": uid,
            "roleDefinitionId": USER_ADMIN,
            "directoryScopeId": "/",
            "justification": "test",
            "scheduleInfo": {
                "startDateTime": pim.ts(start),
                "expiration": {"type": "afterDuration", "duration": "P10D"},
            },
        }
        code, _ = env.call("POST", ELIG_REQ, body)
        assert code in (201, 400)
    return values


_ROUTES = {
    # path: (indexed properties, other properties, value pool)
    "/v1.0/users": (["userPrincipalName", "mail", "displayName"], ["jobTitle", "id", "accountEnabled"], "user"),
    "/v1.0/groups": (["displayName", "mail"], ["id", "isAssignableToRole"], "group"),
    "/v1.0/servicePrincipals": (["displayName", "appId"], ["servicePrincipalType"], "sp"),
    "/v1.0/roleManagement/directory/roleEligibilitySchedules": (
        ["principalId", "roleDefinitionId"],
        ["directoryScopeId", "status", "memberType"],
        "principal",
    ),
    "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances": (
        ["principalId", "roleDefinitionId"],
        ["directoryScopeId", "memberType"],
        "principal",
    ),
    "/v1.0/roleManagement/directory/roleAssignmentSchedules": (
        ["principalId", "roleDefinitionId"],
        ["assignmentType", "status"],
        "principal",
    ),
    "/v1.0/roleManagement/directory/roleAssignmentScheduleInstances": (
        ["principalId", "roleDefinitionId"],
        ["assignmentType"],
        "principal",
    ),
    "/v1.0/roleManagement/directory/roleEligibilityScheduleRequests": (
        ["principalId", "roleDefinitionId"],
        ["status", "action"],
        "principal",
    ),
    "/v1.0/roleManagement/directory/roleAssignments": (
        ["principalId", "roleDefinitionId"],
        ["directoryScopeId"],
        "principal",
    ),
}


def _literal(rng, pool):
    value = rng.choice(pool + [None, "nobody@contoso.example", GA, USER_ADMIN])
    if value is None:
        return "null"
    if rng.random() < 0.3:
        value = value.swapcase()
    if rng.random() < 0.1 and len(value) == 36 and value.count("-") == 4 and "'" not in value:
        return value  # an unquoted GUID literal
    return "'" + value.replace("'", "''") + "'"


def _term(rng, indexed, other, pool):
    prop = rng.choice(indexed * 3 + other + ["noSuchProperty"] * (rng.random() < 0.05))
    if rng.random() < 0.1:
        prop = prop.upper()  # property names are case-insensitive
    pick = rng.random()
    if prop.lower() in ("accountenabled", "isassignabletorole") and pick < 0.5:
        return f"{prop} eq {rng.choice(['true', 'false'])}"
    if pick < 0.45:
        return f"{prop} eq {_literal(rng, pool)}"
    if pick < 0.7:
        vals = [_literal(rng, pool) for _ in range(rng.randint(1, 3))]
        return f"{prop} in ({','.join(vals)})"
    if pick < 0.8:
        return f"{prop} ne {_literal(rng, pool)}"
    if pick < 0.9:
        return f"startswith({prop}, {_literal(rng, [v[:3] for v in pool if v])})"
    return f"{prop} eq 5"


def _filter(rng, indexed, other, pool, depth=0):
    if depth < 2 and rng.random() < 0.45:
        op = rng.choice(["and", "and", "or"])
        left = _filter(rng, indexed, other, pool, depth + 1)
        right = _filter(rng, indexed, other, pool, depth + 1)
        text = f"{left} {op} {right}"
        return f"({text})" if rng.random() < 0.5 else text
    term = _term(rng, indexed, other, pool)
    return f"not ({term})" if rng.random() < 0.05 else term


def test_indexed_answers_equal_scanned_answers(tmp_path, monkeypatch):
    rng = random.Random(20261129)
    env = Env(tmp_path / "s.sqlite3")
    env.settings["page_size"] = 7  # several pages: nextLink and $count must agree too
    values = _tenant(env, rng)
    real = odata.collection_response
    taken = {"index": 0, "scan": 0}
    real_candidates = odata.Source.candidates

    def counting(self, tree):
        ids = real_candidates(self, tree)
        taken["scan" if ids is None else "index"] += 1
        return ids

    def as_list(ctx, items, *args, **kw):  # the pre-index behaviour: the whole list, then the filter
        if isinstance(items, odata.Source):
            items = items.all()
        return real(ctx, items, *args, **kw)

    cases = 0
    for _ in range(700):
        path = rng.choice(list(_ROUTES))
        indexed, other, pool_name = _ROUTES[path]
        pool = [v for v in values[pool_name] if v]
        query = {"$filter": _filter(rng, indexed, other, pool), "$count": "true"}
        if rng.random() < 0.15:
            del query["$filter"]  # a plain listing: only the page is viewed
        if rng.random() < 0.1:
            query["$orderby"] = rng.choice(indexed) + rng.choice(["", " desc"])
        if rng.random() < 0.2:
            query[rng.choice(["$top", "$skip"])] = str(rng.randint(0, 12))
        if path == "/v1.0/users" and rng.random() < 0.5:
            query["$select"] = "id,displayName,userPrincipalName,mail,accountEnabled"
        elif rng.random() < 0.1:
            query["$select"] = rng.choice(["id,principalId", "id,noSuchProperty", "displayName"])
        if rng.random() < 0.2:
            env.advance(hours=rng.choice([1, 24, 24 * 20]))  # schedules expire / start between queries
        monkeypatch.setattr(odata.Source, "candidates", counting)
        monkeypatch.setattr(odata, "collection_response", real)
        indexed_answer = env.call("GET", path, query=query, claims=APP)
        monkeypatch.setattr(odata, "collection_response", as_list)
        scanned_answer = env.call("GET", path, query=query, claims=APP)
        assert indexed_answer == scanned_answer, (path, query)
        cases += indexed_answer[0] == 200 and len(indexed_answer[1]["value"]) > 0
    monkeypatch.setattr(odata, "collection_response", real)
    # not vacuous: most filters used the index, many found something, and some fell back to the scan
    assert taken["index"] > 300 and taken["scan"] > 50, taken
    assert cases > 150, cases
    env.store.close()


def test_indexed_lookups_by_principal_and_upn(tmp_path):
    env = Env(tmp_path / "s.sqlite3")
    rng = random.Random(7)
    values = _tenant(env, rng)
    uid = values["principal"][0]
    with env.store.transaction() as tx:
        upn = tx.peek("users", uid)["userPrincipalName"]
        expected = [
            d["id"]
            for d in tx.list("roleEligibilitySchedules")
            if d["principalId"] == uid and not pim._is_expired(d, env.clock.now())
        ]
    body = env.ok("GET", f"/v1.0/users/{upn.swapcase()}")
    assert body["id"] == uid
    body = env.ok(
        "GET", "/v1.0/roleManagement/directory/roleEligibilitySchedules", query={"$filter": f"principalId eq '{uid}'"}
    )
    assert [s["id"] for s in body["value"]] == expected
    for inst in env.ok("GET", "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances")["value"][:5]:
        got = env.ok("GET", f"/v1.0/roleManagement/directory/roleEligibilityScheduleInstances/{inst['id']}")
        assert got["id"] == inst["id"] and got["principalId"] == inst["principalId"]
    env.store.close()
