# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Bulk reconciliation for pim_access: resolve, read, plan and write many grants at once.

Internal to the entra.pim collection: not a public API, may change without notice.

The single modules make one or two round trips per grant. A "PIM state as code" job holds
thousands, so here every phase is done for all grants together (issue 7):

* resolve: the role list once, principals packed 15 to a ``$filter ... in (...)`` lookup (or
  ``directoryObjects/getByIds`` for object ids, 1000 per request), administrative units by name,
  all inside ``$batch`` requests of 20 (notes §1.5);
* read: schedules (never requests, notes §8) for the whole boundary, by the cheapest of three
  shapes: one filtered read per principal, one per role (pages in parallel), or the whole
  collection (``choose_read_strategy``); pending requests by status;
* plan: every grant and every purge candidate with the domain layer's pure planner
  (``_pim.plan``), so a bulk run decides exactly as the single modules do;
* write: ``$batch`` chunks of 20, sent one chunk per call so a lost answer is known per chunk;
  throttled items are retried by the client (notes §6.6); a lost answer, a 504, or
  ``RoleAssignmentExists``/``RoleAssignmentDoesNotExist`` is settled by re-reading the state
  (notes §6.2) and re-sending only what did not happen.

A small scheduler (``Rounds``) keeps a queue of reads and sends them 20 at a time; answers
go to callbacks that may queue more (the next page, the reads that needed a role id), so
dependent reads fill the same ``$batch`` requests as the lookups still waiting.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque, namedtuple
from datetime import datetime, timezone

from ansible_collections.entra.pim.plugins.module_utils import _pim, _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError, PimError
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote

UTC = timezone.utc
BATCH_SIZE = 20  # notes §1.5
IN_LIMIT = 15  # values per "in (...)" clause: Graph's documented limit for directory queries
GET_BY_IDS_LIMIT = 1000
PAGE_SIZE_GUESS = 100  # what Graph (and the sandbox) return per page when not told otherwise
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"  # notes §3.6

TYPES = OrderedDict([("eligible", "eligibility"), ("active", "assignment")])
KIND_TYPE = {v: k for k, v in TYPES.items()}
ACTION_WORDS = {"create": "add", "update": "update", "remove": "remove", "cancel": "cancel", "none": "none"}
SUMMARY_KEYS = ("added", "updated", "removed", "cancelled", "unchanged", "protected", "failed", "skipped", "unknown")
_ADMIN_ACTIONS = frozenset({"adminassign", "adminupdate", "adminextend", "adminrenew"})
# A principal's own requests that can still become a grant once approved or started (issue 14 point 11).
_SELF_ACTIONS = frozenset({"selfactivate", "selfextend", "selfrenew"})

Grant = namedtuple(
    "Grant",
    "index principal principal_type role directory_scope type desired justification ticket_number ticket_system asked",
)
Grant.__doc__ = """One grant as the user wrote it, with its schedule parsed (desired: _pim.Desired).

asked: the schedule option as given, for messages ("duration 'P400D'").
"""

Change = namedtuple("Change", "key target kind plan desired grant activated")
Change.__new__.__defaults__ = (False,)
Change.__doc__ = """One planned item: key = (kind, principal id, role id, scope); grant None for a purge candidate.

activated: True when the item is an activation (assignmentType Activated) that end_activations ends.
"""


# ------------------------------------------------------------------ small helpers


def _low(value):
    return value.lower() if isinstance(value, str) else value


def _scope_key(value):
    return _low(value or "/")


def item_key(kind, principal_id, role_id, scope_id):
    return (kind, _low(principal_id), _low(role_id), _scope_key(scope_id))


def as_activation(current):
    """A Current whose managed schedule is the principal's activation (from ``current.other``), or None. Pure.

    The planner manages Direct, Assigned schedules; an activation sits in ``other``. To end one
    (end_activations), the same planner is given it as the schedule, so plan(absent) answers
    ``remove`` with the same adminRemove body (notes §8; an adminRemove on an assignment request
    ends an activation too).
    """
    activation = _pim.activation_of(current)
    if activation is None:
        return None
    others = [item for item in current.other if item is not activation]
    window = sched.window_from_schedule_info(activation.get("scheduleInfo"))
    return current._replace(schedule=activation, window=window, other=others)


def _error_text(err):
    return getattr(err, "msg", None) or str(err)


def _graph_error(client, resp):
    """A failed $batch item → its GraphError (never raises)."""
    try:
        _resolve.raise_for_item(client, resp)
    except GraphError as err:
        return err
    return None


def _relative(client, url):
    """An @odata.nextLink (absolute) → the /v1.0-relative URL a $batch item takes."""
    base = (getattr(client, "graph_url", "") or "").rstrip("/") + "/v1.0"
    if url.startswith(base + "/"):
        return url[len(base) :]
    if url.startswith("/"):
        return url
    raise GraphError(
        "Refusing to follow a link that is not under graph_url: %s" % url.split("?", 1)[0], code="ForeignLink"
    )


# ------------------------------------------------------------------ the read scheduler


class Rounds:
    """A queue of Graph requests sent in $batch chunks of 20; callbacks may queue more.

    ``add(req, callback)``: req is batch-ready ``{"method", "url", "body"?}``; callback gets
    ``(body, error)``. ``add_list(url, on_done)``: a paged read; on_done gets ``(items, error)``
    once every page is in. ``run()`` sends until the queue is empty.
    """

    def __init__(self, client):
        self.client = client
        self.queue = deque()
        self.batches = 0

    def add(self, req, callback, first=False):
        entry = (req, callback)
        if first:
            self.queue.appendleft(entry)
        else:
            self.queue.append(entry)

    def add_list(self, url, on_done, first=False):
        items = []

        def on_page(body, err):
            if err is not None:
                on_done(None, err)
                return
            items.extend((body or {}).get("value") or [])
            link = (body or {}).get("@odata.nextLink")
            if link:
                # Next pages go first: they are what the longest chains wait for.
                self.add({"method": "GET", "url": _relative(self.client, link)}, on_page, first=True)
            else:
                on_done(items, None)

        self.add({"method": "GET", "url": url}, on_page, first=first)

    def run(self):
        while self.queue:
            chunk = [self.queue.popleft() for _n in range(min(BATCH_SIZE, len(self.queue)))]
            answers = self._send(chunk)
            for (_req, callback), resp in zip(chunk, answers, strict=True):
                if 200 <= int(resp.get("status") or 0) < 300:
                    callback(resp.get("body") or {}, None)
                else:
                    callback(None, _graph_error(self.client, resp))

    def _send(self, chunk):
        items = [_resolve.batch_item(req, n + 1) for n, (req, _cb) in enumerate(chunk)]
        self.batches += 1
        try:
            return self.client.batch(items)
        except GraphError as err:
            # Reads (getByIds included) are safe to send again once after a lost answer.
            if err.code != "ResponseLost":
                raise
            self.batches += 1
            return self.client.batch(items)


# ------------------------------------------------------------------ input


def parse_grants(grants, defaults, now):
    """The module's ``grants`` → (list of Grant, {index: error text}). Pure.

    Schedule options are checked with the same code as the single modules; justification and
    ticket fall back to the task-level values.
    """
    out, errors = [], {}
    for index, raw in enumerate(grants or []):
        raw = raw or {}
        gtype = raw.get("type") or "eligible"
        scope = raw.get("directory_scope")
        try:
            if gtype not in TYPES:
                raise InputError("type '%s' is not one of eligible, active" % gtype)
            # Omitted is the tenant; "" is refused, never widened to "/" (_resolve.scope_option).
            scope = _resolve.scope_option(scope, "directory_scope")
            schedule = sched.desired_schedule(
                start=raw.get("start"),
                end=raw.get("end"),
                duration=raw.get("duration"),
                permanent=raw.get("permanent"),
                now=now,
            )
            ticket_number = raw.get("ticket_number") or defaults.get("ticket_number")
            ticket_system = raw.get("ticket_system") or defaults.get("ticket_system")
            if bool(ticket_number) != bool(ticket_system):
                raise InputError("ticket_number and ticket_system must be given together")
        except InputError as err:
            errors[index] = err.msg
            schedule, ticket_number, ticket_system = None, None, None
        desired = _pim.Desired(
            "present",
            schedule,
            raw.get("justification") or defaults.get("justification"),
            ticket_number,
            ticket_system,
        )
        out.append(
            Grant(
                index,
                str(raw.get("principal") or "").strip(),
                raw.get("principal_type") or "auto",
                str(raw.get("role") or "").strip(),
                scope,
                gtype,
                desired,
                desired.justification,
                ticket_number,
                ticket_system,
                _pim.schedule_option(raw),
            )
        )
    return out, errors


