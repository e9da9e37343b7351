# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Turn the names people write (role names, UPNs, group names, AU names) into Graph ids.

Internal to the entra.pim collection: not a public API, may change without notice.

Rules that hold everywhere here:

* An id that goes into a URL path is checked to be a GUID first; every value that goes into
  a ``$filter`` goes through ``odata_quote`` (``o'brien@contoso.example`` works, and
  ``x' or 1 eq 1`` matches nothing instead of widening the filter).
* Zero matches or more than one is an InputError listing the candidates: we never guess.
* Each lookup is split into "the requests to send" and "what the answers mean", so that a
  caller can put the lookups of several things into one ``$batch`` (issue 7) and still get
  exactly the same results and errors as the one-at-a-time path.
* Names a task resolved are remembered in a small private file next to the token cache
  (``DirectoryCache``), so that the next task can put the state read into the same round trip
  as the lookup. A remembered id is only ever a *guess*: the lookup is still sent, and if its
  answer differs from the guess the state is read again for the real object (issue 7).
"""

from __future__ import annotations

import atexit
import difflib
import json
import re
import time
from collections import namedtuple
from urllib.parse import quote

from ansible_collections.entra.pim.plugins.module_utils._auth import CacheFiles
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError, InputError, shown
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote

Role = namedtuple("Role", "id display_name template_id is_built_in")
Principal = namedtuple("Principal", "id type display_name upn app_id role_assignable", defaults=(None,))
Principal.__doc__ = """A user, group or service principal. type: user | group | service_principal.

role_assignable is the group's isAssignableToRole (None for users and service principals).
"""

PRINCIPAL_TYPES = ("auto", "user", "group", "service_principal")

ROLE_DEFINITIONS = "/roleManagement/directory/roleDefinitions"
ROLE_SELECT = "id,displayName,templateId,isBuiltIn"
USER_SELECT = "id,displayName,userPrincipalName,mail"
GROUP_SELECT = "id,displayName,mail,isAssignableToRole"
SP_SELECT = "id,displayName,appId"
AU_SELECT = "id,displayName"

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_ODATA_TYPES = {
    "#microsoft.graph.user": "user",
    "#microsoft.graph.group": "group",
    "#microsoft.graph.servicePrincipal": "service_principal",
}
_TYPE_WORDS = {"user": "user", "group": "group", "service_principal": "service principal"}

# Role definitions change rarely and one task asks about them several times (the role it
# manages, names for results): read the list once per Graph endpoint for this process.
_ROLE_CACHE = {}

# How long the directory cache file trusts what it remembers (seconds). Every remembered id is
# verified in the same round trip as the state read, so these bound how often a guess can miss
# (and cost a second round trip), not correctness. Role definitions change rarely; people and
# groups are renamed and re-created more often.
ROLE_CACHE_TTL = 3600
PRINCIPAL_CACHE_TTL = 600
# A single-item task remembers one principal; a bulk run must not grow the file without bound.
MAX_CACHED_PRINCIPALS = 256


def is_guid(value):
    return isinstance(value, str) and bool(_GUID_RE.match(value))


def require_guid(value, what):
    """Return ``value`` lower-cased if it is a GUID, else InputError naming ``what``."""
    if not is_guid(value):
        raise InputError(
            "%s '%s' is not a valid GUID; expected an object id like 00000000-0000-0000-0000-000000000000"
            % (what, shown(value))
        )
    return value.lower()


def _candidates(principals):
    return ", ".join("'%s' (%s, %s)" % (p.display_name, _TYPE_WORDS[p.type], p.id) for p in principals)


def principal_from_graph(obj, kind=None):
    """A Graph user/group/servicePrincipal dict → Principal (kind from @odata.type when not given)."""
    kind = kind or _ODATA_TYPES.get(obj.get("@odata.type"))
    if kind is None:
        if "userPrincipalName" in obj:
            kind = "user"
        elif "appId" in obj:
            kind = "service_principal"
        else:
            kind = "group"
    return Principal(
        id=obj["id"],
        type=kind,
        display_name=obj.get("displayName"),
        upn=obj.get("userPrincipalName") if kind == "user" else None,
        app_id=obj.get("appId") if kind == "service_principal" else None,
        role_assignable=obj.get("isAssignableToRole") if kind == "group" else None,
    )


def role_from_graph(obj):
    """A Graph unifiedRoleDefinition dict → Role."""
    return Role(obj["id"], obj.get("displayName"), obj.get("templateId") or obj["id"], bool(obj.get("isBuiltIn")))


def encode_url(path, params=None):
    """A relative URL for a $batch item: path plus the query string, percent-encoded."""
    query = "&".join("%s=%s" % (k, quote(str(v), safe="$,()'=@:/")) for k, v in (params or {}).items())
    return path + ("?" + query if query else "")


def get_request(path, params=None):
    """A GET that can be sent alone (path + params) or inside a $batch (url)."""
    params = params or {}
    return {"method": "GET", "path": path, "params": params, "url": encode_url(path, params)}


def batch_item(req, item_id):
    """Our request dict → the client's batch item shape."""
    out = {"id": str(item_id), "method": req["method"], "url": req["url"]}
    if req.get("body") is not None:
        out["body"] = req["body"]
        out["headers"] = {"Content-Type": "application/json"}
    return out


def send_all(client, requests):
    """Send batch-ready requests; returns Graph bodies (or the GraphError of a failed item), in order.

    One request goes out as a plain call (no $batch envelope); several share one $batch.
    """
    if not requests:
        return []
    if len(requests) == 1:
        req = requests[0]
        try:
            if req["method"] == "POST":
                return [client.post(req["path"], req["body"], idempotent=True)]
            if req.get("entity"):
                return [client.get(req["path"], params=req.get("params"))]
            return [{"value": client.list(req["path"], params=req.get("params"))}]
        except GraphError as err:
            return [err]
    out = []
    for resp in client.batch([batch_item(req, n + 1) for n, req in enumerate(requests)]):
        try:
            raise_for_item(client, resp)
        except GraphError as err:
            out.append(err)
            continue
        out.append(resp.get("body") or {})
    return out


def follow_pages(client, body):
    """All items of a collection answer, following @odata.nextLink (an answer from a $batch is one page)."""
    items = list((body or {}).get("value", []))
    link = (body or {}).get("@odata.nextLink")
    if link:
        # The client follows the rest of the chain itself (and only to our Graph host).
        items.extend(client.list(link))
    return items


def raise_for_item(client, resp):
    """Turn one failed $batch item into GraphError, the same way the client does for plain calls."""
    if 200 <= int(resp.get("status") or 0) < 300:
        return
    helper = getattr(client, "raise_for_item", None)
    if helper is None:
        from ansible_collections.entra.pim.plugins.module_utils import _graph

        helper = _graph.raise_for_item
    helper(resp)


def _principal_key(value, principal_type):
    return "%s|%s" % (principal_type or "auto", (value or "").strip().lower())


class DirectoryCache:
    """Names → ids remembered between tasks, in ``directory_cache.json`` next to the token cache.

    One file per token cache directory, one section per tenant + graph_url, holding:

    * ``roles``: the role catalogue (id, displayName, templateId, isBuiltIn), fresh for
      ``ROLE_CACHE_TTL`` seconds;
    * ``principals``: what a name (UPN, mail, group or service principal name) resolved to, per
      principal_type, fresh for ``PRINCIPAL_CACHE_TTL`` seconds. Object ids given as ids are never
      stored (they need no lookup), nor are names that were not found or were ambiguous.

    The file follows the token cache: ``token_cache: false`` disables it, it is mode 0600 and
    refused when others can read it (``CacheFiles``). Changes are kept in memory and written once,
    atomically, when the process ends (or on ``flush()``), and only when the content changed;
    the file is re-read just before writing so that parallel tasks lose little of each other's work.
    """

    VERSION = 1

    def __init__(self, files, key, now=None):
        self.files = files
        self.key = key
        self.now = now or time.time
        self._section = None  # this tenant's part of the file, loaded on first use
        self._ops = []  # ("roles"|"principal"|"forget_roles"|"forget_principal", args...)
        self._registered = False

    @classmethod
    def for_client(cls, client):
        """The cache for a GraphClient's settings, or None (disabled, no path, tenant unknown, a fake client)."""
        settings = getattr(client, "settings", None)
        graph_url = getattr(client, "graph_url", None)
        if not isinstance(settings, dict) or not settings.get("token_cache", True):
            return None
        path, tenant = settings.get("token_cache_path"), settings.get("tenant_id")
        if not (path and tenant and isinstance(graph_url, str)):
            return None
        files = CacheFiles(path, enabled=True, warn=getattr(client, "warn", None), load=False)
        return cls(files, "%s|%s" % (str(tenant).strip().lower(), graph_url.rstrip("/").lower()))

    # ---------------------------------------------------------------- file

    def _read_file(self):
        text = self.files.read_directory()
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if (
            not isinstance(data, dict)
            or data.get("version") != self.VERSION
            or not isinstance(data.get("tenants"), dict)
        ):
            data = {"version": self.VERSION, "tenants": {}}
        return text, data

    def _mine(self):
        if self._section is None:
            _text, data = self._read_file()
            section = data["tenants"].get(self.key)
            self._section = section if isinstance(section, dict) else {}
        return self._section

    def _fresh(self, entry, ttl):
        at = entry.get("at") if isinstance(entry, dict) else None
        return isinstance(at, (int, float)) and 0 <= self.now() - at < ttl

    def _change(self, op):
        self._ops.append(op)
        _apply(self._mine(), op, self.now())
        if not self._registered:
            atexit.register(self.flush)
            self._registered = True

    def flush(self):
        """Write the remembered changes (merged into what is on disk now) if the file's content changes."""
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        try:
            text, data = self._read_file()
        except (AuthError, OSError):
            # Refused (others can read it) or unreadable now: never write over it at exit.
            return
        now = self.now()
        section = data["tenants"].setdefault(self.key, {})
        for op in ops:
            _apply(section, op, now)
        for key in list(data["tenants"]):
            _prune(data["tenants"][key], now)
            if not data["tenants"][key]:
                del data["tenants"][key]
        new_text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        if new_text != text:
            self.files.write_directory(new_text)

    # ---------------------------------------------------------------- roles

    def roles(self):
        """The remembered role catalogue (list of Role) while fresh, else None."""
        entry = self._mine().get("roles")
        if not self._fresh(entry, ROLE_CACHE_TTL) or not isinstance(entry.get("items"), list):
            return None
        try:
            return [
                Role(i["id"], i.get("display_name"), i.get("template_id") or i["id"], bool(i.get("is_built_in")))
                for i in entry["items"]
            ]
        except (KeyError, TypeError, AttributeError):
            return None

    def put_roles(self, roles):
        items = [r._asdict() for r in roles]
        entry = self._mine().get("roles")
        if self._fresh(entry, ROLE_CACHE_TTL / 2) and entry.get("items") == items:
            return
        self._change(("roles", items))

    def forget_roles(self):
        if "roles" in self._mine():
            self._change(("forget_roles",))

    # ---------------------------------------------------------------- principals

    def principal(self, value, principal_type="auto"):
        """What ``value`` resolved to (a Principal) while fresh, else None."""
        entry = self._mine().get("principals", {}).get(_principal_key(value, principal_type))
        if not self._fresh(entry, PRINCIPAL_CACHE_TTL):
            return None
        try:
            principal = Principal(*[entry[f] for f in Principal._fields])
        except (KeyError, TypeError):
            return None
        return principal if is_guid(principal.id) and principal.type in _TYPE_WORDS else None

    def put_principal(self, value, principal_type, principal):
        if is_guid((value or "").strip()):
            return
        key = _principal_key(value, principal_type)
        fields = dict(principal._asdict())
        entry = self._mine().get("principals", {}).get(key)
        if self._fresh(entry, PRINCIPAL_CACHE_TTL / 2) and {f: entry.get(f) for f in fields} == fields:
            return
        self._change(("principal", key, fields))

    def forget_principal(self, value, principal_type="auto"):
        if _principal_key(value, principal_type) in self._mine().get("principals", {}):
            self._change(("forget_principal", _principal_key(value, principal_type)))


def _apply(section, op, now):
    """Apply one remembered change to a tenant section of the file."""
    if op[0] == "roles":
        section["roles"] = {"at": now, "items": op[1]}
    elif op[0] == "forget_roles":
        section.pop("roles", None)
    elif op[0] == "principal":
        principals = section.setdefault("principals", {})
        principals[op[1]] = dict(op[2], at=now)
    elif op[0] == "forget_principal":
        section.get("principals", {}).pop(op[1], None)


def _prune(section, now):
    """Drop expired entries, and the oldest principals beyond MAX_CACHED_PRINCIPALS."""
    roles = section.get("roles")
    if not (
        isinstance(roles, dict) and isinstance(roles.get("at"), (int, float)) and now - roles["at"] < ROLE_CACHE_TTL
    ):
        section.pop("roles", None)
    principals = section.get("principals")
    if isinstance(principals, dict):
        alive = {
            k: v
            for k, v in principals.items()
            if isinstance(v, dict) and isinstance(v.get("at"), (int, float)) and now - v["at"] < PRINCIPAL_CACHE_TTL
        }
        newest = sorted(alive.items(), key=lambda kv: kv[1]["at"], reverse=True)[:MAX_CACHED_PRINCIPALS]
        section["principals"] = dict(newest)
        if not section["principals"]:
            del section["principals"]
    elif principals is not None:
        del section["principals"]


_AUTO = object()


class Resolver:
    """Resolve roles, principals and scopes through one GraphClient. Cheap to create.

    ``cache``: a DirectoryCache, None for none, or (default) the one the client's settings
    describe (next to the token cache, unless ``token_cache`` is false).
    """

    def __init__(self, client, cache=_AUTO):
        self.client = client
        self.cache = DirectoryCache.for_client(client) if cache is _AUTO else cache

    # ------------------------------------------------------------ roles

    def _cache_key(self):
        return getattr(self.client, "graph_url", None) or id(self.client)

    def role_list_request(self):
        return get_request(ROLE_DEFINITIONS, {"$select": ROLE_SELECT})

    def role_request(self, role_id):
        """One role definition by id, batch-ready (an entity, not a collection)."""
        path = "%s/%s" % (ROLE_DEFINITIONS, require_guid(role_id, "role id"))
        return dict(get_request(path, {"$select": ROLE_SELECT}), entity=True)

    def roles_cached(self):
        return self._cache_key() in _ROLE_CACHE

    def load_roles(self, items):
        """Fill the role cache from Graph roleDefinition dicts (e.g. from a batched list)."""
        roles = [role_from_graph(item) for item in items]
        _ROLE_CACHE[self._cache_key()] = roles
        if self.cache is not None:
            self.cache.put_roles(roles)
        return roles

    def all_roles(self):
        key = self._cache_key()
        if key not in _ROLE_CACHE:
            self.load_roles(self.client.list(ROLE_DEFINITIONS, params={"$select": ROLE_SELECT}))
        return _ROLE_CACHE[key]

    # The warm path (issue 7). ``roles_cached()`` and ``role()`` only ever use role definitions
    # read from Graph by this process; what the directory cache file remembers is used for
    # guesses alone, which the caller verifies in the same round trip:
    #
    #     role_id = resolver.known_role_id(role); principal_id = resolver.known_principal_id(p, t)
    #     if both: send [role_request(role_id) if role_needs_check()] + principal_requests(p, t)
    #              + the state read for (principal_id, role_id), all in one $batch;
    #              role = confirm_role(role, answer); principal = principal_from_answers(...)
    #              if their ids differ from the guess: read the state again for the real ids.

    def known_role_id(self, value):
        """A role id to read state with before the role is resolved: the GUID itself, or the id a
        unique display-name match has in the role list (read this run, else remembered), or None."""
        value = (value or "").strip()
        if is_guid(value):
            return value.lower()
        if not value:
            return None
        roles = _ROLE_CACHE.get(self._cache_key())
        if roles is None and self.cache is not None:
            roles = self.cache.roles()
        matches = [r for r in roles or [] if (r.display_name or "").casefold() == value.casefold()]
        return matches[0].id.lower() if len(matches) == 1 and is_guid(matches[0].id) else None

    def role_needs_check(self):
        """Whether the guessed role must be read by id in the same batch (it was not read from Graph this run)."""
        return not self.roles_cached()

    def confirm_role(self, value, answer):
        """The role for ``value`` given the answer to ``role_request(known_role_id(value))``.

        ``answer``: the Graph roleDefinition dict, or None when it was not asked for or not found
        (404: the GUID may be a template id). A role named by display name whose definition now
        has another name means the remembered catalogue is stale: it is forgotten and the role
        list is read from Graph, so the task never acts on a renamed or replaced role.
        """
        if isinstance(answer, GraphError):
            raise answer
        value = (value or "").strip()
        if answer:
            role = role_from_graph(answer)
            if is_guid(value) or (role.display_name or "").casefold() == value.casefold():
                return role
            if self.cache is not None:
                self.cache.forget_roles()
        return self.role(value)

    def known_principal_id(self, value, principal_type="auto"):
        """A principal id to read state with before the lookup answers: the GUID itself, or the id
        ``value`` resolved to in an earlier task (remembered, still fresh), or None."""
        value = (value or "").strip()
        if principal_type not in PRINCIPAL_TYPES or not value:
            return None
        if is_guid(value):
            return value.lower()
        found = self.cache.principal(value, principal_type) if self.cache is not None else None
        return found.id.lower() if found else None

    def role_by_id(self, role_id):
        if not role_id:
            return None
        wanted = role_id.lower()
        for role in self.all_roles():
            if role.id.lower() == wanted:
                return role
        for role in self.all_roles():
            if (role.template_id or "").lower() == wanted:
                return role
        return None

    def role(self, name_or_id):
        """A role by display name (case-insensitive, matched locally), id or template id."""
        value = (name_or_id or "").strip()
        if not value:
            raise InputError("role is empty; expected a role display name such as 'User Administrator' or its id")
        if is_guid(value):
            found = self.role_by_id(value)
            if found:
                return found
            raise InputError("role id '%s' matches no role definition (neither an id nor a template id)" % value)
        wanted = value.casefold()
        matches = [r for r in self.all_roles() if (r.display_name or "").casefold() == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InputError(
                "role '%s' matches %d role definitions: %s; give the role's id instead"
                % (value, len(matches), ", ".join("'%s' (%s)" % (r.display_name, r.id) for r in matches))
            )
        names = {(r.display_name or "").casefold(): r.display_name for r in self.all_roles()}
        close = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.6)
        hint = "; did you mean %s?" % ", ".join("'%s'" % names[c] for c in close) if close else ""
        raise InputError("role '%s' not found among %d role definitions%s" % (shown(value), len(names), hint))

    def roles(self, names):
        """Several roles with one role-list read; the first unknown one raises."""
        return [self.role(name) for name in names]

    # ------------------------------------------------------------ principals

    def principal_requests(self, value, principal_type="auto"):
        """The Graph requests that look ``value`` up, as (kind, request) pairs.

        kind is "ids" (a directoryObjects/getByIds POST) or a principal type for a filtered
        list. Send them with ``client.batch`` or one by one; pass the answers to
        ``principal_from_answers`` in the same order.
        """
        value = (value or "").strip()
        if principal_type not in PRINCIPAL_TYPES:
            raise InputError("principal_type '%s' is not one of %s" % (principal_type, ", ".join(PRINCIPAL_TYPES)))
        if not value:
            raise InputError("principal is empty; expected an object id, a UPN, or a group or service principal name")
        quoted = odata_quote(value)
        if is_guid(value):
            types = {
                "auto": ["user", "group", "servicePrincipal"],
                "user": ["user"],
                "group": ["group"],
                "service_principal": ["servicePrincipal"],
            }[principal_type]
            return [
                (
                    "ids",
                    {
                        "method": "POST",
                        "path": "/directoryObjects/getByIds",
                        "url": "/directoryObjects/getByIds",
                        "body": {"ids": [value.lower()], "types": types},
                    },
                )
            ]
        if "@" in value and principal_type in ("auto", "user"):
            flt = "userPrincipalName eq %s or mail eq %s" % (quoted, quoted)
            return [("user", get_request("/users", {"$filter": flt, "$select": USER_SELECT}))]
        out = []
        if principal_type == "user":
            out.append(
                ("user", get_request("/users", {"$filter": "displayName eq %s" % quoted, "$select": USER_SELECT}))
            )
        if principal_type in ("auto", "group"):
            field = "mail" if "@" in value else "displayName"
            flt = "%s eq %s" % (field, quoted)
            out.append(("group", get_request("/groups", {"$filter": flt, "$select": GROUP_SELECT})))
        if principal_type in ("auto", "service_principal"):
            flt = "displayName eq %s" % quoted
            out.append(("service_principal", get_request("/servicePrincipals", {"$filter": flt, "$select": SP_SELECT})))
        return out

    def principal_from_answers(self, value, principal_type, kinds, answers):
        """Turn the answers (Graph bodies, in request order) into exactly one Principal.

        A name that resolves is remembered in the directory cache; one that does not (not found,
        ambiguous) is forgotten, so a later task never guesses with it.
        """
        try:
            found = self._principal_from_answers(value, principal_type, kinds, answers)
        except InputError:
            if self.cache is not None:
                self.cache.forget_principal(value, principal_type)
            raise
        if self.cache is not None:
            self.cache.put_principal(value, principal_type, found)
        return found

    def _principal_from_answers(self, value, principal_type, kinds, answers):
        value = (value or "").strip()
        found = []
        for kind, body in zip(kinds, answers, strict=True):
            for obj in (body or {}).get("value", []):
                found.append(principal_from_graph(obj, None if kind == "ids" else kind))
        # getByIds never errors on unknown ids: a GUID may still be a service principal's appId.
        if not found and is_guid(value) and principal_type in ("auto", "service_principal"):
            flt = "appId eq %s" % odata_quote(value.lower())
            for obj in self.client.list("/servicePrincipals", params={"$filter": flt, "$select": SP_SELECT}):
                found.append(principal_from_graph(obj, "service_principal"))
        unique = list({p.id: p for p in found}.values())
        if len(unique) == 1:
            return unique[0]
        what = "principal" if principal_type == "auto" else _TYPE_WORDS[principal_type]
        if not unique:
            searched = {
                "auto": "users (by id, UPN or mail), groups and service principals (by name, id or appId)",
                "user": "users (by id, UPN, mail or display name)",
                "group": "groups (by id, display name or mail)",
                "service_principal": "service principals (by id, display name or appId)",
            }[principal_type]
            raise InputError("%s '%s' not found; searched %s" % (what, shown(value), searched))
        raise InputError(
            "%s '%s' is ambiguous: %d objects match: %s; give the object id (or set principal_type)"
            % (what, value, len(unique), _candidates(unique))
        )

    def principal(self, value, principal_type="auto"):
        """One user, group or service principal from an object id, UPN, mail, name or appId."""
        pairs = self.principal_requests(value, principal_type)
        answers = self._send([pair[1] for pair in pairs])
        return self.principal_from_answers(value, principal_type, [pair[0] for pair in pairs], answers)

    def principals_by_ids(self, ids):
        """Many object ids → {id: Principal} with getByIds (1000 ids per request); unknown ids are left out."""
        wanted = sorted({i.lower() for i in ids if is_guid(i)})
        out = {}
        for chunk in range(0, len(wanted), 1000):
            body = {"ids": wanted[chunk : chunk + 1000], "types": ["user", "group", "servicePrincipal"]}
            answer = self.client.post("/directoryObjects/getByIds", body, idempotent=True) or {}
            for obj in answer.get("value", []):
                principal = principal_from_graph(obj)
                out[principal.id.lower()] = principal
        return out

    def _send(self, requests):
        answers = send_all(self.client, requests)
        for answer in answers:
            if isinstance(answer, GraphError):
                raise answer
        return answers

    # ------------------------------------------------------------ scopes

    def directory_scope(self, value):
        """'/' (default), '/administrativeUnits/{id}', an AU id or an AU display name → a directoryScopeId."""
        local = directory_scope_local(value)
        if local is not None:
            return local
        req = directory_scope_request(value)
        try:
            units = self.client.list(req["path"], params=req["params"])
        except GraphError as err:
            raise directory_scope_error(value, err)
        return directory_scope_from_answer(value, units)


def scope_option(value, option="directory_scope"):
    """The one rule for every scope-like option: omitted (None) is the whole tenant, ``/``; an empty or
    blank string is refused, naming ``option``.

    An unset template variable renders as ``""`` (and ``null`` reaches a module as ``""``): reading
    that as the tenant would silently turn an administrative-unit grant into a tenant-wide one.
    Returns the value stripped.
    """
    if value is None:
        return "/"
    if not isinstance(value, str):
        raise InputError("%s must be a string; expected '/' for the whole tenant or an administrative unit" % option)
    text = value.strip()
    if not text:
        raise InputError(
            "%s is empty (%r); omit it or give '/' for the whole tenant, or give an administrative unit as "
            "'/administrativeUnits/{id}', its object id or its display name. An empty value is refused so that "
            "an unset variable never widens a grant to the whole tenant" % (option, value)
        )
    return text


def directory_scope_local(value, option="directory_scope"):
    """The directoryScopeId when it needs no lookup, else None (an administrative unit's name).

    ``value`` None is the tenant ``/``; an empty or blank string is refused (``scope_option``).
    """
    value = scope_option(value, option)
    if value == "/":
        return "/"
    if value.lower().startswith("/administrativeunits/"):
        unit = value[len("/administrativeUnits/") :].rstrip("/")
        return "/administrativeUnits/" + require_guid(unit, "%s administrative unit id" % option)
    if value.startswith("/"):
        # Graph also takes a directory object's id as a scope, e.g. "/{application object id}".
        return "/" + require_guid(value[1:].rstrip("/"), "%s object id" % option)
    if is_guid(value):
        return "/administrativeUnits/" + value.lower()
    return None


def unit_of_scope(scope_id):
    """The administrative unit id of a '/administrativeUnits/{id}' scope (lower case), else None."""
    prefix = "/administrativeunits/"
    if scope_id and scope_id.lower().startswith(prefix):
        return scope_id[len(prefix) :].lower()
    return None


def unit_request(unit_id):
    """The GET of one administrative unit by id, batch-ready: it rides in the batch that reads the state."""
    return get_request(
        "/directory/administrativeUnits/" + require_guid(unit_id, "administrative unit id"), {"$select": AU_SELECT}
    )


def missing_scope_error(value, what, object_id):
    """The one message for a directory_scope whose object a read showed does not exist."""
    return InputError(
        "directory_scope '%s': no %s with the id '%s' exists in this tenant; give '/' for the whole tenant, "
        "'/administrativeUnits/{id}' of an existing administrative unit, or its name" % (value, what, object_id)
    )


def unit_answer_error(value, answer):
    """The answer to ``unit_request`` → InputError when no such unit exists, else None.

    Not found (404) is refused before any write, naming the option. A refused read (401/403, no
    AdministrativeUnit.Read.All) cannot tell, so Graph judges the scope when the request is sent.
    """
    if not isinstance(answer, GraphError):
        return None
    if answer.status == 404:
        return missing_scope_error(value, "administrative unit", unit_of_scope(directory_scope_local(value)))
    if answer.status in (401, 403):
        return None
    return answer


def directory_scope_request(value):
    flt = "displayName eq %s" % odata_quote(value.strip())
    return get_request("/directory/administrativeUnits", {"$filter": flt, "$select": AU_SELECT})


def directory_scope_error(value, err):
    """A failed AU lookup → InputError when it is a permission problem (the name was optional)."""
    if isinstance(err, GraphError) and err.status == 403:
        return InputError(
            "directory_scope '%s' is a name, and reading administrative units was refused (%s); "
            "give '/administrativeUnits/{id}' instead or grant AdministrativeUnit.Read.All" % (value, err.code or "403")
        )
    return err


def directory_scope_from_answer(value, units):
    if len(units) == 1:
        return "/administrativeUnits/" + units[0]["id"].lower()
    if not units:
        raise InputError(
            "directory_scope '%s' is neither '/', '/administrativeUnits/{id}' nor the name of an "
            "administrative unit" % shown(value)
        )
    raise InputError(
        "directory_scope '%s' matches %d administrative units: %s; give '/administrativeUnits/{id}' instead"
        % (value, len(units), ", ".join("'%s' (%s)" % (u.get("displayName"), u["id"]) for u in units))
    )


def app_scope(value):
    """app_scope passes through, but an empty or blank value is a mistake, not 'no scope'."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        raise InputError("app_scope is empty; omit it, or give an app scope id such as '/' or an application id")
    return text
