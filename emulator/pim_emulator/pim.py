"""PIM for directory roles: schedule requests (every action), schedules, instances, cancel,
filterByCurrentUser, the request state machine, policy-rule enforcement and approvals
(notes §1.1, §3.1-§3.4, §4, §5, §6.2). Choices where the reference is silent are listed in
``emulator/README.md`` ("Seed tenant and PIM semantics").

Storage (collections):

* ``roleEligibilityScheduleRequests`` / ``roleAssignmentScheduleRequests``: every request ever
  accepted (history; isValidationOnly requests are never stored). Private ``_startAt`` lets a
  ``Granted`` request read as ``Provisioned`` once the emulator clock reaches its start.
* ``roleEligibilitySchedules`` / ``roleAssignmentSchedules``: current and future schedules.
  Private keys: ``_start``/``_end`` (ISO, ``_end`` None = permanent), ``_instanceId``,
  ``_activatedUsing`` (eligibility schedule id of an activation), ``_direct`` (created through
  ``roleAssignments``: its instance has null start/end, as in the docs' example).

Instances are not stored: an instance is a schedule that is active at ``ctx.now()``; an expired
schedule is invisible (lists, gets, conflicts) and is replaced by the next ``adminAssign``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from pim_emulator import ids
from pim_emulator.clock import parse_datetime, parse_duration
from pim_emulator.directory import (
    GROUPS,
    SERVICE_PRINCIPALS,
    USERS,
    created_at,
    directory_scope_object,
    find_object,
    granted_permissions,
    group_ids_of,
    principal_object,
    public,
)
from pim_emulator.errors import GraphError, bad_request
from pim_emulator.odata import Source
from pim_emulator.policies import policy_for_role, rules_by_id
from pim_emulator.routing import Response, route
from pim_emulator.seed import ROLE_DEFINITIONS, TENANT_META_KEY

ELIGIBILITY_REQUESTS = "roleEligibilityScheduleRequests"
ASSIGNMENT_REQUESTS = "roleAssignmentScheduleRequests"
ELIGIBILITY_SCHEDULES = "roleEligibilitySchedules"
ASSIGNMENT_SCHEDULES = "roleAssignmentSchedules"

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"

ACTIONS = (
    "adminAssign",
    "adminUpdate",
    "adminRemove",
    "selfActivate",
    "selfDeactivate",
    "adminExtend",
    "adminRenew",
    "selfExtend",
    "selfRenew",
)
_ACTION_BY_LOWER = {a.lower(): a for a in ACTIONS}
EXPIRATION_TYPES = ("notSpecified", "noExpiration", "afterDateTime", "afterDuration")
_EXPIRATION_BY_LOWER = {t.lower(): t for t in EXPIRATION_TYPES}

MIN_ACTIVE_DURATION = timedelta(minutes=5)

# -- permissions (notes §7) ---------------------------------------------------------------------

ELIGIBILITY_READ = [
    "RoleEligibilitySchedule.Read.Directory",
    "RoleEligibilitySchedule.ReadWrite.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
]
ASSIGNMENT_READ = [
    "RoleAssignmentSchedule.Read.Directory",
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
]
ELIGIBILITY_WRITE = [
    "RoleEligibilitySchedule.ReadWrite.Directory",
    "RoleManagement.ReadWrite.Directory",
    "RoleEligibilitySchedule.Remove.Directory",
]
ASSIGNMENT_WRITE = [
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "RoleManagement.ReadWrite.Directory",
    "RoleAssignmentSchedule.Remove.Directory",
    "RoleEligibilitySchedule.Remove.Directory",
]
_REMOVE_ONLY = {"RoleAssignmentSchedule.Remove.Directory", "RoleEligibilitySchedule.Remove.Directory"}
_REMOVE_ACTIONS = {"adminRemove", "selfDeactivate"}

_DENIED = "Insufficient privileges to complete the operation."


# -- small helpers -------------------------------------------------------------------------------


def ts(dt: datetime | None) -> str | None:
    """Graph-style UTC timestamp: 7 fraction digits when there is a fraction (``...05.9999343Z``)."""
    if dt is None:
        return None
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=1 << 16)
def _dt(value: str | None) -> datetime | None:
    """Stored timestamp -> datetime, cached: listings test every schedule's start and end."""
    return parse_datetime(value) if value else None


def tenant_of(tx, fallback: str | None = None) -> str:
    return tx.meta_get(TENANT_META_KEY) or fallback or ""


@dataclass
class Caller:
    delegated: bool
    oid: str | None
    app_id: str | None
    permissions: set = field(default_factory=set)
    amr: list = field(default_factory=list)
    acrs: list = field(default_factory=list)

    @classmethod
    def from_claims(cls, claims: dict | None) -> Caller:
        claims = claims or {}
        acrs = claims.get("acrs") or []
        if isinstance(acrs, str):
            acrs = [acrs]
        return cls(
            delegated="scp" in claims,
            oid=(claims.get("oid") or "").lower() or None,
            app_id=claims.get("appid") or claims.get("azp"),
            permissions=granted_permissions(claims),
            amr=list(claims.get("amr") or []),
            acrs=list(acrs),
        )

    def identity_set(self) -> dict:
        if self.delegated:
            return {"application": None, "device": None, "user": {"displayName": None, "id": self.oid}}
        return {"application": {"displayName": None, "id": self.app_id}, "device": None, "user": None}


def _policy_failed(rules: list[str]) -> GraphError:
    text = json.dumps(rules, separators=(",", ":"))
    return GraphError(400, "RoleAssignmentRequestPolicyValidationFailed", f"The following policy rules failed: {text}")


def role_assignment_exists() -> GraphError:
    return GraphError(400, "RoleAssignmentExists", "The Role assignment already exists.")


