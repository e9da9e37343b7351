"""Route registry, ``Response`` and the ``RequestContext`` handed to every handler.

Handlers register with ``@route(method, pattern, permissions=[...])``::

    @route("GET", "/v1.0/roleManagement/directory/roleEligibilitySchedules/{id}",
           permissions=["RoleEligibilitySchedule.Read.Directory", "RoleManagement.Read.Directory"])
    def get_schedule(ctx: RequestContext):
        ...

* ``{name}`` matches one whole path segment (percent-decoded) into ``ctx.params[name]``.
  A segment may also mix literal text and parameters, e.g. ``filterByCurrentUser(on='{on}')``.
* Literal segments are matched case-insensitively (Graph paths are case-insensitive) and
  win over mixed segments, which win over ``{param}`` segments.
* ``permissions``: a list of which ANY one suffices (``roles`` claim of an app token, ``scp``
  of a delegated token); ``[]`` = any valid token; ``None`` = no token needed (identity and
  control endpoints). Graph routes (``/v1.0/...``) must pass ``permissions`` explicitly.
* ``delegated_only=True``: app-only tokens get 403 ``Authorization_RequestDenied``.
* Handlers return ``Response``, a dict (200 JSON), None (204) or raise ``errors.GraphError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_UNSET = object()
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict | None = None


def _expand_nothing(ctx, item, nested):
    return None


class Deferred:
    """An answer to build after the write transaction commits, on a snapshot (see
    ``RequestContext.defer_shaping``). Handlers return it as is (or as a Response body)."""

    def __init__(self, build):
        self.build = build


@dataclass
class Route:
    method: str
    pattern: str
    handler: Any
    permissions: list | None
    delegated_only: bool = False
    transaction: bool = True
    segments: list = field(default_factory=list)  # [(kind, value)], kind 2=literal,1=mixed,0=param

    @property
    def key(self) -> str:
        """Stats key: ``"METHOD /pattern"``."""
        return f"{self.method} {self.pattern}"

    def match(self, parts: list[str]):
        """-> (score tuple, params) or None. ``parts`` are decoded path segments."""
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        score = []
        for (kind, value), part in zip(self.segments, parts, strict=False):
            if kind == 2:
                if part.lower() != value:
                    return None
            elif kind == 0:
                if not part:
                    return None
                params[value] = part
            else:
                m = value.match(part)
                if not m:
                    return None
                params.update(m.groupdict())
            score.append(kind)
        return tuple(score), params

    def prefix_matches(self, parts: list[str]) -> bool:
        """Whether the first len(parts) segments of this route accept ``parts``."""
        if len(parts) > len(self.segments):
            return False
        for (kind, value), part in zip(self.segments, parts, strict=False):
            if kind == 2 and part.lower() != value:
                return False
            if kind == 1 and not value.match(part):
                return False
        return True


def _compile_segment(seg: str):
    names = _PARAM.findall(seg)
    if not names:
        return (2, seg.lower())
    if _PARAM.fullmatch(seg):
        return (0, names[0])
    regex = ""
    pos = 0
    for m in _PARAM.finditer(seg):
        regex += re.escape(seg[pos : m.start()])
        regex += f"(?P<{m.group(1)}>.+?)"
        pos = m.end()
    regex += re.escape(seg[pos:])
    return (1, re.compile(regex + r"\Z", re.IGNORECASE))


def split_path(path: str) -> list[str]:
    """'/v1.0/users/a%27b' -> ['v1.0', 'users', "a'b"] (empty segments from a trailing / dropped)."""
    parts = path.split("/")
    if parts and parts[0] == "":
        parts = parts[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return [unquote(p) for p in parts]


class Router:
    def __init__(self):
        self.routes: list[Route] = []
        self._by_len: dict[int, list[Route]] = {}

    def add(self, method, pattern, handler, permissions=_UNSET, delegated_only=False, transaction=True) -> Route:
        method = method.upper()
        if permissions is _UNSET:
            if pattern.startswith("/v1.0/"):
                raise ValueError(f"route {method} {pattern}: Graph routes must declare permissions")
            permissions = None
        if permissions is not None:
            permissions = list(permissions)
        r = Route(method, pattern, handler, permissions, delegated_only, transaction)
        r.segments = [_compile_segment(s) for s in split_path(pattern)]
        for other in self.routes:
            if other.method == method and other.pattern == pattern:
                # re-registration (module reloaded): the newest handler wins
                self.routes.remove(other)
                break

        self.routes.append(r)
        self._by_len = {}
        for x in self.routes:
            self._by_len.setdefault(len(x.segments), []).append(x)
        return r

    def resolve(self, method: str, parts: list[str]):
        """-> (route, params, allowed_methods). route None when no method matches."""
        best = None
        allowed = set()
        for r in self._by_len.get(len(parts), ()):
            m = r.match(parts)
            if m is None:
                continue
            score, params = m
            if r.method != method:
                allowed.add(r.method)
                continue
            if best is None or score > best[0]:
                best = (score, r, params)
        if best is None:
            return None, {}, allowed
        return best[1], best[2], allowed

    def unmatched_segment(self, parts: list[str]) -> str:
        """The first segment no route accepts (for "Resource not found for the segment ...")."""
        for i in range(1, len(parts) + 1):
            if not any(r.prefix_matches(parts[:i]) for r in self.routes):
                return parts[i - 1]
        return parts[-1] if parts else ""


ROUTER = Router()


def route(method: str, pattern: str, permissions=_UNSET, delegated_only: bool = False, transaction: bool = True):
    """Decorator registering ``fn(ctx) -> Response | dict | None`` on the global router.

    ``transaction=False`` (platform use, e.g. ``$batch``): the handler gets ``ctx.tx = None``
    and opens transactions itself.
    """

    def deco(fn):
        ROUTER.add(method, pattern, fn, permissions=permissions, delegated_only=delegated_only, transaction=transaction)
        return fn

    return deco


class RequestContext:
    """Everything a handler needs about the request; see the module docstring of routing.py.

    Attributes: ``method``, ``path`` (decoded path, no query), ``params`` (path params),
    ``query`` (dict of decoded query options; ``$``-options normalised to lower case, e.g.
    ``$filter``), ``body`` (parsed JSON or None), ``headers`` (case-insensitive mapping),
    ``claims`` (validated token claims or None), ``tx`` (store transaction), ``settings``
    (dict), ``base_url`` (``https://127.0.0.1:PORT``), ``tenant_id``, ``request_id``,
    ``client_request_id``, ``route`` (the matched ``Route``), ``in_batch`` (bool).
    """

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: dict,
        body,
        headers,
        claims: dict | None,
        tx,
        settings: dict,
        base_url: str,
        tenant_id: str,
        clock,
        params: dict | None = None,
        request_id: str = "",
        client_request_id: str = "",
        route: Route | None = None,
        in_batch: bool = False,
        raw_query: str = "",
    ):
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.headers = headers
        self.claims = claims
        self.tx = tx
        self.settings = settings
        self.base_url = base_url
        self.tenant_id = tenant_id
        self._clock = clock
        self.params = params or {}
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.route = route
        self.in_batch = in_batch
        self.raw_query = raw_query
        # Set by the server for write routes: entity()/collection() then return a Deferred, which
        # the server builds after the commit on a store snapshot, so that shaping ($expand,
        # $select) never runs under the store lock. The item itself is taken as it is now.
        self.defer_shaping = False

    def now(self):
        """Emulator clock: aware UTC datetime."""
        return self._clock.now()

    # -- caller identity helpers (additive) ----------------------------------
    @property
    def is_app_only(self) -> bool:
        return bool(self.claims) and "scp" not in self.claims

    @property
    def caller_oid(self) -> str | None:
        """Object id of the caller: the user (delegated) or the service principal (app-only)."""
        return (self.claims or {}).get("oid")

    @property
    def caller_app_id(self) -> str | None:
        return (self.claims or {}).get("appid") or (self.claims or {}).get("azp")

    # -- OData shaping -------------------------------------------------------
    def collection(self, items, context_path, expanders=None, filterable=None, paged=True) -> dict:
        """Graph collection response: $filter, $select, $expand, $top, paging, @odata.context.

        ``paged=False`` is for collections Graph answers in one response whatever their size.
        """
        from pim_emulator import odata

        def build():
            if isinstance(items, odata.Source):
                items.tx = self.tx  # the snapshot the Deferred is built on
            return odata.collection_response(
                self, items, context_path, expanders=expanders, filterable=filterable, paged=paged
            )

        return Deferred(build) if self.defer_shaping else build()

    def entity(self, item, context_path, expanders=None) -> dict:
        """One entity with $select/$expand applied and ``@odata.context = ...#{context_path}/$entity``."""
        from pim_emulator import odata

        if self.defer_shaping:
            # Refuse bad options now, inside the transaction, so that a refused request writes
            # nothing: the same shaping with navigations that expand to nothing (cheap).
            dry = {name: _expand_nothing for name in expanders or {}}
            odata.entity_response(self, item, context_path, expanders=dry)
            return Deferred(lambda: odata.entity_response(self, item, context_path, expanders=expanders))
        return odata.entity_response(self, item, context_path, expanders=expanders)

    def shape(self, item, options: dict, expanders=None) -> dict:
        """Apply ``{"$select": ..., "$expand": ...}`` options to one object (for nested expands)."""
        from pim_emulator import odata

        return odata.shape(self, item, options, expanders=expanders)
