# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A token Graph refuses as expired or invalid is replaced once, and the request sent again
(issue 14, point 15): for a plain request, for the ``$batch`` POST and for ``$batch`` items,
even when the token was just issued. A second refusal is a clear error, never a loop.

Client edge cases against a fake Graph and identity platform (the sandbox tests in
tests/hardening/test_token_cache.py cover the same through real MSAL and HTTPS).
"""

from __future__ import annotations

import pytest
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import GraphClient
from entra_pim_unit_fakes import (
    CLIENT,
    GRAPH,
    SECRET,
    TENANT,
    FakeSession,
    add_identity,
    make_jwt,
    make_response,
)

V1 = GRAPH + "/v1.0"
EXPIRED = {
    "error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation failed, the token is expired."}
}


def settings(base, **kw):
    s = dict(base, tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, token_cache=False)
    s.update(kw)
    return s


def client_for(s, session):
    logs = []
    client = GraphClient(s, log=logs.append, warn=[].append, session=session, sleep=[].append)
    client.logs = logs
    return client


def tokens(n):
    """An identity platform that gives a new token at every request: token-0, token-1, ..."""
    issued = [make_jwt(jti="token-%d" % i) for i in range(n)]

    def answer_for(token):
        return make_response(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    return issued, [answer_for(t) for t in issued]


def bearer(call):
    return call.headers["Authorization"][len("Bearer ") :]


def token_posts(session):
    return [c for c in session.identity_calls() if c.method == "POST"]


def test_a_just_issued_token_refused_as_expired_is_replaced_once(base_settings):
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)
    session.add(
        "GET", V1, lambda call: make_response(200, {}) if bearer(call) == issued[1] else make_response(401, EXPIRED)
    )
    client = client_for(settings(base_settings), session)
    assert client.get("/users") == {}
    assert [bearer(c) for c in session.graph_calls()] == [issued[0], issued[1]]
    assert len(token_posts(session)) == 2 and client.stats["token_requests"] == 2
    assert "getting a new token" in client.logs[0]


def test_a_www_authenticate_invalid_token_challenge_counts_as_a_refused_token(base_settings):
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)
    challenge = {"WWW-Authenticate": 'Bearer realm="", error="invalid_token", error_description="expired"'}
    session.add(
        "GET",
        V1,
        lambda call: make_response(200, {}) if bearer(call) == issued[1] else make_response(401, None, challenge),
    )
    client = client_for(settings(base_settings), session)
    assert client.get("/users") == {}
    assert [bearer(c) for c in session.graph_calls()] == [issued[0], issued[1]]


def test_a_second_refusal_is_a_clear_error_and_no_loop(base_settings):
    issued, answers = tokens(3)
    session = add_identity(FakeSession(), token_answers=answers)
    session.add("GET", V1, make_response(401, EXPIRED))
    client = client_for(settings(base_settings), session)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    err = info.value
    assert err.status == 401 and err.code == "InvalidAuthenticationToken"
    assert "Authentication failed: a new access token was fetched after the first refusal" in err.msg
    assert "Lifetime validation failed, the token is expired." in err.msg
    assert len(session.graph_calls()) == 2 and len(token_posts(session)) == 2


def test_a_refused_write_is_sent_again_with_the_new_token(base_settings):
    """A 401 means Graph did nothing, so even a write that is not idempotent is sent again once."""
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)
    session.add(
        "POST",
        V1 + "/things",
        lambda call: make_response(201, {"id": "x"}) if bearer(call) == issued[1] else make_response(401, EXPIRED),
    )
    client = client_for(settings(base_settings), session)
    assert client.post("/things", {"a": 1}) == {"id": "x"}
    assert [c.json() for c in session.graph_calls()] == [{"a": 1}, {"a": 1}]


def test_another_401_with_a_fresh_token_is_not_retried(base_settings):
    """Only a refused token is worth a new one; a 401 for something else fails at once."""
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)
    session.add("GET", V1, make_response(401, {"error": {"code": "Unauthorized", "message": "Tenant is disabled."}}))
    client = client_for(settings(base_settings), session)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert info.value.status == 401 and len(session.graph_calls()) == 1 and len(token_posts(session)) == 1
    assert "a new access token was fetched" not in info.value.msg


def test_a_static_access_token_cannot_be_replaced(base_settings):
    token = make_jwt(jti="static")
    session = FakeSession().add("GET", V1, make_response(401, EXPIRED))
    client = client_for(dict(base_settings, access_token=token), session)
    with pytest.raises(GraphError) as info:
        client.get("/users")
    assert len(session.calls) == 1
    assert "A token given in access_token lasts about an hour" in info.value.msg


def _batch_answer(issued, item_status=None):
    """$batch: 401 for the outer POST with a refused token, else every item 200 (or ``item_status``)."""

    def answer(call):
        body = call.json()
        if bearer(call) not in issued[-1:]:
            return make_response(401, EXPIRED)
        return make_response(
            200,
            {
                "responses": [
                    {"id": r["id"], "status": item_status or 200, "headers": {}, "body": {"url": r["url"]}}
                    for r in body["requests"]
                ]
            },
        )

    return answer


def test_batch_post_refused_on_the_first_request_after_sign_in_is_sent_again(base_settings):
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)
    session.add("POST", V1 + "/$batch", _batch_answer(issued))
    client = client_for(settings(base_settings), session)
    requests_ = [{"id": str(i), "method": "POST", "url": "/things", "body": {"n": i}} for i in range(25)]
    results = client.batch(requests_)
    assert [r["status"] for r in results] == [200] * 25
    batch_calls = session.graph_calls()
    # Chunk 1 refused, then sent again; chunk 2 goes with the new token at once.
    assert [bearer(c) for c in batch_calls] == [issued[0], issued[1], issued[1]]
    assert [len(c.json()["requests"]) for c in batch_calls] == [20, 20, 5]
    assert len(token_posts(session)) == 2


def test_batch_items_refused_for_their_token_are_sent_again_once(base_settings):
    issued, answers = tokens(2)
    session = add_identity(FakeSession(), token_answers=answers)

    def answer(call):
        body = call.json()
        responses = []
        for r in body["requests"]:
            if r["id"] == "2" and bearer(call) == issued[0]:
                responses.append({"id": r["id"], "status": 401, "headers": {}, "body": EXPIRED})
            else:
                responses.append({"id": r["id"], "status": 201, "headers": {}, "body": {"n": r["body"]["n"]}})
        return make_response(200, {"responses": responses})

    session.add("POST", V1 + "/$batch", answer)
    client = client_for(settings(base_settings), session)
    results = client.batch([{"id": str(i), "method": "POST", "url": "/things", "body": {"n": i}} for i in range(3)])
    assert [(r["status"], r["body"]) for r in results] == [(201, {"n": 0}), (201, {"n": 1}), (201, {"n": 2})]
    calls = session.graph_calls()
    assert [[r["id"] for r in c.json()["requests"]] for c in calls] == [["0", "1", "2"], ["2"]]
    assert bearer(calls[1]) == issued[1] and results[2]["attempts"] == 2


def test_batch_item_refused_again_is_a_clear_error(base_settings):
    issued, answers = tokens(3)
    session = add_identity(FakeSession(), token_answers=answers)

    def answer(call):
        return make_response(
            200, {"responses": [{"id": r["id"], "status": 401, "body": EXPIRED} for r in call.json()["requests"]]}
        )

    session.add("POST", V1 + "/$batch", answer)
    client = client_for(settings(base_settings), session)
    results = client.batch([{"id": "a", "method": "GET", "url": "/users"}])
    assert results[0]["status"] == 401 and len(session.graph_calls()) == 2 and len(token_posts(session)) == 2
    with pytest.raises(GraphError) as info:
        client.raise_for_item(results[0])
    assert "Authentication failed: a new access token was fetched after the first refusal" in info.value.msg
