"""The seed tenant: ``default_seed()`` returns the documented default fixture, ``load_seed(tx, seed)``
writes a fixture into the store (the caller clears the store first when it wants a clean tenant).

Fixture shape (``data/seed.json``; a ``--seed FILE`` uses the same shape)::

    {"tenantId": GUID, "users": [...], "groups": [... "members": [ids]], "administrativeUnits": [...],
     "applications": [...], "servicePrincipals": [...],
     "roleDefinitions": [...]            # optional; default: the 123 built-in roles
     "roleAssignments": [{"principalId", "roleDefinitionId", "directoryScopeId"}],   # permanent, active
     "roleEligibilities": [{"principalId", "roleDefinitionId", "directoryScopeId", "endDateTime"?}]}   # optional

Every role definition gets its PIM policy (``DirectoryRole_{tenantId}_{guid}``) with the 17 default
rules of notes §3.10 and a policy assignment ``{policyId}_{roleDefinitionId}``.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from importlib import resources

from pim_emulator import ids
from pim_emulator.directory import ADMINISTRATIVE_UNITS, APPLICATIONS, GROUPS, SERVICE_PRINCIPALS, USERS

ROLE_DEFINITIONS = "roleDefinitions"
POLICIES = "roleManagementPolicies"
POLICY_ASSIGNMENTS = "roleManagementPolicyAssignments"

TENANT_META_KEY = "tenant_id"


def _data(name: str):
    return json.loads(resources.files("pim_emulator").joinpath("data", name).read_text(encoding="utf-8"))


def builtin_role_definitions() -> list[dict]:
    """The 123 built-in roles as unifiedRoleDefinition documents (``id == templateId``)."""
    out = []
    for role in _data("builtin-roles.json"):
        out.append(
            {
                "id": role["templateId"],
                "description": role["description"],
                "displayName": role["displayName"],
                "isBuiltIn": True,
                "isEnabled": True,
                "resourceScopes": ["/"],
                "templateId": role["templateId"],
                "version": "1",
                "rolePermissions": [],
                "_isPrivileged": bool(role.get("isPrivileged")),
            }
        )
    return out


def default_seed() -> dict:
    seed = _data("seed.json")
    seed["roleDefinitions"] = builtin_role_definitions()
    return seed


# -- the 17 default rules (notes §3.10) ----------------------------------------------------------

_RULE_TYPE = "#microsoft.graph.unifiedRoleManagementPolicy{}Rule"


def _target(caller: str, level: str) -> dict:
    return {
        "caller": caller,
        "operations": ["all"],
        "level": level,
        "inheritableSettings": [],
        "enforcedSettings": [],
    }


def _notification(recipient: str, caller: str, level: str) -> dict:
    return {
        "@odata.type": _RULE_TYPE.format("Notification"),
        "id": f"Notification_{recipient}_{caller}_{level}",
        "notificationType": "Email",
        "recipientType": recipient,
        "notificationLevel": "All",
        "isDefaultRecipientsEnabled": True,
        "notificationRecipients": [],
        "target": _target(caller, level),
    }


def default_rules() -> list[dict]:
    """The 17 rules of a directory-role policy, in the order of the docs' example."""
    rules = []
    for caller, level, required, maximum, enabled in (
        ("Admin", "Eligibility", False, "P365D", []),
        ("Admin", "Assignment", False, "P180D", ["Justification"]),
    ):
        rules.append(
            {
                "@odata.type": _RULE_TYPE.format("Expiration"),
                "id": f"Expiration_{caller}_{level}",
                "isExpirationRequired": required,
                "maximumDuration": maximum,
                "target": _target(caller, level),
            }
        )
        rules.append(
            {
                "@odata.type": _RULE_TYPE.format("Enablement"),
                "id": f"Enablement_{caller}_{level}",
                "enabledRules": list(enabled),
                "target": _target(caller, level),
            }
        )
        rules.extend(_notification(r, caller, level) for r in ("Admin", "Requestor", "Approver"))
    rules.append(
        {
            "@odata.type": _RULE_TYPE.format("Expiration"),
            "id": "Expiration_EndUser_Assignment",
            "isExpirationRequired": True,
            "maximumDuration": "PT8H",
            "target": _target("EndUser", "Assignment"),
        }
    )
    rules.append(
        {
            "@odata.type": _RULE_TYPE.format("Enablement"),
            "id": "Enablement_EndUser_Assignment",
            "enabledRules": ["MultiFactorAuthentication", "Justification"],
            "target": _target("EndUser", "Assignment"),
        }
    )
    rules.append(
        {
            "@odata.type": _RULE_TYPE.format("Approval"),
            "id": "Approval_EndUser_Assignment",
            "target": _target("EndUser", "Assignment"),
            "setting": {
                "isApprovalRequired": False,
                "isApprovalRequiredForExtension": False,
                "isRequestorJustificationRequired": True,
                "approvalMode": "SingleStage",
                "approvalStages": [
                    {
                        "approvalStageTimeOutInDays": 1,
                        "isApproverJustificationRequired": True,
                        "escalationTimeInMinutes": 0,
                        "isEscalationEnabled": False,
                        "primaryApprovers": [],
                        "escalationApprovers": [],
                    }
                ],
            },
        }
    )
    rules.append(
        {
            "@odata.type": _RULE_TYPE.format("AuthenticationContext"),
            "id": "AuthenticationContext_EndUser_Assignment",
            "isEnabled": False,
            "claimValue": None,
            "target": _target("EndUser", "Assignment"),
        }
    )
    rules.extend(_notification(r, "EndUser", "Assignment") for r in ("Admin", "Requestor", "Approver"))
    return rules