def role_assignment_does_not_exist() -> GraphError:
    return GraphError(400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist.")


# -- schedule state --------------------------------------------------------------------------------


def _is_expired(doc: dict, now: datetime) -> bool:
    end = _dt(doc.get("_end"))
    return end is not None and end <= now


def _has_started(doc: dict, now: datetime) -> bool:
    start = _dt(doc.get("_start"))
    return start is None or start <= now


def current_schedules(tx, collection: str, now: datetime) -> list[dict]:
    """Stored schedules that are not expired (active or future): the store's read-only mirror
    objects (``Tx.iter``); views (``schedule_view``, the instance builders) copy what they show."""
    return [d for d in tx.iter(collection) if not _is_expired(d, now)]


def schedule_view(doc: dict, now: datetime) -> dict:
    out = public(doc)
    out["status"] = "Provisioned" if _has_started(doc, now) else "Granted"
    return out


def _eligibility_instance(doc: dict) -> dict:
    return {
        "id": doc["_instanceId"],
        "principalId": doc["principalId"],
        "roleDefinitionId": doc["roleDefinitionId"],
        "directoryScopeId": doc["directoryScopeId"],
        "appScopeId": doc["appScopeId"],
        "startDateTime": doc.get("_start"),
        "endDateTime": doc.get("_end"),
        "memberType": doc["memberType"],
        "roleEligibilityScheduleId": doc["id"],
    }


def _assignment_instance(doc: dict) -> dict:
    direct = doc.get("_direct")
    return {
        "id": doc["_instanceId"],
        "principalId": doc["principalId"],
        "roleDefinitionId": doc["roleDefinitionId"],
        "directoryScopeId": doc["directoryScopeId"],
        "appScopeId": doc["appScopeId"],
        "startDateTime": None if direct else doc.get("_start"),
        "endDateTime": None if direct else doc.get("_end"),
        "assignmentType": doc["assignmentType"],
        "memberType": doc["memberType"],
        "roleAssignmentOriginId": doc["_instanceId"],
        "roleAssignmentScheduleId": doc["id"],
    }


def is_current(now: datetime):
    """Stored schedule -> whether it is listed (not expired; active or future)."""
    return lambda d: not _is_expired(d, now)


def is_instance(now: datetime):
    """Stored schedule -> whether it has a current instance (started, not expired)."""
    return lambda d: not _is_expired(d, now) and _has_started(d, now)


def eligibility_instances(tx, now: datetime) -> list[dict]:
    return [_eligibility_instance(d) for d in current_schedules(tx, ELIGIBILITY_SCHEDULES, now) if _has_started(d, now)]


def assignment_instances(tx, now: datetime) -> list[dict]:
    return [_assignment_instance(d) for d in current_schedules(tx, ASSIGNMENT_SCHEDULES, now) if _has_started(d, now)]


def role_assignment_view(instance: dict, tenant_id: str) -> dict:
    """``unifiedRoleAssignment`` for an active assignment instance (notes §1.2, §3.5)."""
    return {
        "id": instance["id"],
        "principalId": instance["principalId"],
        "principalOrganizationId": tenant_id,
        "resourceScope": instance["directoryScopeId"] or "/",
        "directoryScopeId": instance["directoryScopeId"],
        "appScopeId": instance["appScopeId"],
        "roleDefinitionId": instance["roleDefinitionId"],
        "condition": None,
    }


def request_view(doc: dict, now: datetime) -> dict:
    out = public(doc)
    if out["status"] == "Granted" and doc.get("_startAt") and parse_datetime(doc["_startAt"]) <= now:
        out["status"] = "Provisioned"
    return out


def _same_key(doc: dict, principal_id: str, role_id: str, dir_scope, app_scope) -> bool:
    return (
        doc["principalId"] == principal_id
        and doc["roleDefinitionId"] == role_id
        and (doc.get("directoryScopeId") or None) == (dir_scope or None)
        and (doc.get("appScopeId") or None) == (app_scope or None)
    )


# One schedule per (principal, role, scope) at a time, so a key index makes look-ups O(1):
# collection "_keyIndex.<schedules>" maps the key to the schedule id. Every schedule write goes
# through put_schedule / delete_schedule, which keep it in step.
_INDEX = {
    ELIGIBILITY_SCHEDULES: "_keyIndex." + ELIGIBILITY_SCHEDULES,
    ASSIGNMENT_SCHEDULES: "_keyIndex." + ASSIGNMENT_SCHEDULES,
}


def _key(principal_id, role_id, dir_scope, app_scope) -> str:
    return f"{principal_id}|{role_id}|{(dir_scope or '').lower()}|{app_scope or ''}"


def _doc_key(doc: dict) -> str:
    return _key(doc["principalId"], doc["roleDefinitionId"], doc.get("directoryScopeId"), doc.get("appScopeId"))


def put_schedule(tx, collection: str, doc: dict) -> None:
    tx.put(collection, doc["id"], doc)
    tx.put(_INDEX[collection], _doc_key(doc), {"id": doc["id"]})


def delete_schedule(tx, collection: str, schedule_id: str) -> bool:
    doc = tx.get(collection, schedule_id)
    if doc is None:
        return False
    tx.delete(collection, schedule_id)
    entry = tx.get(_INDEX[collection], _doc_key(doc))
    if entry is not None and entry.get("id") == schedule_id:
        tx.delete(_INDEX[collection], _doc_key(doc))
    return True


def _find(tx, collection, now, principal_id, role_id, dir_scope, app_scope, include_expired=False, pred=None):
    entry = tx.get(_INDEX[collection], _key(principal_id, role_id, dir_scope, app_scope))
    doc = tx.get(collection, entry["id"]) if entry else None
    if doc is None or (not include_expired and _is_expired(doc, now)):
        return None
    return doc if pred is None or pred(doc) else None


def holds_active_role(tx, principal_id: str, role_ids: tuple[str, ...], now: datetime) -> bool:
    """Whether the principal (directly or through a group) has an active assignment of a role."""
    subjects = {principal_id, *group_ids_of(tx, principal_id)}
    for subject in subjects:
        for doc in tx.find_docs(ASSIGNMENT_SCHEDULES, "principalId", subject):
            if _is_expired(doc, now) or not _has_started(doc, now):
                continue
            if (
                doc["principalId"] in subjects
                and doc["roleDefinitionId"] in role_ids
                and doc["directoryScopeId"] == "/"
            ):
                return True
    return False


# -- seeding helpers (used by seed.py) ---------------------------------------------------------------


def _new_schedule(kind, sid, principal_id, role_id, dir_scope, app_scope, created_using, now, start, end, info):
    doc = {
        "id": sid,
        "principalId": principal_id,
        "roleDefinitionId": role_id,
        "directoryScopeId": dir_scope,
        "appScopeId": app_scope,
        "createdUsing": created_using,
        "createdDateTime": ts(now),
        "modifiedDateTime": None,
        "status": "Provisioned",
        "scheduleInfo": info,
        "memberType": "Direct",
    }
    if kind == "assignment":
        doc["assignmentType"] = "Assigned"
        doc["_instanceId"] = ids.assignment_id(role_id, principal_id, dir_scope or "/", app_scope)
    else:
        doc["_instanceId"] = ids.eligibility_instance_id(role_id, principal_id, dir_scope or "/", app_scope)
    doc["_start"] = ts(start) if start else None
    doc["_end"] = ts(end) if end else None
    return doc


def _schedule_info(start: datetime | None, exp_type: str, end: datetime | None, duration: str | None) -> dict:
    return {
        "startDateTime": ts(start),
        "recurrence": None,
        "expiration": {
            "type": exp_type,
            "endDateTime": ts(end) if exp_type == "afterDateTime" else None,
            "duration": duration if exp_type == "afterDuration" else None,
        },
    }


def create_direct_assignment(tx, principal_id, role_id, dir_scope, app_scope, now) -> dict:
    """A permanent direct assignment as made through ``roleAssignments`` (ids per notes §5)."""
    aid = ids.assignment_id(role_id, principal_id, dir_scope or "/", app_scope)
    info = _schedule_info(now, "noExpiration", None, None)
    doc = _new_schedule("assignment", aid, principal_id, role_id, dir_scope, app_scope, aid, now, now, None, info)
    doc["_direct"] = True
    put_schedule(tx, ASSIGNMENT_SCHEDULES, doc)
    return doc


def seed_direct_assignment(tx, tenant_id, principal_id, role_id, dir_scope, now) -> dict:
    return create_direct_assignment(tx, principal_id, role_id, dir_scope, None, now)


def seed_eligibility(tx, principal_id, role_id, dir_scope, now, end_text=None) -> dict:
    sid = ids.derived_guid("seed-eligibility", principal_id, role_id, dir_scope)
    end = parse_datetime(end_text) if end_text else None
    info = _schedule_info(now, "afterDateTime" if end else "noExpiration", end, None)
    doc = _new_schedule("eligibility", sid, principal_id, role_id, dir_scope, None, sid, now, now, end, info)
    put_schedule(tx, ELIGIBILITY_SCHEDULES, doc)
    return doc


# -- request parsing -------------------------------------------------------------------------------

_WRITABLE = {
    "action",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "justification",
    "scheduleInfo",
    "ticketInfo",
    "isValidationOnly",
    "customData",
}
_IGNORED = {"id", "status", "createdDateTime", "completedDateTime", "approvalId", "createdBy", "targetScheduleId"}
_TYPE_NAMES = {
    "eligibility": "microsoft.graph.unifiedRoleEligibilityScheduleRequest",
    "assignment": "microsoft.graph.unifiedRoleAssignmentScheduleRequest",
}


def _unknown_property(name: str, type_name: str) -> GraphError:
    return bad_request(
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use property names that "
        "are defined by the type or mark the type as open type."
    )


def _string_or_null(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
    return value


def _guid_field(body: dict, key: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        raise bad_request(f"The {key} property is required.")
    if not isinstance(value, str) or not ids.is_guid(value):
        raise bad_request(f"Invalid {key} '{value}': it must be a GUID.")
    return value.lower()


@dataclass
class Parsed:
    kind: str
    action: str
    principal_id: str
    role_id: str
    dir_scope: str | None
    app_scope: str | None
    justification: str | None
    custom_data: str | None
    validation_only: bool
    has_schedule: bool
    start: datetime | None  # requested start (None = now)
    exp_type: str  # as echoed
    end: datetime | None  # afterDateTime end
    duration_text: str | None
    duration: timedelta | None
    ticket: dict


def parse_request(kind: str, body) -> Parsed:
    type_name = _TYPE_NAMES[kind]
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    for key in body:
        if key == "@odata.type":
            if not isinstance(body[key], str) or body[key].lstrip("#").lower() != type_name.lower():
                raise bad_request(f"Invalid @odata.type '{body[key]}': expected '#{type_name}'.")
        elif key not in _WRITABLE and key not in _IGNORED:
            raise _unknown_property(key, type_name)
    raw_action = body.get("action")
    if not isinstance(raw_action, str) or not raw_action:
        raise bad_request("The action property is required.")
    action = _ACTION_BY_LOWER.get(raw_action.lower())
    if action is None:
        raise bad_request(
            f"Requested value '{raw_action}' was not found for enum 'microsoft.graph.unifiedRoleScheduleRequestActions'."
        )
    principal_id = _guid_field(body, "principalId")
    role_id = _guid_field(body, "roleDefinitionId")
    dir_scope = _string_or_null(body, "directoryScopeId")
    app_scope = _string_or_null(body, "appScopeId")
    if not dir_scope and not app_scope:
        raise bad_request("Either directoryScopeId or appScopeId is required.")
    justification = _string_or_null(body, "justification")
    custom_data = _string_or_null(body, "customData")
    validation_only = body.get("isValidationOnly", False)
    if validation_only is None:
        validation_only = False
    if not isinstance(validation_only, bool):
        raise bad_request(f"Cannot convert the literal '{validation_only}' to the expected type 'Edm.Boolean'.")

    ticket_raw = body.get("ticketInfo")
    ticket = {"ticketNumber": None, "ticketSystem": None}
    if ticket_raw is not None:
        if not isinstance(ticket_raw, dict):
            raise bad_request("The ticketInfo property must be an object of type 'microsoft.graph.ticketInfo'.")
        for key, value in ticket_raw.items():
            if key == "@odata.type":
                continue
            if key not in ticket:
                raise _unknown_property(key, "microsoft.graph.ticketInfo")
            if value is not None and not isinstance(value, str):
                raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
            ticket[key] = value

    info = body.get("scheduleInfo")
    start = end = duration = None
    duration_text = None
    exp_type = "notSpecified"
    if info is not None:
        if not isinstance(info, dict):
            raise bad_request("The scheduleInfo property must be an object of type 'microsoft.graph.requestSchedule'.")
        for key in info:
            if key not in ("@odata.type", "startDateTime", "expiration", "recurrence"):
                raise _unknown_property(key, "microsoft.graph.requestSchedule")
        if info.get("recurrence") is not None:
            raise bad_request("Recurring schedules are not supported: scheduleInfo.recurrence must be null.")
        if info.get("startDateTime") is not None:
            start = _timestamp(info["startDateTime"], "scheduleInfo.startDateTime")
        exp = info.get("expiration")
        if exp is not None:
            if not isinstance(exp, dict):
                raise bad_request(
                    "The expiration property must be an object of type 'microsoft.graph.expirationPattern'."
                )
            for key in exp:
                if key not in ("@odata.type", "type", "endDateTime", "duration"):
                    raise _unknown_property(key, "microsoft.graph.expirationPattern")
            raw_type = exp.get("type")
            if raw_type is None:
                exp_type = (
                    "afterDateTime"
                    if exp.get("endDateTime")
                    else "afterDuration"
                    if exp.get("duration")
                    else "notSpecified"
                )
            elif not isinstance(raw_type, str) or raw_type.lower() not in _EXPIRATION_BY_LOWER:
                raise bad_request(
                    f"Requested value '{raw_type}' was not found for enum 'microsoft.graph.expirationPatternType'."
                )
            else:
                exp_type = _EXPIRATION_BY_LOWER[raw_type.lower()]
            if exp_type == "afterDateTime":
                if not exp.get("endDateTime"):
                    raise bad_request("expiration.endDateTime is required when the expiration type is afterDateTime.")
                end = _timestamp(exp["endDateTime"], "expiration.endDateTime")
            elif exp_type == "afterDuration":
                duration_text = exp.get("duration")
                if not isinstance(duration_text, str) or not duration_text:
                    raise bad_request("expiration.duration is required when the expiration type is afterDuration.")
                try:
                    duration = parse_duration(duration_text)
                except ValueError:
                    raise bad_request(
                        f"Cannot convert the literal '{duration_text}' to the expected type 'Edm.Duration'."
                    ) from None
                if duration.total_seconds() <= 0:
                    raise bad_request(f"expiration.duration must be positive, got '{duration_text}'.")
    return Parsed(
        kind=kind,
        action=action,
        principal_id=principal_id,
        role_id=role_id,
        dir_scope=dir_scope,
        app_scope=app_scope,
        justification=justification,
        custom_data=custom_data,
        validation_only=validation_only,
        has_schedule=info is not None,
        start=start,
        exp_type=exp_type,
        end=end,
        duration_text=duration_text,
        duration=duration,
        ticket=ticket,
    )


def _timestamp(value, name: str) -> datetime:
    if not isinstance(value, str):
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.")
    try:
        return parse_datetime(value)
    except ValueError:
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.") from None


# -- validation against the tenant ------------------------------------------------------------------


def _check_principal(tx, p: Parsed, now: datetime, settings: dict) -> str:
    """-> principal collection; 400 SubjectNotFound when unknown or still replicating."""
    found = find_object(tx, p.principal_id, (USERS, GROUPS, SERVICE_PRINCIPALS))
    if found is None:
        raise GraphError(400, "SubjectNotFound", "The subject is not found.")
    collection, doc = found
    lag = float(settings.get("replication_lag_seconds") or 0)
    born = created_at(doc)
    if lag > 0 and born is not None and (now - born).total_seconds() < lag:
        raise GraphError(400, "SubjectNotFound", "The subject is not found.")
    if collection == GROUPS and not doc.get("isAssignableToRole"):
        raise bad_request(
            f"The group '{p.principal_id}' is not role-assignable: only groups created with isAssignableToRole "
            "set to true can be assigned a directory role."
        )
    if collection == SERVICE_PRINCIPALS and p.kind == "eligibility" and p.action not in _REMOVE_ACTIONS:
        raise bad_request(
            "Service principals cannot be made eligible for a role: assign them an active role through "
            "roleAssignmentScheduleRequests instead."
        )
    return collection


def _check_role_and_scope(tx, p: Parsed) -> None:
    role = tx.get(ROLE_DEFINITIONS, p.role_id)
    if role is None:
        raise GraphError(400, "RoleNotFound", "The role is not found.")
    if not role.get("isEnabled", True):
        raise bad_request(f"The role definition '{p.role_id}' is disabled.")
    scope = p.dir_scope
    if scope and scope != "/":
        tail = scope.rstrip("/").rsplit("/", 1)[-1]
        ok = scope.startswith("/") and ids.is_guid(tail)
        if ok and scope.lower().startswith("/administrativeunits/"):
            ok = tx.get("administrativeUnits", tail.lower()) is not None
        elif ok:
            ok = find_object(tx, tail.lower()) is not None
        if not ok:
            raise bad_request(
                f"Invalid directoryScopeId '{scope}': use '/' for the tenant or '/administrativeUnits/{{id}}' "
                "for an existing administrative unit."
            )
        p.dir_scope = (
            scope if not scope.lower().startswith("/administrativeunits/") else f"/administrativeUnits/{tail.lower()}"
        )


def _authorize(tx, p: Parsed, caller: Caller, now: datetime) -> None:
    perms = caller.permissions
    if p.action not in _REMOVE_ACTIONS and perms and perms <= _REMOVE_ONLY:
        raise GraphError(403, "Authorization_RequestDenied", _DENIED)
    if p.action.startswith("self"):
        if not caller.delegated:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                f"The action '{p.action}' acts for the signed-in user and needs a delegated (user) token; "
                "an application token cannot use it.",
            )
        if caller.oid != p.principal_id:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                f"The action '{p.action}' can only be requested by the principal itself: principalId must be the "
                "signed-in user's id.",
            )
    elif caller.delegated and not holds_active_role(
        tx, caller.oid or "", (GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR), now
    ):
        raise GraphError(403, "Authorization_RequestDenied", _DENIED)


def _effective_window(p: Parsed, now: datetime) -> tuple[datetime, bool, datetime | None]:
    """-> (effective start, starts in the future, end or None); 400 when the end is not after the start."""
    future = p.start is not None and p.start > now
    start = p.start if future else now
    if p.exp_type == "afterDateTime":
        end = p.end
    elif p.exp_type == "afterDuration":
        end = start + p.duration
    else:
        end = None
    if end is not None and end <= start:
        raise bad_request(
            f"Invalid scheduleInfo: the expiration ({ts(end)}) must be later than the start of the schedule "
            f"({ts(start)}); a start in the past counts from the time the request is processed."
        )
    return start, future, end


def _evaluate_rules(rules: dict, caller_type: str, level: str, p: Parsed, caller: Caller, start, end) -> list[str]:
    failures = []
    exp = rules.get(f"Expiration_{caller_type}_{level}")
    if exp and exp.get("isExpirationRequired"):
        if end is None:
            failures.append("ExpirationRule")
        else:
            try:
                maximum = parse_duration(exp.get("maximumDuration") or "PT0S")
            except ValueError:
                maximum = timedelta(0)
            if end - start > maximum + timedelta(seconds=1):
                failures.append("ExpirationRule")
    enablement = rules.get(f"Enablement_{caller_type}_{level}")
    enabled = {e.lower() for e in (enablement or {}).get("enabledRules", [])}
    needs_justification = "justification" in enabled
    if caller_type == "EndUser":
        approval = (rules.get("Approval_EndUser_Assignment") or {}).get("setting") or {}
        if approval.get("isApprovalRequired") and approval.get("isRequestorJustificationRequired"):
            needs_justification = True
    if needs_justification and not (p.justification or "").strip():
        failures.append("JustificationRule")
    if "ticketing" in enabled and not (p.ticket.get("ticketNumber") or "").strip():
        failures.append("TicketingRule")
    if "multifactorauthentication" in enabled and "mfa" not in [a.lower() for a in caller.amr]:
        failures.append("MfaRule")
    return failures


def _acrs_error(claim_value: str) -> GraphError:
    claims = json.dumps({"access_token": {"acrs": {"essential": True, "value": claim_value}}}, separators=(",", ":"))
    return GraphError(
        400,
        "RoleAssignmentRequestAcrsValidationFailed",
        f"The request requires the authentication context '{claim_value}' in the token. "
        f"Claims challenge: claims={quote(claims, safe='')}",
    )


def _eligible_for(tx, principal_id: str, p: Parsed, now: datetime) -> dict | None:
    """The active eligibility schedule (direct or through a group) that allows activation."""
    subjects = [principal_id, *group_ids_of(tx, principal_id)]
    for subject in subjects:
        doc = _find(
            tx,
            ELIGIBILITY_SCHEDULES,
            now,
            subject,
            p.role_id,
            p.dir_scope,
            p.app_scope,
            pred=lambda d: _has_started(d, now),
        )
        if doc is not None:
            return doc
    return None


# -- the request pipeline --------------------------------------------------------------------------


def _base_request(p: Parsed, caller: Caller, now: datetime) -> dict:
    return {
        "id": ids.new_guid(),
        "status": None,
        "createdDateTime": ts(now),
        "completedDateTime": None,
        "approvalId": None,
        "customData": p.custom_data,
        "action": p.action,
        "principalId": p.principal_id,
        "roleDefinitionId": p.role_id,
        "directoryScopeId": p.dir_scope,
        "appScopeId": p.app_scope,
        "isValidationOnly": p.validation_only,
        "targetScheduleId": None,
        "justification": p.justification,
        "createdBy": caller.identity_set(),
        "scheduleInfo": None,
        "ticketInfo": dict(p.ticket),
    }


def submit_request(tx, kind: str, body, caller: Caller, now: datetime, settings: dict, tenant_id: str) -> dict:
    """Validate and apply one schedule request; returns the stored (or would-be) request document.

    Raises GraphError with Graph's codes (notes §6.2). Nothing is written when it raises or when
    ``isValidationOnly`` is true.
    """
    p = parse_request(kind, body)
    _authorize(tx, p, caller, now)
    _check_role_and_scope(tx, p)
    _check_principal(tx, p, now, settings)
    if kind == "assignment" and not p.has_schedule and p.action not in _REMOVE_ACTIONS:
        raise bad_request("The scheduleInfo property is required for this action.")

    req = _base_request(p, caller, now)
    writes: list = []  # deferred (collection, id, doc|None) so isValidationOnly persists nothing
    handler = _ELIGIBILITY_ACTIONS if kind == "eligibility" else _ASSIGNMENT_ACTIONS
    handler[p.action](tx, p, caller, now, tenant_id, req, writes)
    if not p.validation_only:
        collection = ELIGIBILITY_REQUESTS if kind == "eligibility" else ASSIGNMENT_REQUESTS
        for name, doc_id, doc in writes:
            if doc is None:
                delete_schedule(tx, name, doc_id)
            else:
                put_schedule(tx, name, doc)
        tx.put(collection, req["id"], req)
    return req


def _rules_for(tx, tenant_id, role_id) -> dict:
    return rules_by_id(policy_for_role(tx, tenant_id, role_id))


def _granted_or_provisioned(req: dict, p: Parsed, now: datetime) -> tuple[datetime, datetime | None]:
    start, future, end = _effective_window(p, now)
    req["scheduleInfo"] = _schedule_info(start, p.exp_type, end, p.duration_text)
    if p.exp_type == "afterDateTime":
        req["scheduleInfo"]["expiration"]["endDateTime"] = ts(p.end)
    req["status"] = "Granted" if future else "Provisioned"
    req["completedDateTime"] = ts(start)
    req["_startAt"] = ts(start)
    req["targetScheduleId"] = req["id"]
    return start, end


def _stored_info(req_info: dict) -> dict:
    """A schedule's scheduleInfo: the request's, with an unspecified expiration read as noExpiration."""
    info = json.loads(json.dumps(req_info))
    if info["expiration"]["type"] == "notSpecified":
        info["expiration"]["type"] = "noExpiration"
    return info


def _removal(req: dict) -> None:
    req["status"] = "Revoked"
    req["completedDateTime"] = None
    req["targetScheduleId"] = None
    req["scheduleInfo"] = None


# eligibility actions ---------------------------------------------------------------------------------


def _admin_rules_passed(tx, tenant_id, p, caller, now, req, level):
    """Refuse an admin request its role's Admin rules fail (400, notes §6.2); -> the schedule's (start, end)."""
    rules = _rules_for(tx, tenant_id, p.role_id)
    start, _, end = _effective_window(p, now)
    failures = _evaluate_rules(rules, "Admin", level, p, caller, start, end)
    if failures:
        raise _policy_failed(failures)
    return _granted_or_provisioned(req, p, now)


def _admin_assign(collection: str, kind: str, level: str):
    """adminAssign of either kind: refuse a live duplicate, check the Admin rules, create the schedule."""

    def handler(tx, p, caller, now, tenant_id, req, writes):
        if _find(tx, collection, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope):
            raise role_assignment_exists()
        start, end = _admin_rules_passed(tx, tenant_id, p, caller, now, req, level)
        stale = _find(tx, collection, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope, include_expired=True)
        if stale is not None:  # an expired schedule with the same key is replaced
            writes.append((collection, stale["id"], None))
        doc = _new_schedule(
            kind,
            req["id"],
            p.principal_id,
            p.role_id,
            p.dir_scope,
            p.app_scope,
            req["id"],
            now,
            start,
            end,
            _stored_info(req["scheduleInfo"]),
        )
        writes.append((collection, doc["id"], doc))

    return handler


_elig_admin_assign = _admin_assign(ELIGIBILITY_SCHEDULES, "eligibility", "Eligibility")


def _update_existing(tx, collection, p, caller, now, tenant_id, req, writes, level, include_expired, pred=None):
    existing = _find(
        tx,
        collection,
        now,
        p.principal_id,
        p.role_id,
        p.dir_scope,
        p.app_scope,
        include_expired=include_expired,
        pred=pred,
    )
    if existing is None:
        raise role_assignment_does_not_exist()
    start, end = _admin_rules_passed(tx, tenant_id, p, caller, now, req, level)
    req["targetScheduleId"] = existing["id"]
    existing["scheduleInfo"] = _stored_info(req["scheduleInfo"])
    existing["_start"] = ts(start)
    existing["_end"] = ts(end) if end else None
    existing["modifiedDateTime"] = ts(now)
    writes.append((collection, existing["id"], existing))


def _elig_admin_update(tx, p, caller, now, tenant_id, req, writes):
    _update_existing(tx, ELIGIBILITY_SCHEDULES, p, caller, now, tenant_id, req, writes, "Eligibility", False)


def _elig_admin_renew(tx, p, caller, now, tenant_id, req, writes):
    _update_existing(tx, ELIGIBILITY_SCHEDULES, p, caller, now, tenant_id, req, writes, "Eligibility", True)


def _elig_admin_remove(tx, p, caller, now, tenant_id, req, writes):
    existing = _find(tx, ELIGIBILITY_SCHEDULES, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope)
    if existing is None:
        raise role_assignment_does_not_exist()
    _removal(req)
    writes.append((ELIGIBILITY_SCHEDULES, existing["id"], None))


def _elig_self_activate(tx, p, caller, now, tenant_id, req, writes):
    raise bad_request(
        "selfActivate is not a valid action for an eligibility request: activate a role through "
        "roleAssignmentScheduleRequests."
    )


def _elig_self_deactivate(tx, p, caller, now, tenant_id, req, writes):
    _elig_admin_remove(tx, p, caller, now, tenant_id, req, writes)


def _pending_admin_decision(collection):
    def handler(tx, p, caller, now, tenant_id, req, writes):
        existing = _find(tx, collection, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope, include_expired=True)
        if existing is None:
            raise role_assignment_does_not_exist()
        if not p.has_schedule:
            raise bad_request("The scheduleInfo property is required for this action.")
        start, future, end = _effective_window(p, now)
        req["scheduleInfo"] = _schedule_info(start if future else p.start or now, p.exp_type, end, p.duration_text)
        if p.exp_type == "afterDateTime":
            req["scheduleInfo"]["expiration"]["endDateTime"] = ts(p.end)
        req["status"] = "PendingAdminDecision"
        req["approvalId"] = ids.new_guid()
        req["targetScheduleId"] = existing["id"]

    return handler


_ELIGIBILITY_ACTIONS = {
    "adminAssign": _elig_admin_assign,
    "adminUpdate": _elig_admin_update,
    "adminExtend": _elig_admin_update,
    "adminRenew": _elig_admin_renew,
    "adminRemove": _elig_admin_remove,
    "selfActivate": _elig_self_activate,
    "selfDeactivate": _elig_self_deactivate,
    "selfExtend": _pending_admin_decision(ELIGIBILITY_SCHEDULES),
    "selfRenew": _pending_admin_decision(ELIGIBILITY_SCHEDULES),
}


# assignment actions ----------------------------------------------------------------------------------


_assign_admin_assign = _admin_assign(ASSIGNMENT_SCHEDULES, "assignment", "Assignment")


def _is_assigned(doc):
    return doc.get("assignmentType") == "Assigned"


def _assign_admin_update(tx, p, caller, now, tenant_id, req, writes):
    _update_existing(
        tx, ASSIGNMENT_SCHEDULES, p, caller, now, tenant_id, req, writes, "Assignment", False, _is_assigned
    )


def _assign_admin_renew(tx, p, caller, now, tenant_id, req, writes):
    _update_existing(tx, ASSIGNMENT_SCHEDULES, p, caller, now, tenant_id, req, writes, "Assignment", True, _is_assigned)


def _assign_admin_remove(tx, p, caller, now, tenant_id, req, writes):
    existing = _find(tx, ASSIGNMENT_SCHEDULES, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope)
    if existing is None:
        raise role_assignment_does_not_exist()
    _removal(req)
    writes.append((ASSIGNMENT_SCHEDULES, existing["id"], None))


def _has_pending_activation(tx, p: Parsed) -> bool:
    for other in tx.find_docs(ASSIGNMENT_REQUESTS, "principalId", p.principal_id):
        if (
            other["status"] == "PendingApproval"
            and other["action"] == "selfActivate"
            and _same_key(other, p.principal_id, p.role_id, p.dir_scope, p.app_scope)
        ):
            return True
    return False


def _assign_self_activate(tx, p, caller, now, tenant_id, req, writes):
    if _find(tx, ASSIGNMENT_SCHEDULES, now, p.principal_id, p.role_id, p.dir_scope, p.app_scope):
        raise role_assignment_exists()
    if _has_pending_activation(tx, p):
        raise GraphError(
            400, "PendingRoleAssignmentRequest", "There is already an existing pending Role assignment request."
        )
    rules = _rules_for(tx, tenant_id, p.role_id)
    eligibility = _eligible_for(tx, p.principal_id, p, now)
    start, future, end = _effective_window(p, now)
    failures = [] if eligibility else ["EligibilityRule"]
    failures += _evaluate_rules(rules, "EndUser", "Assignment", p, caller, start, end)
    if failures:
        raise _policy_failed(failures)
    acrs = rules.get("AuthenticationContext_EndUser_Assignment") or {}
    if acrs.get("isEnabled") and acrs.get("claimValue") and acrs["claimValue"] not in caller.acrs:
        raise _acrs_error(acrs["claimValue"])
    approval = (rules.get("Approval_EndUser_Assignment") or {}).get("setting") or {}
    req["_activatedUsing"] = eligibility["id"]
    if approval.get("isApprovalRequired"):
        req["scheduleInfo"] = _schedule_info(start, p.exp_type, end, p.duration_text)
        req["status"] = "PendingApproval"
        req["approvalId"] = ids.new_guid()
        req["targetScheduleId"] = req["id"]
        return
    start, end = _granted_or_provisioned(req, p, now)
    writes.append((ASSIGNMENT_SCHEDULES, req["id"], _activation_schedule(req, eligibility["id"], now, start, end)))


def _activation_schedule(req: dict, eligibility_schedule_id: str, now, start, end) -> dict:
    doc = _new_schedule(
        "assignment",
        req["id"],
        req["principalId"],
        req["roleDefinitionId"],
        req["directoryScopeId"],
        req["appScopeId"],
        req["id"],
        now,
        start,
        end,
        _stored_info(req["scheduleInfo"]),
    )
    doc["assignmentType"] = "Activated"
    doc["_activatedUsing"] = eligibility_schedule_id
    return doc


def _assign_self_deactivate(tx, p, caller, now, tenant_id, req, writes):
    existing = _find(
        tx,
        ASSIGNMENT_SCHEDULES,
        now,
        p.principal_id,
        p.role_id,
        p.dir_scope,
        p.app_scope,
        pred=lambda d: d.get("assignmentType") == "Activated" and _has_started(d, now),
    )
    if existing is None:
        raise role_assignment_does_not_exist()
    if now - parse_datetime(existing["_start"]) < MIN_ACTIVE_DURATION:
        raise GraphError(
            400, "ActiveDurationTooShort", "The Active duration is too short. Miniumum Required is 5 minutes."
        )
    _removal(req)
    writes.append((ASSIGNMENT_SCHEDULES, existing["id"], None))


_ASSIGNMENT_ACTIONS = {
    "adminAssign": _assign_admin_assign,
    "adminUpdate": _assign_admin_update,
    "adminExtend": _assign_admin_update,
    "adminRenew": _assign_admin_renew,
    "adminRemove": _assign_admin_remove,
    "selfActivate": _assign_self_activate,
    "selfDeactivate": _assign_self_deactivate,
    "selfExtend": _pending_admin_decision(ASSIGNMENT_SCHEDULES),
    "selfRenew": _pending_admin_decision(ASSIGNMENT_SCHEDULES),
}


# -- cancel and approvals --------------------------------------------------------------------------------


def cancel_request(tx, kind: str, request_id: str, now: datetime) -> None:
    collection = ELIGIBILITY_REQUESTS if kind == "eligibility" else ASSIGNMENT_REQUESTS
    doc = tx.get(collection, request_id)
    if doc is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{request_id}' does not exist or one of its queried reference-property objects are not present.",
        )
    status = request_view(doc, now)["status"]
    if status not in ("Granted", "PendingApproval", "PendingAdminDecision"):
        raise bad_request(
            f"The request cannot be canceled because its status is '{status}': only requests that are Granted "
            "(not started yet) or pending approval can be canceled."
        )
    if status == "Granted" and doc.get("targetScheduleId"):
        schedules = ELIGIBILITY_SCHEDULES if kind == "eligibility" else ASSIGNMENT_SCHEDULES
        schedule = tx.get(schedules, doc["targetScheduleId"])
        if schedule is not None and schedule.get("createdUsing") == doc["id"]:
            delete_schedule(tx, schedules, schedule["id"])
    # notes §10.1: eligibility -> Revoked, assignment -> Canceled
    doc["status"] = "Revoked" if kind == "eligibility" else "Canceled"
    doc["completedDateTime"] = ts(now)
    tx.put(collection, doc["id"], doc)