def describe_grant(grant):
    """How an item is named in errors and results: 'eligible User Administrator at / for alice@...'."""
    return "%s '%s' at '%s' for '%s'" % (grant.type, grant.role, grant.directory_scope, grant.principal)


# ------------------------------------------------------------------ principal lookups (packed)


def _lookup_shape(value, principal_type):
    """Where the resolver looks ``value`` up, per request kind it would send (same order).

    Mirrors ``Resolver.principal_requests``: GUID → getByIds; UPN/mail → users by UPN or
    mail; otherwise groups (displayName, or mail when it has '@') and service principals by
    displayName, and users by displayName when principal_type is user.
    """
    if _resolve.is_guid(value):
        return [("ids", None, None)]
    if "@" in value and principal_type in ("auto", "user"):
        return [("user", "/users", ("userPrincipalName", "mail"))]
    out = []
    if principal_type == "user":
        out.append(("user", "/users", ("displayName",)))
    if principal_type in ("auto", "group"):
        out.append(("group", "/groups", ("mail",) if "@" in value else ("displayName",)))
    if principal_type in ("auto", "service_principal"):
        out.append(("service_principal", "/servicePrincipals", ("displayName",)))
    return out


_SELECTS = {
    "/users": _resolve.USER_SELECT,
    "/groups": _resolve.GROUP_SELECT,
    "/servicePrincipals": _resolve.SP_SELECT,
}
_ODATA_KIND = {"user": "#microsoft.graph.user", "group": "#microsoft.graph.group"}
_ODATA_KIND["service_principal"] = "#microsoft.graph.servicePrincipal"
_GET_BY_IDS_TYPES = {
    "auto": ("user", "group", "service_principal"),
    "user": ("user",),
    "group": ("group",),
    "service_principal": ("service_principal",),
}


def pack_values(values, limit=IN_LIMIT):
    """Sorted, de-duplicated (case-insensitive) values in groups of ``limit``. Pure."""
    seen = OrderedDict()
    for value in values:
        seen.setdefault(value.casefold(), value)
    ordered = [seen[k] for k in sorted(seen)]
    return [ordered[i : i + limit] for i in range(0, len(ordered), limit)]


def in_filter(fields, values):
    """``userPrincipalName in ('a','b') or mail in ('a','b')`` (every value quoted)."""
    if len(values) == 1:
        # A one-value list reads as a parenthesised literal to some OData parsers: say eq.
        return " or ".join("%s eq %s" % (field, odata_quote(values[0])) for field in fields)
    quoted = ",".join(odata_quote(v) for v in values)
    return " or ".join("%s in (%s)" % (field, quoted) for field in fields)


