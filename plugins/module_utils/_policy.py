# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Role settings (PIM policies): the 17 Graph rules <-> the settings people see in the portal.

Internal to the entra.pim collection: not a public API, may change without notice.

Everything down to ``plan_settings`` is pure (no HTTP). The last sections take a client: the one
read (``read_policy_assignments``), approver lookups and the batched rule updates.
The mapping follows graph-pim-notes §3.10 (the corrected one, not the 2022 overview page):

=========================================  ==========================================
setting                                     rule id
=========================================  ==========================================
activation.max_duration                     Expiration_EndUser_Assignment
activation.require_mfa/justification/ticket Enablement_EndUser_Assignment
activation.require_approval, approvers      Approval_EndUser_Assignment
activation.authentication_context           AuthenticationContext_EndUser_Assignment
eligible_assignment.allow_permanent/max     Expiration_Admin_Eligibility
eligible_assignment.require_mfa/just.       Enablement_Admin_Eligibility
active_assignment.allow_permanent/max       Expiration_Admin_Assignment
active_assignment.require_mfa/just.         Enablement_Admin_Assignment
notifications.<kind>.<recipient>            Notification_<Recipient>_<Caller>_<Level>
=========================================  ==========================================

A setting the user leaves out (None) is not managed. ``rules_to_settings`` output is valid
input to ``plan_settings`` (export -> restore gives back the same rules).
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from urllib.parse import quote

from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError

# ---------------------------------------------------------------------------------------
# Rule ids (notes §3.10)

ELIGIBLE_EXPIRATION = "Expiration_Admin_Eligibility"
ELIGIBLE_ENABLEMENT = "Enablement_Admin_Eligibility"
ACTIVE_EXPIRATION = "Expiration_Admin_Assignment"
ACTIVE_ENABLEMENT = "Enablement_Admin_Assignment"
ACTIVATION_EXPIRATION = "Expiration_EndUser_Assignment"
ACTIVATION_ENABLEMENT = "Enablement_EndUser_Assignment"
ACTIVATION_APPROVAL = "Approval_EndUser_Assignment"
ACTIVATION_AUTH_CONTEXT = "AuthenticationContext_EndUser_Assignment"

NOTIFICATION_KINDS = {
    # settings key -> rule id suffix (caller_level)
    "eligible_assignment": "Admin_Eligibility",
    "active_assignment": "Admin_Assignment",
    "activation": "EndUser_Assignment",
}
NOTIFICATION_RECIPIENTS = {"admin": "Admin", "requestor": "Requestor", "approver": "Approver"}
NOTIFICATION_LEVELS = ("None", "Critical", "All")


def notification_rule_id(kind, recipient):
    return "Notification_%s_%s" % (NOTIFICATION_RECIPIENTS[recipient], NOTIFICATION_KINDS[kind])


# Enablement rule values (notes §3.9)
MFA = "MultiFactorAuthentication"
JUSTIFICATION = "Justification"
TICKETING = "Ticketing"

# The portal bounds the activation maximum to 0.5-24 h (notes §3.10, azure-docs #51581).
ACTIVATION_MIN_SECONDS = 30 * 60
ACTIVATION_MAX_SECONDS = 24 * 3600

SUBJECT_USER = "#microsoft.graph.singleUser"
SUBJECT_GROUP = "#microsoft.graph.groupMembers"

# Lists whose order carries no meaning in Graph (compared as sets).
_SET_KEYS = frozenset(
    {
        "enabledRules",
        "notificationRecipients",
        "operations",
        "inheritableSettings",
        "enforcedSettings",
        "primaryApprovers",
        "escalationApprovers",
    }
)
_DURATION_KEYS = frozenset({"maximumDuration"})


# ---------------------------------------------------------------------------------------
# ISO 8601 durations (Edm.Duration is xs:dayTimeDuration: days, hours, minutes, seconds)