def decide_request(tx, request_id: str, decision: str, now: datetime) -> tuple[str, dict]:
    """Approve or deny a pending request (control API; v1.0 has no approval API for roles, notes §1)."""
    kind, collection, doc = "assignment", ASSIGNMENT_REQUESTS, tx.get(ASSIGNMENT_REQUESTS, request_id)
    if doc is None:
        kind, collection, doc = "eligibility", ELIGIBILITY_REQUESTS, tx.get(ELIGIBILITY_REQUESTS, request_id)
    if doc is None:
        raise GraphError(404, "Request_ResourceNotFound", f"No schedule request with id '{request_id}'.")
    if doc["status"] not in ("PendingApproval", "PendingAdminDecision"):
        raise bad_request(f"The request is not pending approval (status '{doc['status']}').")
    if decision == "deny":
        doc["status"] = "Denied"
        doc["completedDateTime"] = ts(now)
        tx.put(collection, doc["id"], doc)
        return kind, doc
    info = doc["scheduleInfo"]
    requested = _dt(info.get("startDateTime"))
    future = requested is not None and requested > now
    start = requested if future else now
    exp = info["expiration"]
    if exp["type"] == "afterDateTime":
        end = _dt(exp["endDateTime"])
    elif exp["type"] == "afterDuration":
        end = start + parse_duration(exp["duration"])
    else:
        end = None
    if end is not None and end <= start:
        doc["status"] = "Failed"
        doc["completedDateTime"] = ts(now)
        tx.put(collection, doc["id"], doc)
        return kind, doc
    info["startDateTime"] = ts(start)
    doc["status"] = "Granted" if future else "Provisioned"
    doc["completedDateTime"] = ts(start)
    doc["_startAt"] = ts(start)
    schedules = ELIGIBILITY_SCHEDULES if kind == "eligibility" else ASSIGNMENT_SCHEDULES
    if doc["status"] in ("Granted", "Provisioned") and doc["action"] == "selfActivate":
        if _find(
            tx, schedules, now, doc["principalId"], doc["roleDefinitionId"], doc["directoryScopeId"], doc["appScopeId"]
        ):
            doc["status"] = "Failed"
        else:
            put_schedule(tx, schedules, _activation_schedule(doc, doc.get("_activatedUsing"), now, start, end))
    else:  # selfExtend / selfRenew: apply the requested schedule to the target schedule
        target = tx.get(schedules, doc.get("targetScheduleId") or "")
        if target is None:
            doc["status"] = "Failed"
        else:
            target["scheduleInfo"] = _stored_info(info)
            target["_start"] = ts(start)
            target["_end"] = ts(end) if end else None
            target["modifiedDateTime"] = ts(now)
            put_schedule(tx, schedules, target)
    tx.put(collection, doc["id"], doc)
    return kind, doc