class BulkResolver:
    """Resolve many principals, roles and scopes through one Rounds queue.

    Call ``want_principal``/``want_scope`` for every value first, then ``queue(rounds)``,
    ``rounds.run()``, and read the answers with ``principal()``/``role()``/``scope()``, which
    return the value or raise the same InputError as the single-item resolver.
    """

    def __init__(self, client, resolver=None):
        self.client = client
        self.resolver = resolver or _resolve.Resolver(client)
        self.principal_values = OrderedDict()  # (value, type) -> None
        self.scope_names = OrderedDict()
        self._objects = {}  # (collection, field, casefold value) -> [graph objects]
        self._by_id = {}  # lower id -> graph object (getByIds)
        self._app_ids = {}  # lower appId -> [service principal objects]
        self._fallback = {}  # (value, type) -> [answers] from the resolver's own requests
        self._scope_answers = {}
        self._scope_checks = OrderedDict()  # directoryScopeId -> None (unread) | True | GraphError
        self._errors = []  # GraphErrors of lookups (raised on first use)
        self.roles_error = None
        self.on_roles = []  # callbacks once the role list is loaded
        self.on_principals = []  # callbacks once every principal lookup is answered
        self._pending_principal_reads = 0
        self._principals_done = False

    # -------------------------------------------------------------- asking

    def want_principal(self, value, principal_type="auto"):
        self.principal_values.setdefault((value, principal_type), None)

    def want_scope(self, value, verify=False):
        """Ask for a scope; ``verify``: an id given as is must exist (read with the lookups).

        Graph accepts '/administrativeUnits/{id}' for any GUID until the write, which it then
        refuses for that item alone, after the other grants were written (issue 14 point 10).
        """
        try:
            local = _resolve.directory_scope_local(value)
        except InputError:
            return  # reported when the value is read back
        if local is None:
            self.scope_names.setdefault(value.strip(), None)
        elif verify and local != "/":
            self._scope_checks.setdefault(local, None)

    def queue(self, rounds):
        """Queue the role list, the packed principal lookups and the AU lookups."""
        if self.resolver.roles_cached():
            self._roles_loaded()
        else:
            req = self.resolver.role_list_request()
            rounds.add_list(req["url"], self._on_roles, first=True)

        guids = {}
        packed = OrderedDict()  # (collection, fields) -> [values]
        for value, ptype in self.principal_values:
            try:
                shape = _lookup_shape(value, ptype)
                kinds = [k for k, _req in self.resolver.principal_requests(value, ptype)]
            except InputError:
                continue  # reported when the value is read back
            if [k for k, _c, _f in shape] != kinds:
                # The resolver looks this up in a way we do not pack: send its own requests.
                self._queue_fallback(rounds, value, ptype)
                continue
            for kind, collection, fields in shape:
                if kind == "ids":
                    guids[value.lower()] = True
                else:
                    packed.setdefault((collection, fields), []).append(value)

        ids = sorted(guids)
        for start in range(0, len(ids), GET_BY_IDS_LIMIT):
            body = {"ids": ids[start : start + GET_BY_IDS_LIMIT], "types": ["user", "group", "servicePrincipal"]}
            self._expect()
            rounds.add(
                {"method": "POST", "url": "/directoryObjects/getByIds", "body": body},
                lambda b, e, r=rounds: self._on_ids(r, b, e),
            )
        for (collection, fields), values in packed.items():
            for group in pack_values(values):
                params = {"$filter": in_filter(fields, group), "$select": _SELECTS[collection]}
                self._expect()
                rounds.add_list(
                    _resolve.encode_url(collection, params),
                    lambda items, err, c=collection, f=fields: self._on_objects(c, f, items, err),
                )
        for name in self.scope_names:
            req = _resolve.directory_scope_request(name)
            rounds.add_list(req["url"], lambda items, err, n=name: self._scope_answers.__setitem__(n, (items, err)))
        self._queue_scope_checks(rounds)
        self._maybe_done()

    def _queue_scope_checks(self, rounds):
        """One read per administrative unit given by id, one getByIds for other object ids."""
        objects = []
        for scope_id in self._scope_checks:
            unit = scope_id[len("/administrativeUnits/") :]
            if scope_id.startswith("/administrativeUnits/"):
                url = _resolve.unit_request(unit)["url"]
                rounds.add({"method": "GET", "url": url}, lambda body, err, s=scope_id: self._on_scope(s, body, err))
            else:
                objects.append(scope_id)
        for start in range(0, len(objects), GET_BY_IDS_LIMIT):
            group = objects[start : start + GET_BY_IDS_LIMIT]

            def on_objects(body, err, group=group):
                found = {(o.get("id") or "").lower() for o in (body or {}).get("value") or []}
                for scope_id in group:
                    self._on_scope(scope_id, {"id": scope_id[1:]} if scope_id[1:] in found else None, err)

            body = {"ids": [scope_id[1:] for scope_id in group]}
            rounds.add({"method": "POST", "url": "/directoryObjects/getByIds", "body": body}, on_objects)

    def _on_scope(self, scope_id, body, err):
        if err is not None and err.status != 404:
            self._scope_checks[scope_id] = err
        else:
            self._scope_checks[scope_id] = bool(body) and err is None

    def _queue_fallback(self, rounds, value, ptype):
        """Send the resolver's own requests for one value; its answers are kept as they come."""
        pairs = self.resolver.principal_requests(value, ptype)
        answers = [None] * len(pairs)
        remaining = [len(pairs)]
        self._expect()

        def done_one(i, items, err):
            answers[i] = err if err is not None else {"value": items or []}
            remaining[0] -= 1
            if remaining[0] == 0:
                self._fallback[(value, ptype)] = answers
                self._done_one()

        for i, (_kind, req) in enumerate(pairs):
            if req["method"] == "POST":

                def on_post(body, err, i=i):
                    done_one(i, (body or {}).get("value"), err)

                rounds.add(req, on_post)
            else:
                rounds.add_list(req["url"], lambda items, err, i=i: done_one(i, items, err))

    def _expect(self):
        self._pending_principal_reads += 1

    def _done_one(self):
        self._pending_principal_reads -= 1
        self._maybe_done()

    def _maybe_done(self):
        if self._pending_principal_reads == 0 and not self._principals_done:
            self._principals_done = True
            for callback in self.on_principals:
                callback()

    # -------------------------------------------------------------- answers

    def _on_roles(self, items, err):
        if err is not None:
            self.roles_error = err
        else:
            self.resolver.load_roles(items)
        self._roles_loaded()

    def _roles_loaded(self):
        for callback in self.on_roles:
            callback()

    def _on_ids(self, rounds, body, err):
        if err is not None:
            self._errors.append(err)
        else:
            for obj in (body or {}).get("value") or []:
                self._by_id[obj["id"].lower()] = obj
            # An id that is no directory object may be a service principal's appId.
            missing = sorted(
                value.lower()
                for value, ptype in self.principal_values
                if _resolve.is_guid(value)
                and value.lower() not in self._by_id
                and ptype in ("auto", "service_principal")
            )
            for group in pack_values(missing):
                params = {"$filter": in_filter(("appId",), group), "$select": _resolve.SP_SELECT}
                self._expect()
                rounds.add_list(_resolve.encode_url("/servicePrincipals", params), self._on_app_ids)
        self._done_one()

    def _on_app_ids(self, items, err):
        if err is not None:
            self._errors.append(err)
        for obj in items or []:
            self._app_ids.setdefault((obj.get("appId") or "").lower(), []).append(obj)
        self._done_one()

    def _on_objects(self, collection, fields, items, err):
        if err is not None:
            self._errors.append(err)
        for obj in items or []:
            for field in fields:
                value = obj.get(field)
                if isinstance(value, str):
                    key = (collection, fields, value.casefold())
                    bucket = self._objects.setdefault(key, [])
                    if all(o.get("id") != obj.get("id") for o in bucket):
                        bucket.append(obj)
        self._done_one()

    # -------------------------------------------------------------- reading back

    def _raise_lookup_errors(self):
        if self._errors:
            raise self._errors[0]

    def role(self, name):
        if self.roles_error is not None:
            raise self.roles_error
        return self.resolver.role(name)

    def scope(self, value):
        local = _resolve.directory_scope_local(value)
        if local is not None:
            self._check_scope(value, local)
            return local
        items, err = self._scope_answers.get(value.strip(), (None, None))
        if err is not None:
            raise _resolve.directory_scope_error(value, err)
        if items is None:
            return self.resolver.directory_scope(value)
        return _resolve.directory_scope_from_answer(value.strip(), items)

    def _check_scope(self, value, scope_id):
        """InputError when a read showed that the scope's object does not exist.

        A refused read (403: no AdministrativeUnit.Read.All) proves nothing, so the scope is
        left to Graph; any other failed read stops the run like a failed lookup.
        """
        found = self._scope_checks.get(scope_id)
        if found is False:
            what = "administrative unit" if _resolve.unit_of_scope(scope_id) else "directory object"
            raise _resolve.missing_scope_error(value, what, scope_id.rsplit("/", 1)[-1])
        if isinstance(found, GraphError) and found.status != 403:
            raise found

    def _answers_for(self, value, ptype):
        """The answers the resolver's own requests would have got, rebuilt from packed reads."""
        if (value, ptype) in self._fallback:
            answers = self._fallback[(value, ptype)]
            for answer in answers:
                if isinstance(answer, GraphError):
                    raise answer
            return [k for k, _req in self.resolver.principal_requests(value, ptype)], answers
        self._raise_lookup_errors()
        kinds, answers = [], []
        for kind, collection, fields in _lookup_shape(value, ptype):
            kinds.append(kind)
            if kind == "ids":
                obj = self._by_id.get(value.lower())
                allowed = {_ODATA_KIND[t] for t in _GET_BY_IDS_TYPES[ptype]}
                found = [obj] if obj is not None and obj.get("@odata.type") in allowed else []
                if not found and ptype in ("auto", "service_principal"):
                    # The resolver's appId fallback, answered from our packed appId lookups.
                    sps = self._app_ids.get(value.lower()) or []
                    if sps:
                        kinds[-1] = "service_principal"
                        found = sps
                answers.append({"value": found})
            else:
                answers.append({"value": list(self._objects.get((collection, fields, value.casefold()), []))})
        return kinds, answers

    def principal(self, value, ptype="auto"):
        """Exactly one Principal, or the resolver's InputError (not found / ambiguous)."""
        self.resolver.principal_requests(value, ptype)  # validates type and emptiness
        kinds, answers = self._answers_for(value, ptype)
        return self.resolver.principal_from_answers(value, ptype, kinds, answers)

    def candidates(self, value, ptype="auto"):
        """Every object ``value`` could mean (for protection: an ambiguous name protects all)."""
        try:
            kinds, answers = self._answers_for(value, ptype)
        except PimError:
            return []
        out = {}
        for kind, body in zip(kinds, answers, strict=True):
            for obj in body.get("value") or []:
                principal = _resolve.principal_from_graph(obj, None if kind == "ids" else kind)
                out[principal.id.lower()] = principal
        return list(out.values())


# ------------------------------------------------------------------ boundary


Boundary = namedtuple("Boundary", "principal_ids role_ids scope_ids types")
Boundary.__doc__ = "Lower-cased id sets, or None for 'no restriction'; types: set of kinds."

BOUNDARY_KEYS = ("principals", "roles", "directory_scopes", "types")
_BOUNDARY_NOUNS = {
    "principals": "every principal",
    "roles": "every role",
    "directory_scopes": "every directory scope",
    "types": "both eligible and active assignments",
}


def check_boundary(boundary_in):
    """Refuse a boundary key given as an empty list (raises InputError). Pure.

    An omitted key does not restrict its dimension. An empty list used to mean the same, so an
    unset variable (``principals: "{{ leavers }}"`` with no leavers) widened the task to the whole
    tenant, and with purge removed everyone's grants. Owning everything must be said by omitting
    the key.
    """
    for key in BOUNDARY_KEYS:
        value = boundary_in.get(key)
        if value is not None and not [v for v in value if str(v).strip()]:
            raise InputError(
                "boundary.%s is an empty list%s; an empty list would own %s (and with purge: true remove "
                "their grants), so it is refused. List what this task owns, or omit boundary.%s to own %s "
                "on purpose"
                % (key, "" if not value else " of blank values", _BOUNDARY_NOUNS[key], key, _BOUNDARY_NOUNS[key])
            )


def in_boundary(boundary, kind, principal_id, role_id, scope_id):
    """Pure: is this (kind, principal, role, scope) owned by the task?"""
    if kind not in boundary.types:
        return False
    if boundary.principal_ids is not None and _low(principal_id) not in boundary.principal_ids:
        return False
    if boundary.role_ids is not None and _low(role_id) not in boundary.role_ids:
        return False
    return boundary.scope_ids is None or _scope_key(scope_id) in boundary.scope_ids


