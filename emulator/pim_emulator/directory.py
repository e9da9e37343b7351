"""Directory objects the collection resolves names against: users, groups, service principals,
administrative units and ``directoryObjects/getByIds``; plus the control routes that create and
delete directory objects (``/_emulator/objects``), which start the replication-lag clock.

Stored documents carry Graph properties plus sandbox-only keys: ``password`` (users, for the
password grant), ``clientSecret`` (applications) and anything starting with ``_`` (``_members``,
``_createdAt``). ``public()`` strips all of them; Graph routes only ever return ``public()`` output.
"""

from __future__ import annotations

from datetime import datetime

from pim_emulator import ids
from pim_emulator.clock import parse_datetime
from pim_emulator.errors import GraphError, bad_request
from pim_emulator.odata import Source
from pim_emulator.routing import Response, route

USERS = "users"
GROUPS = "groups"
SERVICE_PRINCIPALS = "servicePrincipals"
ADMINISTRATIVE_UNITS = "administrativeUnits"
APPLICATIONS = "applications"

# collection -> (@odata.type, getByIds type name)
OBJECT_TYPES = {
    USERS: ("#microsoft.graph.user", "user"),
    GROUPS: ("#microsoft.graph.group", "group"),
    SERVICE_PRINCIPALS: ("#microsoft.graph.servicePrincipal", "serviceprincipal"),
    ADMINISTRATIVE_UNITS: ("#microsoft.graph.administrativeUnit", "administrativeunit"),
}
PRINCIPAL_COLLECTIONS = (USERS, GROUPS, SERVICE_PRINCIPALS)

_SECRET_KEYS = frozenset({"password", "clientSecret"})

# Graph's default property set for users (returned when there is no $select).
_USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)

READ_USERS = [
    "User.Read.All",
    "User.ReadWrite.All",
    "User.ReadBasic.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
]
READ_GROUPS = [
    "Group.Read.All",
    "GroupMember.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
]
READ_SPS = ["Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"]
READ_AUS = [
    "AdministrativeUnit.Read.All",
    "AdministrativeUnit.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
]
READ_DIRECTORY = ["Directory.Read.All", "Directory.ReadWrite.All"]


# -- shared helpers (used by roles.py, pim.py, policies.py) ------------------------------------


def public(doc: dict | None) -> dict | None:
    """The Graph view of a stored document: no sandbox-only or secret keys."""
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if not k.startswith("_") and k not in _SECRET_KEYS}


def granted_permissions(claims: dict | None) -> set[str]:
    """Permission names the token grants (``roles`` for app tokens, ``scp`` for delegated)."""
    if not claims:
        return set()
    if "scp" in claims:
        scp = claims.get("scp") or ""
        return set(scp.split()) if isinstance(scp, str) else set(scp)
    return set(claims.get("roles") or [])


def not_found(object_id: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.",
    )


def find_object(tx, object_id: str, collections=tuple(OBJECT_TYPES)) -> tuple[str, dict] | None:
    """``(collection, stored doc)`` of a directory object by id, or None. The doc is the store's
    read-only mirror object (``Tx.peek``): copy it (``public``, ``dict``) before changing it."""
    for name in collections:
        doc = tx.peek(name, object_id)
        if doc is not None:
            return name, doc
    return None


def odata_object(collection: str, doc: dict) -> dict:
    """A directory object with its ``@odata.type`` first (directoryObject-typed responses)."""
    out = {"@odata.type": OBJECT_TYPES[collection][0]}
    out.update(public(doc))
    return out


def principal_object(tx, principal_id: str) -> dict | None:
    """The ``principal`` navigation target (a directoryObject with @odata.type), or None."""
    found = find_object(tx, principal_id, PRINCIPAL_COLLECTIONS) if ids.is_guid(principal_id) else None
    return odata_object(*found) if found else None