def policy_documents(tenant_id: str, role_definition_id: str) -> tuple[dict, dict]:
    """``(policy doc with rules, policy assignment doc)`` for one role, in the DirectoryRole view."""
    pid = ids.policy_id(tenant_id, role_definition_id)
    policy = {
        "id": pid,
        "displayName": "DirectoryRole",
        "description": "DirectoryRole",
        "isOrganizationDefault": False,
        "scopeId": "/",
        "scopeType": "DirectoryRole",
        "lastModifiedDateTime": None,
        "lastModifiedBy": {"displayName": None, "id": None},
        "rules": default_rules(),
        "_roleDefinitionId": role_definition_id,
    }
    assignment = {
        "id": ids.policy_assignment_id(pid, role_definition_id),
        "policyId": pid,
        "scopeId": "/",
        "scopeType": "DirectoryRole",
        "roleDefinitionId": role_definition_id,
    }
    return policy, assignment


def ensure_policy(tx, tenant_id: str, role_definition_id: str) -> None:
    """Create the role's policy and policy assignment when missing (custom roles, custom seeds)."""
    policy, assignment = policy_documents(tenant_id, role_definition_id)
    if tx.get(POLICIES, policy["id"]) is None:
        tx.put(POLICIES, policy["id"], policy)
    if tx.get(POLICY_ASSIGNMENTS, assignment["id"]) is None:
        tx.put(POLICY_ASSIGNMENTS, assignment["id"], assignment)


# -- loading -------------------------------------------------------------------------------------


def _lower_ids(values) -> list[str]:
    return [str(v).lower() for v in values or []]


def load_seed(tx, seed: dict | None = None) -> str:
    """Write a fixture into the store; returns the tenant id (also kept in meta ``tenant_id``)."""
    from pim_emulator import pim  # late import: pim imports this module

    seed = copy.deepcopy(seed) if seed is not None else default_seed()
    tenant_id = str(seed.get("tenantId") or ids.derived_guid("tenant", "default")).lower()
    tx.meta_put(TENANT_META_KEY, tenant_id)

    for user in seed.get("users", []):
        doc = dict(user)
        doc["id"] = doc["id"].lower()
        doc.setdefault("accountEnabled", True)
        doc.setdefault("userType", "Member")
        doc.setdefault("businessPhones", [])
        for key in ("givenName", "surname", "jobTitle", "mail", "mobilePhone", "officeLocation", "preferredLanguage"):
            doc.setdefault(key, None)
        tx.put(USERS, doc["id"], doc)
    for group in seed.get("groups", []):
        doc = {k: v for k, v in group.items() if k != "members"}
        doc["id"] = doc["id"].lower()
        doc.setdefault("description", None)
        doc.setdefault("groupTypes", [])
        doc.setdefault("isAssignableToRole", False)
        doc.setdefault("mailEnabled", False)
        doc.setdefault("securityEnabled", True)
        doc.setdefault("mail", None)
        doc.setdefault("visibility", "Private" if doc["isAssignableToRole"] else None)
        doc["_members"] = _lower_ids(group.get("members"))
        tx.put(GROUPS, doc["id"], doc)
    for unit in seed.get("administrativeUnits", []):
        doc = {k: v for k, v in unit.items() if k != "members"}
        doc["id"] = doc["id"].lower()
        doc.setdefault("description", None)
        doc.setdefault("visibility", None)
        doc["_members"] = _lower_ids(unit.get("members"))
        tx.put(ADMINISTRATIVE_UNITS, doc["id"], doc)
    for app in seed.get("applications", []):
        doc = dict(app)
        doc.setdefault("id", ids.derived_guid("application", doc["appId"]))
        doc.setdefault("roles", [])
        doc.setdefault("certificateThumbprints", [])
        doc.setdefault("primary", False)
        doc.setdefault("readOnly", False)
        tx.put(APPLICATIONS, doc["id"], doc)
    for sp in seed.get("servicePrincipals", []):
        doc = dict(sp)
        doc["id"] = doc["id"].lower()
        doc.setdefault("accountEnabled", True)
        doc.setdefault("appDisplayName", doc.get("displayName"))
        doc.setdefault("servicePrincipalType", "Application")
        tx.put(SERVICE_PRINCIPALS, doc["id"], doc)

    roles = seed.get("roleDefinitions") or builtin_role_definitions()
    for role in roles:
        doc = dict(role)
        doc["id"] = doc["id"].lower()
        doc.setdefault("templateId", doc["id"])
        doc.setdefault("isBuiltIn", False)
        doc.setdefault("isEnabled", True)
        doc.setdefault("resourceScopes", ["/"])
        doc.setdefault("rolePermissions", [])
        doc.setdefault("version", "1")
        doc.setdefault("description", None)
        tx.put(ROLE_DEFINITIONS, doc["id"], doc)
        ensure_policy(tx, tenant_id, doc["id"])

    seeded_at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for item in seed.get("roleAssignments", []):
        pim.seed_direct_assignment(
            tx,
            tenant_id,
            item["principalId"].lower(),
            item["roleDefinitionId"].lower(),
            item.get("directoryScopeId", "/"),
            seeded_at,
        )
    for item in seed.get("roleEligibilities", []):
        pim.seed_eligibility(
            tx,
            item["principalId"].lower(),
            item["roleDefinitionId"].lower(),
            item.get("directoryScopeId", "/"),
            seeded_at,
            item.get("endDateTime"),
        )
    return tenant_id