def choose_read_strategy(n_principals, n_roles, n_types, expected, page_size=PAGE_SIZE_GUESS, batch=BATCH_SIZE):
    """Pick how to read the boundary's schedules: (strategy, estimated round trips). Pure.

    * "principal": one ``principalId eq`` read per principal and type, 20 per $batch;
    * "role": one ``roleDefinitionId eq`` read per role and type; pages of all roles advance
      together, so rounds = pages of the biggest role;
    * "whole": the whole collection, page after page (it needs no resolved id, so it starts
      in the first $batch); only when neither principals nor roles bound the read.
    ``expected`` is how many schedules of one type to expect (the grants are a good guess).
    None for a count means that dimension is not bounded.
    """
    expected = max(int(expected or 0), 1)
    options = []
    if n_principals is not None:
        options.append(("principal", 1 + math.ceil(max(n_principals, 1) * n_types / batch)))
    if n_roles is not None:
        pages = max(1, math.ceil(expected / (max(n_roles, 1) * page_size)))
        options.append(("role", 1 + math.ceil(max(n_roles, 1) * n_types / batch) * pages))
    if not options:
        # Nothing bounds the read: the tenant's whole collection it is. (When something does,
        # the whole collection may be far bigger than the grants suggest, so it is never picked.)
        options.append(("whole", max(1, math.ceil(expected / page_size))))
    # On a tie the narrower read wins: it returns fewer schedules.
    return min(options, key=lambda o: (o[1], ["principal", "role", "whole"].index(o[0])))


# ------------------------------------------------------------------ the run


