"""Role definitions and direct (non-PIM) role assignments (notes §1.2, §3.5, §3.6).

``roleAssignments`` lists every *active* assignment: the ones made here and the active PIM
assignments and activations, because Graph materialises each active instance as a
unifiedRoleAssignment (the tutorial checks activation through this list). A POST here creates a
permanent ``Assigned``/``Direct`` schedule whose schedule id, instance id and assignment id are all
the ``...-1`` id of notes §5, as in the docs' example.
"""

from __future__ import annotations

from pim_emulator import ids
from pim_emulator.directory import GROUPS, SERVICE_PRINCIPALS, USERS, created_at, find_object, public
from pim_emulator.errors import GraphError, bad_request
from pim_emulator.odata import Source
from pim_emulator.pim import (
    ASSIGNMENT_SCHEDULES,
    PIM_INDEXED,
    _assignment_instance,
    create_direct_assignment,
    delete_schedule,
    is_instance,
    role_assignment_view,
    tenant_of,
)
from pim_emulator.pim import _app_scope_expander as _app_scope
from pim_emulator.pim import _directory_scope_expander as _directory_scope
from pim_emulator.pim import _find as find_schedule
from pim_emulator.pim import _has_started as _started
from pim_emulator.pim import _is_expired as _expired
from pim_emulator.pim import _principal_expander as _principal
from pim_emulator.pim import _role_expander as _role
from pim_emulator.routing import Response, route
from pim_emulator.seed import ROLE_DEFINITIONS, ensure_policy

ROLE_READ = [
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "Directory.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.ReadWrite.All",
]
ROLE_WRITE = ["RoleManagement.ReadWrite.Directory"]

DEFINITION_FILTERABLE = [
    "id",
    "displayName",
    "description",
    "isBuiltIn",
    "isEnabled",
    "templateId",
    "version",
    "resourceScopes",
    "rolePermissions",
]
ASSIGNMENT_FILTERABLE = [
    "id",
    "principalId",
    "principalOrganizationId",
    "resourceScope",
    "directoryScopeId",
    "appScopeId",
    "roleDefinitionId",
    "condition",
]
ASSIGNMENT_EXPANDERS = {
    "principal": _principal,
    "roleDefinition": _role,
    "directoryScope": _directory_scope,
    "appScope": _app_scope,
}

_DEFINITIONS = "roleManagement/directory/roleDefinitions"
_ASSIGNMENTS = "roleManagement/directory/roleAssignments"


def _not_found(value: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{value}' does not exist or one of its queried reference-property objects are not present.",
    )


def definition_view(doc: dict) -> dict:
    return public(doc)


@route("GET", f"/v1.0/{_DEFINITIONS}", permissions=ROLE_READ)
def list_role_definitions(ctx):
    items = [definition_view(d) for d in ctx.tx.list(ROLE_DEFINITIONS)]
    # Graph returns the whole role catalogue (built-in and custom) in one page.
    return ctx.collection(items, _DEFINITIONS, filterable=DEFINITION_FILTERABLE, paged=False)


@route("GET", f"/v1.0/{_DEFINITIONS}/{{id}}", permissions=ROLE_READ)
def get_role_definition(ctx):
    wanted = ctx.params["id"].lower()
    doc = ctx.tx.get(ROLE_DEFINITIONS, wanted)
    if doc is None:
        doc = next((d for d in ctx.tx.list(ROLE_DEFINITIONS) if d.get("templateId") == wanted), None)
    if doc is None:
        raise _not_found(ctx.params["id"])
    return ctx.entity(definition_view(doc), _DEFINITIONS)


def _assignments(ctx) -> Source:
    """Every active assignment instance as a unifiedRoleAssignment, over the schedules store."""
    tenant_id = tenant_of(ctx.tx, ctx.tenant_id)

    def view(doc):
        return role_assignment_view(_assignment_instance(doc), tenant_id)

    return Source(ctx.tx, ASSIGNMENT_SCHEDULES, view, PIM_INDEXED, keep=is_instance(ctx.now()))


@route("GET", f"/v1.0/{_ASSIGNMENTS}", permissions=ROLE_READ)
def list_role_assignments(ctx):
    return ctx.collection(_assignments(ctx), _ASSIGNMENTS, ASSIGNMENT_EXPANDERS, ASSIGNMENT_FILTERABLE)


@route("GET", f"/v1.0/{_ASSIGNMENTS}/{{id}}", permissions=ROLE_READ)
def get_role_assignment(ctx):
    wanted = ctx.params["id"]
    source = _assignments(ctx)  # an assignment id is its schedule's _instanceId
    for item in source.by_ids(ctx.tx.find(ASSIGNMENT_SCHEDULES, "_instanceId", wanted)):
        if item["id"] == wanted:
            return ctx.entity(item, _ASSIGNMENTS, ASSIGNMENT_EXPANDERS)
    raise _not_found(wanted)


