"""HTTPS server: dispatch, token checks, error envelope, request ids, stats, faults, latency, throttling.

Stdlib ``ThreadingHTTPServer`` (one daemon thread per connection, HTTP/1.1 keep-alive) with
the TLS handshake done in the connection's thread. Each response is written in one piece
with ``Content-Length``. Every request's handler runs inside one store transaction.
"""

from __future__ import annotations

import hmac
import inspect
import json
import math
import os
import random
import re
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from pim_emulator import clock as clock_mod
from pim_emulator.errors import GraphError
from pim_emulator.files import secure_data_dir, tighten_files, write_private
from pim_emulator.routing import ROUTER, Deferred, RequestContext, Response, Route, split_path
from pim_emulator.store import Store
from pim_emulator.tls import KeyMaterial

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
BODY_METHODS = {"POST", "PATCH", "PUT"}
READ_METHODS = frozenset({"GET", "HEAD"})  # routes that never write: served from a store snapshot
MAX_BODY = 8 * 1024 * 1024
# The deepest JSON body accepted (objects and arrays). Graph's bodies are a few levels deep;
# a seed fixture about 6; a $batch adds 3. Deeper is 400 before the body reaches any handler.
MAX_JSON_DEPTH = 64
CONTROL_KEY_HEADER = "X-PIM-Sandbox-Key"
# Host names the sandbox answers to (README "Control API"): loopback only, so that a web page
# whose name was rebound to 127.0.0.1 cannot reach it from a browser (DNS rebinding).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
_HOST_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?$")

DEFAULT_SETTINGS = {
    "page_size": 100,
    "latency_ms": 0,
    "throttle_rps": 0,
    "app_only_policy_patch": True,
    "replication_lag_seconds": 0,
    "fault_seed": 0,
    "batch_response_order": "request",
}
SETTING_TYPES = {
    "page_size": (int, 1, 999),
    "latency_ms": (int, 0, 60000),
    "throttle_rps": ((int, float), 0, 1e6),
    "app_only_policy_patch": (bool, None, None),
    "replication_lag_seconds": ((int, float), 0, 86400),
    "fault_seed": (int, None, None),
    "batch_response_order": (str, None, None),
}
FAULT_KINDS = {"429", "503", "504", "reset", "lost_response", "token_expired", "subject_not_found", "role_not_found"}


class CloseConnection(Exception):
    """Drop the connection without a reply (fault injection)."""

    def __init__(self, reset: bool):
        super().__init__("connection dropped")
        self.reset = reset


def _graph_date() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


_BAD_JSON = (
    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."
)


def json_depth(value) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse_json_body(raw: bytes):
    """A request body -> its JSON value; 400 BadRequest for anything unreadable or nested
    deeper than ``MAX_JSON_DEPTH`` (which would otherwise end in a RecursionError somewhere)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:  # nested deeper than the interpreter's stack: surely too deep
        body, too_deep = None, True
    except (UnicodeDecodeError, ValueError):
        raise GraphError(400, "BadRequest", _BAD_JSON) from None
    else:
        too_deep = json_depth(body) > MAX_JSON_DEPTH
    if too_deep:
        raise GraphError(
            400,
            "BadRequest",
            f"Unable to read JSON request payload. The payload is nested deeper than {MAX_JSON_DEPTH} levels.",
        )
    return body


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback (127.0.0.1, localhost or [::1],
    with or without a port)."""
    m = _HOST_PORT.match((host or "").strip())
    return bool(m) and m.group(1).lower() in LOOPBACK_HOSTS


class CIHeaders(dict):
    """A case-insensitive read view of headers (``get`` and ``in``)."""

    def __init__(self, items=()):
        super().__init__()
        for k, v in items:
            super().__setitem__(k.lower(), v)

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())


# ----------------------------------------------------------------------------- faults & throttling