class Reconciler:
    """One pim_access run. ``run()`` returns the module result (dict) or raises PimError."""

    def __init__(self, client, params, check_mode=False, diff_mode=False, now=None, sleep=time.sleep, warn=None):
        self.client = client
        self.params = params
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.now = now or datetime.now(UTC)
        self.sleep = sleep
        self.warn = warn or (lambda msg: None)
        self.resolver = _resolve.Resolver(client)
        self.bulk = BulkResolver(client, self.resolver)
        self.errors = []  # {"item", "msg"}
        self.item_errors = {}  # grant index -> text
        self.targets = {}  # grant index -> Target
        self.held = []  # purge exclusions from skipped grants: (kinds, principal ids|None, role ids|None)
        self.schedules = {"eligibility": [], "assignment": []}
        self.pending = {"eligibility": [], "assignment": []}
        # The principals' own pending requests (selfActivate/Extend/Renew): only purge looks at them.
        self.self_pending = {"eligibility": [], "assignment": []}
        self.read_error = None
        self.policy_rules = {}
        self.graph_batches = 0
        self.outcomes = {}  # id(Change) -> {"status", "request_id", "after", "error"} after writing
        self.protected_keys = set()
        self.refused_keys = set()

    # -------------------------------------------------------------- entry

    def run(self):
        params = self.params
        boundary_in = params.get("boundary") or {}
        check_boundary(boundary_in)  # before any request: an empty list must never widen the task
        grants, errors = parse_grants(params.get("grants"), params, self.now)
        self.item_errors.update(errors)
        purge = bool(params.get("purge"))

        for index, value in enumerate(boundary_in.get("directory_scopes") or []):
            _resolve.scope_option(value, "boundary.directory_scopes[%d]" % index)
        for grant in grants:
            if grant.principal:
                self.bulk.want_principal(grant.principal, grant.principal_type)
            if grant.directory_scope and grant.index not in errors:
                self.bulk.want_scope(grant.directory_scope, verify=grant.index not in self.item_errors)
        for value in boundary_in.get("principals") or []:
            self.bulk.want_principal(str(value).strip())
        for value in params.get("protected_principals") or []:
            self.bulk.want_principal(str(value).strip())
        for value in boundary_in.get("directory_scopes") or []:
            self.bulk.want_scope(str(value))

        rounds = Rounds(self.client)
        reader = StateReader(self, grants, boundary_in, purge)
        reader.queue(rounds)
        self.bulk.queue(rounds)
        rounds.run()
        self.graph_batches += rounds.batches

        boundary = self._boundary(boundary_in)  # task-level errors raise here
        protected = self._protected()
        if reader.error is not None:
            raise reader.error
        changes = self._within_policy(self._plan_grants(grants, boundary))
        if purge:
            changes.extend(self._plan_purge(changes, boundary, protected))
        self._protect_last_global_admin(changes)

        if self.errors and params.get("fail_fast", True):
            result = self._result(changes, applied=False)
            raise InputError(
                "%d of the items cannot be applied, so nothing was changed (fail_fast is true): %s"
                % (len(self.errors), "; ".join("%s: %s" % (e["item"], e["msg"]) for e in self.errors[:5]))
                + (" ..." if len(self.errors) > 5 else ""),
                errors=self.errors,
                summary=result["summary"],
                changes=result["changes"],
            )
        if not self.check_mode:
            try:
                Writer(self).write(changes)
            except PimError as err:
                raise self._interrupted(err, changes) from None
        result = self._result(changes, applied=not self.check_mode)
        failed, unknown = int(result["summary"]["failed"]), int(result["summary"]["unknown"])
        if (failed or unknown) and params.get("fail_fast", True):
            # The rest is written (and reported); fail_fast makes a refused write fail the task.
            attempted = sum(
                1 for e in result["changes"] if e["action"] != "none" or e["status"] in ("failed", "unknown")
            )
            raise PimError(
                "%s of %s writes failed%s: %s"
                % (
                    failed,
                    attempted,
                    ", %d with an unknown outcome (the answer was lost)" % unknown if unknown else "",
                    "; ".join("%s: %s" % (e["item"], e["msg"]) for e in self.errors[:5]),
                ),
                changed=result["changed"],
                summary=result["summary"],
                changes=result["changes"],
                errors=result["errors"],
            )
        return result

    # -------------------------------------------------------------- resolution → boundary

    def _boundary(self, boundary_in):
        principal_ids = None
        if boundary_in.get("principals"):
            principal_ids = set()
            for value in boundary_in["principals"]:
                value = str(value).strip()
                if _resolve.is_guid(value):
                    principal_ids.add(value.lower())
                try:
                    principal_ids.add(self.bulk.principal(value).id.lower())
                except InputError as err:
                    if "ambiguous" in err.msg:
                        raise InputError("boundary.principals: %s" % err.msg)
                    self.warn("boundary.principals: %s; it owns nothing in this run." % err.msg)
        role_ids = None
        if boundary_in.get("roles"):
            role_ids = set()
            for value in boundary_in["roles"]:
                try:
                    role_ids.add(self.bulk.role(str(value)).id.lower())
                except InputError as err:
                    raise InputError("boundary.roles: %s" % err.msg)
        scope_ids = None
        if boundary_in.get("directory_scopes"):
            scope_ids = set()
            for value in boundary_in["directory_scopes"]:
                try:
                    scope_ids.add(_scope_key(self.bulk.scope(str(value))))
                except InputError as err:
                    raise InputError("boundary.directory_scopes: %s" % err.msg)
        types = boundary_in.get("types") or list(TYPES)
        return Boundary(principal_ids, role_ids, scope_ids, {TYPES[t] for t in types})

    def _protected(self):
        out = set()
        for value in self.params.get("protected_principals") or []:
            value = str(value).strip()
            if _resolve.is_guid(value):
                out.add(value.lower())
            found = self.bulk.candidates(value)
            if not found and not _resolve.is_guid(value):
                self.warn("protected_principals: '%s' matches no principal; it protects nothing." % value)
            out.update(p.id.lower() for p in found)
        return out

    # -------------------------------------------------------------- planning

    def _error(self, index_or_label, msg):
        label = index_or_label if isinstance(index_or_label, str) else "grants[%d]" % index_or_label
        self.errors.append({"item": label, "msg": msg})

    def _plan_grants(self, grants, boundary):
        changes = []
        seen = {}
        for grant in grants:
            kind = TYPES.get(grant.type)
            label = "grants[%d] (%s)" % (grant.index, describe_grant(grant))
            if grant.index in self.item_errors:
                self._skip(grant, label, self.item_errors[grant.index])
                continue
            try:
                principal = self.bulk.principal(grant.principal, grant.principal_type)
                role = self.bulk.role(grant.role)
                scope_id = self.bulk.scope(grant.directory_scope)
                _pim.check_principal_for(kind, principal)
            except InputError as err:
                self._skip(grant, label, err.msg)
                continue
            if not in_boundary(boundary, kind, principal.id, role.id, scope_id):
                self._skip(grant, label, "it is outside the boundary of this task; widen boundary or drop the grant")
                continue
            key = item_key(kind, principal.id, role.id, scope_id)
            if key in seen:
                self._skip(grant, label, "it names the same %s as grants[%d]" % (grant.type, seen[key]))
                continue
            seen[key] = grant.index
            target = _pim.Target(principal, role, scope_id, None)
            current = self._current(kind, target)
            p = _pim.plan(kind, target, grant.desired, current, self.now)
            changes.append(Change(key, target, kind, p, grant.desired, grant))
        return changes

    def _within_policy(self, changes):
        """Drop (as item errors) grants the role's PIM policy refuses (too long, no justification or ticket),
        before any write.

        The policies of every role with a create or update are read in one batched round.
        """
        writing = [c for c in changes if c.plan.action in ("create", "update")]
        role_ids = sorted({c.target.role.id for c in writing} - set(self.policy_rules))
        if role_ids:
            rounds = Rounds(self.client)
            for role_id in role_ids:

                def on_done(items, err, role_id=role_id):
                    self.policy_rules[role_id] = None if err is not None else _pim.rules_of(items)

                rounds.add_list(_pim.policy_request(role_id)["url"], on_done)
            rounds.run()
            self.graph_batches += rounds.batches
        kept = []
        for change in changes:
            refusal = None
            if change.plan.action in ("create", "update"):
                refusal = _pim.policy_refusal(
                    change.kind,
                    change.target.role.display_name,
                    self.policy_rules.get(change.target.role.id),
                    change.plan.body,
                    self.now,
                    change.grant.asked,
                )
            if refusal:
                label = "grants[%d] (%s)" % (change.grant.index, describe_grant(change.grant))
                self._skip(change.grant, label, refusal)
            else:
                kept.append(change)
        return kept

    def _skip(self, grant, label, msg):
        self._error(label, msg)
        self.item_errors[grant.index] = msg
        # A skipped grant must not turn into a removal by purge: hold what it may have meant.
        kinds = {TYPES[grant.type]} if grant.type in TYPES else set(TYPES.values())
        principals = None
        try:
            principals = {p.id.lower() for p in self.bulk.candidates(grant.principal, grant.principal_type)} or None
        except PimError:
            principals = None
        if principals is None and grant.principal:
            principals = {grant.principal.lower()} if _resolve.is_guid(grant.principal) else None
        roles = None
        try:
            roles = {self.bulk.role(grant.role).id.lower()}
        except PimError:
            roles = None
        self.held.append((kinds, principals, roles))

    def _is_held(self, kind, principal_id, role_id):
        for kinds, principals, roles in self.held:
            if kind not in kinds:
                continue
            if principals is not None and _low(principal_id) not in principals:
                continue
            if roles is not None and _low(role_id) not in roles:
                continue
            return True
        return False

    def _current(self, kind, target):
        pid, rid = _low(target.principal.id), _low(target.role.id)
        schedules = self._index(kind).get((pid, rid), [])
        pending = self._pending_index(kind).get((pid, rid), [])
        return _pim.current_from_answers(kind, target, schedules, pending)

    def _index(self, kind):
        cache = "_sched_index_" + kind
        if not hasattr(self, cache):
            index = {}
            for item in self.schedules[kind]:
                index.setdefault((_low(item.get("principalId")), _low(item.get("roleDefinitionId"))), []).append(item)
            setattr(self, cache, index)
        return getattr(self, cache)

    def _pending_index(self, kind):
        cache = "_pending_index_" + kind
        if not hasattr(self, cache):
            index = {}
            for item in self.pending[kind]:
                index.setdefault((_low(item.get("principalId")), _low(item.get("roleDefinitionId"))), []).append(item)
            setattr(self, cache, index)
        return getattr(self, cache)

    def _plan_purge(self, changes, boundary, protected):
        """Everything managed inside the boundary that no grant asks for → absent (remove/cancel)."""
        desired_keys = {c.key for c in changes}
        # An activation is covered by a grant of either type for its principal, role and scope:
        # who stays eligible keeps what they activated.
        covered = desired_keys | {("assignment",) + c.key[1:] for c in changes}
        end_activations = bool(self.params.get("end_activations"))
        found = OrderedDict()  # key -> (kind, principal id, role id, scope id)
        activations = set()  # keys found only as an activation
        for kind in boundary.types:
            for item in self.schedules[kind]:
                if item.get("status") in _pim._ENDED_STATUSES:
                    continue
                if (item.get("memberType") or "Direct") != "Direct":
                    continue  # inherited through a group: never touched
                if kind == "assignment" and (item.get("assignmentType") or "Assigned") != "Assigned":
                    # An activation: ended only when asked (end_activations) and no grant covers it.
                    if not end_activations or (item.get("assignmentType") or "") != "Activated":
                        continue
                    key = self._purge_candidate(found, kind, item, boundary, covered)
                    if key is not None:
                        activations.add(key)
                    continue
                self._purge_candidate(found, kind, item, boundary, desired_keys)
            for req in self.pending[kind]:
                self._purge_candidate(found, kind, req, boundary, desired_keys)
        own_requests = self._own_requests_to_cancel(found, boundary, desired_keys, covered, end_activations)
        if not found and not own_requests:
            return []
        names = self._principal_names(
            {pid for _k, pid, _r, _s in found.values()} | {key[1] for _kind, key, _req in own_requests}
        )
        # Every adminRemove carries the task's justification and ticket, so Graph's audit trail
        # shows why (an offboarding ticket). Graph's cancel takes no body (notes §1.1), so a
        # cancel cannot carry them; the result lists it with the rest.
        absent = _pim.Desired(
            "absent",
            None,
            self.params.get("justification"),
            self.params.get("ticket_number"),
            self.params.get("ticket_system"),
        )
        out = []
        for key, (kind, pid, rid, scope_id) in found.items():
            if self._is_held(kind, pid, rid):
                continue
            principal = names.get(pid) or _resolve.Principal(pid, "unknown", None, None, None)
            role = self.resolver.role_by_id(rid) or _resolve.Role(rid, None, rid, False)
            target = _pim.Target(principal, role, scope_id, None)
            current = self._current(kind, target)
            activated = False
            if key in activations and current.schedule is None:
                if self._is_held("eligibility", pid, rid):
                    continue  # a skipped eligible grant may be what the activation came from
                promoted = as_activation(current)
                if promoted is not None:
                    current, activated = promoted, True
            desired = absent
            if pid in protected:
                before = _pim.plan(kind, target, desired, current, self.now).before
                p = _pim.Plan("none", ["a protected principal: never removed"], before, before, None, [])
                self.protected_keys.add(key)
                out.append(Change(key, target, kind, p, desired, None, activated))
                continue
            p = _pim.plan(kind, target, desired, current, self.now)
            if activated:
                p = p._replace(reasons=["an activation no grant covers (end_activations is true): end it"])
            out.append(Change(key, target, kind, p, desired, None, activated))
        for kind, key, req in own_requests:
            if key[1] in protected:
                continue  # a protected principal's requests are theirs to keep
            principal = names.get(key[1]) or _resolve.Principal(key[1], "unknown", None, None, None)
            role = self.resolver.role_by_id(key[2]) or _resolve.Role(key[2], None, key[2], False)
            target = _pim.Target(principal, role, req.get("directoryScopeId") or "/", None)
            before = _pim._pending_description(kind, target, req)
            before["request_action"] = req.get("action")
            reason = "the principal's own %s request (%s %s) could still grant the role: cancel it" % (
                req.get("action"),
                req.get("status"),
                req.get("id"),
            )
            p = _pim.Plan("cancel", [reason], before, None, None, [req["id"]])
            out.append(Change(key + ("request", _low(req["id"])), target, kind, p, absent, None))
        return out

    def _own_requests_to_cancel(self, found, boundary, desired_keys, covered, end_activations):
        """The principals' own pending requests that purge cancels: [(kind, key, request)]. Pure over the state read.

        Nothing else ever undoes them: an approver may approve a selfActivate, selfExtend or
        selfRenew after the run (issue 14 point 11). A selfExtend/selfRenew prolongs a schedule, so
        it goes when no grant asks for that schedule. A selfActivate goes when no grant covers the
        activation and either end_activations is true or no eligibility it could come from is left
        after this run.
        """
        removed = {key for key, value in found.items() if value[0] == "eligibility"}
        out = []
        for kind in boundary.types:
            for req in self.self_pending[kind]:
                pid, rid = _low(req.get("principalId")), _low(req.get("roleDefinitionId"))
                scope_id = req.get("directoryScopeId") or "/"
                if req.get("appScopeId") or not req.get("id") or not in_boundary(boundary, kind, pid, rid, scope_id):
                    continue
                key = item_key(kind, pid, rid, scope_id)
                if (req.get("action") or "").lower() == "selfactivate":
                    if key in covered:
                        continue
                    if not end_activations and not self._no_eligibility_left(pid, rid, scope_id, boundary, removed):
                        continue
                elif key in desired_keys:
                    continue
                if self._is_held(kind, pid, rid):
                    continue
                out.append((kind, key, req))
        return out

    def _no_eligibility_left(self, pid, rid, scope_id, boundary, removed):
        """True when, after this run, the principal holds no eligibility for the role at the scope."""
        if "eligibility" not in boundary.types:
            return False  # eligibilities were not read: assume one is left
        removing = item_key("eligibility", pid, rid, scope_id) in removed and not self._is_held("eligibility", pid, rid)
        for item in self._index("eligibility").get((pid, rid), []):
            if item.get("status") in _pim._ENDED_STATUSES or _scope_key(item.get("directoryScopeId")) != _scope_key(
                scope_id
            ):
                continue
            if removing and (item.get("memberType") or "Direct") == "Direct":
                continue
            return False
        return True

    def _purge_candidate(self, found, kind, item, boundary, desired_keys):
        pid, rid = _low(item.get("principalId")), _low(item.get("roleDefinitionId"))
        scope_id = item.get("directoryScopeId") or "/"
        if item.get("appScopeId"):
            return  # app-scoped entries are not managed by pim_access
        if not in_boundary(boundary, kind, pid, rid, scope_id):
            return
        key = item_key(kind, pid, rid, scope_id)
        if key in desired_keys or key in found:
            return None
        found[key] = (kind, pid, rid, scope_id)
        return key

    def _principal_names(self, ids):
        """Principals for ids that no grant named (purge candidates): getByIds, batched."""
        known = {}
        for value, ptype in self.bulk.principal_values:
            try:
                principal = self.bulk.principal(value, ptype)
            except PimError:
                continue
            known[principal.id.lower()] = principal
        missing = sorted(i for i in ids if i not in known)
        if missing:
            rounds = Rounds(self.client)
            for start in range(0, len(missing), GET_BY_IDS_LIMIT):
                body = {
                    "ids": missing[start : start + GET_BY_IDS_LIMIT],
                    "types": ["user", "group", "servicePrincipal"],
                }

                def on_ids(body, err):
                    if err is not None:
                        self.warn("Could not read the names of principals to remove: %s" % err.msg)
                        return
                    for obj in (body or {}).get("value") or []:
                        principal = _resolve.principal_from_graph(obj)
                        known[principal.id.lower()] = principal

                rounds.add({"method": "POST", "url": "/directoryObjects/getByIds", "body": body}, on_ids)
            rounds.run()
            self.graph_batches += rounds.batches
        return known

    def _protect_last_global_admin(self, changes):
        """Refuse removals that would leave no active Global Administrator (notes §3.6 role id)."""
        if not self.params.get("protect_last_global_admin", True):
            return
        removing = [
            c
            for c in changes
            if c.kind == "assignment"
            and c.plan.action == "remove"
            and _low(c.target.role.id) == GLOBAL_ADMIN
            and _scope_key(c.target.directory_scope_id) == "/"
        ]
        if not removing:
            return
        holders = self._global_admin_holders()
        removed = {_low(c.target.principal.id) for c in removing}
        added = {
            _low(c.target.principal.id)
            for c in changes
            if c.kind == "assignment"
            and c.plan.action in ("create", "update")
            and _low(c.target.role.id) == GLOBAL_ADMIN
            and _scope_key(c.target.directory_scope_id) == "/"
            and (c.desired.schedule is None or c.desired.schedule.start is None or c.desired.schedule.start <= self.now)
        }
        if (holders - removed) | added:
            return
        removing_keys = {c.key for c in removing}
        for index, change in enumerate(changes):
            if change.key in removing_keys:
                who = change.target.principal.display_name or change.target.principal.id
                self._error(
                    "remove active Global Administrator of '%s'" % who,
                    "refused: it would leave the tenant without an active Global Administrator "
                    "(protect_last_global_admin is true)",
                )
                p = change.plan._replace(
                    action="none", reasons=["refused: the last active Global Administrator"], after=change.plan.before
                )
                changes[index] = change._replace(plan=p)
                self.refused_keys.add(change.key)

    def _global_admin_holders(self):
        flt = "roleDefinitionId eq %s" % odata_quote(GLOBAL_ADMIN)
        items = self.client.list(_pim.KINDS["assignment"].schedules, params={"$filter": flt})
        self.graph_batches += 1
        holders = set()
        for item in items:
            if item.get("status") in _pim._ENDED_STATUSES or _scope_key(item.get("directoryScopeId")) != "/":
                continue
            holders.add(_low(item.get("principalId")))
        return holders

    # -------------------------------------------------------------- results

    def _interrupted(self, err, changes):
        """The writes stopped on a task-level error: fail with what each item's outcome is so far.

        Items with a settled outcome keep it (applied, confirmed, failed); the others were not
        sent or their answer never came back, so they are ``unknown`` (issue 14 point 13: a
        caller must be able to tell what was written).
        """
        for change in changes:
            if change.plan.action != "none" and id(change) not in self.outcomes:
                self.outcomes[id(change)] = {
                    "status": "unknown",
                    "error": "not known whether it was applied: the run stopped (%s)" % err.msg,
                }
        result = self._result(changes, applied=True)
        err.details.update(
            changed=result["changed"], summary=result["summary"], changes=result["changes"], errors=result["errors"]
        )
        return err

    def _result(self, changes, applied):
        summary = dict.fromkeys(SUMMARY_KEYS, 0)
        out = []
        for change in changes:
            entry = change_entry(change, applied, self.outcomes.get(id(change)))
            if change.key in self.refused_keys:
                entry["status"] = "refused"
                entry["error"] = "it would leave the tenant without an active Global Administrator"
                summary["failed"] += 1
            elif change.key in self.protected_keys:
                entry["status"] = "protected"
                summary["protected"] += 1
            elif entry["status"] == "failed":
                summary["failed"] += 1
            elif entry["status"] == "unknown":
                summary["unknown"] += 1
            elif entry["action"] == "none":
                summary["unchanged"] += 1
            else:
                summary[SUMMARY_WORDS[entry["action"]]] += 1
            out.append(entry)
        summary["skipped"] = len(self.item_errors)
        result = {
            "changed": any(e["action"] != "none" and e["status"] in ("planned", "applied", "confirmed") for e in out),
            "summary": summary,
            "changes": out,
            "errors": list(self.errors),
        }
        if self.diff_mode:
            # An item another writer made meanwhile ("already so") changed nothing of ours.
            result["diff"] = build_diff([c for c, e in zip(changes, out, strict=True) if e["action"] != "none"])
        return result