def directory_scope_object(tx, directory_scope_id: str | None) -> dict | None:
    """The ``directoryScope`` navigation target: None for ``/`` (tenant), else the object."""
    if not directory_scope_id or directory_scope_id == "/":
        return None
    tail = directory_scope_id.rstrip("/").rsplit("/", 1)[-1]
    found = find_object(tx, tail) if ids.is_guid(tail) else None
    return odata_object(*found) if found else None


def group_ids_of(tx, member_id: str) -> list[str]:
    """Ids of the groups ``member_id`` is a direct member of (insertion order)."""
    return [g["id"] for g in tx.iter(GROUPS) if member_id in (g.get("_members") or [])]


def created_at(doc: dict) -> datetime | None:
    value = doc.get("_createdAt")
    return parse_datetime(value) if value else None


# -- shaping -----------------------------------------------------------------------------------


def _user_view(doc: dict, selecting: bool) -> dict:
    pub = public(doc)
    if selecting:
        return pub
    return {key: pub.get(key, [] if key == "businessPhones" else None) for key in _USER_DEFAULT}


def _selecting(ctx) -> bool:
    return bool(ctx.query.get("$select"))


def _user_by_id_or_upn(tx, key: str) -> dict | None:
    """The stored user (read-only mirror object) by id or UPN (case-insensitive), or None."""
    if ids.is_guid(key):
        return tx.peek(USERS, key.lower())
    wanted = key.casefold()
    for doc in tx.find_docs(USERS, "userPrincipalName", key):
        if (doc.get("userPrincipalName") or "").casefold() == wanted:
            return doc
    return None


# Properties the collection looks principals up by (README "Performance"): a ``$filter`` of
# ``eq``/``in`` terms on them reads the store's index instead of every document.
USER_INDEXED = ("userPrincipalName", "mail", "displayName")
GROUP_INDEXED = ("displayName", "mail")
SP_INDEXED = ("displayName", "appId")
AU_INDEXED = ("displayName",)


def _public_keys(tx, collection: str):
    return lambda: {k for k in tx.key_union(collection) if not k.startswith("_") and k not in _SECRET_KEYS}


def public_source(tx, collection: str, indexed=()) -> Source:
    """The Graph view (``public``) of a stored directory collection, for ``ctx.collection``."""
    return Source(tx, collection, public, indexed, known_keys=_public_keys(tx, collection))


# -- Graph routes ------------------------------------------------------------------------------


@route("GET", "/v1.0/users", permissions=READ_USERS)
def list_users(ctx):
    sel = _selecting(ctx)
    keys = _public_keys(ctx.tx, USERS) if sel else lambda: set(_USER_DEFAULT)
    source = Source(ctx.tx, USERS, lambda d: _user_view(d, sel), USER_INDEXED, known_keys=keys)
    return ctx.collection(source, "users")


@route("GET", "/v1.0/users/{id}", permissions=READ_USERS)
def get_user(ctx):
    doc = _user_by_id_or_upn(ctx.tx, ctx.params["id"])
    if doc is None:
        raise not_found(ctx.params["id"])
    return ctx.entity(_user_view(doc, _selecting(ctx)), "users")


@route("GET", "/v1.0/groups", permissions=READ_GROUPS)
def list_groups(ctx):
    return ctx.collection(public_source(ctx.tx, GROUPS, GROUP_INDEXED), "groups")


@route("GET", "/v1.0/groups/{id}", permissions=READ_GROUPS)
def get_group(ctx):
    doc = ctx.tx.peek(GROUPS, ctx.params["id"].lower())
    if doc is None:
        raise not_found(ctx.params["id"])
    return ctx.entity(public(doc), "groups")


@route("GET", "/v1.0/groups/{id}/members", permissions=READ_GROUPS)
def list_group_members(ctx):
    doc = ctx.tx.peek(GROUPS, ctx.params["id"].lower())
    if doc is None:
        raise not_found(ctx.params["id"])
    members = []
    for member_id in doc.get("_members") or []:
        found = find_object(ctx.tx, member_id, PRINCIPAL_COLLECTIONS)
        if found:
            members.append(odata_object(*found))
    return ctx.collection(members, "directoryObjects")