class Faults:
    """Fault rules, evaluated in order for each Graph request; deterministic with the fault seed."""

    def __init__(self, seed: int = 0):
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.rng = random.Random(seed)
        self.injected = 0

    @staticmethod
    def validate(rules) -> list[dict]:
        if isinstance(rules, dict):
            rules = rules.get("rules", [rules] if "kind" in rules else [])
        if not isinstance(rules, list):
            raise GraphError(400, "BadRequest", 'Fault rules must be a list or {"rules": [...]}.')
        out = []
        for i, r in enumerate(rules):
            if not isinstance(r, dict):
                raise GraphError(400, "BadRequest", f"Fault rule {i} must be an object.")
            unknown = set(r) - {"kind", "rate", "count", "match", "retry_after", "scope"}
            if unknown:
                raise GraphError(400, "BadRequest", f"Fault rule {i}: unknown keys {sorted(unknown)}.")
            kind = str(r.get("kind", ""))
            if kind not in FAULT_KINDS:
                raise GraphError(400, "BadRequest", f"Fault rule {i}: kind must be one of {sorted(FAULT_KINDS)}.")
            rate, count = r.get("rate"), r.get("count")
            if (rate is None) == (count is None):
                raise GraphError(
                    400, "BadRequest", f"Fault rule {i}: give exactly one of 'rate' (0..1) or 'count' (N)."
                )
            if rate is not None and (not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1):
                raise GraphError(400, "BadRequest", f"Fault rule {i}: 'rate' must be a number between 0 and 1.")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise GraphError(400, "BadRequest", f"Fault rule {i}: 'count' must be a non-negative integer.")
            match = r.get("match") or {}
            if not isinstance(match, dict) or set(match) - {"method", "path"}:
                raise GraphError(400, "BadRequest", f"Fault rule {i}: 'match' takes 'method' and 'path' (a regex).")
            try:
                path_re = re.compile(match["path"]) if match.get("path") else None
            except (re.error, TypeError):
                raise GraphError(400, "BadRequest", f"Fault rule {i}: 'match.path' is not a valid regex.") from None
            ra = r.get("retry_after")
            if ra is not None and (not isinstance(ra, int | float) or isinstance(ra, bool) or ra < 0):
                raise GraphError(
                    400, "BadRequest", f"Fault rule {i}: 'retry_after' must be a non-negative number or null."
                )
            scope = r.get("scope", "any")
            if scope not in ("any", "request", "batch_item"):
                raise GraphError(400, "BadRequest", f"Fault rule {i}: 'scope' must be any, request or batch_item.")
            out.append(
                {
                    "kind": kind,
                    "rate": rate,
                    "count": count,
                    "remaining": count,
                    "match": {k: v for k, v in match.items() if v},
                    "retry_after": ra,
                    "scope": scope,
                    "hits": 0,
                    "_re": path_re,
                }
            )
        return out

    def set(self, rules, append: bool = False) -> None:
        validated = self.validate(rules)
        with self.lock:
            self.rules = (self.rules if append else []) + validated

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def reseed(self, seed: int) -> None:
        with self.lock:
            self.rng = random.Random(seed)

    def listing(self) -> list[dict]:
        with self.lock:
            return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.rules]

    def pick(self, method: str, path: str, in_batch: bool) -> dict | None:
        if not self.rules:
            return None
        with self.lock:
            for r in self.rules:
                # A batch item can only lose the whole $batch answer, and only when asked for.
                item_can_lose = r["kind"] == "lost_response" and r["scope"] == "batch_item"
                # An expired token is refused on the outer $batch POST, before any item runs (as Graph does).
                if in_batch and r["kind"] in ("reset", "lost_response", "token_expired") and not item_can_lose:
                    continue
                if r["scope"] == "request" and in_batch or r["scope"] == "batch_item" and not in_batch:
                    continue
                m = r["match"]
                if m.get("method") and m["method"].upper() != method:
                    continue
                if r["_re"] is not None and not r["_re"].search(path):
                    continue
                if r["count"] is not None:
                    if r["remaining"] <= 0:
                        continue
                    r["remaining"] -= 1
                elif self.rng.random() >= r["rate"]:
                    continue
                r["hits"] += 1
                self.injected += 1
                return dict(r)
        return None


