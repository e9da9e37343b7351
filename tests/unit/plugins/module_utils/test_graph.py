# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GraphClient against a scripted Session: URLs, headers, retries, paging, $batch, errors."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from ansible_collections.entra.pim.plugins.module_utils import _graph
from ansible_collections.entra.pim.plugins.module_utils._auth import RetryPolicy
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import (
    PERMISSION_HINTS,
    GraphClient,
    odata_quote,
    raise_for_item,
    snake_case_keys,
)
from entra_pim_unit_fakes import GRAPH, FakeSession, make_jwt, make_response
from hypothesis import given
from hypothesis import strategies as st
from urllib3.exceptions import NewConnectionError, ProtocolError

V1 = GRAPH + "/v1.0"
TOKEN = make_jwt()


def client_for(session, settings, waits=None, **overrides):
    s = dict(settings, auth_method="access_token", access_token=TOKEN)
    s.update(overrides)
    logs = []
    c = GraphClient(s, log=logs.append, session=session, sleep=(waits.append if waits is not None else None))
    c.logs = logs
    return c


def refused_connection():
    inner = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(inner)


def lost_connection():
    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )


# --------------------------------------------------------------------------- requests on the wire


def test_get_builds_url_headers_and_passes_verify_and_timeout(base_settings):
    session = FakeSession().add("GET", V1 + "/roleManagement", make_response(200, {"id": "x"}))
    client = client_for(session, base_settings, ca_bundle="/etc/pim/ca.pem", request_timeout=17)
    assert client.get("/roleManagement/directory/roleDefinitions/abc") == {"id": "x"}
    call = session.calls[0]
    assert call.url == V1 + "/roleManagement/directory/roleDefinitions/abc"
    assert call.headers["Authorization"] == "Bearer " + TOKEN
    assert re.fullmatch(r"entra\.pim/\d+\.\d+\.\d+ ansible-core/\S+ python/\d+\.\d+\.\d+", call.headers["User-Agent"])
    uuid.UUID(call.headers["client-request-id"])
    # Per request, so REQUESTS_CA_BUNDLE in the environment cannot override it.
    assert call.kwargs["verify"] == "/etc/pim/ca.pem"
    assert call.kwargs["timeout"] == 17
    assert call.kwargs["allow_redirects"] is False


def test_client_request_id_is_new_for_every_request(base_settings):
    session = FakeSession().add("GET", V1, make_response(200, {}))
    client = client_for(session, base_settings)
    for dummy in range(3):
        client.get("/users")
    ids = {c.headers["client-request-id"] for c in session.calls}
    assert len(ids) == 3