# -- expanders -----------------------------------------------------------------------------------------------


def _principal_expander(ctx, item, nested):
    return principal_object(ctx.tx, item.get("principalId") or "")


def _role_expander(ctx, item, nested):
    role = ctx.tx.get(ROLE_DEFINITIONS, item.get("roleDefinitionId") or "")
    return public(role)


def _directory_scope_expander(ctx, item, nested):
    return directory_scope_object(ctx.tx, item.get("directoryScopeId"))


def _app_scope_expander(ctx, item, nested):
    scope = item.get("appScopeId")
    if not scope:
        return None
    return {"id": scope, "displayName": None, "type": None}


def _schedule_by_id(ctx, collection, schedule_id):
    doc = ctx.tx.get(collection, schedule_id or "")
    if doc is None or _is_expired(doc, ctx.now()):
        return None
    return schedule_view(doc, ctx.now())


def _target_schedule_expander(collection):
    def expander(ctx, item, nested):
        return _schedule_by_id(ctx, collection, item.get("targetScheduleId"))

    return expander


def _request_activated_using(ctx, item, nested):
    stored = ctx.tx.get(ASSIGNMENT_REQUESTS, item.get("id") or "")
    return _schedule_by_id(ctx, ELIGIBILITY_SCHEDULES, (stored or {}).get("_activatedUsing"))