@route("GET", "/v1.0/servicePrincipals", permissions=READ_SPS)
def list_service_principals(ctx):
    return ctx.collection(public_source(ctx.tx, SERVICE_PRINCIPALS, SP_INDEXED), "servicePrincipals")


@route("GET", "/v1.0/servicePrincipals/{id}", permissions=READ_SPS)
def get_service_principal(ctx):
    doc = ctx.tx.peek(SERVICE_PRINCIPALS, ctx.params["id"].lower())
    if doc is None:
        raise not_found(ctx.params["id"])
    return ctx.entity(public(doc), "servicePrincipals")


@route("GET", "/v1.0/directory/administrativeUnits", permissions=READ_AUS)
def list_administrative_units(ctx):
    return ctx.collection(public_source(ctx.tx, ADMINISTRATIVE_UNITS, AU_INDEXED), "directory/administrativeUnits")


@route("GET", "/v1.0/directory/administrativeUnits/{id}", permissions=READ_AUS)
def get_administrative_unit(ctx):
    doc = ctx.tx.peek(ADMINISTRATIVE_UNITS, ctx.params["id"].lower())
    if doc is None:
        raise not_found(ctx.params["id"])
    return ctx.entity(public(doc), "directory/administrativeUnits")


_GET_BY_IDS_KEYS = {"ids", "types"}