_POST_KEYS = {"@odata.type", "principalId", "roleDefinitionId", "directoryScopeId", "appScopeId", "condition"}


def create_role_assignment(tx, body, now, settings: dict, tenant_id: str) -> dict:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    for key in body:
        if key not in _POST_KEYS:
            raise bad_request(
                f"The property '{key}' does not exist on type 'microsoft.graph.unifiedRoleAssignment'. Make sure to "
                "only use property names that are defined by the type or mark the type as open type."
            )
    if (
        "@odata.type" in body
        and str(body["@odata.type"]).lstrip("#").lower() != "microsoft.graph.unifiedroleassignment"
    ):
        raise bad_request(f"Invalid @odata.type '{body['@odata.type']}'.")
    values = {}
    for key in ("principalId", "roleDefinitionId"):
        value = body.get(key)
        if not isinstance(value, str) or not ids.is_guid(value):
            raise bad_request(f"Invalid {key} '{value}': it must be a GUID.")
        values[key] = value.lower()
    dir_scope = body.get("directoryScopeId")
    app_scope = body.get("appScopeId")
    if body.get("condition") is not None:
        raise bad_request("Conditions on role assignments are not supported by the sandbox.")
    if not dir_scope and not app_scope:
        raise bad_request("Either directoryScopeId or appScopeId is required.")
    for key, value in (("directoryScopeId", dir_scope), ("appScopeId", app_scope)):
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            raise bad_request(f"Invalid {key} '{value}'.")
    if tx.get(ROLE_DEFINITIONS, values["roleDefinitionId"]) is None:
        raise _not_found(values["roleDefinitionId"])
    found = find_object(tx, values["principalId"], (USERS, GROUPS, SERVICE_PRINCIPALS))
    lag = float(settings.get("replication_lag_seconds") or 0)
    if found is None or (
        lag > 0 and created_at(found[1]) is not None and (now - created_at(found[1])).total_seconds() < lag
    ):
        raise _not_found(values["principalId"])
    if found[0] == GROUPS and not found[1].get("isAssignableToRole"):
        raise bad_request("Only groups with isAssignableToRole set to true can be assigned a directory role.")
    if dir_scope and dir_scope != "/":
        tail = dir_scope.rstrip("/").rsplit("/", 1)[-1]
        if not ids.is_guid(tail) or find_object(tx, tail.lower()) is None:
            raise bad_request(f"Invalid directoryScopeId '{dir_scope}'.")
    if find_schedule(
        tx, ASSIGNMENT_SCHEDULES, now, values["principalId"], values["roleDefinitionId"], dir_scope, app_scope
    ):
        raise bad_request(
            "A conflicting object with one or more of the specified property values is present in the directory.",
            "Request_BadRequest",
        )
    ensure_policy(tx, tenant_id, values["roleDefinitionId"])
    doc = create_direct_assignment(tx, values["principalId"], values["roleDefinitionId"], dir_scope, app_scope, now)
    return {
        "id": doc["_instanceId"],
        "principalId": doc["principalId"],
        "principalOrganizationId": tenant_id,
        "resourceScope": dir_scope or "/",
        "directoryScopeId": dir_scope,
        "appScopeId": app_scope,
        "roleDefinitionId": doc["roleDefinitionId"],
        "condition": None,
    }


@route("POST", f"/v1.0/{_ASSIGNMENTS}", permissions=ROLE_WRITE)
def post_role_assignment(ctx):
    tenant_id = tenant_of(ctx.tx, ctx.tenant_id)
    item = create_role_assignment(ctx.tx, ctx.body, ctx.now(), ctx.settings, tenant_id)
    return Response(201, ctx.entity(item, _ASSIGNMENTS, ASSIGNMENT_EXPANDERS))


def delete_role_assignment(tx, assignment_id: str, now) -> bool:
    for schedule_id in tx.find(ASSIGNMENT_SCHEDULES, "_instanceId", assignment_id):
        doc = tx.peek(ASSIGNMENT_SCHEDULES, schedule_id)
        if doc.get("_instanceId") == assignment_id and not _expired(doc, now) and _started(doc, now):
            delete_schedule(tx, ASSIGNMENT_SCHEDULES, schedule_id)
            return True
    return False


@route("DELETE", f"/v1.0/{_ASSIGNMENTS}/{{id}}", permissions=ROLE_WRITE)
def delete_role_assignment_route(ctx):
    if not delete_role_assignment(ctx.tx, ctx.params["id"], ctx.now()):
        raise _not_found(ctx.params["id"])
    return None