class Throttle:
    """Token bucket per client app: ``rps`` tokens per second, burst of ``rps`` (one second)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets: dict[str, list[float]] = {}
        self.throttled = 0

    def reset(self) -> None:
        with self.lock:
            self.buckets.clear()

    def take(self, key: str, rps: float) -> float:
        """-> 0 when allowed, else the seconds until a token is available."""
        if not rps or rps <= 0:
            return 0.0
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (float(rps), now))
            tokens = min(float(rps), tokens + (now - last) * rps)
            if tokens >= 1.0:
                self.buckets[key] = [tokens - 1.0, now]
                return 0.0
            self.buckets[key] = [tokens, now]
            self.throttled += 1
            return (1.0 - tokens) / rps


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the counters, except ``server_errors`` (a count since start, so no 500 goes unseen)."""
        with self.lock:
            kept = getattr(self, "data", {}).get("server_errors", 0)
            self.data = {
                "graph_requests": 0,
                "token_requests": 0,
                "discovery_requests": 0,
                "batch_items": 0,
                "by_route": {},
                "batch_by_route": {},
                "writes": {},
                "by_status": {},
                "faults_injected": 0,
                "throttled": 0,
                "server_errors": kept,
            }

    def bump(self, key: str, sub: str | None = None, n: int = 1) -> None:
        with self.lock:
            if sub is None:
                self.data[key] += n
            else:
                self.data[key][sub] = self.data[key].get(sub, 0) + n

    def snapshot(self) -> dict:
        with self.lock:
            return json.loads(json.dumps(self.data))


# ----------------------------------------------------------------------------- the emulator