_DURATION_RE = re.compile(
    r"^P(?!$)(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def duration_seconds(value):
    """Seconds in an ISO 8601 duration, or None when it is not one we accept."""
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.match(value.strip().upper())
    if not match:
        return None
    parts = match.groupdict()
    factors = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    total = 0.0
    for key, factor in factors.items():
        if parts[key] is not None:
            total += float(parts[key]) * factor
    return int(round(total))


def format_duration(seconds):
    """Shortest canonical ISO 8601 form: 28800 -> PT8H, 93600 -> P1DT2H."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "P"
    if days:
        text += "%dD" % days
    if hours or minutes or secs:
        text += "T"
        if hours:
            text += "%dH" % hours
        if minutes:
            text += "%dM" % minutes
        if secs:
            text += "%dS" % secs
    return text if text != "P" else "PT0S"


def durations_equal(a, b):
    if a is None or b is None:
        return a is b
    sa, sb = duration_seconds(a), duration_seconds(b)
    if sa is None or sb is None:
        return str(a) == str(b)
    return sa == sb


# The longest Edm.Duration Graph can hold (a .NET TimeSpan: 10,675,199 days and a bit).
EDM_DURATION_MAX_SECONDS = 10675199 * 86400


def _check_duration(path, value):
    """A duration the user gave (settings or a raw rule) → whole seconds, through the one duration parser
    of every module (``_schedule.parse_duration``): not ISO 8601, years or months, zero, negative, below one
    second once cut to whole seconds, or beyond Graph's last date are refused, naming ``settings.<path>``."""
    option = path if path.startswith("rules[") else "settings.%s" % path
    if not isinstance(value, str):
        raise InputError(
            "%s: %r is not an ISO 8601 duration; expected days, hours and minutes such as PT8H, PT1H30M or P90D."
            % (option, value),
            setting=path,
        )
    seconds = duration_seconds(value)
    if seconds is not None and seconds > EDM_DURATION_MAX_SECONDS:
        raise InputError(
            "%s %r is too long: Graph holds a duration (an Edm.Duration) of at most P10675199D; "
            "give a duration such as P365D." % (option, value),
            setting=path,
        )
    try:
        delta = sched.parse_duration(value, option)
        sched.end_after(datetime.now(timezone.utc), delta, option, value)
    except InputError as err:
        raise InputError(err.msg, setting=path)
    return int(delta.total_seconds())


# ---------------------------------------------------------------------------------------
# Settings schema (shared by the modules' argument specs and their documentation)


def _enablement_spec():
    return dict(require_mfa=dict(type="bool"), require_justification=dict(type="bool"))


def _notification_spec():
    recipient = dict(
        type="dict",
        options=dict(
            default_recipients=dict(type="bool"),
            level=dict(type="str"),
            additional_recipients=dict(type="list", elements="str"),
        ),
    )
    return dict(
        type="dict",
        options={name: copy.deepcopy(recipient) for name in NOTIFICATION_RECIPIENTS},
    )


def settings_argspec():
    """The ``settings`` option (nested) as an AnsibleModule argument spec entry."""
    assignment = dict(allow_permanent=dict(type="bool"), max_duration=dict(type="str"), **_enablement_spec())
    return dict(
        type="dict",
        options=dict(
            activation=dict(
                type="dict",
                options=dict(
                    max_duration=dict(type="str"),
                    require_mfa=dict(type="bool"),
                    require_justification=dict(type="bool"),
                    require_ticket=dict(type="bool"),
                    require_approval=dict(type="bool"),
                    approvers=dict(type="list", elements="raw"),
                    authentication_context=dict(
                        type="dict",
                        options=dict(enabled=dict(type="bool"), claim_value=dict(type="str")),
                    ),
                ),
            ),
            eligible_assignment=dict(type="dict", options=copy.deepcopy(assignment)),
            active_assignment=dict(type="dict", options=copy.deepcopy(assignment)),
            notifications=dict(
                type="dict",
                options={kind: _notification_spec() for kind in NOTIFICATION_KINDS},
            ),
        ),
    )


# ---------------------------------------------------------------------------------------
# Small helpers


def _levels_equal(a, b):
    if a is None or b is None:
        return a is b
    return str(a).casefold() == str(b).casefold()


def _canonical_level(value):
    for level in NOTIFICATION_LEVELS:
        if str(value).casefold() == level.casefold():
            return level
    return value


def rules_by_id(rules):
    return {rule.get("id"): rule for rule in rules or [] if isinstance(rule, dict) and rule.get("id")}


def _has(values, wanted):
    wanted = wanted.casefold()
    return any(isinstance(v, str) and v.casefold() == wanted for v in values or [])


def _set_flag(values, wanted, on):
    values = [v for v in values or [] if not (isinstance(v, str) and v.casefold() == wanted.casefold())]
    if on:
        values.append(wanted)
    return values


def _first_stage(rule, create=False):
    setting = rule.get("setting")
    if setting is None:
        if not create:
            return None
        setting = rule["setting"] = {}
    stages = setting.get("approvalStages")
    if not stages:
        if not create:
            return None
        # Same shape as the portal's default stage (notes §3.10, rule 13).
        stages = setting["approvalStages"] = [
            {
                "approvalStageTimeOutInDays": 1,
                "isApproverJustificationRequired": True,
                "escalationTimeInMinutes": 0,
                "isEscalationEnabled": False,
                "primaryApprovers": [],
                "escalationApprovers": [],
            }
        ]
    return stages[0]


def subject_kind(subject):
    """'user', 'group' or None for a subjectSet (typed or inferred from its id field)."""
    odata_type = str(subject.get("@odata.type") or "").lstrip("#").casefold()
    if odata_type == SUBJECT_USER.lstrip("#").casefold() or (not odata_type and "userId" in subject):
        return "user"
    if odata_type == SUBJECT_GROUP.lstrip("#").casefold() or (not odata_type and "groupId" in subject):
        return "group"
    return None


def _subject_id(subject):
    return subject.get("userId") if subject_kind(subject) == "user" else subject.get("groupId")


def approvers_of(rule):
    """User and group primary approvers of the first stage as ``[{type, id, name}]``."""
    stage = _first_stage(rule or {})
    result = []
    for subject in (stage or {}).get("primaryApprovers") or []:
        kind = subject_kind(subject)
        if kind:
            result.append({"type": kind, "id": _subject_id(subject), "name": None})
    return result


def _approver_key(approvers):
    return sorted((a["type"], str(a["id"]).casefold()) for a in approvers or [])


def _subject_for(approver):
    if approver["type"] == "user":
        return {"@odata.type": SUBJECT_USER, "userId": approver["id"]}
    return {"@odata.type": SUBJECT_GROUP, "groupId": approver["id"]}


def _recipients_key(values):
    return sorted({str(v).strip().casefold() for v in values or []})


# ---------------------------------------------------------------------------------------
# The leaves: (path, rule id, read(rule), write(rule, value), equal(a, b))


def _expiration_leaves(section, rule_id):
    def read_permanent(rule):
        value = rule.get("isExpirationRequired")
        return None if value is None else not value

    def write_permanent(rule, value):
        rule["isExpirationRequired"] = not value

    def read_max(rule):
        return rule.get("maximumDuration")

    def write_max(rule, value):
        rule["maximumDuration"] = format_duration(duration_seconds(value))

    return [
        ((section, "allow_permanent"), rule_id, read_permanent, write_permanent, None),
        ((section, "max_duration"), rule_id, read_max, write_max, durations_equal),
    ]


def _enablement_leaf(path, rule_id, flag):
    def read(rule):
        return _has(rule.get("enabledRules"), flag)

    def write(rule, value):
        rule["enabledRules"] = _set_flag(rule.get("enabledRules"), flag, value)

    return (path, rule_id, read, write, None)


def _activation_leaves():
    def read_max(rule):
        return rule.get("maximumDuration")

    def write_max(rule, value):
        rule["isExpirationRequired"] = True
        rule["maximumDuration"] = format_duration(duration_seconds(value))

    def read_approval(rule):
        return (rule.get("setting") or {}).get("isApprovalRequired")

    def write_approval(rule, value):
        setting = rule.setdefault("setting", {})
        setting["isApprovalRequired"] = bool(value)
        if value:
            _first_stage(rule, create=True)
            if str(setting.get("approvalMode") or "NoApproval").casefold() == "noapproval":
                setting["approvalMode"] = "SingleStage"

    def read_approvers(rule):
        return approvers_of(rule)

    def write_approvers(rule, value):
        stage = _first_stage(rule, create=True)
        # Keep subject kinds the settings do not model (e.g. requestorManager); see rules option.
        others = [s for s in stage.get("primaryApprovers") or [] if subject_kind(s) is None]
        stage["primaryApprovers"] = [_subject_for(a) for a in value] + others

    def read_ctx_enabled(rule):
        return rule.get("isEnabled")

    def write_ctx_enabled(rule, value):
        rule["isEnabled"] = bool(value)
        if not value:
            # As the portal does: switching the requirement off forgets the context, so an export
            # taken while it was off restores to exactly that.
            rule["claimValue"] = None

    def read_ctx_claim(rule):
        return rule.get("claimValue")

    def write_ctx_claim(rule, value):
        rule["claimValue"] = value

    def claims_equal(a, b):
        return (a or "") == (b or "")

    return [
        (("activation", "max_duration"), ACTIVATION_EXPIRATION, read_max, write_max, durations_equal),
        _enablement_leaf(("activation", "require_mfa"), ACTIVATION_ENABLEMENT, MFA),
        _enablement_leaf(("activation", "require_justification"), ACTIVATION_ENABLEMENT, JUSTIFICATION),
        _enablement_leaf(("activation", "require_ticket"), ACTIVATION_ENABLEMENT, TICKETING),
        (("activation", "require_approval"), ACTIVATION_APPROVAL, read_approval, write_approval, None),
        (
            ("activation", "approvers"),
            ACTIVATION_APPROVAL,
            read_approvers,
            write_approvers,
            lambda a, b: _approver_key(a) == _approver_key(b),
        ),
        (
            ("activation", "authentication_context", "enabled"),
            ACTIVATION_AUTH_CONTEXT,
            read_ctx_enabled,
            write_ctx_enabled,
            None,
        ),
        (
            ("activation", "authentication_context", "claim_value"),
            ACTIVATION_AUTH_CONTEXT,
            read_ctx_claim,
            write_ctx_claim,
            claims_equal,
        ),
    ]


def _notification_leaves():
    leaves = []
    for kind in NOTIFICATION_KINDS:
        for recipient in NOTIFICATION_RECIPIENTS:
            rule_id = notification_rule_id(kind, recipient)
            base = ("notifications", kind, recipient)

            def write_default(rule, value):
                rule["isDefaultRecipientsEnabled"] = bool(value)

            def write_level(rule, value):
                rule["notificationLevel"] = _canonical_level(value)

            def write_recipients(rule, value):
                rule["notificationRecipients"] = list(value)

            leaves.extend(
                [
                    (
                        base + ("default_recipients",),
                        rule_id,
                        lambda r: r.get("isDefaultRecipientsEnabled"),
                        write_default,
                        None,
                    ),
                    (
                        base + ("level",),
                        rule_id,
                        lambda r: r.get("notificationLevel"),
                        write_level,
                        _levels_equal,
                    ),
                    (
                        base + ("additional_recipients",),
                        rule_id,
                        lambda r: list(r.get("notificationRecipients") or []),
                        write_recipients,
                        lambda a, b: _recipients_key(a) == _recipients_key(b),
                    ),
                ]
            )
    return leaves


LEAVES = (
    _activation_leaves()
    + _expiration_leaves("eligible_assignment", ELIGIBLE_EXPIRATION)
    + [
        _enablement_leaf(("eligible_assignment", "require_mfa"), ELIGIBLE_ENABLEMENT, MFA),
        _enablement_leaf(("eligible_assignment", "require_justification"), ELIGIBLE_ENABLEMENT, JUSTIFICATION),
    ]
    + _expiration_leaves("active_assignment", ACTIVE_EXPIRATION)
    + [
        _enablement_leaf(("active_assignment", "require_mfa"), ACTIVE_ENABLEMENT, MFA),
        _enablement_leaf(("active_assignment", "require_justification"), ACTIVE_ENABLEMENT, JUSTIFICATION),
    ]
    + _notification_leaves()
)

SETTING_RULE_IDS = sorted({leaf[1] for leaf in LEAVES})


def _get_path(tree, path):
    node = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _set_path(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _equal(eq, a, b):
    return eq(a, b) if eq else a == b


# ---------------------------------------------------------------------------------------
# Rules -> settings


def rules_to_settings(rules):
    """The settings dict for a policy's rules (a rule that is missing gives None values)."""
    by_id = rules_by_id(rules)
    settings = {}
    for path, rule_id, read, _write, _eq in LEAVES:
        rule = by_id.get(rule_id)
        _set_path(settings, path, read(rule) if rule is not None else None)
    return settings


def approver_ids(settings_list):
    """Every approver id found in some settings dicts (for one bulk name lookup)."""
    ids = []
    for settings in settings_list:
        for approver in _get_path(settings, ("activation", "approvers")) or []:
            if approver.get("id") and approver["id"] not in ids:
                ids.append(approver["id"])
    return ids


def name_approvers(settings, names):
    """Fill ``name`` of each approver from ``names`` (id -> display name); in place, returns settings."""
    lowered = {str(k).casefold(): v for k, v in (names or {}).items()}
    for approver in _get_path(settings, ("activation", "approvers")) or []:
        if approver.get("name") is None:
            approver["name"] = lowered.get(str(approver.get("id")).casefold())
    return settings


# ---------------------------------------------------------------------------------------
# Validation of what the user asked for (before anything is sent)


def _desired_leaves(desired):
    """(leaf, value) for every setting the user manages (value not None)."""
    for leaf in LEAVES:
        value = _get_path(desired or {}, leaf[0])
        if value is not None:
            yield leaf, value


def validate_settings(desired):
    """Checks that need no current state. Returns a normalized copy (levels, durations as given)."""
    desired = copy.deepcopy(desired or {})
    for (path, _rule_id, _r, _w, _e), value in list(_desired_leaves(desired)):
        name = ".".join(path)
        if path[-1] == "max_duration":
            seconds = _check_duration(name, value)
            if path[0] == "activation" and not ACTIVATION_MIN_SECONDS <= seconds <= ACTIVATION_MAX_SECONDS:
                raise InputError(
                    "settings.%s: %r is outside the range Entra allows for activation; expected a duration "
                    "between PT30M (30 minutes) and P1D (24 hours), e.g. PT8H." % (name, value),
                    setting=name,
                )
        elif path[-1] == "level":
            if _canonical_level(value) not in NOTIFICATION_LEVELS:
                raise InputError(
                    "settings.%s: %r is not a notification level; expected one of None, Critical, All." % (name, value),
                    setting=name,
                )
            _set_path(desired, path, _canonical_level(value))
        elif path[-1] == "approvers":
            if not isinstance(value, list):
                raise InputError("settings.%s: expected a list of approvers." % name, setting=name)
        elif path[-1] == "additional_recipients":
            for address in value:
                if not isinstance(address, str) or "@" not in address:
                    raise InputError(
                        "settings.%s: %r is not an email address; expected addresses such as "
                        "security@contoso.com." % (name, address),
                        setting=name,
                    )
        elif path[-1] == "claim_value" and not str(value).strip():
            raise InputError(
                "settings.%s: expected the Conditional Access authentication context id, such as c1." % name,
                setting=name,
            )
    activation = desired.get("activation") or {}
    ctx = activation.get("authentication_context") or {}
    if activation.get("require_mfa") and ctx.get("enabled"):
        raise InputError(
            "settings.activation: require_mfa and authentication_context.enabled cannot both be true; "
            "the Entra portal rejects that combination because the Conditional Access policy behind the "
            "authentication context decides about MFA. Set require_mfa: false when you enable it.",
            setting="activation.require_mfa",
        )
    return desired


def validate_resolved_approvers(approvers, path="activation.approvers"):
    for approver in approvers or []:
        if not isinstance(approver, dict) or approver.get("type") not in ("user", "group") or not approver.get("id"):
            raise InputError(
                "settings.%s: %r is not a resolved approver; expected {type: user|group, id: object id}."
                % (path, approver),
                setting=path,
            )


# ---------------------------------------------------------------------------------------
# Comparing rules by meaning


def canonical_rule(value, key=None):
    """A structure equal for two rules exactly when Graph would treat them the same."""
    if isinstance(value, dict):
        return tuple(
            sorted(
                (k, canonical_rule(v, k))
                for k, v in value.items()
                if not k.startswith("@odata.") and k != "targetObjects" and v is not None
            )
            + (
                [("@type", str(value["@odata.type"]).lstrip("#").casefold())]
                if key in ("primaryApprovers", "escalationApprovers") and value.get("@odata.type")
                else []
            )
        )
    if isinstance(value, list):
        items = [canonical_rule(v, key) for v in value]
        if key in _SET_KEYS:
            return tuple(sorted(set(items), key=repr))
        return tuple(items)
    if key in _DURATION_KEYS and isinstance(value, str):
        seconds = duration_seconds(value)
        return seconds if seconds is not None else value
    if isinstance(value, str):
        return value.casefold()
    return value


def rules_equal(a, b):
    return canonical_rule(a) == canonical_rule(b)


def patch_body(rule):
    """PATCH body per the docs (notes §3.10): @odata.type, id, the full target and the type's fields."""
    body = {}
    for key, value in rule.items():
        if key == "targetObjects" or (key.startswith("@odata.") and key != "@odata.type"):
            continue
        body[key] = _strip_annotations(value)
    if isinstance(body.get("target"), dict):
        body["target"].pop("targetObjects", None)
    return body


def _strip_annotations(value):
    if isinstance(value, dict):
        return {k: _strip_annotations(v) for k, v in value.items() if not k.startswith("@odata.") or k == "@odata.type"}
    if isinstance(value, list):
        return [_strip_annotations(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Raw rules (the escape hatch): snake_case or camelCase, merged over the current rule


def snake_to_camel(name):
    if name.startswith("@") or "_" not in name:
        return name
    head, *tail = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in tail)


def camel_to_snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _camel_keys(value):
    if isinstance(value, dict):
        return {snake_to_camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


# The subjectSet types an approval stage takes, by the field that identifies each one (docs/graph-behaviour.md §2).
SUBJECT_TYPES_BY_FIELD = (
    ("userId", SUBJECT_USER),
    ("groupId", SUBJECT_GROUP),
    ("managerLevel", "#microsoft.graph.requestorManager"),
    ("servicePrincipalId", "#microsoft.graph.singleServicePrincipal"),
)


def _type_subjects(value, key=None, path="rules"):
    """Give approver subjectSets their @odata.type back (info output drops @odata keys).

    Every subjectSet kind is inferred from the field that identifies it, so an exported rule restores
    exactly; one that names none of them is refused here, before any rule is sent.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            _type_subjects(v, k, "%s.%s" % (path, camel_to_snake(k)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (
                key in ("primaryApprovers", "escalationApprovers")
                and isinstance(item, dict)
                and "@odata.type" not in item
            ):
                found = next((t for field, t in SUBJECT_TYPES_BY_FIELD if field in item), None)
                if found is None:
                    raise InputError(
                        "%s[%d]: %r is not an approver; give user_id, group_id, manager_level or "
                        "service_principal_id (or an @odata.type)." % (path, index, item),
                        setting="rules",
                    )
                item["@odata.type"] = found
            _type_subjects(item, key, "%s[%d]" % (path, index))
    return value


def _merge(base, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def apply_raw_rules(rules, raw_rules, role_name="the role"):
    """Merge raw rule dicts (by id) into ``rules`` (a dict id -> rule, changed in place)."""
    for index, raw in enumerate(raw_rules or []):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise InputError(
                "rules[%d]: each entry needs the id of the rule to change, e.g. Approval_EndUser_Assignment." % index,
                setting="rules",
            )
        rule_id = raw["id"]
        current = next((r for rid, r in rules.items() if rid.casefold() == str(rule_id).casefold()), None)
        if current is None:
            raise InputError(
                "rules[%d]: role %r has no policy rule %r; its rules are: %s."
                % (index, role_name, rule_id, ", ".join(sorted(rules))),
                setting="rules",
            )
        patch = _type_subjects(_camel_keys({k: v for k, v in raw.items() if k != "id"}), path="rules[%d]" % index)
        given_type = patch.pop("@odata.type", None)
        if (
            given_type
            and str(given_type).lstrip("#").casefold() != str(current.get("@odata.type", "")).lstrip("#").casefold()
        ):
            raise InputError(
                "rules[%d]: rule %r is a %s, not a %s; the type of a rule cannot change."
                % (index, rule_id, current.get("@odata.type"), given_type),
                setting="rules",
            )
        if "maximumDuration" in patch:
            _check_duration("rules[%d].maximum_duration" % index, patch["maximumDuration"])
        merged = _merge(copy.deepcopy(current), patch)
        _check_raw_rule(index, rule_id, merged, role_name)
        _merge(current, patch)
    return rules


def _check_raw_rule(index, rule_id, rule, role_name):
    """What Graph refuses in a rule, said before any PATCH: the rule, the role, the value and what is expected."""
    rid = rule.get("id") or rule_id
    if rid == ACTIVATION_EXPIRATION:
        seconds = duration_seconds(rule.get("maximumDuration"))
        if seconds is not None and not ACTIVATION_MIN_SECONDS <= seconds <= ACTIVATION_MAX_SECONDS:
            raise InputError(
                "rules[%d]: rule %s of role %r would allow activations of %s (maximumDuration); Entra allows "
                "between PT30M (30 minutes) and P1D (24 hours). Give e.g. maximum_duration: PT8H, or use "
                "settings.activation.max_duration." % (index, rid, role_name, rule.get("maximumDuration")),
                setting="rules",
            )
    if "isExpirationRequired" in rule and rule.get("isExpirationRequired") and not rule.get("maximumDuration"):
        raise InputError(
            "rules[%d]: rule %s of role %r would require expiry (is_expiration_required: true) without a "
            "maximum_duration; give one, e.g. P180D." % (index, rid, role_name),
            setting="rules",
        )
    if rid == ACTIVATION_AUTH_CONTEXT and rule.get("isEnabled") and not str(rule.get("claimValue") or "").strip():
        raise InputError(
            "rules[%d]: rule %s of role %r would be enabled (is_enabled: true) without a claim_value; give the "
            "Conditional Access authentication context id, e.g. c1." % (index, rid, role_name),
            setting="rules",
        )
    stages = (rule.get("setting") or {}).get("approvalStages")
    if isinstance(stages, list) and len(stages) > 2:
        raise InputError(
            "rules[%d]: rule %s of role %r would have %d approval stages; Graph allows one or two."
            % (index, rid, role_name, len(stages)),
            setting="rules",
        )


# ---------------------------------------------------------------------------------------
# The planner


def plan_settings(desired_settings, current_rules, raw_rules=None, role_name="the role"):
    """Desired settings (+ raw rules) against a policy's current rules.

    ``desired_settings`` must already have approvers resolved to ``{type, id}``.
    Returns ``(changed_rules, diff)``: the full PATCH bodies of the rules that really differ,
    and ``{"before": {...}, "after": {...}}`` holding only the settings (and raw rules) that change.
    Raises InputError before anything is sent when the request cannot be valid.
    """
    desired = validate_settings(desired_settings)
    validate_resolved_approvers(_get_path(desired, ("activation", "approvers")))
    current = rules_by_id(current_rules)
    after = {rid: copy.deepcopy(rule) for rid, rule in current.items()}
    before_diff, after_diff = {}, {}

    for (path, rule_id, read, write, eq), value in _desired_leaves(desired):
        rule = after.get(rule_id)
        if rule is None:
            raise InputError(
                "settings.%s: role %r has no policy rule %s, so this setting cannot be managed for it."
                % (".".join(path), role_name, rule_id),
                setting=".".join(path),
            )
        old = read(rule)
        if not _equal(eq, old, value):
            write(rule, value)
            _set_path(before_diff, path, _diff_value(old))
            _set_path(after_diff, path, _diff_value(read(rule)))

    if raw_rules:
        snapshot = {rid: copy.deepcopy(rule) for rid, rule in after.items()}
        apply_raw_rules(after, raw_rules, role_name)
        for rid, rule in after.items():
            if not rules_equal(rule, snapshot[rid]):
                fields_before, fields_after = _rule_field_diff(snapshot[rid], rule)
                before_diff.setdefault("rules", {})[rid] = fields_before
                after_diff.setdefault("rules", {})[rid] = fields_after

    _validate_after(desired, current, after, role_name)

    changed = [patch_body(after[rid]) for rid in current if not rules_equal(after[rid], current[rid])]
    return changed, {"before": before_diff, "after": after_diff}


def planned_rules(current_rules, changed_rules):
    """The rules as they will be once ``changed_rules`` are applied (for results, no re-read)."""
    changed = rules_by_id(changed_rules)
    return [copy.deepcopy(changed.get(rule.get("id"), rule)) for rule in current_rules or []]


def _diff_value(value):
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if k != "name"} if isinstance(item, dict) else item for item in value]
    return value


def _rule_field_diff(before, after):
    keys = [k for k in after if not k.startswith("@odata.")]
    fb, fa = {}, {}
    for key in keys:
        if canonical_rule(before.get(key), key) != canonical_rule(after.get(key), key):
            fb[camel_to_snake(key)] = _snake_keys(before.get(key))
            fa[camel_to_snake(key)] = _snake_keys(after.get(key))
    return fb, fa


def _snake_keys(value):
    if isinstance(value, dict):
        return {camel_to_snake(k): _snake_keys(v) for k, v in value.items() if not k.startswith("@odata.")}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def _validate_after(desired, current, after, role_name):
    """Checks on the resulting policy, for the settings the user manages."""
    activation = desired.get("activation") or {}
    approval = after.get(ACTIVATION_APPROVAL)
    manages_approval = activation.get("require_approval") is not None or activation.get("approvers") is not None
    if approval is not None and manages_approval and (approval.get("setting") or {}).get("isApprovalRequired"):
        stage = _first_stage(approval) or {}
        if not stage.get("primaryApprovers"):
            raise InputError(
                "settings.activation.require_approval: role %r would require approval without any approver; "
                "give at least one in settings.activation.approvers (a user's UPN, a group's name or an object id)."
                % role_name,
                setting="activation.require_approval",
            )
    ctx_rule = after.get(ACTIVATION_AUTH_CONTEXT)
    ctx = activation.get("authentication_context") or {}
    enablement = after.get(ACTIVATION_ENABLEMENT)
    manages_pair = activation.get("require_mfa") is not None or ctx.get("enabled") is not None
    if ctx_rule is not None and ctx_rule.get("isEnabled"):
        if ctx.get("enabled") is not None and not str(ctx_rule.get("claimValue") or "").strip():
            raise InputError(
                "settings.activation.authentication_context: enabled is true but role %r has no claim_value; "
                "give the Conditional Access authentication context id, e.g. c1." % role_name,
                setting="activation.authentication_context.claim_value",
            )
        if manages_pair and enablement is not None and _has(enablement.get("enabledRules"), MFA):
            raise InputError(
                "settings.activation: role %r would require both MFA and an authentication context on "
                "activation; the Entra portal rejects that combination. Set activation.require_mfa: false "
                "together with authentication_context.enabled: true." % role_name,
                setting="activation.require_mfa",
            )
    for section, rule_id in (("eligible_assignment", ELIGIBLE_EXPIRATION), ("active_assignment", ACTIVE_EXPIRATION)):
        rule = after.get(rule_id)
        given = desired.get(section) or {}
        if rule is not None and given.get("allow_permanent") is False and not rule.get("maximumDuration"):
            raise InputError(
                "settings.%s.allow_permanent: false needs a max_duration (role %r has none); give e.g. "
                "max_duration: P180D." % (section, role_name),
                setting="%s.max_duration" % section,
            )


# ---------------------------------------------------------------------------------------
# Reading (the one helper here that talks to Graph)

POLICY_ASSIGNMENTS = "/policies/roleManagementPolicyAssignments"
DIRECTORY_FILTER = "scopeId eq '/' and scopeType eq 'DirectoryRole'"


def policy_assignments_params(role_ids=None):
    """Query for the documented read (notes §1.3): the scope filter is required; a roleDefinitionId
    clause only for exactly one role (several are filtered locally, still one paged request)."""
    flt = DIRECTORY_FILTER
    if role_ids and len(role_ids) == 1:
        flt += " and roleDefinitionId eq '%s'" % str(role_ids[0]).replace("'", "''")
    return {"$filter": flt, "$expand": "policy($expand=rules)"}


def resolve_roles(resolver, names):
    """Role names, ids or template ids → Role tuples in the order given, each role once."""
    return list({r.id: r for r in resolver.roles(names)}.values())


def read_policy_assignments(client, roles=None):
    """Policy assignments (with policy and rules) for ``roles`` (Role tuples; None = every role).

    Returns ``[(role_or_None, assignment)]``: for given roles in their order (one entry per role,
    InputError when a role has no policy), otherwise every directory-role policy assignment.
    """
    ids = [r.id for r in roles] if roles else None
    items = client.list(POLICY_ASSIGNMENTS, params=policy_assignments_params(ids))
    if not roles:
        return [(None, item) for item in items]
    by_role = {}
    for item in items:
        by_role.setdefault(str(item.get("roleDefinitionId") or "").casefold(), item)
    out = []
    for role in roles:
        item = by_role.get(role.id.casefold()) or by_role.get(str(role.template_id or "").casefold())
        if item is None:
            raise InputError(
                "role '%s' (%s) has no PIM policy at the tenant scope ('/'); Graph returned policies for %d roles."
                % (role.display_name, role.id, len(by_role))
            )
        out.append((role, item))
    return out


def policy_rules(assignment):
    return list(((assignment or {}).get("policy") or {}).get("rules") or [])


def describe_policies(resolver, pairs, known_names=None):
    """[(role_or_None, assignment)] -> the modules' ``policies`` result; approver names in one lookup."""
    from ansible_collections.entra.pim.plugins.module_utils._graph import snake_case_keys

    policies = []
    for role, assignment in pairs:
        role = role or resolver.role_by_id(assignment.get("roleDefinitionId"))
        rules = policy_rules(assignment)
        policies.append(
            {
                "role_id": role.id if role else assignment.get("roleDefinitionId"),
                "role_name": role.display_name if role else None,
                "policy_id": assignment.get("policyId") or (assignment.get("policy") or {}).get("id"),
                "settings": rules_to_settings(rules),
                "rules": snake_case_keys(rules),
            }
        )
    name_all_approvers(resolver, [p["settings"] for p in policies], known_names)
    return policies


def name_all_approvers(resolver, settings_list, known=None):
    """Fill approver names, looking up only the ids not already known (one getByIds)."""
    names = {str(k).casefold(): v for k, v in (known or {}).items()}
    missing = [i for i in approver_ids(settings_list) if str(i).casefold() not in names]
    if missing:
        for principal_id, principal in resolver.principals_by_ids(missing).items():
            names[principal_id.casefold()] = principal.display_name
    for settings in settings_list:
        name_approvers(settings, names)


# ---------------------------------------------------------------------------------------
# Approvers as people write them -> {type, id, name}

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RULE_URL = "/policies/roleManagementPolicies/%s/rules/%s"


# ------------------------------------------------------------------ approvers


def _approver_lookup(item, index):
    """(value to look up, principal_type, known dict or None) for one approver as the user wrote it."""
    where = "settings.activation.approvers[%d]" % index
    if isinstance(item, str):
        return item, "auto", None
    if not isinstance(item, dict):
        raise InputError(
            "%s: %r is not an approver; expected a UPN, a group name, an object id or {type, id}." % (where, item),
            setting="activation.approvers",
        )
    kind = item.get("type")
    if kind is not None and kind not in ("user", "group"):
        raise InputError(
            "%s: type %r is not supported; approvers are users or groups (type: user or group)." % (where, kind),
            setting="activation.approvers",
        )
    ident = item.get("id")
    if ident and _GUID_RE.match(str(ident)) and kind:
        # As pim_policy_info returns it: no lookup needed.
        return None, kind, {"type": kind, "id": str(ident).lower(), "name": item.get("name")}
    value = ident or item.get("name")
    if not value:
        raise InputError("%s: give the approver's id (or name)." % where, setting="activation.approvers")
    return str(value), kind or "auto", None


def resolve_approvers(client, resolver, approvers):
    """Approvers as written -> [{type, id, name}], all lookups in one request (or one $batch)."""
    plan, requests = [], []
    for index, item in enumerate(approvers):
        value, kind, known = _approver_lookup(item, index)
        if known:
            plan.append((index, value, kind, known, []))
            continue
        try:
            pairs = resolver.principal_requests(value, kind)
        except InputError as err:  # an empty name: named by its place in the list
            raise InputError("settings.activation.approvers[%d]: %s" % (index, err.msg), setting="activation.approvers")
        plan.append((index, value, kind, None, [pair[0] for pair in pairs]))
        requests.extend(pair[1] for pair in pairs)
    answers = _send(client, requests)
    out, position = [], 0
    for index, value, kind, known, kinds in plan:
        if known:
            out.append(known)
            continue
        mine = answers[position : position + len(kinds)]
        position += len(kinds)
        try:
            principal = resolver.principal_from_answers(value, kind, kinds, mine)
        except InputError as err:
            raise InputError("settings.activation.approvers[%d]: %s" % (index, err.msg), setting="activation.approvers")
        if principal.type not in ("user", "group"):
            raise InputError(
                "settings.activation.approvers[%d]: %r is a %s; approvers must be users or groups."
                % (index, value, principal.type.replace("_", " ")),
                setting="activation.approvers",
            )
        out.append({"type": principal.type, "id": principal.id.lower(), "name": principal.display_name})
    return out


def _send(client, requests):
    if not requests:
        return []
    if len(requests) == 1:
        req = requests[0]
        if req["method"] == "POST":
            return [client.post(req["path"], req["body"], idempotent=True)]
        return [{"value": client.list(req["path"], params=req["params"])}]
    items = []
    for n, req in enumerate(requests, start=1):
        item = {"id": str(n), "method": req["method"], "url": req["url"]}
        if req.get("body") is not None:
            item["body"] = req["body"]
            item["headers"] = {"Content-Type": "application/json"}
        items.append(item)
    answers = []
    for resp in client.batch(items):
        client.raise_for_item(resp)
        answers.append(resp.get("body"))
    return answers


# ------------------------------------------------------------------ writing


def explain_patch_error(err, role_name, rule_id, applied):
    done = ""
    if applied:
        done = " %d other rule update(s) in this task succeeded: %s." % (
            len(applied),
            ", ".join("%s/%s" % (r["role_name"], r["rule_id"]) for r in applied),
        )
    if err.status == 403:
        msg = (
            "Microsoft Graph refused to update role settings for '%s' (403, rule %s). Updating PIM policies needs "
            "the permission RoleManagementPolicy.ReadWrite.Directory (or RoleManagement.ReadWrite.Directory). "
            "Microsoft documents rule updates as delegated only, so some tenants refuse application (app-only) "
            "tokens: run as a user who holds Privileged Role Administrator (auth_method: username_password, "
            "access_token or azure_cli).%s" % (role_name, rule_id, done)
        )
    else:
        msg = "Updating rule %s of role '%s' failed: %s%s" % (rule_id, role_name, err.msg, done)
    details = dict(err.details)
    details.pop("msg", None)
    return GraphError(
        msg,
        **{k: v for k, v in details.items() if k != "error_code"},
        code=err.code,
    )


def apply_changes(client, changes):
    """PATCH every changed rule through $batch (the client sends chunks of 20)."""
    requests = [
        {
            "id": str(n),
            "method": "PATCH",
            "url": RULE_URL % (quote(c["policy_id"], safe=""), quote(c["body"]["id"], safe="")),
            "body": c["body"],
            "headers": {"Content-Type": "application/json"},
            # The whole rule is sent, so a 504 (done or not) can be answered by sending it again.
            "idempotent": True,
        }
        for n, c in enumerate(changes, start=1)
    ]
    try:
        responses = client.batch(requests)
    except GraphError as err:
        if err.code != "ResponseLost":
            raise
        # A rule PATCH carries the whole rule, so sending it again cannot do anything twice.
        responses = client.batch(requests)
    applied, failure = [], None
    for change, resp in zip(changes, responses, strict=True):
        status = int(resp.get("status") or 0)
        if 200 <= status < 300:
            applied.append({"role_name": change["role_name"], "rule_id": change["body"]["id"]})
            continue
        if failure is None:
            try:
                client.raise_for_item(resp)
            except GraphError as err:
                failure = (err, change)
    if failure:
        err, change = failure
        raise explain_patch_error(err, change["role_name"], change["body"]["id"], applied)