def test_per_request_verify_beats_requests_ca_bundle_env(monkeypatch, base_settings):
    """Why verify is passed per request: requests prefers REQUESTS_CA_BUNDLE over Session.verify."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/env/bundle.pem")
    real = requests.Session()
    real.verify = "/session/ca.pem"
    merged = real.merge_environment_settings(GRAPH, {}, None, None, None)
    assert merged["verify"] == "/env/bundle.pem"  # the Session setting is lost
    client = client_for(FakeSession(), base_settings, ca_bundle="/etc/pim/ca.pem")
    merged = real.merge_environment_settings(GRAPH, {}, None, client.verify, None)
    assert merged["verify"] == "/etc/pim/ca.pem"


def test_validate_certs_false_disables_verification(base_settings):
    session = FakeSession().add("GET", V1, make_response(200, {}))
    client = client_for(session, base_settings, validate_certs=False, ca_bundle="/ignored.pem")
    client.get("/users")
    assert session.calls[0].kwargs["verify"] is False


def test_query_encoding_keeps_dollar_and_quotes_and_encodes_spaces(base_settings):
    session = FakeSession().add("GET", V1, make_response(200, {"value": []}))
    client = client_for(session, base_settings)
    client.list(
        "/users", params={"$filter": "userPrincipalName eq %s" % odata_quote("o'brien@contoso.example"), "$top": 5}
    )
    query = session.calls[0].query
    assert query == "$filter=userPrincipalName%20eq%20'o''brien@contoso.example'&$top=5"


def test_post_sends_json_and_returns_body_204_returns_none(base_settings):
    session = FakeSession()
    session.add(
        "POST", V1 + "/roleManagement/directory/roleEligibilityScheduleRequests", make_response(201, {"id": "r1"})
    )
    session.add("POST", V1 + "/roleManagement/directory/roleEligibilityScheduleRequests/r1/cancel", make_response(204))
    client = client_for(session, base_settings)
    body = {"action": "adminAssign", "principalId": "p"}
    assert client.post("/roleManagement/directory/roleEligibilityScheduleRequests", body) == {"id": "r1"}
    assert session.calls[0].json() == body
    assert session.calls[0].headers["Content-Type"] == "application/json"
    assert client.post("/roleManagement/directory/roleEligibilityScheduleRequests/r1/cancel", None) is None


def test_patch_and_delete(base_settings):
    session = FakeSession()
    session.add("PATCH", V1 + "/policies/roleManagementPolicies/p/rules/r", make_response(204))
    session.add("DELETE", V1 + "/roleManagement/directory/roleAssignments/a", make_response(204))
    session.add(
        "DELETE",
        V1 + "/roleManagement/directory/roleAssignments/gone",
        make_response(404, {"error": {"code": "NotFound", "message": "x"}}),
    )
    client = client_for(session, base_settings)
    assert client.patch("/policies/roleManagementPolicies/p/rules/r", {"isExpirationRequired": True}) is None
    assert client.delete("/roleManagement/directory/roleAssignments/a") is None
    # 404 on delete means already gone (STYLE: decorators turn 404 into "already gone").
    assert client.delete("/roleManagement/directory/roleAssignments/gone") is None


def test_stats_count_requests_and_retries(base_settings):
    session = FakeSession().add("GET", V1, make_response(429, {}, {"Retry-After": "0"}), make_response(200, {}))
    waits = []
    client = client_for(session, base_settings, waits)
    client.get("/users")
    assert client.stats == {"requests": 2, "retries": 1, "token_requests": 0}


def test_token_claims_are_decoded_without_verification(base_settings):
    client = client_for(FakeSession(), base_settings, access_token="Bearer " + make_jwt(oid="o-1", roles=["X"]))
    claims = client.token_claims()
    assert claims["oid"] == "o-1" and claims["roles"] == ["X"]
    assert client.auth_method == "access_token"
    assert client.graph_url == GRAPH


# --------------------------------------------------------------------------- retries (notes §6.6)


def test_429_honours_fractional_retry_after(base_settings):
    session = FakeSession().add(
        "GET",
        V1,
        make_response(
            429,
            {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
            {"Retry-After": "2.128"},
        ),
        make_response(200, {"ok": 1}),
    )
    waits = []
    client = client_for(session, base_settings, waits)
    assert client.get("/users") == {"ok": 1}
    assert waits == [2.128]
    assert len(session.calls) == 2
    assert "retry 1 of 5 in 2.1 s (Retry-After)" in client.logs[0]
    assert "GET /users answered 429" in client.logs[0]


def test_retry_after_is_capped_by_max_retry_wait(base_settings):
    session = FakeSession().add("GET", V1, make_response(503, {}, {"Retry-After": "3600"}), make_response(200, {}))
    waits = []
    client = client_for(session, base_settings, waits, max_retry_wait=7)
    client.get("/users")
    assert waits == [7]


def test_retry_after_http_date(base_settings):
    session = FakeSession().add(
        "GET", V1, make_response(503, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), make_response(200, {})
    )
    waits = []
    client = client_for(session, base_settings, waits)
    client.get("/users")
    assert waits == []  # a date in the past means: retry now (no sleep for 0 s)
    assert len(session.calls) == 2


@pytest.mark.parametrize(
    "header, expected",
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("nan", None), ("inf", None), ("soon", None), ("", None), (None, None)],
)
def test_retry_after_parsing(header, expected):
    assert RetryPolicy.parse_retry_after(header) == expected


@pytest.mark.parametrize("status", [429, 503, 504])
def test_backoff_without_retry_after_is_jittered_exponential_and_bounded(base_settings, status):
    session = FakeSession().add("GET", V1, *([make_response(status, {})] * 5 + [make_response(200, {})]))
    waits = []
    client = client_for(session, base_settings, waits, max_retries=5, max_retry_wait=6)
    client.get("/users")
    assert len(waits) == 5
    for n, wait in enumerate(waits, start=1):
        step = min(6, 2 ** (n - 1))
        assert step * 0.5 <= wait <= step
    assert max(waits) <= 6


def test_gives_up_with_attempt_count(base_settings):
    body = {
        "error": {
            "code": "TooManyRequests",
            "message": "Please retry again later.",
            "innerError": {"request-id": "rid-9"},
        }
    }
    session = FakeSession().add("GET", V1, make_response(429, body, {"Retry-After": "1"}))
    waits = []
    client = client_for(session, base_settings, waits, max_retries=2)
    with pytest.raises(GraphError) as info:
        client.get("/roleManagement/directory/roleDefinitions")
    err = info.value
    assert len(session.calls) == 3
    assert err.attempts == 3 and err.status == 429 and err.code == "TooManyRequests" and err.request_id == "rid-9"
    assert "gave up after 3 attempts" in err.msg
    assert "GET /roleManagement/directory/roleDefinitions" in err.msg
    assert waits == [1, 1]


def test_max_retries_zero_means_one_attempt(base_settings):
    session = FakeSession().add("GET", V1, make_response(503, {}))
    client = client_for(session, base_settings, [], max_retries=0)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert info.value.attempts == 1 and len(session.calls) == 1


def test_connect_failure_is_retried_then_gives_up(base_settings):
    session = FakeSession().add("GET", V1, refused_connection())
    waits = []
    client = client_for(session, base_settings, waits, max_retries=3)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert len(session.calls) == 4
    assert info.value.code == "ConnectionError"
    assert "connection was refused" in info.value.msg and "gave up after 4 attempts" in info.value.msg
    assert "Traceback" not in info.value.msg and "HTTPSConnectionPool" not in info.value.msg


def test_post_connect_failure_before_sending_is_retried(base_settings):
    session = FakeSession().add("POST", V1, refused_connection(), make_response(201, {"id": "1"}))
    client = client_for(session, base_settings, [])
    assert client.post("/roleManagement/directory/roleEligibilityScheduleRequests", {"a": 1}) == {"id": "1"}
    assert len(session.calls) == 2


@pytest.mark.parametrize(
    "exc",
    [
        lost_connection(),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("x"),
    ],
    ids=["reset", "read-timeout", "chunked"],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_lost_response_on_write_is_not_resent(base_settings, exc, method):
    session = FakeSession().add(method, V1, exc, make_response(201, {"id": "dup"}))
    client = client_for(session, base_settings, [])
    call = client.post if method == "POST" else client.patch
    with pytest.raises(GraphError) as info:
        call("/roleManagement/directory/roleEligibilityScheduleRequests", {"action": "adminAssign"})
    assert info.value.code == "ResponseLost"
    assert len(session.calls) == 1
    assert "not sent again" in info.value.msg


def test_gateway_timeout_on_post_is_a_lost_response(base_settings):
    session = FakeSession().add("POST", V1, make_response(504, {}), make_response(201, {"id": "dup"}))
    client = client_for(session, base_settings, [])
    with pytest.raises(GraphError) as info:
        client.post("/roleManagement/directory/roleAssignmentScheduleRequests", {})
    assert info.value.code == "ResponseLost" and info.value.status == 504
    assert len(session.calls) == 1


def test_lost_response_is_retried_when_caller_says_idempotent(base_settings):
    session = FakeSession().add("POST", V1, lost_connection(), make_response(200, {"value": []}))
    client = client_for(session, base_settings, [])
    assert client.post("/directoryObjects/getByIds", {"ids": []}, idempotent=True) == {"value": []}
    assert len(session.calls) == 2


def test_lost_response_on_get_is_retried(base_settings):
    session = FakeSession().add("GET", V1, requests.exceptions.ReadTimeout("x"), make_response(200, {"a": 1}))
    client = client_for(session, base_settings, [])
    assert client.get("/users/x") == {"a": 1}


def test_tls_failure_is_not_retried_and_names_ca_bundle(base_settings):
    session = FakeSession().add("GET", V1, requests.exceptions.SSLError("certificate verify failed"))
    client = client_for(session, base_settings, [])
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert len(session.calls) == 1
    assert info.value.code == "TLSError" and "ca_bundle" in info.value.msg


# --------------------------------------------------------------------------- paging (notes §6.7)


def test_list_follows_next_link_across_three_pages(base_settings):
    page2 = V1 + "/roleManagement/directory/roleEligibilitySchedules?$skiptoken=abc%3D%3D"
    page3 = V1 + "/roleManagement/directory/roleEligibilitySchedules?$skiptoken=def"
    session = FakeSession()
    session.add(
        "GET",
        V1 + "/roleManagement/directory/roleEligibilitySchedules?$filter",
        make_response(200, {"value": [{"id": 1}, {"id": 2}], "@odata.nextLink": page2}),
    )
    session.add("GET", page2, make_response(200, {"value": [{"id": 3}], "@odata.nextLink": page3}))
    session.add("GET", page3, make_response(200, {"value": [{"id": 4}]}))
    client = client_for(session, base_settings)
    items = client.list("/roleManagement/directory/roleEligibilitySchedules", params={"$filter": "principalId eq 'x'"})
    assert [i["id"] for i in items] == [1, 2, 3, 4]
    # The next link is used as given (opaque), with no extra parameters.
    assert [c.url for c in session.calls[1:]] == [page2, page3]


def test_list_refuses_next_link_to_another_host(base_settings):
    session = FakeSession().add(
        "GET", V1, make_response(200, {"value": [], "@odata.nextLink": "https://evil.example/v1.0/users?x"})
    )
    client = client_for(session, base_settings)
    with pytest.raises(GraphError) as info:
        client.list("/users")
    assert "evil.example" in info.value.msg and len(session.calls) == 1


def test_list_stops_on_a_repeated_next_link(base_settings):
    link = V1 + "/users?$skiptoken=same"
    session = FakeSession().add("GET", V1, make_response(200, {"value": [{"id": 1}], "@odata.nextLink": link}))
    client = client_for(session, base_settings)
    with pytest.raises(GraphError):
        client.list("/users")
    assert len(session.calls) == 2


# --------------------------------------------------------------------------- $batch (notes §1.5)


def batch_echo(statuses=None, shuffle=True):
    """A $batch endpoint answering each item 200 (or a scripted status), in reversed order."""
    statuses = statuses or {}
    seen = {}

    def answer(call):
        reqs = call.json()["requests"]
        out = []
        for r in reqs:
            seen[r["id"]] = seen.get(r["id"], 0) + 1
            script = statuses.get(r["id"], [])
            status, headers = script[seen[r["id"]] - 1] if seen[r["id"]] <= len(script) else (200, {})
            body = (
                {"id": r["id"], "url": r["url"]}
                if status < 400
                else {"error": {"code": "TooManyRequests", "message": "slow down"}}
            )
            out.append({"id": r["id"], "status": status, "headers": headers, "body": body})
        if shuffle:
            out.reverse()
        return make_response(200, {"responses": out})

    answer.seen = seen
    return answer


def test_batch_chunks_45_requests_into_3_batches_and_keeps_order(base_settings):
    echo = batch_echo()
    session = FakeSession().add("POST", V1 + "/$batch", echo)
    client = client_for(session, base_settings)
    reqs = [{"id": str(i), "method": "GET", "url": "/users/u%d" % i} for i in range(45)]
    out = client.batch(reqs)
    sizes = [len(c.json()["requests"]) for c in session.calls]
    assert sizes == [20, 20, 5]
    assert [o["id"] for o in out] == [str(i) for i in range(45)]
    assert all(o["status"] == 200 and o["body"]["url"] == "/users/u%s" % o["id"] for o in out)
    assert client.stats["requests"] == 3


def test_batch_retries_throttled_items_with_retry_after(base_settings):
    echo = batch_echo({"2": [(429, {"Retry-After": "3"})], "4": [(503, {}), (429, {"Retry-After": "1.5"})]})
    session = FakeSession().add("POST", V1 + "/$batch", echo)
    waits = []
    client = client_for(session, base_settings, waits)
    out = client.batch([{"id": str(i), "method": "GET", "url": "/users/%d" % i} for i in range(1, 6)])
    assert [o["status"] for o in out] == [200] * 5
    assert [o["id"] for o in out] == ["1", "2", "3", "4", "5"]
    # Round 2 re-sends only items 2 and 4; round 3 only item 4.
    assert [[r["id"] for r in c.json()["requests"]] for c in session.calls] == [
        ["1", "2", "3", "4", "5"],
        ["2", "4"],
        ["4"],
    ]
    assert waits == [3, 1.5]
    assert any("$batch: 2 of 5 items answered 429/503" in line for line in client.logs)


def test_batch_gives_up_on_items_after_max_retries(base_settings):
    echo = batch_echo({"a": [(429, {"Retry-After": "0"})] * 10})
    session = FakeSession().add("POST", V1 + "/$batch", echo)
    client = client_for(session, base_settings, [], max_retries=2)
    out = client.batch(
        [{"id": "a", "method": "GET", "url": "/users/a"}, {"id": "b", "method": "GET", "url": "/users/b"}]
    )
    assert out[0]["status"] == 429 and out[1]["status"] == 200
    assert echo.seen["a"] == 3
    with pytest.raises(GraphError) as info:
        raise_for_item(out[0])
    assert info.value.status == 429 and "GET /users/a" in info.value.msg
    assert "gave up after 3 attempts" in info.value.msg and info.value.attempts == 3


def test_batch_does_not_resend_a_write_item_that_timed_out(base_settings):
    echo = batch_echo({"w": [(504, {})]})
    session = FakeSession().add("POST", V1 + "/$batch", echo)
    client = client_for(session, base_settings, [])
    out = client.batch(
        [{"id": "w", "method": "PATCH", "url": "/policies/roleManagementPolicies/p/rules/r", "body": {"x": 1}}]
    )
    assert out[0]["status"] == 504 and echo.seen["w"] == 1
    sent = session.calls[0].json()["requests"][0]
    assert sent["headers"]["Content-Type"] == "application/json" and sent["body"] == {"x": 1}


def test_batch_resends_a_timed_out_write_item_the_caller_marked_idempotent(base_settings):
    """A whole-rule PATCH (pim_policy) is safe to send again after a 504 (issue 8 fault matrix)."""
    echo = batch_echo({"w": [(504, {})]})
    session = FakeSession().add("POST", V1 + "/$batch", echo)
    client = client_for(session, base_settings, [])
    out = client.batch(
        [
            {
                "id": "w",
                "method": "PATCH",
                "url": "/policies/roleManagementPolicies/p/rules/r",
                "body": {"x": 1},
                "idempotent": True,
            }
        ]
    )
    assert out[0]["status"] == 200 and echo.seen["w"] == 2
    assert "idempotent" not in session.calls[0].json()["requests"][0]


def test_batch_rejects_duplicate_ids_case_insensitively(base_settings):
    client = client_for(FakeSession(), base_settings)
    with pytest.raises(ValueError):
        client.batch([{"id": "A", "method": "GET", "url": "/a"}, {"id": "a", "method": "GET", "url": "/b"}])


def test_batch_item_missing_from_response(base_settings):
    session = FakeSession().add("POST", V1 + "/$batch", make_response(200, {"responses": []}))
    client = client_for(session, base_settings)
    out = client.batch([{"id": "1", "method": "GET", "url": "/users/x"}])
    assert out[0]["status"] == 502 and out[0]["body"]["error"]["code"] == "BatchItemMissing"


def test_batch_with_writes_is_not_resent_when_its_response_is_lost(base_settings):
    session = FakeSession().add("POST", V1 + "/$batch", lost_connection(), make_response(200, {"responses": []}))
    client = client_for(session, base_settings, [])
    with pytest.raises(GraphError) as info:
        client.batch([{"id": "1", "method": "POST", "url": "/x", "body": {}}])
    assert info.value.code == "ResponseLost" and len(session.calls) == 1


def test_raise_for_item_403_names_permission(base_settings):
    session = FakeSession()
    client = client_for(session, base_settings, access_token=make_jwt(roles=["User.Read.All"]))
    client.token_claims()
    item = {
        "id": "1",
        "status": 403,
        "headers": {"request-id": "rq"},
        "body": {
            "error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
            }
        },
        "method": "PATCH",
        "url": "/policies/roleManagementPolicies/Directory_x/rules/Expiration_Admin_Eligibility",
    }
    with pytest.raises(GraphError) as info:
        client.raise_for_item(item)
    assert "RoleManagementPolicy.ReadWrite.Directory" in info.value.msg
    assert "The token carries: User.Read.All." in info.value.msg
    assert info.value.request_id == "rq"
    assert client.raise_for_item({"status": 204}) == {"status": 204}


# --------------------------------------------------------------------------- error mapping (notes §6.1)


def test_403_message_names_the_missing_permission(base_settings):
    body = {
        "error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation.",
            "innerError": {"request-id": "req-1", "client-request-id": "creq-1", "date": "2026-01-01T00:00:00"},
        }
    }
    session = FakeSession().add("GET", V1, make_response(403, body))
    client = client_for(session, base_settings, access_token=make_jwt(roles=[]))
    with pytest.raises(GraphError) as info:
        client.get("/roleManagement/directory/roleDefinitions", params={"$filter": "displayName eq 'x'"})
    err = info.value
    assert err.msg.startswith(
        "Microsoft Graph refused GET /roleManagement/directory/roleDefinitions (403 Authorization_RequestDenied: "
        "Insufficient privileges to complete the operation.). The app needs one of these Microsoft Graph application "
        "permissions (granted with admin consent): RoleManagement.Read.Directory"
    )
    assert "no Graph permissions" in err.msg
    assert (err.status, err.code, err.request_id, err.client_request_id, err.method) == (
        403,
        "Authorization_RequestDenied",
        "req-1",
        "creq-1",
        "GET",
    )
    assert err.url.startswith(V1 + "/roleManagement/directory/roleDefinitions")
    kwargs = err.to_fail_kwargs()
    assert kwargs["error_code"] == "Authorization_RequestDenied" and kwargs["request_id"] == "req-1"


def test_403_for_a_delegated_token_mentions_the_directory_role(base_settings):
    session = FakeSession().add(
        "POST", V1, make_response(403, {"error": {"code": "Authorization_RequestDenied", "message": "no"}})
    )
    client = client_for(session, base_settings, access_token=make_jwt({"scp": "User.Read"}, roles=None))
    with pytest.raises(GraphError) as info:
        client.post("/roleManagement/directory/roleAssignmentScheduleRequests", {})
    assert "delegated permissions" in info.value.msg and "Privileged Role Administrator" in info.value.msg
    assert "RoleAssignmentSchedule.ReadWrite.Directory" in info.value.msg


def test_every_permission_hint_route_is_documented_in_relative_form():
    for prefix, (read, write) in PERMISSION_HINTS.items():
        assert prefix.startswith("/") and not prefix.startswith("/v1.0")
        assert read and all("." in p for p in read + write)


def test_401_explains_token_audience(base_settings):
    session = FakeSession().add(
        "GET",
        V1,
        make_response(
            401,
            {
                "error": {
                    "code": "InvalidAuthenticationToken",
                    "message": "Access token validation failure. Invalid audience.",
                }
            },
        ),
    )
    client = client_for(session, base_settings, access_token=make_jwt(aud="https://management.azure.com"))
    with pytest.raises(GraphError) as info:
        client.get("/users")
    msg = info.value.msg
    assert "401 InvalidAuthenticationToken" in msg
    assert "audience https://management.azure.com" in msg and GRAPH in msg
    assert "lasts about an hour" in msg
    assert len(session.calls) == 1  # a token given as-is cannot be refreshed


def test_404_get_or_none(base_settings):
    session = FakeSession().add(
        "GET",
        V1,
        make_response(404, {"error": {"code": "Request_ResourceNotFound", "message": "Resource 'x' does not exist."}}),
    )
    client = client_for(session, base_settings)
    assert client.get_or_none("/users/x") is None
    with pytest.raises(GraphError) as info:
        client.get("/users/x")
    assert info.value.status == 404 and info.value.code == "Request_ResourceNotFound"


def test_get_or_none_raises_other_errors(base_settings):
    session = FakeSession().add(
        "GET", V1, make_response(400, {"error": {"code": "BadRequest", "message": "Invalid filter clause"}})
    )
    client = client_for(session, base_settings)
    with pytest.raises(GraphError) as info:
        client.get_or_none("/users", params={"$filter": "x"})
    assert info.value.msg == "Microsoft Graph refused GET /users (400 BadRequest: Invalid filter clause)."


def test_non_json_error_body_is_summarised_not_dumped(base_settings):
    html = "<html><body>" + "Bad gateway " * 200 + "</body></html>"
    session = FakeSession().add(
        "GET",
        V1,
        make_response(502, text=html, headers={"Content-Type": "text/html; charset=utf-8", "request-id": "h-1"}),
    )
    client = client_for(session, base_settings)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    err = info.value
    assert err.msg == "Microsoft Graph failed on GET /users (502, with a text/html body instead of a Graph error)."
    assert "<html>" not in err.msg and err.request_id == "h-1" and err.graph_message is None


def test_success_with_non_json_body_is_an_error(base_settings):
    session = FakeSession().add("GET", V1, make_response(200, text="not json"))
    client = client_for(session, base_settings)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert "not JSON" in info.value.msg


# --------------------------------------------------------------------------- helpers


def test_snake_case_keys_drops_odata_and_converts_recursively():
    graph = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#x",
        "id": "1",
        "principalId": "p",
        "roleDefinitionId": "r",
        "scheduleInfo": {
            "startDateTime": "2026-01-01T00:00:00Z",
            "expiration": {"type": "noExpiration", "endDateTime": None},
        },
        "principal": {"@odata.type": "#microsoft.graph.user", "userPrincipalName": "a@b"},
        "members@odata.bind": ["x"],
        "isMFARequired": True,
        "rules": [{"ruleType": "x", "@odata.type": "#t"}],
    }
    assert snake_case_keys(graph) == {
        "id": "1",
        "principal_id": "p",
        "role_definition_id": "r",
        "schedule_info": {
            "start_date_time": "2026-01-01T00:00:00Z",
            "expiration": {"type": "noExpiration", "end_date_time": None},
        },
        "principal": {"user_principal_name": "a@b"},
        "is_mfa_required": True,
        "rules": [{"rule_type": "x"}],
    }


def test_odata_quote_examples():
    assert odata_quote("o'brien@contoso.example") == "'o''brien@contoso.example'"
    assert odata_quote("x' or 1 eq 1") == "'x'' or 1 eq 1'"
    assert odata_quote("") == "''"


@given(st.text())
def test_odata_quote_round_trips_and_never_closes_early(value):
    quoted = odata_quote(value)
    inner = quoted[1:-1]
    assert quoted[0] == quoted[-1] == "'"
    # Inside the literal every quote is doubled, so the literal cannot end before the last character.
    assert re.fullmatch(r"(?:[^']|'')*", inner, flags=re.S)
    assert inner.replace("''", "'") == value


def test_user_agent_names_collection_ansible_and_python():
    ua = _graph.user_agent()
    assert ua.startswith("entra.pim/%s " % _graph.COLLECTION_VERSION)
    assert " ansible-core/" in ua and " python/" in ua