SUMMARY_WORDS = {"add": "added", "update": "updated", "remove": "removed", "cancel": "cancelled"}


def change_entry(change, applied, outcome=None):
    """One item of the ``changes`` result."""
    p = change.plan
    entry = {
        "principal": change.grant.principal if change.grant else (change.target.principal.display_name or None),
        "principal_id": change.target.principal.id,
        "principal_name": change.target.principal.display_name,
        "principal_type": change.target.principal.type,
        "role": change.target.role.display_name,
        "role_id": change.target.role.id,
        "directory_scope": change.target.directory_scope_id or "/",
        "type": KIND_TYPE[change.kind],
        "activated": bool(change.activated),
        "action": ACTION_WORDS[p.action],
        "reasons": list(p.reasons),
        "before": p.before,
        "after": p.after,
        "request_id": None,
        "status": "unchanged" if p.action == "none" else ("applied" if applied else "planned"),
        "error": None,
    }
    if outcome:
        entry.update(outcome)
    return entry


def _diff_key(change):
    return "%s | %s | %s | %s" % (
        "activated" if change.activated else KIND_TYPE[change.kind],
        change.target.role.display_name or change.target.role.id,
        change.target.directory_scope_id or "/",
        (change.grant.principal if change.grant else None)
        or change.target.principal.display_name
        or change.target.principal.id,
    )