def _schedule_activated_using(ctx, item, nested):
    stored = ctx.tx.get(ASSIGNMENT_SCHEDULES, item.get("id") or "")
    return _schedule_by_id(ctx, ELIGIBILITY_SCHEDULES, (stored or {}).get("_activatedUsing"))


def _instance_activated_using(ctx, item, nested):
    stored = ctx.tx.get(ASSIGNMENT_SCHEDULES, item.get("roleAssignmentScheduleId") or "")
    elig = ctx.tx.get(ELIGIBILITY_SCHEDULES, (stored or {}).get("_activatedUsing") or "")
    if elig is None or _is_expired(elig, ctx.now()) or not _has_started(elig, ctx.now()):
        return None
    return _eligibility_instance(elig)


_COMMON = {
    "principal": _principal_expander,
    "roleDefinition": _role_expander,
    "directoryScope": _directory_scope_expander,
    "appScope": _app_scope_expander,
}
ELIGIBILITY_REQUEST_EXPANDERS = {**_COMMON, "targetSchedule": _target_schedule_expander(ELIGIBILITY_SCHEDULES)}
ASSIGNMENT_REQUEST_EXPANDERS = {
    **_COMMON,
    "targetSchedule": _target_schedule_expander(ASSIGNMENT_SCHEDULES),
    "activatedUsing": _request_activated_using,
}
ELIGIBILITY_SCHEDULE_EXPANDERS = dict(_COMMON)
ASSIGNMENT_SCHEDULE_EXPANDERS = {**_COMMON, "activatedUsing": _schedule_activated_using}
ELIGIBILITY_INSTANCE_EXPANDERS = dict(_COMMON)
ASSIGNMENT_INSTANCE_EXPANDERS = {**_COMMON, "activatedUsing": _instance_activated_using}