class Emulator:
    def __init__(self, data_dir, settings: dict | None = None, seed_path=None, host: str = "127.0.0.1", verbose=False):
        self.data_dir = Path(data_dir)
        secure_data_dir(self.data_dir)
        # A new key at every start: whoever can read connection.json (0600) may drive the control API.
        self.control_key = secrets.token_urlsafe(32)
        self.host = host
        self.verbose = verbose
        self.startup_settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.settings = dict(self.startup_settings)
        self.seed_path = seed_path
        self.seed_override = None
        if seed_path:
            try:
                self.seed_override = json.loads(Path(seed_path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise SystemExit(f"cannot read seed file {seed_path}: {e}") from None
            if not isinstance(self.seed_override, dict):
                raise SystemExit(f"seed file {seed_path} must hold a JSON object")
        self.keys = KeyMaterial(self.data_dir)
        self.store = Store(self.data_dir / "state.sqlite3")
        tighten_files(self.data_dir)  # SQLite's -wal/-shm, created with the database's mode
        self.clock = clock_mod.Clock()
        self.faults = Faults(int(self.settings.get("fault_seed") or 0))
        self.throttle = Throttle()
        self.stats = Stats()
        self.base_url = ""
        self.tenant_id = ""
        self.inflight = 0
        self.inflight_lock = threading.Lock()
        self.stopping = False
        self.stop_requested = threading.Event()
        _import_handlers()
        from pim_emulator.identity import Identity

        self.identity = Identity(self.keys, self)
        with self.store.transaction() as tx:
            if not tx.meta_get("seeded"):
                self.load_seed(tx, self.seed_override)
            self.tenant_id = tx.meta_get("tenant_id") or ""
            self.clock = clock_mod.Clock.restored(tx.meta_get(clock_mod.META_KEY, 0.0))

    # -- seed ------------------------------------------------------------------
    def load_seed(self, tx, seed: dict | None) -> None:
        """Clear nothing; load a fixture and apply the platform's post-seed steps."""
        from pim_emulator import seed as seed_mod

        fn = seed_mod.load_seed
        try:
            nparams = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            nparams = 2
        tenant = fn(tx, seed, self.settings) if nparams >= 3 else fn(tx, seed)
        source = seed if seed is not None else seed_mod.default_seed()
        tenant = tx.meta_get("tenant_id") or tenant or source.get("tenantId")
        if not tenant:
            raise GraphError(400, "BadRequest", "The seed fixture has no tenantId.")
        tenant = str(tenant).lower()
        tx.meta_put("tenant_id", tenant)
        domains = set()
        if source.get("tenantDomain"):
            domains.add(str(source["tenantDomain"]).lower())
        for user in tx.list("users"):
            upn = str(user.get("userPrincipalName") or "")
            if "@" in upn:
                domains.add(upn.rpartition("@")[2].lower())
        tx.meta_put("tenant_domains", sorted(domains))
        thumb = self.keys.client_thumbprint_sha1
        for app_id in tx.ids("applications"):
            app = tx.get("applications", app_id)
            if app.get("certificateApp"):
                thumbs = [t.lower() for t in app.get("certificateThumbprints") or []]
                if thumb not in thumbs:
                    app["certificateThumbprints"] = [*thumbs, thumb]
                    tx.put("applications", app_id, app)
        tx.meta_put("seeded", True)
        self.tenant_id = tenant

    def reset(self, seed: dict | None = None, keep_settings: bool = False) -> None:
        with self.store.transaction() as tx:
            tx.clear()
            self.load_seed(tx, seed if seed is not None else self.seed_override)
            self.clock.reset()
        self.identity.forget_cached()
        self.throttle.reset()
        if not keep_settings:
            self.faults.clear()
            self.settings.clear()
            self.settings.update(self.startup_settings)
            self.faults.reseed(int(self.settings.get("fault_seed") or 0))

    def tenant_matches(self, tx, tenant: str) -> bool:
        t = (tenant or "").lower()
        if t == self.tenant_id:
            return True
        return t in (tx.meta_get("tenant_domains") or [])

    def connection_info(self, port: int) -> dict:
        with self.store.transaction() as tx:
            apps = tx.list("applications")
        primary = next((a for a in apps if a.get("primary")), apps[0] if apps else {})
        readonly = next((a for a in apps if a.get("readOnly")), {})
        certapp = next((a for a in apps if a.get("certificateApp")), {})
        return {
            "tenant_id": self.tenant_id,
            "client_id": primary.get("appId"),
            "client_secret": primary.get("clientSecret"),
            "authority_host": self.base_url,
            "graph_url": self.base_url,
            "ca_bundle": str(self.keys.ca_path),
            "control_url": f"{self.base_url}/_emulator",
            "control_key": self.control_key,
            "port": port,
            "pid": os.getpid(),
            "readonly_client_id": readonly.get("appId"),
            "readonly_client_secret": readonly.get("clientSecret"),
            "certificate_client_id": certapp.get("appId"),
            "client_certificate_path": str(self.keys.client_cert_path),
            "client_certificate_thumbprint": self.keys.client_thumbprint_sha1,
            "data_dir": str(self.data_dir),
        }

    # -- settings --------------------------------------------------------------
    def update_settings(self, changes: dict) -> dict:
        if not isinstance(changes, dict):
            raise GraphError(400, "BadRequest", "Settings must be a JSON object.")
        clean = {}
        for key, value in changes.items():
            if key not in SETTING_TYPES:
                raise GraphError(400, "BadRequest", f"Unknown setting '{key}'. Known: {sorted(SETTING_TYPES)}.")
            typ, low, high = SETTING_TYPES[key]
            if isinstance(value, bool) and typ is not bool:
                raise GraphError(400, "BadRequest", f"Setting '{key}' has the wrong type.")
            if not isinstance(value, typ):
                raise GraphError(400, "BadRequest", f"Setting '{key}' has the wrong type.")
            if low is not None and not (low <= value <= high):
                raise GraphError(400, "BadRequest", f"Setting '{key}' must be between {low} and {high}.")
            if key == "batch_response_order" and value not in ("request", "reverse", "shuffle"):
                raise GraphError(400, "BadRequest", "batch_response_order must be request, reverse or shuffle.")
            clean[key] = value
        self.settings.update(clean)
        if "fault_seed" in clean:
            self.faults.reseed(clean["fault_seed"])
        if "throttle_rps" in clean:
            self.throttle.reset()
        return dict(self.settings)

    # -- request pipeline ------------------------------------------------------
    def error_response(self, err: GraphError, request_id: str, client_request_id: str) -> Response:
        inner = {"date": _graph_date(), "request-id": request_id, "client-request-id": client_request_id}
        if err.status == 429:
            inner = {"code": "429", "date": inner["date"], "message": "Please retry after", **inner, "status": "429"}
        body = {"error": {"code": err.code, "message": err.message, "innerError": inner}}
        return Response(err.status, body, dict(err.headers))

    def fault_response(self, rule: dict) -> GraphError:
        kind = rule["kind"]
        headers = {}
        if rule.get("retry_after") is not None:
            ra = rule["retry_after"]
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        if kind == "429":
            return GraphError(429, "TooManyRequests", "Please retry again later.", headers)
        if kind == "503":
            return GraphError(
                503, "serviceNotAvailable", "The service is temporarily unavailable. Please retry later.", headers
            )
        if kind == "subject_not_found":
            # Replication lag, by count: what PIM answers for a principal it does not know yet (notes §6.2).
            return GraphError(400, "SubjectNotFound", "The subject is not found.")
        if kind == "role_not_found":
            return GraphError(400, "RoleNotFound", "The role is not found.")
        if kind == "token_expired":
            # What Graph answers once a token's lifetime is over (a token that expires mid-run):
            # the same 401 as the real expiry check in identity.validate_bearer.
            from pim_emulator.identity import _unauth

            return _unauth("Lifetime validation failed, the token is expired.")
        return GraphError(
            504, "gatewayTimeout", "The gateway did not receive a timely response. Please retry later.", headers
        )

    def dispatch(
        self,
        method: str,
        raw_path: str,
        query: dict,
        raw_body: bytes | None,
        headers: CIHeaders,
        request_id: str,
        client_request_id: str,
        in_batch: bool = False,
        parsed_body=None,
        body_given: bool = False,
        raw_query: str = "",
    ):
        """Run one request (outer or batch item). -> (Response, lost: bool). Raises CloseConnection."""
        if self.stopping and not in_batch:
            raise GraphError(503, "serviceNotAvailable", "The sandbox is shutting down.", {"Connection": "close"})
        parts = split_path(raw_path)
        path = "/" + "/".join(parts)
        first = parts[0].lower() if parts else ""
        if not in_batch:
            self.check_caller(first, headers)
        is_graph = first == "v1.0"
        route, params, allowed = ROUTER.resolve(method, parts)
        key = route.key if route else f"{method} (unmatched)"

        if is_graph:
            if in_batch:
                self.stats.bump("batch_items")
                self.stats.bump("batch_by_route", key)
            else:
                self.stats.bump("graph_requests")
                self.stats.bump("by_route", key)
            if method != "GET" and not (route is not None and route.pattern == "/v1.0/$batch"):
                self.stats.bump("writes", key)
        elif route is not None:
            from pim_emulator.identity import DISCOVERY_ROUTE_KEYS, TOKEN_ROUTE_KEYS

            if route.key in TOKEN_ROUTE_KEYS:
                self.stats.bump("token_requests")
            elif route.key in DISCOVERY_ROUTE_KEYS:
                self.stats.bump("discovery_requests")

        lost = False
        if is_graph:
            rule = self.faults.pick(method, path, in_batch)
            if rule is not None:
                self.stats.bump("faults_injected")
                if rule["kind"] == "reset":
                    raise CloseConnection(reset=True)
                if rule["kind"] == "lost_response":
                    lost = True
                else:
                    raise self.fault_response(rule)
            if not in_batch and self.settings.get("latency_ms"):
                # cut short on SIGTERM, so that a request in flight still finishes in the grace time
                self.stop_requested.wait(self.settings["latency_ms"] / 1000.0)

        if route is None:
            if allowed:
                raise GraphError(
                    405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
                )
            if is_graph:
                seg = ROUTER.unmatched_segment(parts)
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{seg}'.")
            if first == "_emulator":
                raise GraphError(404, "NotFound", f"No sandbox control endpoint at '{path}'.")
            raise GraphError(400, "BadRequest", f"Invalid version: {parts[0] if parts else ''}")

        claims = None
        if route.permissions is not None:
            claims = self.identity.validate_bearer(headers.get("Authorization"))
            wait = self.throttle.take(
                claims.get("appid") or claims.get("azp") or "?", float(self.settings.get("throttle_rps") or 0)
            )
            if wait > 0:
                self.stats.bump("throttled")
                raise GraphError(
                    429, "TooManyRequests", "Please retry again later.", {"Retry-After": str(max(1, math.ceil(wait)))}
                )
            is_app = "scp" not in claims
            if route.delegated_only and is_app:
                raise GraphError(
                    403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                )
            if route.permissions:
                granted = set(claims.get("roles") or []) if is_app else set((claims.get("scp") or "").split())
                granted_low = {g.lower() for g in granted}
                if not any(p.lower() in granted_low for p in route.permissions):
                    raise GraphError(
                        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                    )

        body = parsed_body
        if not in_batch:
            body_given = bool(raw_body)
            form = "x-www-form-urlencoded" in (headers.get("Content-Type") or "").lower()
            if raw_body and method in BODY_METHODS | {"DELETE"} and not form:
                # Form posts (the token endpoint) read raw_body. Anything else is JSON whatever its
                # Content-Type says: a body silently dropped (a control call sent as text/plain
                # turning into a default token) is worse than a 400. $batch items come from here too.
                body = parse_json_body(raw_body)
        if is_graph and method in ("POST", "PATCH", "PUT") and body_given and not isinstance(body, dict | list):
            raise GraphError(
                400, "BadRequest", "Unable to read JSON request payload. The payload must be a JSON object."
            )

        ctx = RequestContext(
            method=method,
            path=path,
            query=query,
            body=body,
            headers=headers,
            claims=claims,
            tx=None,
            settings=self.settings,
            base_url=self.base_url,
            tenant_id=self.tenant_id,
            clock=self.clock,
            params=params,
            request_id=request_id,
            client_request_id=client_request_id,
            route=route,
            in_batch=in_batch,
            raw_query=raw_query,
        )
        ctx.emulator = self
        ctx.raw_body = raw_body
        if route.transaction and method in READ_METHODS:
            # A read builds its answer on a snapshot: the store lock is held only to take it, so a
            # slow or large answer never holds up other requests (store.py "Snapshots").
            with self.store.snapshot() as tx:
                ctx.tx = tx
                result = route.handler(ctx)
        elif route.transaction:
            ctx.defer_shaping = True
            with self.store.transaction() as tx:
                ctx.tx = tx
                result = route.handler(ctx)
            ctx.defer_shaping = False
            result = self._build_deferred(ctx, result)
        else:
            result = route.handler(ctx)
        if isinstance(result, Response):
            resp = result
        elif result is None:
            resp = Response(204)
        else:
            resp = Response(200, result)
        # $batch: an item hit by a batch_item lost_response rule drops the whole batch's answer.
        return resp, lost or getattr(ctx, "batch_lost", False)

    def _build_deferred(self, ctx, result):
        """Build an answer a write handler deferred, on a snapshot taken after its commit: the
        write is in it, and the store lock is not held while the answer is shaped."""
        body = result.body if isinstance(result, Response) else result
        if not isinstance(body, Deferred):
            return result
        with self.store.snapshot() as snap:
            ctx.tx = snap
            built = body.build()
        if isinstance(result, Response):
            result.body = built
            return result
        return built

    def check_caller(self, first_segment: str, headers) -> None:
        """Before anything else: the Host must be a loopback name (every route), and a control
        call (``/_emulator/...``) must carry the control key. Both answer in Graph's envelope."""
        host = headers.get("Host")
        if not is_loopback_host(host):
            raise GraphError(
                421,
                "MisdirectedRequest",
                "The sandbox answers only requests addressed to 127.0.0.1, localhost or [::1] "
                f"(Host header: {str(host)[:100]!r}).",
            )
        if first_segment != "_emulator":
            return
        given = headers.get(CONTROL_KEY_HEADER)
        if not given:
            raise GraphError(
                401,
                "Unauthorized",
                f"The sandbox control API needs the header {CONTROL_KEY_HEADER} with the control_key "
                "from connection.json (python -m pim_emulator env exports it as ENTRA_PIM_SANDBOX_KEY).",
            )
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.control_key.encode("utf-8")):
            raise GraphError(
                403,
                "Forbidden",
                f"The {CONTROL_KEY_HEADER} header does not hold this sandbox's control_key "
                "(connection.json; it changes at every start).",
            )

    def run_safely(self, method, raw_path, query, raw_body, headers, request_id, client_request_id, **kw):
        """dispatch() with every error turned into an envelope. -> (Response, lost)."""
        try:
            return self.dispatch(method, raw_path, query, raw_body, headers, request_id, client_request_id, **kw)
        except CloseConnection:
            raise
        except GraphError as e:
            return self.error_response(e, request_id, client_request_id), False
        except Exception:  # a true bug: log it, answer 500, keep serving
            self.stats.bump("server_errors")
            sys.stderr.write(f"[pim-sandbox] internal error on {method} {raw_path} (request-id {request_id}):\n")
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            err = GraphError(500, "generalException", "An internal server error occurred. See the sandbox log.")
            return self.error_response(err, request_id, client_request_id), False


def parse_query(qs: str) -> dict:
    out = {}
    for k, v in parse_qsl(qs, keep_blank_values=True):
        key = k.strip()
        if key.startswith("$"):
            key = key.lower()
        out[key] = v
    return out


def _import_handlers() -> None:
    """Import every module that registers routes (platform and PIM)."""
    import importlib

    for name in ("identity", "batch", "control", "seed", "directory", "roles", "pim", "policies"):
        try:
            importlib.import_module(f"pim_emulator.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pim_emulator.{name}":
                raise SystemExit(f"pim_emulator is incomplete: module pim_emulator.{name} is missing") from None
            raise


# ----------------------------------------------------------------------------- HTTP layer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PIMSandbox/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this
    emu: Emulator  # set on the class by make_server

    def log_message(self, format, *args):
        if self.emu.verbose:
            sys.stderr.write("[pim-sandbox] %s - %s\n" % (self.address_string(), format % args))

    def _read_body(self) -> bytes | None:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return None
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def _handle(self):
        emu = self.emu
        with emu.inflight_lock:
            emu.inflight += 1
        try:
            self._handle_inner()
        finally:
            with emu.inflight_lock:
                emu.inflight -= 1

    def _handle_inner(self):
        emu = self.emu
        method = self.command.upper()
        request_id = str(uuid.uuid4())
        client_request_id = self.headers.get("client-request-id") or request_id
        try:
            raw_body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            resp = emu.error_response(
                GraphError(400, "BadRequest", "Invalid request body framing."), request_id, client_request_id
            )
            self._send(resp, request_id, client_request_id, graph=True)
            return
        split = urlsplit(self.path)
        headers = CIHeaders(self.headers.items())
        try:
            resp, lost = emu.run_safely(
                method,
                split.path,
                parse_query(split.query),
                raw_body,
                headers,
                request_id,
                client_request_id,
                raw_query=split.query,
            )
        except CloseConnection as c:
            self._drop(c.reset)
            return
        if lost:
            self._drop(reset=False)
            return
        is_graph = split.path.lower().startswith("/v1.0")
        self._send(resp, request_id, client_request_id, graph=is_graph)

    def _drop(self, reset: bool) -> None:
        """Close without a reply: RST for ``reset``, FIN for ``lost_response``."""
        self.close_connection = True
        sock = self.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, resp: Response, request_id: str, client_request_id: str, graph: bool) -> None:
        status = int(resp.status)
        self.emu.stats.bump("by_status", str(status)) if graph else None
        if resp.body is None or status == 204:
            payload = b""
        elif isinstance(resp.body, bytes | bytearray):
            payload = bytes(resp.body)
        else:
            payload = json.dumps(resp.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        hdrs = {}
        if payload:
            hdrs["Content-Type"] = GRAPH_CONTENT_TYPE if graph else JSON_CONTENT_TYPE
        if graph:
            hdrs["OData-Version"] = "4.0"
        hdrs["Cache-Control"] = "no-store, no-cache" if not graph else "no-cache"
        hdrs["request-id"] = request_id
        hdrs["client-request-id"] = client_request_id
        hdrs["x-ms-ags-diagnostic"] = (
            '{"ServerInfo":{"DataCenter":"Sandbox","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"local"}}'
        )
        for k, v in (resp.headers or {}).items():
            hdrs[k] = str(v)
        hdrs["Content-Length"] = str(len(payload))
        if self.close_connection or self.emu.stopping:
            hdrs["Connection"] = "close"
            self.close_connection = True
        reason = self.responses.get(status, ("",))[0]
        head = [f"HTTP/1.1 {status} {reason}", f"Date: {self.date_time_string()}", f"Server: {self.server_version}"]
        head.extend(f"{k}: {v}" for k, v in hdrs.items())
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + (
            payload if self.command != "HEAD" else b""
        )
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        self.log_request(status, len(payload))

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def send_error(self, code, message=None, explain=None):
        """Malformed HTTP (bad request line, headers too long...): a JSON envelope, never HTML."""
        request_id = str(uuid.uuid4())
        self.close_connection = True
        try:
            err = GraphError(
                int(code), "BadRequest" if int(code) < 500 else "generalException", message or "Bad request."
            )
            self._send(self.emu.error_response(err, request_id, request_id), request_id, request_id, graph=True)
        except Exception:  # the connection may be unusable; nothing more to do
            pass


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ssl_context):
        self.ssl_context = ssl_context
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so a slow client never blocks accept()
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request.settimeout(Handler.timeout)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            try:
                request.close()
            except OSError:
                pass
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ValueError):  # connection-level noise (client went away, TLS alerts)
            return
        sys.stderr.write(f"[pim-sandbox] connection error from {client_address}:\n")
        traceback.print_exc(file=sys.stderr)


