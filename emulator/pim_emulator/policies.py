"""Role management policies (role settings), their rules, policy assignments, rule PATCH, and the
rule look-ups pim.py enforces (notes §1.3, §3.7-§3.10).

Storage: ``roleManagementPolicies`` docs hold the policy in its ``DirectoryRole`` view with the
rules embedded (``rules``) and ``_roleDefinitionId``; ``roleManagementPolicyAssignments`` docs hold
the assignment. The ``Directory`` view (``scopeType eq 'Directory'``) of the same policy is derived
on read: id prefix ``Directory_``, displayName/description ``"Directory"`` (notes §3.7).
"""

from __future__ import annotations

import copy

from odata_query import ast as A

from pim_emulator import odata
from pim_emulator.clock import format_datetime, parse_duration
from pim_emulator.errors import GraphError, bad_request
from pim_emulator.routing import route
from pim_emulator.seed import POLICIES, POLICY_ASSIGNMENTS

READ = [
    "RoleManagementPolicy.Read.Directory",
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagementPolicy.ReadWrite.Directory",
    "RoleManagement.ReadWrite.Directory",
]
WRITE = ["RoleManagementPolicy.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"]

RULE_TYPES = {
    "#microsoft.graph.unifiedRoleManagementPolicyExpirationRule": "expiration",
    "#microsoft.graph.unifiedRoleManagementPolicyEnablementRule": "enablement",
    "#microsoft.graph.unifiedRoleManagementPolicyApprovalRule": "approval",
    "#microsoft.graph.unifiedRoleManagementPolicyNotificationRule": "notification",
    "#microsoft.graph.unifiedRoleManagementPolicyAuthenticationContextRule": "authenticationContext",
}
OPERATIONS = ("all", "activate", "deactivate", "assign", "update", "remove", "extend", "renew", "unknownFutureValue")
ENABLED_RULES = ("MultiFactorAuthentication", "Justification", "Ticketing")

POLICY_FILTERABLE = [
    "id",
    "displayName",
    "description",
    "isOrganizationDefault",
    "scopeId",
    "scopeType",
    "lastModifiedDateTime",
    "lastModifiedBy",
]
ASSIGNMENT_FILTERABLE = ["id", "policyId", "scopeId", "scopeType", "roleDefinitionId"]
RULE_FILTERABLE = ["id", "target"]


# -- look-ups used by pim.py -------------------------------------------------------------------


def policy_for_role(tx, tenant_id: str, role_definition_id: str) -> dict | None:
    """The stored policy (with rules) that applies to a role, via its policy assignment."""
    from pim_emulator import ids

    pid = ids.policy_id(tenant_id, role_definition_id)
    doc = tx.get(POLICIES, pid)
    if doc is not None:
        return doc
    for assignment in tx.list(POLICY_ASSIGNMENTS):
        if assignment.get("roleDefinitionId") == role_definition_id:
            return tx.get(POLICIES, assignment["policyId"])
    return None


def rules_by_id(policy: dict | None) -> dict[str, dict]:
    return {r["id"]: r for r in (policy or {}).get("rules", [])}


# -- views ---------------------------------------------------------------------------------------


def _split_policy_id(policy_id: str) -> tuple[str, str] | None:
    """``Directory_x_y`` / ``DirectoryRole_x_y`` -> (scopeType, ``DirectoryRole_x_y`` stored id)."""
    for prefix in ("DirectoryRole_", "Directory_"):
        if policy_id.startswith(prefix):
            return prefix[:-1], "DirectoryRole_" + policy_id[len(prefix) :]
    return None