REQUEST_FILTERABLE = [
    "id",
    "status",
    "createdDateTime",
    "completedDateTime",
    "approvalId",
    "customData",
    "action",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "isValidationOnly",
    "targetScheduleId",
    "justification",
    "createdBy",
    "scheduleInfo",
    "ticketInfo",
]
SCHEDULE_FILTERABLE = [
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "createdUsing",
    "createdDateTime",
    "modifiedDateTime",
    "status",
    "scheduleInfo",
    "memberType",
    "assignmentType",
]
INSTANCE_FILTERABLE = [
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "startDateTime",
    "endDateTime",
    "memberType",
    "assignmentType",
    "roleEligibilityScheduleId",
    "roleAssignmentOriginId",
    "roleAssignmentScheduleId",
]


# -- collection specs ---------------------------------------------------------------------------------------

_BASE = "/v1.0/roleManagement/directory"


@dataclass
class _Spec:
    name: str  # URL segment and context path tail
    kind: str  # eligibility | assignment
    shape: str  # requests | schedules | instances
    read: list
    expanders: dict
    filterable: list
    current_user_options: tuple

    @property
    def context(self) -> str:
        return f"roleManagement/directory/{self.name}"


SPECS = [
    _Spec(
        ELIGIBILITY_REQUESTS,
        "eligibility",
        "requests",
        ELIGIBILITY_READ,
        ELIGIBILITY_REQUEST_EXPANDERS,
        REQUEST_FILTERABLE,
        ("principal", "createdBy", "approver"),
    ),
    _Spec(
        ASSIGNMENT_REQUESTS,
        "assignment",
        "requests",
        ASSIGNMENT_READ,
        ASSIGNMENT_REQUEST_EXPANDERS,
        REQUEST_FILTERABLE,
        ("principal", "createdBy", "approver"),
    ),
    _Spec(
        ELIGIBILITY_SCHEDULES,
        "eligibility",
        "schedules",
        ELIGIBILITY_READ,
        ELIGIBILITY_SCHEDULE_EXPANDERS,
        SCHEDULE_FILTERABLE,
        ("principal",),
    ),
    _Spec(
        ASSIGNMENT_SCHEDULES,
        "assignment",
        "schedules",
        ASSIGNMENT_READ,
        ASSIGNMENT_SCHEDULE_EXPANDERS,
        SCHEDULE_FILTERABLE,
        ("principal",),
    ),
    _Spec(
        "roleEligibilityScheduleInstances",
        "eligibility",
        "instances",
        ELIGIBILITY_READ,
        ELIGIBILITY_INSTANCE_EXPANDERS,
        INSTANCE_FILTERABLE,
        ("principal",),
    ),
    _Spec(
        "roleAssignmentScheduleInstances",
        "assignment",
        "instances",
        ASSIGNMENT_READ,
        ASSIGNMENT_INSTANCE_EXPANDERS,
        INSTANCE_FILTERABLE,
        ("principal",),
    ),
]


