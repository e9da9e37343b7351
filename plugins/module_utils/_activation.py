# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Just-in-time activation of an eligible directory role by the signed-in user.

Internal to the entra.pim collection: not a public API, may change without notice.

The flow of pim_role_activation:

    require_delegated(client.token_claims())                 # self* actions act for a signed-in user (notes §6.4)
    reads   = read_requests(role_id=None)                    # filterByCurrentUser reads, one $batch
    state   = state_from_answers(user, role, scope, ...)     # pure
    p       = plan(Desired(...), state, policy, now)         # pure: none | activate | extend | deactivate | cancel
    ...send p.body (isValidationOnly in check mode), then wait_for(...) when asked

Everything that decides is pure and takes ``now``; the one loop (``wait_for``) takes its
``sleep`` and ``monotonic`` so tests run it without waiting. Graph's own clock may differ from
ours (and the sandbox's clock can be moved), so waits poll Graph instead of trusting a
computed sleep.
"""

from __future__ import annotations

import json
import re
import time
from collections import namedtuple
from datetime import timedelta
from urllib.parse import unquote

from ansible_collections.entra.pim.plugins.module_utils import _pim
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote
from ansible_collections.entra.pim.plugins.module_utils._resolve import encode_url, require_guid

BASE = "/roleManagement/directory"
ASSIGNMENT_SCHEDULES = BASE + "/roleAssignmentSchedules"
ASSIGNMENT_INSTANCES = BASE + "/roleAssignmentScheduleInstances"
ASSIGNMENT_REQUESTS = BASE + "/roleAssignmentScheduleRequests"
ELIGIBILITY_INSTANCES = BASE + "/roleEligibilityScheduleInstances"
CURRENT_USER = "/filterByCurrentUser(on='principal')"

# Graph refuses selfDeactivate within 5 minutes of the activation's start (notes §6.2, §8).
MIN_ACTIVE = timedelta(minutes=5)
DEFAULT_MIN_REMAINING = "PT15M"
# When the role's policy cannot be read (a user without RoleManagementPolicy.Read.Directory),
# this is the activation length we ask for; the result says so.
FALLBACK_DURATION = timedelta(hours=1)
# Poll intervals while waiting (seconds): quick at first, then every 10 s.
POLL_INTERVALS = (2, 3, 5, 10)

# Request statuses (notes §3.1, §4).
IN_EFFECT = frozenset({"Provisioned"})
APPROVAL = frozenset({"PendingApproval", "PendingAdminDecision"})
PROVISIONING = frozenset({"Granted", "PendingProvisioning", "PendingScheduleCreation", "ScheduleCreated"})
REFUSED = frozenset({"Denied", "Failed", "Canceled", "Revoked", "TimedOut"})
PENDING_FILTER = " or ".join("status eq '%s'" % s for s in sorted(APPROVAL | PROVISIONING - {"ScheduleCreated"}))

ACTION_TAKEN = ("none", "activated", "extended", "extension_requested", "reactivated", "deactivated", "canceled")


# ------------------------------------------------------------------ the token


def token_is_app_only(claims):
    """An application (app-only) token: no ``scp``, or ``roles`` without ``scp``, or ``idtyp: app``."""
    claims = claims or {}
    if str(claims.get("idtyp") or "").lower() == "app":
        return True
    return not claims.get("scp")


def require_delegated(claims, auth_method, what="activate a role"):
    """Refuse an app-only token before anything is sent, saying why and what works instead."""
    if not token_is_app_only(claims):
        return
    raise AuthError(
        "Cannot %s with an application token (auth_method=%s): PIM activation (selfActivate, selfExtend, "
        "selfDeactivate) acts for the signed-in user, so it needs a delegated token of the user who is eligible. "
        "Use auth_method=access_token with a token from 'az account get-access-token --resource-type ms-graph', "
        "auth_method=azure_cli (signed in with 'az login'), or auth_method=username_password (test tenants and the "
        "sandbox only; it cannot do MFA)." % (what, auth_method),
        auth_method=auth_method,
    )


def signed_in_user(claims):
    """(object id, display name) of the token's user."""
    oid = require_guid(str((claims or {}).get("oid") or ""), "the token's user id (oid claim)")
    name = claims.get("name") or claims.get("upn") or claims.get("preferred_username") or claims.get("unique_name")
    return oid, name or oid


# ------------------------------------------------------------------ the role's policy

Policy = namedtuple(
    "Policy",
    "max_duration expiration_required require_mfa require_justification require_ticket require_approval "
    "approval_for_extension auth_context",
)
Policy.__doc__ = "The activation settings of a role (rules *_EndUser_Assignment, notes §3.10); values may be None."


def _rule(rules, rule_id):
    for rule in rules or []:
        if rule.get("id") == rule_id:
            return rule
    return None


def policy_from_rules(rules):
    """The role's rules (Graph dicts) → Policy, or None when the rules could not be read."""
    if rules is None:
        return None
    expiration = _rule(rules, "Expiration_EndUser_Assignment") or {}
    enabled = {str(e).lower() for e in (_rule(rules, "Enablement_EndUser_Assignment") or {}).get("enabledRules") or []}
    approval = (_rule(rules, "Approval_EndUser_Assignment") or {}).get("setting") or {}
    context = _rule(rules, "AuthenticationContext_EndUser_Assignment") or {}
    maximum = expiration.get("maximumDuration")
    try:
        max_duration = sched.parse_duration(maximum, "maximumDuration") if maximum else None
    except Exception:
        max_duration = None
    return Policy(
        max_duration=max_duration,
        expiration_required=bool(expiration.get("isExpirationRequired")),
        require_mfa="multifactorauthentication" in enabled,
        require_justification="justification" in enabled
        or bool(approval.get("isApprovalRequired") and approval.get("isRequestorJustificationRequired")),
        require_ticket="ticketing" in enabled,
        require_approval=bool(approval.get("isApprovalRequired")),
        approval_for_extension=bool(approval.get("isApprovalRequiredForExtension")),
        auth_context=context.get("claimValue") if context.get("isEnabled") else None,
    )


def activation_duration(requested, policy):
    """The duration to ask for: the task's, else the policy's maximum, else FALLBACK_DURATION.

    Returns (timedelta, source) with source "task", "policy" or "fallback".
    """
    if requested:
        return sched.parse_duration(requested, "duration"), "task"
    if policy is not None and policy.max_duration is not None:
        return policy.max_duration, "policy"
    return FALLBACK_DURATION, "fallback"


# ------------------------------------------------------------------ reading


def _get(path, params=None):
    params = params or {}
    return {"method": "GET", "path": path, "params": params, "url": encode_url(path, params)}


def read_requests(role_id=None):
    """The reads for one activation task, batch-ready: [(name, request)].

    All go through filterByCurrentUser(on='principal') (notes §1.1): an ordinary eligible user
    may not list other people's schedules, and this also covers groups the user is in.
    ``roles`` (the role list) is added by the caller when it is not cached.
    """
    role_filter = {}
    if role_id:
        role_filter = {"$filter": "roleDefinitionId eq %s" % odata_quote(require_guid(role_id, "role id"))}
    pending = {"$filter": PENDING_FILTER}
    return [
        ("schedules", _get(ASSIGNMENT_SCHEDULES + CURRENT_USER, role_filter)),
        ("requests", _get(ASSIGNMENT_REQUESTS + CURRENT_USER, pending)),
        ("eligibilities", _get(ELIGIBILITY_INSTANCES + CURRENT_USER)),
    ]


State = namedtuple("State", "activation assigned pending eligibility eligibilities")
State.__doc__ = """What Graph holds for the signed-in user, one role and scope.

activation: the user's Activated schedule (dict) or None; assigned: an Assigned schedule (the
user's or a group's) giving the role already, or None; pending: the user's pending
selfActivate/selfExtend requests for it; eligibility: the eligibility instance the activation
would use (or None); eligibilities: every eligibility instance of the user (for messages).
"""


def _scope_matches(item, scope_id, app_scope_id):
    return (item.get("directoryScopeId") or "/").lower() == (scope_id or "/").lower() and (
        (item.get("appScopeId") or None) == (app_scope_id or None)
    )


def _same(item, role_id, scope_id, app_scope_id):
    return (item.get("roleDefinitionId") or "").lower() == role_id.lower() and _scope_matches(
        item, scope_id, app_scope_id
    )


def state_from_answers(user_id, role_id, scope_id, app_scope_id, schedules, requests, eligibilities):
    """Sort the filterByCurrentUser answers into a State (pure)."""
    activation = assigned = None
    for item in schedules or []:
        if not _same(item, role_id, scope_id, app_scope_id) or item.get("status") in REFUSED:
            continue
        if (item.get("assignmentType") or "Assigned") == "Activated":
            if (item.get("principalId") or "").lower() == user_id.lower():
                activation = activation or item
        else:
            assigned = assigned or item
    pending = [
        r
        for r in requests or []
        if _same(r, role_id, scope_id, app_scope_id)
        and (r.get("principalId") or "").lower() == user_id.lower()
        and r.get("status") in (APPROVAL | PROVISIONING)
        and (r.get("action") or "").lower() in ("selfactivate", "selfextend", "selfrenew")
    ]
    pending.sort(key=lambda r: r.get("createdDateTime") or "")
    eligibility = next((e for e in eligibilities or [] if _same(e, role_id, scope_id, app_scope_id)), None)
    return State(activation, assigned, pending, eligibility, list(eligibilities or []))


def window_of(schedule):
    return sched.window_from_schedule_info((schedule or {}).get("scheduleInfo"))


# ------------------------------------------------------------------ planning (pure)

Desired = namedtuple("Desired", "state duration min_remaining justification ticket_number ticket_system")
Desired.__new__.__defaults__ = (None,) * 5
Desired.__doc__ = "state active|inactive; duration and min_remaining are timedeltas."

Plan = namedtuple("Plan", "action reasons body cancel_ids status fallback")
Plan.__doc__ = """One decision.

action: none | activate | extend | deactivate | cancel. body: the request to POST (None for
none/cancel). cancel_ids: requests to cancel. status: our status when nothing is sent
(active, pending_approval, provisioning, inactive, assigned). fallback: for extend, the
selfActivate body used when Graph will not extend in place (re-activation).
"""


def schedule_info_now(now, duration):
    return {
        "startDateTime": sched.format_datetime(now),
        "expiration": {"type": sched.AFTER_DURATION, "duration": sched.format_duration(duration)},
    }


def request_body(action, target, desired=None, now=None):
    """A self* request for ``target`` (a _pim.Target whose principal is the signed-in user)."""
    desired = desired or Desired("active")
    info = schedule_info_now(now, desired.duration) if action in ("selfActivate", "selfExtend") else None
    keep = action != "selfDeactivate"
    return _pim.request_body(
        "assignment",
        action,
        target,
        info,
        justification=desired.justification if keep else None,
        ticket_number=desired.ticket_number if keep else None,
        ticket_system=desired.ticket_system if keep else None,
    )


def remaining(window, now):
    """Time left of an activation (None when it does not end)."""
    if window.end is None:
        return None
    return window.end - now


def plan(desired, state, target, now):
    """Desired vs State → Plan. Pure: ``now`` is passed in."""
    role = "'%s'" % target.role.display_name
    pending = state.pending
    if desired.state == "inactive":
        if state.activation is not None:
            body = request_body("selfDeactivate", target, desired, now)
            return Plan("deactivate", ["role %s is active and must be inactive" % role], body, [], None, None)
        if pending:
            reason = "a pending activation request (%s) exists and must not go ahead: cancel it" % ", ".join(
                "%s %s" % (r.get("status"), r.get("id")) for r in pending
            )
            return Plan("cancel", [reason], None, [r["id"] for r in pending], None, None)
        if state.assigned is not None:
            return Plan(
                "none",
                [
                    "role %s is held through an active assignment, not an activation; deactivation does not apply "
                    "(an administrator removes it with entra.pim.pim_role_assignment)" % role
                ],
                None,
                [],
                "assigned",
                None,
            )
        return Plan("none", ["role %s is not active" % role], None, [], "inactive", None)

    if state.assigned is not None and state.activation is None:
        return Plan(
            "none",
            ["role %s is already active through an assignment; nothing to activate" % role],
            None,
            [],
            "assigned",
            None,
        )
    if state.activation is not None:
        window = window_of(state.activation)
        if window.start is not None and window.start > now:
            return Plan(
                "none",
                ["an activation of role %s starts at %s" % (role, sched.format_datetime(window.start))],
                None,
                [],
                "provisioning",
                None,
            )
        left = remaining(window, now)
        extension = [r for r in pending if (r.get("action") or "").lower() in ("selfextend", "selfrenew")]
        if left is None or left >= desired.min_remaining:
            what = "does not expire" if left is None else "has %s left" % sched.format_duration(left)
            return Plan(
                "none",
                [
                    "role %s is active and %s (min_remaining %s)"
                    % (role, what, sched.format_duration(desired.min_remaining))
                ],
                None,
                [],
                "active",
                None,
            )
        if extension:
            return Plan(
                "none",
                [
                    "role %s has %s left and an extension request (%s %s) is already waiting for a decision"
                    % (
                        role,
                        sched.format_duration(max(left, timedelta(0))),
                        extension[0].get("status"),
                        extension[0].get("id"),
                    )
                ],
                None,
                [],
                "pending_approval",
                None,
            )
        body = request_body("selfExtend", target, desired, now)
        fallback = request_body("selfActivate", target, desired, now)
        return Plan(
            "extend",
            [
                "role %s has only %s left, less than min_remaining %s: extend it by %s"
                % (
                    role,
                    sched.format_duration(max(left, timedelta(0))),
                    sched.format_duration(desired.min_remaining),
                    sched.format_duration(desired.duration),
                )
            ],
            body,
            [],
            None,
            fallback,
        )
    if pending:
        first = pending[0]
        status = "pending_approval" if first.get("status") in APPROVAL else "provisioning"
        return Plan(
            "none",
            ["an activation request for role %s is already %s (%s)" % (role, first.get("status"), first.get("id"))],
            None,
            [],
            status,
            None,
        )
    body = request_body("selfActivate", target, desired, now)
    return Plan(
        "activate",
        ["role %s is not active: activate it for %s" % (role, sched.format_duration(desired.duration))],
        body,
        [],
        None,
        None,
    )


def status_of_request(request):
    """Graph request status → our status word."""
    status = (request or {}).get("status")
    if status in IN_EFFECT:
        return "active"
    if status in APPROVAL:
        return "pending_approval"
    if status in REFUSED:
        return status.lower()
    return "provisioning"


def deactivation_possible_at(activation):
    """When Graph allows selfDeactivate: the activation's start + 5 minutes (notes §6.2), or None."""
    start = window_of(activation).start
    return start + MIN_ACTIVE if start is not None else None


# ------------------------------------------------------------------ waiting


def wait_for(poll, done, timeout, sleep=time.sleep, monotonic=time.monotonic, intervals=POLL_INTERVALS):
    """Call ``poll()`` until ``done(value)`` or ``timeout`` seconds passed. Returns (value, finished).

    Polls once even with timeout 0. The loop is bounded twice: by the clock and by a count
    derived from the smallest interval, so a broken clock cannot make it spin forever.
    """
    deadline = monotonic() + max(0, timeout)
    max_polls = int(max(0, timeout) / max(min(intervals), 0.001)) + 2
    value = None
    for n in range(max_polls):
        value = poll()
        if done(value):
            return value, True
        left = deadline - monotonic()
        if left <= 0:
            break
        sleep(min(intervals[min(n, len(intervals) - 1)], left))
    return value, False


def request_reader(client, request_id):
    """A ``poll()`` that reads one of the user's requests by id (filterByCurrentUser: no admin read needed)."""
    flt = {"$filter": "id eq %s" % odata_quote(request_id)}

    def poll():
        items = client.list(ASSIGNMENT_REQUESTS + CURRENT_USER, params=flt)
        return items[0] if items else None

    return poll


def settled(request, through_approval=False):
    """Is a request where waiting stops? In effect, refused, or (unless waiting through it) pending approval."""
    status = (request or {}).get("status")
    if status is None:
        return False
    if status in IN_EFFECT or status in REFUSED:
        return True
    return status in APPROVAL and not through_approval


# ------------------------------------------------------------------ explaining errors

_CLAIMS_RE = re.compile(r"claims=([^\s\"']+)")


def required_auth_context(err, policy=None):
    """The authentication context id Graph asked for (from its claims challenge), else the policy's."""
    text = (err.graph_message or "") + " " + (err.msg or "")
    match = _CLAIMS_RE.search(text)
    if match:
        try:
            challenge = json.loads(unquote(match.group(1)))
            value = ((challenge.get("access_token") or {}).get("acrs") or {}).get("value")
            if value:
                return value
        except (ValueError, AttributeError):
            pass
    quoted = re.search(r"authentication context '([^']+)'", text)
    if quoted:
        return quoted.group(1)
    return policy.auth_context if policy is not None else None


def claims_challenge(claim_value):
    return json.dumps({"access_token": {"acrs": {"essential": True, "value": claim_value}}}, separators=(",", ":"))


def describe_eligibilities(eligibilities, role_name_of):
    """Eligibility instances → "'User Administrator' at '/', ..." (sorted, de-duplicated) or "none"."""
    names = sorted(
        {
            "'%s' at '%s'" % (role_name_of(e.get("roleDefinitionId")), e.get("directoryScopeId") or "/")
            for e in eligibilities or []
        }
    )
    return ", ".join(names) if names else "none"


def explain_rule(name, role_name, scope, policy, rules, request, eligible_text, claims=None):
    """One failed rule of an activation, in our words (notes §6.2)."""
    role = "role '%s'" % role_name
    if name == "EligibilityRule":
        return "EligibilityRule: you are not eligible for '%s' at scope '%s'; eligible roles: %s." % (
            role_name,
            scope,
            eligible_text,
        )
    if name == "MfaRule":
        amr = (claims or {}).get("amr")
        has = " (the token's amr claim is %s)" % json.dumps(amr) if amr is not None else ""
        return (
            "MfaRule: %s requires multi-factor authentication to activate, and the access token carries no MFA "
            "claim%s. Sign in again completing an MFA prompt and use that token: for example 'az logout', then "
            "'az login --scope https://graph.microsoft.com/.default' (answer the MFA challenge), then "
            "auth_method=azure_cli or access_token from 'az account get-access-token --resource-type ms-graph'. "
            "username_password sign-ins never carry MFA." % (role, has)
        )
    if name == "ExpirationRule":
        asked = ((request or {}).get("scheduleInfo") or {}).get("expiration") or {}
        asked_text = asked.get("duration") or asked.get("endDateTime") or "no end"
        if policy is not None and policy.max_duration is not None:
            return (
                "ExpirationRule: %s allows activations of at most %s; the request asked for %s. Set duration to "
                "%s or less (or leave it out to get the maximum)."
                % (
                    role,
                    sched.format_duration(policy.max_duration),
                    asked_text,
                    sched.format_duration(policy.max_duration),
                )
            )
        return "ExpirationRule: %s limits how long an activation may last; the request asked for %s." % (
            role,
            asked_text,
        )
    if name == "JustificationRule":
        return "JustificationRule: %s requires a justification to activate; set justification." % role
    if name == "TicketingRule":
        return "TicketingRule: %s requires ticket information to activate; set ticket_number and ticket_system." % role
    return _pim.explain_rule(name, role_name, rules, request, "Assignment")


def explain_error(err, target, request, policy=None, rules=None, eligible_text="none", claims=None, activation=None):
    """A GraphError from an activation request → the same error with our message (keeps codes and ids)."""
    role_name = target.role.display_name or target.role.id
    scope = target.directory_scope_id or "/"
    code = err.code or ""
    names = _pim.failed_rules(err.graph_message)
    if names:
        msg = " ".join(explain_rule(n, role_name, scope, policy, rules, request, eligible_text, claims) for n in names)
    elif code == "RoleAssignmentRequestAcrsValidationFailed" or "acrs" in (err.graph_message or ""):
        value = required_auth_context(err, policy)
        if value:
            msg = (
                "AuthenticationContextRule: role '%s' requires the Conditional Access authentication context '%s' "
                "to activate, and the access token has no acrs claim with '%s'. Sign in again so that Conditional "
                "Access applies that context, answering the claims challenge %s; for example with Azure CLI 2.61 "
                "or later: az login --scope https://graph.microsoft.com/.default --claims-challenge "
                "<that challenge, base64-encoded>, then pass the new token (auth_method=azure_cli or access_token)."
                % (role_name, value, value, claims_challenge(value))
            )
        else:
            msg = (
                "AuthenticationContextRule: role '%s' requires a Conditional Access authentication context to "
                "activate that the access token does not carry; sign in again satisfying it." % role_name
            )
    elif code == "ActiveDurationTooShort":
        when = deactivation_possible_at(activation) if activation else None
        msg = (
            "ActiveDurationTooShort: Graph does not deactivate role '%s' within 5 minutes of its activation; "
            "%s, or set wait=true to wait for it."
            % (
                role_name,
                "deactivation becomes possible at %s" % sched.format_datetime(when) if when else "try again later",
            )
        )
    elif code == "PendingRoleAssignmentRequest":
        msg = (
            "PendingRoleAssignmentRequest: an activation request for role '%s' at scope '%s' is already waiting "
            "(for approval or to start); wait for it, or cancel it with state=inactive." % (role_name, scope)
        )
    elif code == "RoleAssignmentExists":
        msg = "RoleAssignmentExists: role '%s' is already active for you at scope '%s'." % (role_name, scope)
    elif code == "RoleAssignmentDoesNotExist":
        msg = "RoleAssignmentDoesNotExist: role '%s' has no activation of yours at scope '%s' to change." % (
            role_name,
            scope,
        )
    else:
        return _pim.explain_graph_error(err, "assignment", target, request, rules)
    return GraphError(
        msg,
        status=err.status,
        code=err.code,
        graph_message=err.graph_message,
        request_id=err.request_id,
        client_request_id=err.client_request_id,
        method=err.method,
        url=err.url,
        attempts=err.attempts,
        failed_rules=names or None,
    )


# ------------------------------------------------------------------ results


def describe_activation(target, schedule, eligibility=None, status=None):
    """An activation schedule (or a request's view) → the dict the module returns."""
    window = window_of(schedule)
    out = {
        "id": (schedule or {}).get("id"),
        "principal_id": target.principal.id,
        "principal_name": target.principal.display_name,
        "role_definition_id": target.role.id,
        "role_name": target.role.display_name,
        "directory_scope_id": target.directory_scope_id or "/",
        "app_scope_id": target.app_scope_id,
        "assignment_type": (schedule or {}).get("assignmentType") or "Activated",
        "member_type": (schedule or {}).get("memberType") or "Direct",
        "status": status or (schedule or {}).get("status"),
        "eligibility_id": (eligibility or {}).get("roleEligibilityScheduleId") or (eligibility or {}).get("id"),
    }
    out.update(sched.describe(window))
    return out