def build_diff(changes):
    """Ansible's diff for the whole run: before/after of every changing item, keyed by a readable name."""
    before, after = {}, {}
    for change in changes:
        if change.plan.action == "none":
            continue
        key = _diff_key(change)
        if change.plan.before:
            before[key] = _diff_view(change.plan.before)
        if change.plan.after:
            after[key] = _diff_view(change.plan.after)
    return {"before": before, "after": after, "before_header": "PIM (current)", "after_header": "PIM (planned)"}


def _diff_view(desc):
    return {k: desc.get(k) for k in ("start", "end", "permanent", "status") if k in desc}


# ------------------------------------------------------------------ reading state


class StateReader:
    """Queues the schedule and pending-request reads for the boundary (see choose_read_strategy)."""

    def __init__(self, rec, grants, boundary_in, purge):
        self.rec = rec
        self.grants = grants
        self.error = None
        good = [g for g in grants if g.type in TYPES]
        if purge:
            types = boundary_in.get("types") or list(TYPES)
        else:
            types = sorted({g.type for g in good}, key=list(TYPES).index)
        self.kinds = [TYPES[t] for t in types]
        # Without purge only the grants' own principals and roles matter.
        if purge:
            self.principals = [str(v).strip() for v in boundary_in.get("principals") or []] or None
            self.roles = [str(v).strip() for v in boundary_in.get("roles") or []] or None
        else:
            self.principals = list(OrderedDict.fromkeys((g.principal, g.principal_type) for g in good)) or None
            self.roles = list(OrderedDict.fromkeys(g.role for g in good)) or None
        expected = max([sum(1 for g in good if g.type == KIND_TYPE[k]) for k in self.kinds] or [0])
        self.strategy, self.estimate = choose_read_strategy(
            len(self.principals) if self.principals is not None else None,
            len(self.roles) if self.roles is not None else None,
            max(len(self.kinds), 1),
            expected,
        )

    def queue(self, rounds):
        if not self.kinds:
            return
        for kind in self.kinds:
            self._queue_pending(rounds, kind)
        if self.strategy == "whole":
            for kind in self.kinds:
                rounds.add_list(_pim.KINDS[kind].schedules, self._collector(kind))
        elif self.strategy == "role":
            self.rec.bulk.on_roles.append(lambda: self._queue_by_role(rounds))
        else:
            self.rec.bulk.on_principals.append(lambda: self._queue_by_principal(rounds))

    def _collector(self, kind):
        def on_done(items, err):
            if err is not None:
                self.error = self.error or err
                return
            self.rec.schedules[kind].extend(items)

        return on_done

    def _queue_filtered(self, rounds, field, ids):
        for value in ids:
            for kind in self.kinds:
                params = {"$filter": "%s eq %s" % (field, odata_quote(value))}
                rounds.add_list(_resolve.encode_url(_pim.KINDS[kind].schedules, params), self._collector(kind))

    def _queue_by_role(self, rounds):
        ids = []
        for name in self.roles:
            try:
                ids.append(_resolve.require_guid(self.rec.bulk.role(name).id, "role id"))
            except PimError:
                continue  # reported per grant / as a boundary error
        self._queue_filtered(rounds, "roleDefinitionId", list(OrderedDict.fromkeys(ids)))

    def _queue_by_principal(self, rounds):
        ids = []
        for entry in self.principals:
            value, ptype = entry if isinstance(entry, tuple) else (entry, "auto")
            try:
                found = [self.rec.bulk.principal(value, ptype)]
            except PimError:
                found = self.rec.bulk.candidates(value, ptype)  # ambiguous: read them all
            ids.extend(_resolve.require_guid(p.id, "principal id") for p in found)
            if _resolve.is_guid(value):
                ids.append(value.lower())
        self._queue_filtered(rounds, "principalId", list(OrderedDict.fromkeys(ids)))

    def _queue_pending(self, rounds, kind):
        """Pending requests (docs/graph-behaviour.md §1), admin and self: one read with every pending status, else one per status."""
        statuses = sorted(_pim.PENDING_STATUSES)
        flt = " or ".join("status eq %s" % odata_quote(s) for s in statuses)
        path = _pim.KINDS[kind].requests

        def keep(items):
            for req in items or []:
                if req.get("status") not in _pim.PENDING_STATUSES:
                    continue
                action = (req.get("action") or "").lower()
                if action in _ADMIN_ACTIONS:
                    self.rec.pending[kind].append(req)
                elif action in _SELF_ACTIONS:
                    self.rec.self_pending[kind].append(req)

        def on_done(items, err):
            if err is None:
                keep(items)
                return
            if err.status == 400:
                # This filter shape was refused: ask per status (eq alone is documented, notes §2).
                for status in statuses:
                    url = _resolve.encode_url(path, {"$filter": "status eq %s" % odata_quote(status)})
                    rounds.add_list(url, lambda items, e: keep(items) if e is None else self._fail(e))
                return
            self._fail(err)

        rounds.add_list(_resolve.encode_url(path, {"$filter": flt}), on_done)

    def _fail(self, err):
        self.error = self.error or err


# ------------------------------------------------------------------ writing