# Requests, schedules and instances are read by principal and by role (the collection's
# read_lists/_queue_filtered): a $filter of eq/in terms on these reads the store's index.
PIM_INDEXED = ("principalId", "roleDefinitionId")


def source_for(spec: _Spec, tx, now: datetime) -> Source:
    """The stored documents behind a listing and the view that turns one into an item (None:
    not listed). Instances are views of the schedules collection of their kind."""
    if spec.shape == "requests":
        return Source(tx, spec.name, lambda d: request_view(d, now), PIM_INDEXED)
    if spec.shape == "schedules":
        return Source(tx, spec.name, lambda d: schedule_view(d, now), PIM_INDEXED, keep=is_current(now))
    if spec.kind == "eligibility":
        return Source(tx, ELIGIBILITY_SCHEDULES, _eligibility_instance, PIM_INDEXED, keep=is_instance(now))
    return Source(tx, ASSIGNMENT_SCHEDULES, _assignment_instance, PIM_INDEXED, keep=is_instance(now))


def items_for(spec: _Spec, tx, now: datetime) -> list[dict]:
    return source_for(spec, tx, now).all()


def _current_user_filter(spec: _Spec, tx, on: str, oid: str) -> callable:
    if on == "principal":
        subjects = {oid, *group_ids_of(tx, oid)}
        return lambda item: item.get("principalId") in subjects
    if on == "createdBy":
        return lambda item: ((item.get("createdBy") or {}).get("user") or {}).get("id") == oid
    return lambda item: False  # approver: directory-role approvals are not exposed in v1.0 (notes §1)