def policy_view(doc: dict, scope_type: str = "DirectoryRole") -> dict:
    """Graph shape of a policy (no rules; those are navigation properties)."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if not k.startswith("_") and k != "rules"}
    if scope_type == "Directory":
        out["id"] = "Directory_" + doc["id"][len("DirectoryRole_") :]
        out["displayName"] = "Directory"
        out["description"] = "Directory"
        out["scopeType"] = "Directory"
    return out


def assignment_view(doc: dict, scope_type: str = "DirectoryRole") -> dict:
    out = dict(doc)
    if scope_type == "Directory":
        out["id"] = "Directory_" + doc["id"][len("DirectoryRole_") :]
        out["policyId"] = "Directory_" + doc["policyId"][len("DirectoryRole_") :]
        out["scopeType"] = "Directory"
    return out


def _load_policy(tx, policy_id: str) -> tuple[str, dict]:
    parts = _split_policy_id(policy_id)
    doc = tx.get(POLICIES, parts[1]) if parts else None
    if doc is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{policy_id}' does not exist or one of its queried reference-property objects are not present.",
        )
    return parts[0], doc


def _rules_expander(ctx, item, nested):
    parts = _split_policy_id(item.get("id", ""))
    doc = ctx.tx.get(POLICIES, parts[1]) if parts else None
    rules = copy.deepcopy(doc.get("rules", [])) if doc else []
    if nested.get("$filter"):
        rules = odata.apply_filter(ctx, rules, nested["$filter"], filterable=RULE_FILTERABLE)
    return rules


POLICY_EXPANDERS = {"rules": _rules_expander, "effectiveRules": _rules_expander}


def _policy_expander(ctx, item, nested):
    parts = _split_policy_id(item.get("policyId", ""))
    doc = ctx.tx.get(POLICIES, parts[1]) if parts else None
    if doc is None:
        return None
    view = policy_view(doc, parts[0])
    if nested.get("$expand"):
        view = ctx.shape(view, {"$expand": nested["$expand"]}, expanders=POLICY_EXPANDERS)
    return view


ASSIGNMENT_EXPANDERS = {"policy": _policy_expander}


# -- the required $filter ------------------------------------------------------------------------

_REQUIRED_FILTER_MESSAGE = (
    "The $filter query parameter is required and must include both scopeId and scopeType with the 'eq' "
    "operator, for example: $filter=scopeId eq '/' and scopeType eq 'DirectoryRole'."
)


def _eq_terms(node, out: dict) -> bool:
    """Collect ``name eq 'value'`` terms joined by ``and``; False if the tree has other shapes at top level."""
    if isinstance(node, A.BoolOp) and isinstance(node.op, A.And):
        left = _eq_terms(node.left, out)
        right = _eq_terms(node.right, out)
        return left and right
    if (
        isinstance(node, A.Compare)
        and isinstance(node.comparator, A.Eq)
        and isinstance(node.left, A.Identifier)
        and isinstance(node.right, A.String)
    ):
        out.setdefault(node.left.name.lower(), []).append(node.right.val)
    return True  # other terms are allowed; they are evaluated by the generic $filter


def required_scope(ctx) -> tuple[str, str]:
    """``(scopeId, scopeType)`` from the mandatory filter, or 400 (notes §1.3)."""
    text = ctx.query.get("$filter")
    if not text:
        raise bad_request(_REQUIRED_FILTER_MESSAGE)
    terms: dict[str, list] = {}
    _eq_terms(odata.parse_filter(text), terms)
    if len(terms.get("scopeid", [])) != 1 or len(terms.get("scopetype", [])) != 1:
        raise bad_request(_REQUIRED_FILTER_MESSAGE)
    scope_type = terms["scopetype"][0]
    if scope_type.lower() not in ("directory", "directoryrole", "group"):
        raise bad_request(
            f"Invalid scopeType '{scope_type}': the supported values are 'Directory', 'DirectoryRole' and 'Group'."
        )
    return terms["scopeid"][0], scope_type


def _scope_view(scope_id: str, scope_type: str) -> str | None:
    """Which stored view answers this scope: 'DirectoryRole' / 'Directory', or None (nothing: groups)."""
    if scope_id != "/":
        return None
    low = scope_type.lower()
    if low == "directoryrole":
        return "DirectoryRole"
    if low == "directory":
        return "Directory"
    return None


# -- routes: policies ----------------------------------------------------------------------------


@route("GET", "/v1.0/policies/roleManagementPolicies", permissions=READ)
def list_policies(ctx):
    scope_id, scope_type = required_scope(ctx)
    view = _scope_view(scope_id, scope_type)
    items = [policy_view(doc, view) for doc in ctx.tx.list(POLICIES)] if view else []
    return ctx.collection(
        items, "policies/roleManagementPolicies", expanders=POLICY_EXPANDERS, filterable=POLICY_FILTERABLE
    )


@route("GET", "/v1.0/policies/roleManagementPolicies/{id}", permissions=READ)
def get_policy(ctx):
    scope_type, doc = _load_policy(ctx.tx, ctx.params["id"])
    return ctx.entity(policy_view(doc, scope_type), "policies/roleManagementPolicies", expanders=POLICY_EXPANDERS)


def _rules_route(ctx, context_suffix: str):
    scope_type, doc = _load_policy(ctx.tx, ctx.params["id"])
    pid = policy_view(doc, scope_type)["id"]
    return ctx.collection(
        copy.deepcopy(doc.get("rules", [])),
        f"policies/roleManagementPolicies('{pid}')/{context_suffix}",
        filterable=RULE_FILTERABLE,
    )


@route("GET", "/v1.0/policies/roleManagementPolicies/{id}/rules", permissions=READ)
def list_rules(ctx):
    return _rules_route(ctx, "rules")


@route("GET", "/v1.0/policies/roleManagementPolicies/{id}/effectiveRules", permissions=READ)
def list_effective_rules(ctx):
    return _rules_route(ctx, "effectiveRules")


def _find_rule(doc: dict, policy_id: str, rule_id: str) -> tuple[int, dict]:
    for index, rule in enumerate(doc.get("rules", [])):
        if rule["id"].lower() == rule_id.lower():
            return index, rule
    raise GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{rule_id}' does not exist or one of its queried reference-property objects are not present.",
    )


@route("GET", "/v1.0/policies/roleManagementPolicies/{id}/rules/{ruleId}", permissions=READ)
def get_rule(ctx):
    scope_type, doc = _load_policy(ctx.tx, ctx.params["id"])
    _, rule = _find_rule(doc, ctx.params["id"], ctx.params["ruleId"])
    pid = policy_view(doc, scope_type)["id"]
    return ctx.entity(copy.deepcopy(rule), f"policies/roleManagementPolicies('{pid}')/rules")


@route("GET", "/v1.0/policies/roleManagementPolicies/{id}/effectiveRules/{ruleId}", permissions=READ)
def get_effective_rule(ctx):
    scope_type, doc = _load_policy(ctx.tx, ctx.params["id"])
    _, rule = _find_rule(doc, ctx.params["id"], ctx.params["ruleId"])
    pid = policy_view(doc, scope_type)["id"]
    return ctx.entity(copy.deepcopy(rule), f"policies/roleManagementPolicies('{pid}')/effectiveRules")


@route("PATCH", "/v1.0/policies/roleManagementPolicies/{id}/rules/{ruleId}", permissions=WRITE)
def patch_rule(ctx):
    app_only = not ctx.claims or "scp" not in ctx.claims
    if app_only and not ctx.settings.get("app_only_policy_patch", False):
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    _, doc = _load_policy(ctx.tx, ctx.params["id"])
    index, rule = _find_rule(doc, ctx.params["id"], ctx.params["ruleId"])
    doc["rules"][index] = apply_rule_patch(rule, ctx.body)
    doc["lastModifiedDateTime"] = format_datetime(ctx.now())
    doc["lastModifiedBy"] = {"displayName": None, "id": (ctx.claims or {}).get("oid")}
    ctx.tx.put(POLICIES, doc["id"], doc)
    return None


# -- routes: policy assignments ------------------------------------------------------------------


@route("GET", "/v1.0/policies/roleManagementPolicyAssignments", permissions=READ)
def list_policy_assignments(ctx):
    scope_id, scope_type = required_scope(ctx)
    view = _scope_view(scope_id, scope_type)
    items = [assignment_view(doc, view) for doc in ctx.tx.list(POLICY_ASSIGNMENTS)] if view else []
    return ctx.collection(
        items,
        "policies/roleManagementPolicyAssignments",
        expanders=ASSIGNMENT_EXPANDERS,
        filterable=ASSIGNMENT_FILTERABLE,
    )


@route("GET", "/v1.0/policies/roleManagementPolicyAssignments/{id}", permissions=READ)
def get_policy_assignment(ctx):
    wanted = ctx.params["id"]
    parts = _split_policy_id(wanted)
    doc = ctx.tx.get(POLICY_ASSIGNMENTS, parts[1]) if parts else None
    if doc is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{wanted}' does not exist or one of its queried reference-property objects are not present.",
        )
    return ctx.entity(
        assignment_view(doc, parts[0]), "policies/roleManagementPolicyAssignments", expanders=ASSIGNMENT_EXPANDERS
    )


# -- rule PATCH validation -------------------------------------------------------------------------


def _unknown_property(name: str, type_name: str) -> GraphError:
    return bad_request(
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use property names that "
        "are defined by the type or mark the type as open type."
    )


def _convert_error(value, edm: str) -> GraphError:
    return bad_request(f"Cannot convert the literal '{value}' to the expected type '{edm}'.")


def _check_bool(value, name) -> bool:
    if not isinstance(value, bool):
        raise _convert_error(value, "Edm.Boolean")
    return value


def _check_str(value, nullable=True):
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _convert_error(value, "Edm.String")
    return value


def _check_str_list(value, name):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"The property '{name}' must be a collection of strings.")
    return list(value)


def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _convert_error(value, "Edm.Int32")
    if value < 0:
        raise bad_request(f"The property '{name}' must not be negative.")
    return value


def _odata_type_matches(given, expected: str) -> bool:
    return isinstance(given, str) and given.lstrip("#").lower() == expected.lstrip("#").lower()


_TARGET_TYPE = "microsoft.graph.unifiedRoleManagementPolicyRuleTarget"


def _patch_target(current: dict, value) -> dict:
    if not isinstance(value, dict):
        raise bad_request(
            "The property 'target' must be an object of type 'microsoft.graph.unifiedRoleManagementPolicyRuleTarget'."
        )
    out = copy.deepcopy(current)
    for key, item in value.items():
        if key == "@odata.type":
            if not _odata_type_matches(item, _TARGET_TYPE):
                raise bad_request(f"Invalid @odata.type '{item}' for property 'target'.")
        elif key in ("caller", "level"):
            if not isinstance(item, str) or item.lower() != str(current.get(key, "")).lower():
                raise bad_request(
                    f"The target {key} of rule cannot be changed: expected '{current.get(key)}', got '{item}'."
                )
        elif key == "operations":
            ops = _check_str_list(item, "operations")
            canonical = {o.lower(): o for o in OPERATIONS}
            bad = [o for o in ops if o.lower() not in canonical]
            if bad or not ops:
                raise bad_request(
                    f"Requested value '{bad[0] if bad else ''}' was not found for enum "
                    "'microsoft.graph.unifiedRoleManagementPolicyRuleTargetOperations'."
                )
            # Directory-role policies report lower-camel operations (notes §3.9).
            out["operations"] = [canonical[o.lower()] for o in ops]
        elif key in ("inheritableSettings", "enforcedSettings"):
            out[key] = _check_str_list(item, key)
        elif key == "targetObjects":
            if item not in (None, []):
                raise bad_request("The property 'targetObjects' is not supported.")
        else:
            raise _unknown_property(key, _TARGET_TYPE)
    return out


_SUBJECT_SETS = {
    "microsoft.graph.singleuser": {"userId": True, "description": False},
    "microsoft.graph.groupmembers": {"groupId": True, "description": False},
    "microsoft.graph.requestormanager": {"managerLevel": True},
    "microsoft.graph.singleserviceprincipal": {"servicePrincipalId": True, "description": False},
}
_STAGE_KEYS = {
    "approvalStageTimeOutInDays": "int",
    "isApproverJustificationRequired": "bool",
    "escalationTimeInMinutes": "int",
    "isEscalationEnabled": "bool",
    "primaryApprovers": "subjects",
    "escalationApprovers": "subjects",
}
_SETTING_KEYS = {
    "isApprovalRequired": "bool",
    "isApprovalRequiredForExtension": "bool",
    "isRequestorJustificationRequired": "bool",
    "approvalMode": "mode",
    "approvalStages": "stages",
}
_APPROVAL_MODES = ("SingleStage", "Serial", "Parallel", "NoApproval")


def _subjects(value, name) -> list:
    if not isinstance(value, list):
        raise bad_request(f"The property '{name}' must be a collection of subjectSet objects.")
    out = []
    for subject in value:
        if not isinstance(subject, dict):
            raise bad_request(f"The property '{name}' must be a collection of subjectSet objects.")
        kind = str(subject.get("@odata.type", "")).lstrip("#").lower()
        spec = _SUBJECT_SETS.get(kind)
        if spec is None:
            raise bad_request(f"Invalid or missing @odata.type '{subject.get('@odata.type')}' in '{name}'.")
        clean = {"@odata.type": "#" + str(subject["@odata.type"]).lstrip("#")}
        for key, item in subject.items():
            if key == "@odata.type":
                continue
            if key not in spec:
                raise _unknown_property(key, kind)
            clean[key] = item
        for key, required in spec.items():
            if required and not clean.get(key):
                raise bad_request(f"The property '{key}' is required in a {kind} subject.")
        out.append(clean)
    return out


def _approval_setting(current: dict, value) -> dict:
    if not isinstance(value, dict):
        raise bad_request("The property 'setting' must be an object of type 'microsoft.graph.approvalSettings'.")
    out = copy.deepcopy(current)
    for key, item in value.items():
        if key == "@odata.type":
            if not _odata_type_matches(item, "microsoft.graph.approvalSettings"):
                raise bad_request(f"Invalid @odata.type '{item}' for property 'setting'.")
            continue
        kind = _SETTING_KEYS.get(key)
        if kind is None:
            raise _unknown_property(key, "microsoft.graph.approvalSettings")
        if kind == "bool":
            out[key] = _check_bool(item, key)
        elif kind == "mode":
            modes = {m.lower(): m for m in _APPROVAL_MODES}
            if not isinstance(item, str) or item.lower() not in modes:
                raise bad_request(f"Invalid approvalMode '{item}': expected one of {', '.join(_APPROVAL_MODES)}.")
            out[key] = modes[item.lower()]
        else:
            if not isinstance(item, list) or len(item) > 2:
                raise bad_request("The property 'approvalStages' must be a collection of at most 2 stages.")
            stages = []
            for stage in item:
                if not isinstance(stage, dict):
                    raise bad_request("The property 'approvalStages' must be a collection of unifiedApprovalStage.")
                clean = {
                    "approvalStageTimeOutInDays": 1,
                    "isApproverJustificationRequired": True,
                    "escalationTimeInMinutes": 0,
                    "isEscalationEnabled": False,
                    "primaryApprovers": [],
                    "escalationApprovers": [],
                }
                for skey, sval in stage.items():
                    if skey == "@odata.type":
                        if not _odata_type_matches(sval, "microsoft.graph.unifiedApprovalStage"):
                            raise bad_request(f"Invalid @odata.type '{sval}' in 'approvalStages'.")
                        continue
                    skind = _STAGE_KEYS.get(skey)
                    if skind is None:
                        raise _unknown_property(skey, "microsoft.graph.unifiedApprovalStage")
                    if skind == "int":
                        clean[skey] = _check_int(sval, skey)
                    elif skind == "bool":
                        clean[skey] = _check_bool(sval, skey)
                    else:
                        clean[skey] = _subjects(sval, skey)
                stages.append(clean)
            out[key] = stages
    if out.get("isApprovalRequired") and out.get("approvalMode") == "NoApproval":
        raise bad_request("approvalMode 'NoApproval' cannot be used when isApprovalRequired is true.")
    return out


_TYPE_NAMES = {v: k.lstrip("#") for k, v in RULE_TYPES.items()}
_EXTRA_KEYS = {
    "expiration": ("isExpirationRequired", "maximumDuration"),
    "enablement": ("enabledRules",),
    "approval": ("setting",),
    "notification": (
        "notificationType",
        "recipientType",
        "notificationLevel",
        "isDefaultRecipientsEnabled",
        "notificationRecipients",
    ),
    "authenticationContext": ("isEnabled", "claimValue"),
}


def apply_rule_patch(rule: dict, body) -> dict:
    """Validate a PATCH body against the stored rule and return the updated rule (notes §3.9, PATCH rules).

    Provided fields replace the stored ones; omitted fields keep their value (UNVERIFIED; documented).
    """
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    kind = RULE_TYPES[rule["@odata.type"]]
    type_name = _TYPE_NAMES[kind]
    given_type = body.get("@odata.type")
    if given_type is None:
        raise bad_request(
            f"The request body must contain '@odata.type' naming the derived rule type, here '#{type_name}'."
        )
    if not _odata_type_matches(given_type, type_name):
        raise bad_request(
            f"The @odata.type '{given_type}' does not match the type of rule '{rule['id']}' ('#{type_name}')."
        )
    if "id" in body and body["id"] != rule["id"]:
        raise bad_request(f"The id '{body['id']}' in the body does not match the rule id '{rule['id']}' in the URL.")
    out = copy.deepcopy(rule)
    allowed = set(_EXTRA_KEYS[kind]) | {"@odata.type", "id", "target"}
    for key, value in body.items():
        if key not in allowed:
            raise _unknown_property(key, type_name)
        if key == "target":
            out["target"] = _patch_target(rule["target"], value)
        elif key == "isExpirationRequired" or key == "isEnabled" or key == "isDefaultRecipientsEnabled":
            out[key] = _check_bool(value, key)
        elif key == "maximumDuration":
            _check_str(value, nullable=False)
            try:
                delta = parse_duration(value)
            except ValueError:
                raise _convert_error(value, "Edm.Duration") from None
            if delta.total_seconds() <= 0:
                raise bad_request(f"maximumDuration must be a positive duration, got '{value}'.")
            out[key] = value
        elif key == "enabledRules":
            values = _check_str_list(value, key)
            canonical = {v.lower(): v for v in ENABLED_RULES}
            for v in values:
                if v.lower() not in canonical:
                    raise bad_request(f"Invalid enabledRules value '{v}': expected any of {', '.join(ENABLED_RULES)}.")
            out[key] = list(dict.fromkeys(canonical[v.lower()] for v in values))
        elif key == "setting":
            out[key] = _approval_setting(rule["setting"], value)
        elif key == "notificationType":
            if not isinstance(value, str) or value.lower() != "email":
                raise bad_request(f"Invalid notificationType '{value}': only 'Email' is supported.")
            out[key] = "Email"
        elif key == "recipientType":
            choices = {v.lower(): v for v in ("Requestor", "Approver", "Admin")}
            if not isinstance(value, str) or value.lower() not in choices:
                raise bad_request(f"Invalid recipientType '{value}': expected Requestor, Approver or Admin.")
            out[key] = choices[value.lower()]
        elif key == "notificationLevel":
            choices = {v.lower(): v for v in ("None", "Critical", "All")}
            if not isinstance(value, str) or value.lower() not in choices:
                raise bad_request(f"Invalid notificationLevel '{value}': expected None, Critical or All.")
            out[key] = choices[value.lower()]
        elif key == "notificationRecipients":
            out[key] = _check_str_list(value, key)
        elif key == "claimValue":
            out[key] = _check_str(value)
    if kind == "expiration":
        if out.get("isExpirationRequired") and not out.get("maximumDuration"):
            raise bad_request("maximumDuration is required when isExpirationRequired is true.")
        if rule["id"] == "Expiration_EndUser_Assignment":
            hours = parse_duration(out["maximumDuration"]).total_seconds() / 3600
            if hours < 0.5 or hours > 24:
                raise bad_request(
                    "The maximum activation duration (Expiration_EndUser_Assignment.maximumDuration) must be "
                    f"between PT30M and PT24H, got '{out['maximumDuration']}'."
                )
    if kind == "authenticationContext" and out.get("isEnabled") and not out.get("claimValue"):
        raise bad_request("claimValue is required when the authentication context rule is enabled.")
    return out
