"""JSON batching (notes §1.5, graph/json-batching.md)."""

from __future__ import annotations

import pytest

GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
ALICE = "10000000-0000-4000-8000-000000000002"
BOB = "10000000-0000-4000-8000-000000000003"
JSON = {"Content-Type": "application/json"}


def _batch(sb, requests, **kw):
    return sb.post("/$batch", json={"requests": requests}, **kw)


def _by_id(resp):
    assert resp.status_code == 200, resp.text
    return {item["id"]: item for item in resp.json()["responses"]}


def test_batch_basic_items_and_stats(fresh):
    sb = fresh
    r = _batch(
        sb,
        [
            {"id": "1", "method": "GET", "url": "/users?$top=1&$select=displayName"},
            {"id": "2", "method": "GET", "url": f"/users/{ALICE}"},
            {"id": "3", "method": "GET", "url": "users/00000000-0000-4000-8000-00000000dead"},
            {"id": "4", "method": "GET", "url": "/nope"},
        ],
    )
    items = _by_id(r)
    assert items["1"]["status"] == 200
    assert set(items["1"]["body"]["value"][0]) == {"id", "displayName"}
    assert items["1"]["headers"]["Content-Type"].startswith("application/json")
    assert items["2"]["status"] == 200 and items["2"]["body"]["id"] == ALICE
    assert items["3"]["status"] == 404 and items["3"]["body"]["error"]["code"]
    assert items["4"]["status"] == 400
    assert items["4"]["body"]["error"]["message"] == "Resource not found for the segment 'nope'."
    stats = sb.stats()
    assert stats["graph_requests"] == 1
    assert stats["by_route"] == {"POST /v1.0/$batch": 1}
    assert stats["batch_items"] == 4
    assert stats["batch_by_route"]["GET /v1.0/users/{id}"] == 2
    assert stats["writes"] == {}


def test_batch_depends_on_and_424(fresh):
    sb = fresh
    body = {"principalId": BOB, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}
    r = _batch(
        sb,
        [
            # runs after 1 although listed first
            {
                "id": "2",
                "dependsOn": ["1"],
                "method": "GET",
                "url": f"/roleManagement/directory/roleAssignments?$filter=principalId eq '{BOB}'",
            },
            {
                "id": "1",
                "method": "POST",
                "url": "/roleManagement/directory/roleAssignments",
                "body": body,
                "headers": JSON,
            },
            # the same assignment again fails, and what depends on it gets 424, transitively
            {
                "id": "3",
                "dependsOn": ["1"],
                "method": "POST",
                "url": "/roleManagement/directory/roleAssignments",
                "body": body,
                "headers": JSON,
            },
            {"id": "4", "dependsOn": ["3"], "method": "GET", "url": "/users"},
            {"id": "5", "dependsOn": ["4"], "method": "GET", "url": "/users"},
        ],
    )
    items = _by_id(r)
    assert items["1"]["status"] == 201
    assert [a["roleDefinitionId"] for a in items["2"]["body"]["value"]] == [GLOBAL_ADMIN]
    assert items["3"]["status"] == 400
    assert items["4"]["status"] == 424 and items["5"]["status"] == 424
    assert items["4"]["body"]["error"]["code"] == "FailedDependency"
    stats = sb.stats()
    assert stats["writes"] == {"POST /v1.0/roleManagement/directory/roleAssignments": 2}
    assert stats["batch_items"] == 3  # 424 items never ran


@pytest.mark.parametrize(
    ("requests", "fragment"),
    [
        ([{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)], "exceeds the limit of 20"),
        (
            [{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/users"}],
            "more than once",
        ),
        (
            [{"id": "1", "method": "POST", "url": "/roleManagement/directory/roleAssignments", "body": {}}],
            "Content-Type",
        ),
        ([{"id": "1", "method": "GET", "url": "/users", "dependsOn": ["9"]}], "unknown id"),
        (
            [
                {"id": "1", "method": "GET", "url": "/users", "dependsOn": ["2"]},
                {"id": "2", "method": "GET", "url": "/users", "dependsOn": ["1"]},
            ],
            "cycle",
        ),
        ([{"method": "GET", "url": "/users"}], "'id'"),
        ([{"id": "1", "method": "FETCH", "url": "/users"}], "method"),
        ([], "empty"),
    ],
)
def test_malformed_batches_are_400(fresh, requests, fragment):
    r = _batch(fresh, requests)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "BadRequest" and fragment in err["message"]
    assert fresh.stats()["batch_items"] == 0


def test_twenty_items_is_fine(fresh):
    r = _batch(fresh, [{"id": str(i), "method": "GET", "url": f"/users/{ALICE}"} for i in range(20)])
    assert len(_by_id(r)) == 20
    assert fresh.stats()["batch_items"] == 20


def test_batch_items_share_auth_and_permissions(fresh):
    body = {"principalId": BOB, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}
    r = _batch(
        fresh,
        [
            {"id": "1", "method": "GET", "url": "/users?$top=1"},
            {
                "id": "2",
                "method": "POST",
                "url": "/roleManagement/directory/roleAssignments",
                "body": body,
                "headers": JSON,
            },
        ],
        app="readonly",
    )
    items = _by_id(r)
    assert items["1"]["status"] == 200
    assert items["2"]["status"] == 403
    assert items["2"]["body"]["error"]["code"] == "Authorization_RequestDenied"
    # no token: the batch itself is 401
    r = fresh.session.post(
        fresh.graph + "/$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/users"}]}, timeout=10
    )
    assert r.status_code == 401


def test_inner_throttling_and_faults_are_per_item(fresh):
    sb = fresh
    sb.control(
        "POST", "/faults", {"rules": [{"kind": "429", "count": 2, "retry_after": 3, "match": {"path": "/users/"}}]}
    )
    r = _batch(sb, [{"id": str(i), "method": "GET", "url": f"/users/{ALICE}"} for i in range(4)])
    items = _by_id(r)
    statuses = [items[str(i)]["status"] for i in range(4)]
    assert statuses == [429, 429, 200, 200]
    assert items["0"]["headers"]["Retry-After"] == "3"
    assert items["0"]["body"]["error"]["code"] == "TooManyRequests"


def test_response_order_setting(fresh):
    sb = fresh
    reqs = [{"id": f"r{i}", "method": "GET", "url": f"/users/{ALICE}"} for i in range(6)]
    in_order = [x["id"] for x in _batch(sb, reqs).json()["responses"]]
    assert in_order == [r["id"] for r in reqs]
    sb.control("PATCH", "/settings", {"batch_response_order": "reverse"})
    assert [x["id"] for x in _batch(sb, reqs).json()["responses"]] == in_order[::-1]
    sb.control("PATCH", "/settings", {"batch_response_order": "shuffle"})
    shuffled = [x["id"] for x in _batch(sb, reqs).json()["responses"]]
    assert sorted(shuffled) == sorted(in_order)
    assert [x["id"] for x in _batch(sb, reqs).json()["responses"]] == shuffled  # deterministic


def test_absolute_next_link_in_batch(fresh):
    sb = fresh
    sb.control("PATCH", "/settings", {"page_size": 2})
    first = sb.get("/users").json()
    r = _batch(sb, [{"id": "1", "method": "GET", "url": first["@odata.nextLink"]}])
    page2 = _by_id(r)["1"]
    assert page2["status"] == 200 and len(page2["body"]["value"]) == 2
    assert page2["body"]["value"][0]["id"] != first["value"][0]["id"]