def _register(spec: _Spec) -> None:
    def list_items(ctx):
        return ctx.collection(source_for(spec, ctx.tx, ctx.now()), spec.context, spec.expanders, spec.filterable)

    def get_item(ctx):
        wanted = ctx.params["id"]
        now = ctx.now()
        if spec.shape != "instances":  # stored by id: O(1)
            doc = ctx.tx.get(spec.name, wanted)
            if doc is not None and spec.shape == "requests":
                return ctx.entity(request_view(doc, now), spec.context, spec.expanders)
            if doc is not None and not _is_expired(doc, now):
                return ctx.entity(schedule_view(doc, now), spec.context, spec.expanders)
        if spec.shape == "instances":  # an instance id is its schedule's _instanceId
            source = source_for(spec, ctx.tx, now)
            for item in source.by_ids(ctx.tx.find(source.collection, "_instanceId", wanted)):
                if item["id"] == wanted:
                    return ctx.entity(item, spec.context, spec.expanders)
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{wanted}' does not exist or one of its queried reference-property objects are not present.",
        )

    def by_current_user(ctx):
        on = ctx.params["on"]
        choices = {o.lower(): o for o in spec.current_user_options}
        if on.lower() not in choices:
            raise bad_request(f"Requested value '{on}' was not found for the 'on' parameter of filterByCurrentUser.")
        on, oid = choices[on.lower()], (ctx.claims or {}).get("oid", "").lower()
        keep = _current_user_filter(spec, ctx.tx, on, oid)
        source = source_for(spec, ctx.tx, ctx.now())
        if on == "principal":  # the caller's and their groups' items, from the principalId index
            subjects = {oid, *group_ids_of(ctx.tx, oid)}
            found = [i for s in subjects for i in ctx.tx.find(source.collection, "principalId", s)]
            candidates = source.by_ids(ctx.tx.order(source.collection, found))
        else:
            candidates = source.all()
        items = [item for item in candidates if keep(item)]
        return ctx.collection(items, spec.context, spec.expanders, spec.filterable)

    route("GET", f"{_BASE}/{spec.name}", permissions=spec.read)(list_items)
    route("GET", f"{_BASE}/{spec.name}/{{id}}", permissions=spec.read)(get_item)
    route("GET", f"{_BASE}/{spec.name}/filterByCurrentUser(on='{{on}}')", permissions=spec.read, delegated_only=True)(
        by_current_user
    )


for _spec in SPECS:
    _register(_spec)


def _post(kind: str):
    def handler(ctx):
        tenant_id = tenant_of(ctx.tx, ctx.tenant_id)
        req = submit_request(ctx.tx, kind, ctx.body, Caller.from_claims(ctx.claims), ctx.now(), ctx.settings, tenant_id)
        spec = SPECS[0] if kind == "eligibility" else SPECS[1]
        return Response(201, ctx.entity(request_view(req, ctx.now()), spec.context, spec.expanders))

    return handler


route("POST", f"{_BASE}/{ELIGIBILITY_REQUESTS}", permissions=ELIGIBILITY_WRITE)(_post("eligibility"))
route("POST", f"{_BASE}/{ASSIGNMENT_REQUESTS}", permissions=ASSIGNMENT_WRITE)(_post("assignment"))


@route(
    "POST",
    f"{_BASE}/{ELIGIBILITY_REQUESTS}/{{id}}/cancel",
    permissions=["RoleEligibilitySchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"],
)
def cancel_eligibility_request(ctx):
    cancel_request(ctx.tx, "eligibility", ctx.params["id"], ctx.now())
    return None


@route(
    "POST",
    f"{_BASE}/{ASSIGNMENT_REQUESTS}/{{id}}/cancel",
    permissions=["RoleAssignmentSchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"],
)
def cancel_assignment_request(ctx):
    cancel_request(ctx.tx, "assignment", ctx.params["id"], ctx.now())
    return None


# -- control routes -------------------------------------------------------------------------------------------


@route("POST", "/_emulator/approvals/{requestId}", permissions=None)
def control_decide(ctx):
    body = ctx.body if isinstance(ctx.body, dict) else {}
    decision = str(body.get("decision") or "").lower()
    if decision not in ("approve", "deny"):
        raise bad_request("'decision' must be 'approve' or 'deny'.")
    _, doc = decide_request(ctx.tx, ctx.params["requestId"], decision, ctx.now())
    return request_view(doc, ctx.now())


STATE_COLLECTIONS = (
    USERS,
    GROUPS,
    SERVICE_PRINCIPALS,
    "administrativeUnits",
    ELIGIBILITY_REQUESTS,
    ASSIGNMENT_REQUESTS,
    ELIGIBILITY_SCHEDULES,
    ASSIGNMENT_SCHEDULES,
    "roleManagementPolicies",
    "roleManagementPolicyAssignments",
)


def state_dump(tx, now: datetime) -> dict:
    """Everything PIM-related, for tests: stored docs (secrets stripped) plus derived instances."""
    out = {"now": ts(now), "tenantId": tenant_of(tx)}
    for name in STATE_COLLECTIONS:
        docs = []
        for doc in tx.list(name):
            docs.append({k: v for k, v in doc.items() if k not in ("password", "clientSecret")})
        out[name] = docs
    out["roleDefinitions"] = len(tx.ids(ROLE_DEFINITIONS)) if hasattr(tx, "ids") else len(tx.list(ROLE_DEFINITIONS))
    out["roleEligibilityScheduleInstances"] = eligibility_instances(tx, now)
    out["roleAssignmentScheduleInstances"] = assignment_instances(tx, now)
    return out


@route("GET", "/_emulator/state", permissions=None)
def control_state(ctx):
    return state_dump(ctx.tx, ctx.now())