@route("POST", "/v1.0/directoryObjects/getByIds", permissions=READ_DIRECTORY)
def get_by_ids(ctx):
    body = ctx.body
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object with an 'ids' array.")
    for key in body:
        if key not in _GET_BY_IDS_KEYS:
            raise bad_request(f"The property '{key}' does not exist on the action parameters of 'getByIds'.")
    wanted = body.get("ids")
    if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
        raise bad_request("The 'ids' parameter must be an array of strings.")
    if len(wanted) > 1000:
        raise bad_request("Too many ids: at most 1000 are allowed in one getByIds request.", "Request_BadRequest")
    types = body.get("types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise bad_request("The 'types' parameter must be an array of strings.")
    allowed = None
    if types:
        known = {v[1]: k for k, v in OBJECT_TYPES.items()}
        allowed = set()
        for t in types:
            name = t.lower().removeprefix("microsoft.graph.")
            if name not in known:
                raise bad_request(f"Invalid object type '{t}'.", "Request_BadRequest")
            allowed.add(known[name])
    out = []
    seen = set()
    for object_id in wanted:
        if not ids.is_guid(object_id):
            raise bad_request(f"Invalid object identifier '{object_id}'.", "Request_BadRequest")
        key = object_id.lower()
        if key in seen:
            continue
        seen.add(key)
        found = find_object(ctx.tx, key, tuple(allowed) if allowed else tuple(OBJECT_TYPES))
        if found:
            collection, doc = found
            obj = odata_object(collection, doc)
            if collection == USERS:
                obj = {"@odata.type": obj["@odata.type"], **_user_view(doc, False)}
            out.append(obj)
    return ctx.collection(out, "directoryObjects")


# -- control routes: create / delete directory objects -----------------------------------------

_CONTROL_TYPES = {
    "user": USERS,
    "group": GROUPS,
    "serviceprincipal": SERVICE_PRINCIPALS,
    "administrativeunit": ADMINISTRATIVE_UNITS,
}


def create_object(tx, spec: dict, now: datetime) -> tuple[str, dict]:
    """Create a directory object from a control-API body; returns ``(collection, stored doc)``.

    The creation time is recorded in ``_createdAt``: PIM requests naming this principal answer
    ``SubjectNotFound`` until ``settings["replication_lag_seconds"]`` have passed (see pim.py).
    """
    from pim_emulator.clock import format_datetime

    if not isinstance(spec, dict):
        raise bad_request("The body must be a JSON object with a 'type'.")
    kind = str(spec.get("type") or "").lower()
    collection = _CONTROL_TYPES.get(kind)
    if collection is None:
        raise bad_request("'type' must be one of: user, group, servicePrincipal, administrativeUnit.")
    doc = {k: v for k, v in spec.items() if k not in ("type", "members", "createdAt")}
    object_id = str(doc.get("id") or ids.new_guid()).lower()
    if not ids.is_guid(object_id):
        raise bad_request(f"Invalid object identifier '{object_id}'.")
    if find_object(tx, object_id):
        raise bad_request(f"An object with id '{object_id}' already exists.", "Request_BadRequest")
    doc["id"] = object_id
    if not isinstance(doc.get("displayName"), str) or not doc["displayName"]:
        raise bad_request("'displayName' is required.")
    if collection == USERS:
        upn = doc.get("userPrincipalName")
        if not isinstance(upn, str) or "@" not in upn:
            raise bad_request("'userPrincipalName' is required for a user.")
        if _user_by_id_or_upn(tx, upn) is not None:
            raise bad_request(
                "Another object with the same value for property userPrincipalName already exists.",
                "Request_BadRequest",
            )
        doc.setdefault("accountEnabled", True)
        doc.setdefault("userType", "Member")
        doc.setdefault("mail", upn)
    elif collection == GROUPS:
        doc.setdefault("description", None)
        doc.setdefault("groupTypes", [])
        doc.setdefault("isAssignableToRole", False)
        doc.setdefault("mailEnabled", False)
        doc.setdefault("securityEnabled", True)
        doc.setdefault("mailNickname", doc["displayName"].replace(" ", "-").lower())
    elif collection == SERVICE_PRINCIPALS:
        doc.setdefault("appId", ids.new_guid())
        doc.setdefault("accountEnabled", True)
        doc.setdefault("servicePrincipalType", "Application")
        doc.setdefault("appDisplayName", doc["displayName"])
    else:
        doc.setdefault("description", None)
        doc.setdefault("visibility", None)
    members = spec.get("members")
    if collection in (GROUPS, ADMINISTRATIVE_UNITS):
        if members is not None and (not isinstance(members, list) or not all(ids.is_guid(m) for m in members)):
            raise bad_request("'members' must be an array of object ids.")
        doc["_members"] = [m.lower() for m in members or []]
    created = spec.get("createdAt")
    doc["_createdAt"] = created if isinstance(created, str) and created else format_datetime(now)
    tx.put(collection, object_id, doc)
    return collection, doc


def delete_object(tx, object_id: str) -> bool:
    """Delete a directory object, its memberships and the role schedules it holds as principal."""
    found = find_object(tx, object_id.lower())
    if not found:
        return False
    collection, doc = found
    tx.delete(collection, doc["id"])
    for name in (GROUPS, ADMINISTRATIVE_UNITS):
        for container in tx.list(name):
            members = container.get("_members") or []
            if doc["id"] in members:
                container["_members"] = [m for m in members if m != doc["id"]]
                tx.put(name, container["id"], container)
    from pim_emulator.pim import ASSIGNMENT_SCHEDULES, ELIGIBILITY_SCHEDULES, delete_schedule

    for name in (ELIGIBILITY_SCHEDULES, ASSIGNMENT_SCHEDULES):
        for schedule_id in tx.find(name, "principalId", doc["id"]):
            if tx.peek(name, schedule_id).get("principalId") == doc["id"]:
                delete_schedule(tx, name, schedule_id)
    return True


@route("POST", "/_emulator/objects", permissions=None)
def control_create_object(ctx):
    collection, doc = create_object(ctx.tx, ctx.body, ctx.now())
    body = odata_object(collection, doc)
    body["createdAt"] = doc["_createdAt"]
    return Response(201, body)


@route("DELETE", "/_emulator/objects/{id}", permissions=None)
def control_delete_object(ctx):
    if not delete_object(ctx.tx, ctx.params["id"]):
        raise not_found(ctx.params["id"])
    return None
