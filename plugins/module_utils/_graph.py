# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Microsoft Graph client: one Session, auth, retries, paging, $batch and errors.

Internal to the entra.pim collection: not a public API, may change without notice.

Only this file talks to Graph. Callers pass paths relative to ``/v1.0`` and get parsed JSON
back, or a ``GraphError`` whose message is written for a person (notes §6.1 envelope).
"""

from __future__ import annotations

import json
import platform
import re
import uuid
from urllib.parse import quote, urlsplit

from ansible.module_utils.ansible_release import __version__ as ANSIBLE_CORE_VERSION
from ansible_collections.entra.pim.plugins.module_utils._auth import (
    HAS_REQUESTS,
    CacheFiles,
    RetryPolicy,
    build_credential,
    classify_connection_error,
    decode_jwt_claims,
    describe_connection_error,
    resolve_endpoints,
    select_auth_method,
    tls_hint,
    tls_verify,
)
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError

if HAS_REQUESTS:
    import requests

# Keep in step with galaxy.yml.
COLLECTION_VERSION = "0.1.0"

BATCH_SIZE = 20  # notes §1.5: at most 20 requests per $batch
MAX_PAGES = 10000  # a safety bound on @odata.nextLink chains
_SAFE_METHODS = frozenset(["GET", "HEAD", "DELETE", "PUT"])


def user_agent():
    return "entra.pim/%s ansible-core/%s python/%s" % (
        COLLECTION_VERSION,
        ANSIBLE_CORE_VERSION,
        platform.python_version(),
    )


def odata_quote(value):
    """An OData string literal: ``o'brien`` -> ``'o''brien'``."""
    return "'%s'" % str(value).replace("'", "''")


_CAMEL_1 = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_2 = re.compile(r"([A-Z]+)([A-Z][a-z])")


def _snake(key):
    return _CAMEL_1.sub(r"\1_\2", _CAMEL_2.sub(r"\1_\2", key)).lower()