def make_server(emu: Emulator, port: int) -> SandboxHTTPServer:
    handler = type("BoundHandler", (Handler,), {"emu": emu})
    server = SandboxHTTPServer((emu.host, port), handler, emu.keys.server_context())
    real_port = server.server_address[1]
    emu.base_url = f"https://{emu.host}:{real_port}"
    return server


def write_connection_file(emu: Emulator, port: int) -> Path:
    path = emu.data_dir / "connection.json"
    write_private(path, (json.dumps(emu.connection_info(port), indent=2) + "\n").encode("utf-8"))
    return path


# SIGTERM to exit: in-flight requests get this long to finish, then the process exits anyway
# (handler threads are daemons; a request cut there was never acknowledged, and SQLite rolls
# back its open transaction). The whole stop stays well under 2 s.
STOP_GRACE_SECONDS = 1.0


def serve(emu: Emulator, port: int) -> int:
    """Run until SIGTERM/SIGINT; then finish in-flight requests (briefly), close the store. -> exit code."""
    import signal

    server = make_server(emu, port)
    real_port = server.server_address[1]
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    conn_path = emu.data_dir / "connection.json"
    try:
        conn_path.unlink()
    except FileNotFoundError:
        pass
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-accept", daemon=True
    )
    thread.start()
    write_connection_file(emu, real_port)
    sys.stderr.write(f"[pim-sandbox] listening on {emu.base_url} (tenant {emu.tenant_id}, data {emu.data_dir})\n")
    sys.stderr.flush()
    while not stop.wait(0.1):
        pass
    sys.stderr.write("[pim-sandbox] stopping\n")
    emu.stop_requested.set()
    emu.stopping = True
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        with emu.inflight_lock:
            if emu.inflight == 0:
                break
        time.sleep(0.02)
    else:
        sys.stderr.write(f"[pim-sandbox] {emu.inflight} request(s) still running; they are cut\n")
    emu.store.close(timeout=0.3)
    try:
        conn_path.unlink()
    except FileNotFoundError:
        pass
    sys.stderr.write("[pim-sandbox] stopped\n")
    sys.stderr.flush()
    return 0


__all__ = ["Emulator", "Route", "make_server", "serve"]
