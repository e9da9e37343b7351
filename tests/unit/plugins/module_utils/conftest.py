# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fakes for the Graph client tests: a scripted requests.Session, JWTs, an identity endpoint.

No network: every request the code under test makes is answered (or refused) here.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

AUTHORITY = "https://login.example.test"
GRAPH = "https://graph.example.test"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

# Secret values every leak test looks for.
SECRET = "s3cr3t-Value-9f2b7c1d~XyZ"
CERT_PASSWORD = "p4ss-Word-For-The-Key-77"
USER_PASSWORD = "Us3r-Pa55word!-zq81"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims=None, **extra):
    body = {"aud": GRAPH, "tid": TENANT, "exp": int(time.time()) + 3600, "roles": ["RoleManagement.Read.Directory"]}
    body.update(claims or {})
    body.update(extra)
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return "%s.%s.%s" % (header, b64url(json.dumps(body).encode()), b64url(b"signature-bytes"))


def make_response(status=200, json_body=None, headers=None, text=None, url="https://x.test/"):
    resp = requests.Response()
    resp.status_code = status
    resp.url = url
    hdrs = dict(headers or {})
    if json_body is not None:
        resp._content = json.dumps(json_body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    elif text is not None:
        resp._content = text.encode("utf-8")
    else:
        resp._content = b""
    resp.headers = requests.structures.CaseInsensitiveDict(hdrs)
    resp.encoding = "utf-8"
    return resp


class Call:
    def __init__(self, method, url, kwargs):
        self.method = method
        self.url = url
        self.kwargs = kwargs
        self.headers = dict(kwargs.get("headers") or {})
        data = kwargs.get("data")
        self.data = data

    @property
    def path(self):
        return urlsplit(self.url).path

    @property
    def query(self):
        return urlsplit(self.url).query

    def json(self):
        return json.loads(self.data)

    def form(self):
        if isinstance(self.data, dict):
            return self.data
        return {k: v[0] for k, v in parse_qs(self.data or "").items()}


class FakeSession:
    """Routes are (method, url prefix) -> list of answers consumed in order (the last one repeats).

    An answer is a requests.Response, an exception instance (raised), or a callable(call) -> either.
    """

    def __init__(self):
        self.calls = []
        self.routes = []
        self.closed = False

    def add(self, method, prefix, *answers):
        self.routes.append([method.upper(), prefix, list(answers)])
        return self

    def request(self, method, url, **kwargs):
        call = Call(method.upper(), url, kwargs)
        self.calls.append(call)
        best = None
        for route in self.routes:
            if route[0] == call.method and url.startswith(route[1]) and (best is None or len(route[1]) > len(best[1])):
                best = route
        if best is None:
            raise AssertionError("unexpected request %s %s" % (method, url))
        answers = best[2]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer) and not isinstance(answer, (requests.Response, BaseException)):
            answer = answer(call)
        if isinstance(answer, BaseException):
            raise answer
        answer.url = url
        return answer

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, **kwargs):
        return self.request("POST", url, **kwargs)

    def close(self):
        self.closed = True

    def graph_calls(self):
        return [c for c in self.calls if c.url.startswith(GRAPH)]

    def identity_calls(self):
        return [c for c in self.calls if c.url.startswith(AUTHORITY)]


def add_identity(session, token=None, tenant=TENANT, token_answers=None):
    """Answer MSAL's discovery GET and token POST like the Microsoft identity platform does."""
    base = "%s/%s" % (AUTHORITY, tenant)
    session.add(
        "GET",
        base + "/v2.0/.well-known/openid-configuration",
        make_response(
            200,
            {
                "token_endpoint": base + "/oauth2/v2.0/token",
                "authorization_endpoint": base + "/oauth2/v2.0/authorize",
                "issuer": base + "/v2.0",
                "device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
            },
        ),
    )
    session.add("GET", AUTHORITY + "/common/userrealm/", make_response(404, {"error": "not found"}))
    if token_answers is None:

        def answer(call):
            body = {"access_token": token or make_jwt(), "expires_in": 3600, "token_type": "Bearer"}
            form = call.form()
            if form.get("grant_type") == "password":
                # A user sign-in also returns who signed in, which MSAL needs to find the account next time.
                oid = "99999999-0000-0000-0000-000000000001"
                body["client_info"] = b64url(json.dumps({"uid": oid, "utid": tenant}).encode())
                body["id_token"] = make_jwt(
                    iss="%s/v2.0" % base,
                    sub=oid,
                    oid=oid,
                    aud=form.get("client_id"),
                    preferred_username=form["username"],
                    iat=int(time.time()),
                )
                body["refresh_token"] = "refresh-" + oid
                body["scope"] = form.get("scope", "")
            return make_response(200, body)

        token_answers = [answer]
    session.add("POST", base + "/oauth2/v2.0/token", *token_answers)
    return session


@pytest.fixture
def fake_session():
    return FakeSession()


@pytest.fixture
def base_settings(tmp_path):
    return {
        "auth_method": "auto",
        "tenant_id": None,
        "client_id": None,
        "client_secret": None,
        "client_certificate_path": None,
        "client_certificate_password": None,
        "federated_token_file": None,
        "managed_identity_client_id": None,
        "access_token": None,
        "username": None,
        "password": None,
        "azure_cli_path": None,
        "cloud": None,
        "authority_host": AUTHORITY,
        "graph_url": GRAPH,
        "ca_bundle": None,
        "validate_certs": True,
        "token_cache": True,
        "token_cache_path": str(tmp_path / "cache" / "token_cache.json"),
        "request_timeout": 30,
        "max_retries": 5,
        "max_retry_wait": 60,
    }


# Test modules here import these helpers as `entra_pim_unit_fakes` (the test tree has no packages,
# so `from .conftest import` cannot work). pytest loads this conftest before any test module beside it.
sys.modules.setdefault("entra_pim_unit_fakes", sys.modules[__name__])