def snake_case_keys(obj):
    """camelCase keys -> snake_case, recursively; every ``@odata.*`` key (and ``x@odata.y``) dropped."""
    if isinstance(obj, dict):
        return {_snake(k): snake_case_keys(v) for k, v in obj.items() if "@odata." not in k}
    if isinstance(obj, list):
        return [snake_case_keys(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- permission hints

# Route prefix (relative to /v1.0) -> (permissions that allow reading, permissions that allow writing),
# least privileged first (notes §7; directory lookups from the Graph permission reference).
_RM_READ = ["RoleManagement.Read.Directory", "RoleManagement.ReadWrite.Directory"]
PERMISSION_HINTS = {
    "/roleManagement/directory/roleEligibilityScheduleRequests": (
        ["RoleEligibilitySchedule.Read.Directory", "RoleEligibilitySchedule.ReadWrite.Directory"] + _RM_READ,
        ["RoleEligibilitySchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"],
    ),
    "/roleManagement/directory/roleEligibilitySchedules": (
        ["RoleEligibilitySchedule.Read.Directory", "RoleEligibilitySchedule.ReadWrite.Directory"] + _RM_READ,
        [],
    ),
    "/roleManagement/directory/roleEligibilityScheduleInstances": (
        ["RoleEligibilitySchedule.Read.Directory", "RoleEligibilitySchedule.ReadWrite.Directory"] + _RM_READ,
        [],
    ),
    "/roleManagement/directory/roleAssignmentScheduleRequests": (
        ["RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory"] + _RM_READ,
        ["RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"],
    ),
    "/roleManagement/directory/roleAssignmentSchedules": (
        ["RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory"] + _RM_READ,
        [],
    ),
    "/roleManagement/directory/roleAssignmentScheduleInstances": (
        ["RoleAssignmentSchedule.Read.Directory", "RoleAssignmentSchedule.ReadWrite.Directory"] + _RM_READ,
        [],
    ),
    "/roleManagement/directory/roleDefinitions": (
        ["RoleManagement.Read.Directory", "Directory.Read.All", "RoleManagement.ReadWrite.Directory"],
        ["RoleManagement.ReadWrite.Directory"],
    ),
    "/roleManagement/directory/roleAssignments": (
        ["RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All"],
        ["RoleManagement.ReadWrite.Directory"],
    ),
    "/policies/roleManagementPolicies": (
        ["RoleManagementPolicy.Read.Directory", "RoleManagementPolicy.ReadWrite.Directory"] + _RM_READ,
        ["RoleManagementPolicy.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"],
    ),
    "/policies/roleManagementPolicyAssignments": (
        ["RoleManagementPolicy.Read.Directory", "RoleManagementPolicy.ReadWrite.Directory"] + _RM_READ,
        [],
    ),
    "/users": (["User.Read.All", "Directory.Read.All"], []),
    "/groups": (["Group.Read.All", "Directory.Read.All"], []),
    "/servicePrincipals": (["Application.Read.All", "Directory.Read.All"], []),
    "/applications": (["Application.Read.All", "Directory.Read.All"], []),
    "/administrativeUnits": (["AdministrativeUnit.Read.All", "Directory.Read.All"], []),
    "/directory/administrativeUnits": (["AdministrativeUnit.Read.All", "Directory.Read.All"], []),
    "/directoryObjects": (["Directory.Read.All"], ["Directory.Read.All"]),
    "/identityGovernance/privilegedAccess/group/eligibility": (
        ["PrivilegedEligibilitySchedule.Read.AzureADGroup", "PrivilegedEligibilitySchedule.ReadWrite.AzureADGroup"],
        ["PrivilegedEligibilitySchedule.ReadWrite.AzureADGroup"],
    ),
    "/identityGovernance/privilegedAccess/group/assignment": (
        ["PrivilegedAssignmentSchedule.Read.AzureADGroup", "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup"],
        ["PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup"],
    ),
}


def _route_of(path):
    """The /v1.0-relative path without query, for hints and messages."""
    path = path.split("?", 1)[0]
    if "://" in path:
        path = urlsplit(path).path
    if path.startswith("/v1.0/") or path == "/v1.0":
        path = path[len("/v1.0") :]
    return path or "/"


def permission_hint(method, path, claims=None):
    """The sentence a 403 message ends with, or '' when the route is unknown."""
    route = _route_of(path)
    best = None
    for prefix in PERMISSION_HINTS:
        matches = route == prefix or (route.startswith(prefix) and route[len(prefix)] in "/(")
        if matches and (best is None or len(prefix) > len(best)):
            best = prefix
    if best is None:
        return ""
    # POST of a function like getByIds is a read; everything else that is not GET writes.
    writes = method not in ("GET", "HEAD") and not route.startswith("/directoryObjects/")
    read, write = PERMISSION_HINTS[best]
    perms = (write or read) if writes else read
    claims = claims or {}
    delegated = bool(claims.get("scp")) and not claims.get("roles")
    kind = "delegated" if delegated else "application"
    text = " The %s needs one of these Microsoft Graph %s permissions (granted with admin consent): %s." % (
        "signed-in user's app" if delegated else "app",
        kind,
        ", ".join(perms),
    )
    have = claims.get("scp", "").split() if delegated else claims.get("roles") or []
    if claims:
        text += " The token carries: %s." % (", ".join(sorted(have)) or "no Graph permissions")
    if delegated:
        # notes §6.5: delegated calls also need a directory role.
        text += (
            " With a delegated sign-in the user also needs a directory role: Privileged Role Administrator for "
            "changes, or e.g. Global Reader or Security Reader for reads."
        )
    if best == "/policies/roleManagementPolicies" and writes and not delegated:
        text += " Microsoft documents updating policy rules as delegated-only (notes §6.4)."
    if "filterByCurrentUser" in route and not delegated:
        text += " filterByCurrentUser needs a signed-in user, not an app-only token."
    return text


# --------------------------------------------------------------------------- errors


def _ci_get(headers, name):
    if not headers:
        return None
    lname = name.lower()
    for key, value in headers.items():
        if key.lower() == lname:
            return value
    return None


def _parse_error_body(body):
    """(code, message, inner) from a Graph error envelope, tolerating junk (notes §6.1)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        inner = err.get("innerError") or err.get("innererror") or {}
        return err.get("code"), err.get("message"), inner if isinstance(inner, dict) else {}
    return None, None, {}


def build_error(
    status,
    body,
    headers,
    method,
    url,
    attempts=None,
    gave_up=False,
    claims=None,
    auth_method=None,
    graph_url=None,
    content_type=None,
    refreshed=False,
):
    """A GraphError for a Graph answer ``status`` with ``body`` (parsed JSON, text or None).

    ``refreshed``: a 401 that came again after a new token was fetched for the same request.
    """
    code, gmsg, inner = _parse_error_body(body)
    request_id = inner.get("request-id") or _ci_get(headers, "request-id")
    client_request_id = inner.get("client-request-id") or _ci_get(headers, "client-request-id")
    route = _route_of(url)
    if code or gmsg:
        detail = "%d %s: %s" % (status, code or "error", (gmsg or "").strip() or "no message")
    elif isinstance(body, str) and body.strip():
        detail = "%d, with a %s body instead of a Graph error" % (status, content_type or "non-JSON")
    else:
        detail = "%d, with no error details" % status
    if gave_up:
        msg = "Microsoft Graph kept answering %s to %s %s; gave up after %d attempts." % (
            detail,
            method,
            route,
            attempts or 0,
        )
    else:
        verb = "refused" if status < 500 else "failed on"
        msg = "Microsoft Graph %s %s %s (%s)." % (verb, method, route, detail)
    if status == 403:
        msg += permission_hint(method, url, claims)
    elif status == 401:
        if refreshed:
            msg += (
                " Authentication failed: a new access token was fetched after the first refusal and Graph refused "
                "it too, so the request was not sent again."
            )
        msg += _unauthorized_hint(claims, auth_method, graph_url)
    elif status == 404 and not code:
        msg += " The URL does not exist: check graph_url."
    return GraphError(
        msg,
        status=status,
        code=code,
        graph_message=gmsg,
        request_id=request_id,
        client_request_id=client_request_id,
        method=method,
        url=url,
        attempts=attempts,
    )


def _unauthorized_hint(claims, auth_method, graph_url):
    claims = claims or {}
    parts = [" The access token was not accepted."]
    aud = claims.get("aud")
    if aud:
        parts.append(
            " It was issued for audience %s (Graph expects %s or 00000003-0000-0000-c000-000000000000)."
            % (aud, graph_url)
        )
    if claims.get("exp"):
        parts.append(" It expires at Unix time %s." % claims["exp"])
    if auth_method == "access_token":
        parts.append(" A token given in access_token lasts about an hour and must be issued for Microsoft Graph.")
    else:
        parts.append(" Check that tenant_id, cloud and graph_url belong to the same cloud and tenant.")
    return "".join(parts)


def is_token_refusal(status, body, headers=None):
    """True for Graph's answer to an invalid or expired access token (401 InvalidAuthenticationToken,
    or a WWW-Authenticate challenge with ``error="invalid_token"``): a new token may be accepted."""
    if status != 401:
        return False
    code, _msg, _inner = _parse_error_body(body)
    if code == "InvalidAuthenticationToken":
        return True
    challenge = _ci_get(headers, "WWW-Authenticate") or ""
    return "invalid_token" in str(challenge)


def raise_for_item(resp):
    """Return a ``batch()`` item unchanged when it succeeded, else raise its GraphError."""
    status = int(resp.get("status") or 0)
    if 200 <= status < 400:
        return resp
    return _raise_item(resp)


def _raise_item(resp, claims=None, auth_method=None, graph_url=None):
    status = int(resp.get("status") or 0)
    attempts = resp.get("attempts")
    raise build_error(
        status,
        resp.get("body"),
        resp.get("headers") or {},
        resp.get("method") or "GET",
        resp.get("url") or "/",
        attempts=attempts,
        # A throttled or unavailable item that was sent again says how often (like a single request).
        gave_up=status in RetryPolicy.RETRY_STATUSES and (attempts or 1) > 1,
        claims=claims,
        auth_method=auth_method,
        graph_url=graph_url,
        refreshed=bool(resp.get("refreshed")),
    )


# --------------------------------------------------------------------------- client


def _encode_query(params):
    """``$filter=a eq 'b'`` -> ``$filter=a%20eq%20'b'``: keep ``$`` and OData punctuation readable."""
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append("%s=%s" % (quote(str(key), safe="$"), quote(str(value), safe="'(),/:$@")))
    return "&".join(pairs)


class GraphClient:
    """See the team brief for the interface; every method raises GraphError/AuthError."""

    def __init__(self, settings, log=None, warn=None, session=None, sleep=None):
        self.settings = dict(settings)
        self.log = log or (lambda msg: None)
        self.warn = warn or (lambda msg: None)
        self.cloud, self.authority_host, self.graph_url = resolve_endpoints(self.settings)
        self.auth_method = select_auth_method(self.settings)
        self.verify = tls_verify(self.settings)
        self.timeout = self.settings.get("request_timeout") or 60
        self.stats = {"requests": 0, "retries": 0, "token_requests": 0}
        self.retry = RetryPolicy(
            max_retries=5 if self.settings.get("max_retries") is None else self.settings["max_retries"],
            max_retry_wait=60 if self.settings.get("max_retry_wait") is None else self.settings["max_retry_wait"],
            log=self.log,
            sleep=sleep,
            stats=self.stats,
        )
        self.session = session if session is not None else requests.Session()
        self._credential = None
        self._cache = None
        self._token = None
        self._token_from_cache = False

    # ----------------------------------------------------------------- auth

    def _get_credential(self):
        if self._credential is None:
            needs_cache = self.auth_method not in ("access_token", "azure_cli")
            self._cache = CacheFiles(
                self.settings.get("token_cache_path"),
                enabled=needs_cache and self.settings.get("token_cache", True),
                warn=self.warn,
            )
            self._credential = build_credential(
                self.settings,
                self.auth_method,
                self.session,
                self.verify,
                self.timeout,
                self.retry,
                self._cache,
                user_agent(),
                self.stats,
            )
        return self._credential

    def _get_token(self):
        credential = self._get_credential()
        token, from_cache = credential.get_token()
        if not from_cache:
            self.stats["token_requests"] += 1
        self._token, self._token_from_cache = token, from_cache
        return token

    def token_claims(self):
        """Claims of the current access token, decoded but NOT verified."""
        return decode_jwt_claims(self._token or self._get_token())

    def secret_values(self):
        """Runtime secrets (tokens, assertions) to scrub from any output."""
        values = [self._token] if self._token else []
        if self._credential is not None:
            values.extend(self._credential.secret_values())
        return [v for v in values if v]

    def close(self):
        if self._cache is not None:
            self._cache.save()
        self.session.close()

    # ----------------------------------------------------------------- HTTP

    def _url(self, path, params=None):
        if path.startswith("https://") or path.startswith("http://"):
            # @odata.nextLink is opaque, but our token goes only to our Graph host.
            if not path.startswith(self.graph_url + "/"):
                raise GraphError(
                    "Refusing to follow a link to %s: it is not under graph_url %s."
                    % (urlsplit(path).netloc, self.graph_url),
                    code="ForeignLink",
                )
            url = path
        else:
            url = "%s/v1.0%s%s" % (self.graph_url, "" if path.startswith("/") else "/", path)
        if params:
            query = _encode_query(params)
            if query:
                url += ("&" if "?" in url else "?") + query
        return url

    def _send(self, method, path, params=None, body=None, headers=None, idempotent=None):
        """Send with retries; return the successful ``requests.Response``; raise GraphError otherwise."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in _SAFE_METHODS
        url = self._url(path, params)
        route = _route_of(url)
        data = json.dumps(body) if body is not None else None
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            token = self._get_token()
            client_request_id = str(uuid.uuid4())
            hdrs = {
                "Authorization": "Bearer " + token,
                "Accept": "application/json",
                "User-Agent": user_agent(),
                "client-request-id": client_request_id,
                "return-client-request-id": "true",
            }
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            if headers:
                hdrs.update(headers)
            self.stats["requests"] += 1
            try:
                resp = self.session.request(
                    method,
                    url,
                    data=data,
                    headers=hdrs,
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.exceptions.RequestException as exc:
                kind = classify_connection_error(exc)
                reason = describe_connection_error(exc)
                if kind == "tls":
                    raise GraphError(
                        "Could not connect to Microsoft Graph at %s securely (%s %s): %s.%s"
                        % (self.graph_url, method, route, reason, tls_hint(self.verify)),
                        code="TLSError",
                        method=method,
                        url=url,
                        client_request_id=client_request_id,
                        attempts=attempt,
                    )
                if kind == "lost" and not idempotent:
                    raise GraphError(
                        "The response to %s %s was lost (%s). Graph may or may not have carried it out, so it was "
                        "not sent again." % (method, route, reason),
                        code="ResponseLost",
                        method=method,
                        url=url,
                        client_request_id=client_request_id,
                        attempts=attempt,
                    )
                if attempt <= self.retry.max_retries:
                    self.retry.wait(attempt, None, "%s %s: %s" % (method, route, reason))
                    continue
                raise GraphError(
                    "Could not reach Microsoft Graph at %s (%s %s): %s; gave up after %d attempts."
                    % (self.graph_url, method, route, reason, attempt),
                    code="ConnectionError",
                    method=method,
                    url=url,
                    client_request_id=client_request_id,
                    attempts=attempt,
                )

            status = resp.status_code
            if status == 401 and not refreshed and self._may_refresh(resp):
                # The token expired or went stale (clock skew, revoked, a restarted sandbox with new keys), even
                # one just issued: forget it, get a new one and send once more. A 401 means nothing was done.
                refreshed = True
                self._refresh_token(token, "%s %s" % (method, route))
                attempt -= 1
                continue
            if status == 401 and refreshed:
                raise self._error(resp, method, url, attempt, refreshed=True)
            if status in RetryPolicy.RETRY_STATUSES:
                if status == 504 and not idempotent:
                    # A gateway timeout on a write: the backend may have done it (notes §6.2, RoleAssignmentDoesNotExist quirk).
                    raise GraphError(
                        "The response to %s %s was lost (504 Gateway Timeout). Graph may or may not have carried it "
                        "out, so it was not sent again." % (method, route),
                        status=504,
                        code="ResponseLost",
                        request_id=_ci_get(resp.headers, "request-id"),
                        method=method,
                        url=url,
                        client_request_id=client_request_id,
                        attempts=attempt,
                    )
                if attempt <= self.retry.max_retries:
                    self.retry.wait(
                        attempt, resp.headers.get("Retry-After"), "%s %s answered %d" % (method, route, status)
                    )
                    continue
                raise self._error(resp, method, url, attempt, gave_up=True)
            if status >= 400:
                raise self._error(resp, method, url, attempt)
            return resp

    def _may_refresh(self, resp):
        """A 401 worth one new token: Graph says the token is invalid or expired, or it came from the cache."""
        if self._credential is None or not self._credential.can_refresh:
            return False
        if self._token_from_cache:
            return True
        try:
            body = resp.json()
        except ValueError:
            body = None
        return is_token_refusal(401, body, resp.headers)

    def _refresh_token(self, token, what):
        self._credential.invalidate(token)
        self._token = None
        self.log("entra.pim: %s answered 401 (the access token was refused); getting a new token." % what)

    def _error(self, resp, method, url, attempts, gave_up=False, refreshed=False):
        content_type = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip() or None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        claims = decode_jwt_claims(self._token) if self._token and resp.status_code in (401, 403) else None
        return build_error(
            resp.status_code,
            body,
            resp.headers,
            method,
            url,
            attempts=attempts,
            gave_up=gave_up,
            claims=claims,
            auth_method=self.auth_method,
            graph_url=self.graph_url,
            content_type=content_type,
            refreshed=refreshed,
        )

    def _json(self, resp, method, path):
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise GraphError(
                "Microsoft Graph answered %s %s with %d but the body is not JSON."
                % (method, _route_of(path), resp.status_code),
                status=resp.status_code,
                request_id=_ci_get(resp.headers, "request-id"),
                method=method,
                url=resp.url if isinstance(getattr(resp, "url", None), str) else None,
            )

    # ----------------------------------------------------------------- public API

    def get(self, path, params=None, headers=None):
        return self._json(self._send("GET", path, params=params, headers=headers), "GET", path)

    def get_or_none(self, path, params=None, headers=None):
        try:
            return self.get(path, params=params, headers=headers)
        except GraphError as err:
            if err.status == 404:
                return None
            raise

    def list(self, path, params=None, headers=None):
        items = []
        url, query = path, params
        seen = set()
        for _page in range(MAX_PAGES):
            data = self._json(self._send("GET", url, params=query, headers=headers), "GET", url) or {}
            items.extend(data.get("value") or [])
            link = data.get("@odata.nextLink")
            if not link:
                return items
            if link in seen:
                raise GraphError("Microsoft Graph returned the same @odata.nextLink twice for %s." % _route_of(path))
            seen.add(link)
            url, query = link, None
        raise GraphError("Stopped after %d pages of %s." % (MAX_PAGES, _route_of(path)))

    def post(self, path, body, params=None, idempotent=False, headers=None):
        return self._json(
            self._send("POST", path, params=params, body=body, headers=headers, idempotent=idempotent), "POST", path
        )

    def patch(self, path, body, idempotent=False, headers=None):
        return self._json(self._send("PATCH", path, body=body, headers=headers, idempotent=idempotent), "PATCH", path)

    def delete(self, path, headers=None):
        try:
            self._send("DELETE", path, headers=headers)
        except GraphError as err:
            if err.status != 404:
                raise
        return None

    # ----------------------------------------------------------------- $batch

    def batch(self, requests):
        """Send ``requests`` through ``POST /$batch`` in chunks of 20 (notes §1.5).

        Items answered 429/503 (and 504 for GET/DELETE, or for a request given with
        ``"idempotent": True``) are sent again, honouring their
        Retry-After, up to max_retries rounds. Returns one dict per request, in the given order:
        ``{"id", "status", "headers", "body", "method", "url"}``. Item errors do not raise; use
        ``raise_for_item``.
        """
        items = []
        seen = set()
        idempotent = set()  # ids of writes the caller says are safe to send again (e.g. a whole-rule PATCH)
        for index, req in enumerate(requests):
            rid = str(req.get("id", index + 1))
            if rid.lower() in seen:
                raise ValueError("duplicate $batch request id %r (ids are compared case-insensitively)" % rid)
            seen.add(rid.lower())
            url = req["url"]
            if url.startswith(self.graph_url + "/v1.0"):
                url = url[len(self.graph_url + "/v1.0") :]
            item = {"id": rid, "method": req.get("method", "GET").upper(), "url": url}
            headers = dict(req.get("headers") or {})
            if req.get("body") is not None:
                item["body"] = req["body"]
                if not _ci_get(headers, "Content-Type"):
                    headers["Content-Type"] = "application/json"
            if headers:
                item["headers"] = headers
            if req.get("dependsOn"):
                item["dependsOn"] = list(req["dependsOn"])
            if req.get("idempotent"):
                idempotent.add(rid)
            items.append(item)

        results = {}
        pending = items
        refreshed = False
        for round_number in range(self.retry.max_retries + 1):
            for start in range(0, len(pending), BATCH_SIZE):
                chunk = pending[start : start + BATCH_SIZE]
                self._send_chunk(chunk, results)
            refused = [i for i in pending if self._item_token_refused(results[i["id"]])]
            if refused and not refreshed and self._credential is not None and self._credential.can_refresh:
                # An item refused for its token was not carried out: get a new token once and send those again.
                refreshed = True
                self._refresh_token(self._token, "$batch: %d of %d items" % (len(refused), len(pending)))
                for start in range(0, len(refused), BATCH_SIZE):
                    self._send_chunk(refused[start : start + BATCH_SIZE], results)
                for i in refused:
                    if self._item_token_refused(results[i["id"]]):
                        results[i["id"]]["refreshed"] = True
            retry_items = [
                i
                for i in pending
                if self._item_retryable(i, results[i["id"]])
                or (results[i["id"]]["status"] == 504 and i["id"] in idempotent)
            ]
            if not retry_items or round_number >= self.retry.max_retries:
                break
            waits = [
                RetryPolicy.parse_retry_after(_ci_get(results[i["id"]].get("headers"), "Retry-After"))
                for i in retry_items
            ]
            waits = [w for w in waits if w is not None]
            self.retry.wait(
                round_number + 1,
                max(waits) if waits else None,
                "$batch: %d of %d items answered %s"
                % (
                    len(retry_items),
                    len(pending),
                    "/".join(sorted({str(results[i["id"]]["status"]) for i in retry_items})),
                ),
            )
            pending = retry_items
        return [results[i["id"]] for i in items]

    @staticmethod
    def _item_token_refused(result):
        return is_token_refusal(int(result.get("status") or 0), result.get("body"), result.get("headers"))

    @staticmethod
    def _item_retryable(item, result):
        status = result.get("status")
        if status in (429, 503):
            return True
        return status == 504 and item["method"] in _SAFE_METHODS

    def _send_chunk(self, chunk, results):
        idempotent = all(i["method"] in ("GET", "HEAD") for i in chunk)
        data = self.post("/$batch", {"requests": chunk}, idempotent=idempotent) or {}
        by_id = {}
        for resp in data.get("responses") or []:
            if isinstance(resp, dict) and resp.get("id") is not None:
                by_id[str(resp["id"]).lower()] = resp
        for item in chunk:
            resp = by_id.get(item["id"].lower())
            attempts = results[item["id"]]["attempts"] + 1 if item["id"] in results else 1
            if resp is None:
                resp = {
                    "status": 502,
                    "body": {
                        "error": {"code": "BatchItemMissing", "message": "The $batch response had no answer for it."}
                    },
                }
            results[item["id"]] = {
                "id": item["id"],
                "status": int(resp.get("status") or 0),
                "headers": resp.get("headers") or {},
                "body": resp.get("body"),
                "method": item["method"],
                "url": item["url"],
                "attempts": attempts,
            }

    def raise_for_item(self, resp):
        """Like the module-level ``raise_for_item``, with this client's token and permission context."""
        status = int(resp.get("status") or 0)
        if 200 <= status < 400:
            return resp
        claims = decode_jwt_claims(self._token) if self._token and status in (401, 403) else None
        return _raise_item(resp, claims, self.auth_method, self.graph_url)