class Writer:
    """Sends the planned requests in $batch chunks of 20 and settles every doubtful answer.

    Every item ends as what Graph holds (issue 14 point 12):

    * ``applied`` (Graph's answer said so) or ``confirmed`` (a fresh read shows the change);
    * ``unchanged`` when Graph answered "already so" (RoleAssignmentExists / DoesNotExist) to our
      first attempt and a fresh read agrees: another writer made it (``_pim.settle``);
    * ``failed`` only when Graph refused it, or a fresh read shows it absent after the last re-send;
    * ``unknown`` only when the answer was lost and Graph could not be read at all.

    A doubtful item (lost answer, connection lost, 5xx, a 429 past the client's retries, an
    "already so" answer) is re-read, with failed reads read again (``REREADS``), and re-sent
    while Graph shows it absent, for ``SETTLE_ROUNDS`` rounds.
    """

    LAGGING = frozenset({"SubjectNotFound", "RoleNotFound"})
    SETTLE_ROUNDS = 3  # re-read → re-send rounds after the first send
    REREADS = 3  # reads of a target whose read failed, per round
    REREAD_WAITS = (1, 2)  # seconds between those reads (the client has retried each already)

    def __init__(self, rec):
        self.rec = rec
        self.client = rec.client
        self.replanned = {}  # id(change) -> the Plan sent instead (adminUpdate after "exists, but differs")

    def _plan(self, change):
        return self.replanned.get(id(change), change.plan)

    def _ops(self, changes):
        ops = []
        for change in changes:
            p = change.plan
            kind = _pim.KINDS[change.kind]
            if p.action in ("create", "update", "remove"):
                ops.append((change, {"method": "POST", "url": kind.requests, "body": p.body}, False))
            elif p.action == "cancel":
                for request_id in p.cancel_ids:
                    url = "%s/%s/cancel" % (kind.requests, _resolve.require_guid(request_id, "request id"))
                    ops.append((change, {"method": "POST", "url": url, "body": {}}, False))
        return ops

    def write(self, changes):
        doubtful, lagging = self._send_all(self._ops(changes))
        for delay in _pim.LAG_DELAYS:
            if not lagging:
                break
            self.rec.sleep(delay)
            more, lagging = self._send_all([(change, req, ours) for change, req, ours, _err in lagging])
            doubtful.extend(more)
        for change, _req, _ours, err in lagging:
            self._failed(change, err)
        self._settle(doubtful)

    def _send_all(self, ops):
        """Send ops (change, req, ours) 20 per $batch → (doubtful, lagging), each (change, req, ours, err)."""
        doubtful, lagging = [], []
        for start in range(0, len(ops), BATCH_SIZE):
            self._send_chunk(ops[start : start + BATCH_SIZE], doubtful, lagging)
        return doubtful, lagging

    def _send_chunk(self, chunk, doubtful, lagging):
        items = [_resolve.batch_item(req, n + 1) for n, (_c, req, _o) in enumerate(chunk)]
        self.rec.graph_batches += 1
        try:
            answers = self.client.batch(items)
        except GraphError as err:
            refused = err.status is not None and 400 <= err.status < 500 and err.status not in (408, 429)
            for change, req, _ours in chunk:
                if refused and err.code != "ResponseLost":
                    self._failed(change, err)  # the envelope was refused (401, 403, 400): no item ran
                else:
                    doubtful.append((change, req, True, err))  # lost or unanswered: any item may have run
            return
        for (change, req, ours), resp in zip(chunk, answers, strict=True):
            status = int(resp.get("status") or 0)
            if 200 <= status < 300:
                self._applied(change, resp.get("body"))
                continue
            err = _graph_error(self.client, resp)
            if status >= 500 or status in (408, 429):
                # A 5xx item may have been carried out (504: the backend did not answer in time); a
                # 429 past the client's retries was not. Either way a read tells what Graph holds.
                doubtful.append((change, req, ours or status >= 500, err))
            elif err.code in _pim.ALREADY_SO:
                doubtful.append((change, req, ours, err))
            elif err.code in self.LAGGING:
                lagging.append((change, req, ours, err))
            else:
                self._failed(change, err)

    def _settle(self, doubtful):
        """Re-read doubtful targets; confirm, take "already so", re-send what Graph shows absent (bounded)."""
        for round_number in range(self.SETTLE_ROUNDS + 1):
            if not doubtful:
                return
            states = self._reread_bounded([change for change, _r, _o, _e in doubtful])
            resend, last_error = [], {}
            for change, req, ours, err in doubtful:
                current = states.get(id(change))
                if current is None:
                    self._unknown(change, err)
                    continue
                plan = self._plan(change)
                verdict, again = _pim.settle(
                    change.kind, change.target, plan, change.desired, current, self.rec.now, err, ours
                )
                if verdict == "confirmed":
                    self._applied(change, None, confirmed=True)
                elif verdict == "already":
                    self._already(change, current)
                elif verdict == "refused":
                    self._failed(change, err)
                else:
                    if again is not plan:
                        self.replanned[id(change)] = again
                        req = {"method": "POST", "url": _pim.KINDS[change.kind].requests, "body": again.body}
                    resend.append((change, req, ours))
                    last_error[id(change)] = err
            if round_number == self.SETTLE_ROUNDS:
                for change, _req, _ours in resend:
                    self._failed(
                        change,
                        last_error[id(change)],
                        "it was not applied: Microsoft Graph shows it absent after %d attempts; the last answer: "
                        % (self.SETTLE_ROUNDS + 1),
                    )
                return
            doubtful, lagging = self._send_all(resend)
            doubtful.extend(lagging)  # lag on a re-send: read again and send again in the next round

    def _reread_bounded(self, changes):
        """Current state per id(change); a target whose read failed is read again, REREADS times at most."""
        out = {}
        missing = list(OrderedDict((id(c), c) for c in changes).values())
        for attempt in range(self.REREADS):
            if attempt:
                self.rec.sleep(self.REREAD_WAITS[min(attempt, len(self.REREAD_WAITS)) - 1])
            out.update(self._reread(missing))
            missing = [c for c in missing if id(c) not in out]
            if not missing:
                break
        return out

    def _applied(self, change, body, confirmed=False):
        previous = self.rec.outcomes.get(id(change))
        if previous and previous["status"] in ("failed", "unknown"):
            return  # a change of several requests (cancels) is as good as its worst request
        p = self._plan(change)
        entry = {"status": "confirmed" if confirmed else "applied"}
        if p is not change.plan:
            entry.update(action=ACTION_WORDS[p.action], reasons=list(p.reasons), before=p.before, after=p.after)
        if isinstance(body, dict) and body:
            entry["request_id"] = body.get("id")
            if p.action in ("create", "update"):
                entry["after"] = _pim.result_from_request(change.kind, change.target, body, p, self.rec.now)
        self.rec.outcomes[id(change)] = entry

    def _already(self, change, current):
        """Graph said "already so" to our first attempt and a read agrees: another writer made it."""
        previous = self.rec.outcomes.get(id(change))
        if previous and previous["status"] in ("failed", "unknown"):
            return
        kind = _pim.KINDS[change.kind]
        there = change.plan.action in ("create", "update")
        now_desc = _pim.describe(kind, change.target, current.window, current.schedule) if current.schedule else None
        self.rec.outcomes[id(change)] = {
            "status": "unchanged",
            "action": "none",
            "reasons": [
                "the %s was already %s when written (Graph: another request made it meanwhile)"
                % (kind.noun, "there" if there else "absent")
            ],
            "after": now_desc,
        }

    def _unknown(self, change, err):
        msg = (
            "the outcome is unknown: the answer was lost (%s) and Microsoft Graph could not be read to tell "
            "whether it was applied; run the task again to settle it" % _error_text(err)
        )
        self.rec.outcomes[id(change)] = {"status": "unknown", "error": msg}
        self.rec._error(_diff_key(change), msg)

    def _failed(self, change, err, note=""):
        if isinstance(err, GraphError):
            rules = None
            if err.code == "RoleAssignmentRequestPolicyValidationFailed" or _pim.failed_rules(err.graph_message):
                rules = self._policy_rules(change.target.role.id)
            err = _pim.explain_graph_error(err, change.kind, change.target, self._plan(change).body, rules)
        msg = note + _error_text(err)
        self.rec.outcomes[id(change)] = {"status": "failed", "error": msg}
        self.rec._error(_diff_key(change), msg)

    def _policy_rules(self, role_id):
        if role_id not in self.rec.policy_rules:
            self.rec.policy_rules[role_id] = _pim.read_policy_rules(self.client, role_id)
            self.rec.graph_batches += 1
        return self.rec.policy_rules[role_id]

    def _reread(self, changes):
        """Current state of each change's target: the domain layer's reads, 20 per $batch.

        A target whose reads did not all succeed is left out (the caller reads it again).
        """
        rounds = Rounds(self.client)
        answers = {}  # id(change) -> {name: items | GraphError}
        expected = {}
        for change in changes:
            named = _pim.read_requests(change.kind, change.target, include_pending=change.plan.action == "cancel")
            got = answers.setdefault(id(change), {})
            expected[id(change)] = len(named)
            for name, req in named:

                def on_done(items, err, got=got, name=name):
                    got[name] = err if err is not None else items

                rounds.add_list(req["url"], on_done)
        try:
            rounds.run()
        except GraphError:
            pass  # what was answered before the failure counts; the rest is read again
        self.rec.graph_batches += rounds.batches
        out = {}
        for change in changes:
            got = answers[id(change)]
            if len(got) < expected[id(change)] or any(isinstance(v, GraphError) for v in got.values()):
                continue
            current = _pim.current_from_answers(change.kind, change.target, got.get("schedules"), got.get("requests"))
            if change.activated:
                # An activation still running is the schedule this change ends.
                current = as_activation(current) or current
            out[id(change)] = current
        return out


def reconcile(client, params, check_mode=False, diff_mode=False, now=None, sleep=time.sleep, warn=None):
    """Run pim_access: returns the module result dict (raises PimError for task-level failures)."""
    return Reconciler(client, params, check_mode, diff_mode, now, sleep, warn).run()
