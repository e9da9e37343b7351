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

``run(module)`` at the end is the whole task of the module, built on the pure parts above.
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
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

from ansible_collections.entra.pim.plugins.module_utils import _pim, _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError, GraphError, InputError, PimError
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote, snake_case_keys
from ansible_collections.entra.pim.plugins.module_utils._resolve import require_guid

ASSIGNMENT_SCHEDULES = _pim.KINDS["assignment"].schedules
ASSIGNMENT_REQUESTS = _pim.KINDS["assignment"].requests
ELIGIBILITY_INSTANCES = _pim.KINDS["eligibility"].instances
CURRENT_USER = _pim.CURRENT_USER

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


def policy_from_rules(rules):
    """The role's rules (Graph dicts) → Policy, or None when the rules could not be read."""
    if rules is None:
        return None
    expiration = _pim.find_rule(rules, "Expiration_EndUser_Assignment") or {}
    enabled = {
        str(e).lower() for e in (_pim.find_rule(rules, "Enablement_EndUser_Assignment") or {}).get("enabledRules") or []
    }
    approval = (_pim.find_rule(rules, "Approval_EndUser_Assignment") or {}).get("setting") or {}
    context = _pim.find_rule(rules, "AuthenticationContext_EndUser_Assignment") or {}
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
        ("schedules", _resolve.get_request(ASSIGNMENT_SCHEDULES + CURRENT_USER, role_filter)),
        ("requests", _resolve.get_request(ASSIGNMENT_REQUESTS + CURRENT_USER, pending)),
        ("eligibilities", _resolve.get_request(ELIGIBILITY_INSTANCES + CURRENT_USER)),
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


def eligibility_refusal(state, target, now, role_name_of):
    """The EligibilityRule message when the signed-in user holds no eligibility in effect for the role and
    scope (directly or through a group: filterByCurrentUser covers both), else None. Pure."""
    role, scope = target.role, target.directory_scope_id or "/"
    matching = [e for e in state.eligibilities if _same(e, role.id, scope, target.app_scope_id)]
    if any((sched.window_from_instance(e).start or now) <= now for e in matching):
        return None
    eligible = describe_eligibilities(state.eligibilities, role_name_of)
    if matching:
        starts = min(sched.window_from_instance(e).start for e in matching)
        return (
            "EligibilityRule: your eligibility for role '%s' at scope '%s' starts at %s, so it cannot be activated "
            "yet and nothing was sent. Run again after it starts."
            % (role.display_name, scope, sched.format_datetime(starts))
        )
    return (
        "EligibilityRule: you (%s) are not eligible for role '%s' at scope '%s', so nothing was sent; you are "
        "eligible for: %s. Activate one of those, or ask an administrator for an eligibility "
        "(entra.pim.pim_role_eligibility)."
        % (target.principal.display_name or target.principal.id, role.display_name, scope, eligible)
    )


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
    return _pim.reworded(err, msg, attempts=err.attempts, failed_rules=names or None)


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


def request_view(target, request, eligibility=None):
    """A request (Graph's, or one planned and not sent) → the activation it asks for, as the module shows it.

    Its window is what Graph applies to the request's ``scheduleInfo`` (a past start counts from
    when it is processed); ``status`` is the request's (e.g. PendingApproval) or Provisioned.
    """
    info = (request or {}).get("scheduleInfo")
    window = sched.applied_window(info, sched.parse_graph_datetime(info.get("startDateTime"))) if info else None
    schedule = dict(request, id=request.get("targetScheduleId") or request.get("id"), assignmentType="Activated")
    out = describe_activation(target, schedule, eligibility, request.get("status") or "Provisioned")
    if window is not None:
        out.update(sched.describe(window))
    if request.get("id"):
        out["request_id"] = request.get("id")
    return out


def diff_view(target, activation, request, eligibility=None):
    """What the diff shows for one state: the activation, else a request still waiting to become one, else {}.

    An activation with a request waiting for an approver (an extension) shows both.
    """
    waiting = request if request and request.get("status") in (APPROVAL | PROVISIONING) else None
    if activation:
        if waiting is not None and waiting.get("status") in APPROVAL:
            return dict(activation, pending_request=request_view(target, waiting, eligibility))
        return activation
    if waiting is not None:
        return request_view(target, waiting, eligibility)
    return {}


# ------------------------------------------------------------------ the task (reads and writes)
#
# pim_role_activation's run: read, plan (above, pure), then send, confirm and wait. Only this
# part talks to Graph or the clock.

# Tests replace these to run the wait loops without waiting.
SLEEP = time.sleep
MONOTONIC = time.monotonic


def _now():
    return datetime.now(timezone.utc)


class Task:
    """One run of the module: the reads, the decision and the writes, with what they found."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.client = module.client
        self.resolver = _resolve.Resolver(self.client)
        self.claims = {}
        self.target = None
        self.state = None
        self.rules = None
        self.policy = None
        self.policy_read = False
        self.request = None  # the (last view of the) request this run sent or waited on, or would send in check mode

    # -------------------------------------------------------------- reading

    def read(self, now):
        p = self.p
        self.claims = self.client.token_claims()
        require_delegated(self.claims, self.client.auth_method)
        user_id, user_name = signed_in_user(self.claims)
        scope_id = _resolve.directory_scope_local(p["directory_scope"])

        named = []
        if not self.resolver.roles_cached():
            named.append(("roles", self.resolver.role_list_request()))
        named.extend(read_requests())
        if scope_id is None:
            named.append(("scope", _resolve.directory_scope_request(p["directory_scope"])))
        found = {}
        answers = _resolve.send_all(self.client, [req for _name, req in named])
        for (name, _req), answer in zip(named, answers, strict=True):
            if isinstance(answer, GraphError):
                if name == "scope":
                    raise _resolve.directory_scope_error(p["directory_scope"], answer)
                raise answer
            found[name] = _resolve.follow_pages(self.client, answer)
        if "roles" in found:
            self.resolver.load_roles(found["roles"])
        if "scope" in found:
            scope_id = _resolve.directory_scope_from_answer(p["directory_scope"], found["scope"])
        role = self.resolver.role(p["role"])
        principal = _resolve.Principal(user_id, "user", user_name, self.claims.get("upn"), None)
        self.target = _pim.Target(principal, role, scope_id, None)
        self.state = state_from_answers(
            user_id, role.id, scope_id, None, found["schedules"], found["requests"], found["eligibilities"]
        )
        return self.state

    def reread(self):
        lists = _pim.read_all(self.client, [req for _name, req in read_requests(self.target.role.id)])
        self.state = state_from_answers(
            self.target.principal.id, self.target.role.id, self.target.directory_scope_id, None, *lists
        )
        return self.state

    def read_policy(self):
        if not self.policy_read:
            self.policy_read = True
            self.rules = _pim.read_policy_rules(self.client, self.target.role.id)
            self.policy = policy_from_rules(self.rules)
        return self.policy

    # -------------------------------------------------------------- explaining

    def role_name_of(self, role_id):
        role = self.resolver.role_by_id(role_id)
        return role.display_name if role else role_id

    def explain(self, err, body):
        if (
            _pim.failed_rules(err.graph_message)
            or "acrs" in (err.graph_message or "")
            or err.code
            in (
                "RoleAssignmentRequestPolicyValidationFailed",
                "RoleAssignmentRequestAcrsValidationFailed",
            )
        ):
            self.read_policy()
        eligible = describe_eligibilities((self.state.eligibilities if self.state else []), self.role_name_of)
        return explain_error(
            err,
            self.target,
            body,
            policy=self.policy,
            rules=self.rules,
            eligible_text=eligible,
            claims=self.claims,
            activation=self.state.activation if self.state else None,
        )

    # -------------------------------------------------------------- writing

    def post(self, body, confirm=None):
        """POST a request; a lost answer or an 'already so' answer is confirmed by re-reading (notes §6.2)."""
        wrapper = _pim.Plan("create", [], None, None, body, [])
        try:
            return _pim.execute(self.client, "assignment", wrapper, confirm=confirm, sleep=SLEEP)
        except GraphError as err:
            raise self.explain(err, body)

    def validate(self, body):
        """Ask Graph with isValidationOnly (nothing is persisted); returns its answer, raises explained."""
        try:
            return self.client.post(ASSIGNMENT_REQUESTS, dict(body, isValidationOnly=True))
        except GraphError as err:
            raise self.explain(err, body)

    def cancel(self, request_id):
        try:
            self.client.post("%s/%s/cancel" % (ASSIGNMENT_REQUESTS, request_id), {}, idempotent=True)
        except GraphError as err:
            # Already decided or gone: confirm from the pending list instead of failing.
            pending = {r.get("id") for r in self.reread().pending}
            if request_id in pending:
                raise self.explain(err, None)

    def confirm_activation(self):
        state = self.reread()
        return state.activation is not None or bool(state.pending)

    def confirm_deactivation(self):
        return self.reread().activation is None

    def wait_request(self, request, through_approval):
        """Poll the request until it settles (or wait_timeout). Returns the last view of it."""
        if not request or not request.get("id"):
            return request, True
        if settled(request, through_approval):
            return request, True
        last, finished = wait_for(
            request_reader(self.client, request["id"]),
            lambda r: settled(r, through_approval),
            self.p["wait_timeout"],
            sleep=SLEEP,
            monotonic=MONOTONIC,
        )
        return last or request, finished

    def deactivate(self, body):
        """selfDeactivate; within 5 minutes of the start, wait (wait=true) or explain when it becomes possible."""

        def attempt():
            try:
                return ("done", self.post(body, confirm=self.confirm_deactivation))
            except GraphError as err:
                if err.code == "ActiveDurationTooShort":
                    return ("too_short", err)
                raise

        first = attempt()
        if first[0] == "done" or not self.p["wait"]:
            if first[0] == "too_short":
                raise first[1]
            return first[1]
        last, finished = wait_for(
            attempt, lambda v: v[0] == "done", self.p["wait_timeout"], sleep=SLEEP, monotonic=MONOTONIC
        )
        if not finished:
            when = deactivation_possible_at(self.state.activation)
            raise PimError(
                "Waited %d seconds (wait_timeout) but Graph still refuses to deactivate role '%s' "
                "(ActiveDurationTooShort); it becomes possible at %s."
                % (self.p["wait_timeout"], self.target.role.display_name, sched.format_datetime(when) or "later"),
                error_code="ActiveDurationTooShort",
            )
        return last[1]


def _window_result(request=None, schedule=None):
    if request and request.get("scheduleInfo"):
        window = sched.window_from_schedule_info(request["scheduleInfo"])
    else:
        window = window_of(schedule) if schedule else sched.Window(None, None)
    return sched.format_datetime(window.start), sched.format_datetime(window.end)


def run(module):
    p = module.params
    now = _now()
    # Bad input fails before any request.
    if p["duration"] is not None:
        asked = sched.parse_duration(p["duration"], "duration")
        sched.end_after(now, asked, "duration", p["duration"])
        if asked < MIN_ACTIVE:
            # Graph will not end an activation younger than 5 minutes (ActiveDurationTooShort, docs/graph-behaviour.md §3):
            # a shorter one could be neither deactivated nor left to run its course as asked.
            raise InputError(
                "duration '%s' is shorter than %s, the least an activation lasts in Entra (Graph refuses to end "
                "an activation within 5 minutes of its start, ActiveDurationTooShort); expected PT5M or longer, "
                "such as PT1H" % (p["duration"], sched.format_duration(MIN_ACTIVE)),
                duration=p["duration"],
            )
    min_remaining = sched.parse_duration(p["min_remaining"], "min_remaining")
    if p["wait_timeout"] < 0:
        raise InputError(
            "wait_timeout %d is negative; give the number of seconds to wait (0 or more)" % p["wait_timeout"]
        )
    if p["state"] == "inactive" and (p["duration"] or p["require_active"]):
        raise InputError("duration and require_active apply to state=active only")

    task = Task(module)
    state = task.read(now)
    target = task.target

    # A first plan decides whether the policy is needed (for the default duration).
    duration, source = activation_duration(p["duration"], None)
    desired = Desired(p["state"], duration, min_remaining, p["justification"], p["ticket_number"], p["ticket_system"])
    decision = plan(desired, state, target, now)
    if decision.action in ("activate", "extend") and not p["duration"]:
        duration, source = activation_duration(None, task.read_policy())
        if source == "fallback":
            module.warn(
                "Could not read the PIM policy of role '%s' for its longest activation; asking for %s. Set duration, "
                "or grant RoleManagementPolicy.Read.Directory."
                % (target.role.display_name, sched.format_duration(duration))
            )
        desired = desired._replace(duration=duration)
        decision = plan(desired, state, target, now)
    elif decision.action in ("activate", "extend"):
        # A duration above the role's maximum is refused here, before anything is sent and also in check
        # mode (notes §6.2 ExpirationRule); the same check as the admin modules', in activation words.
        policy = task.read_policy()
        if _pim.expiration_refusal("assignment", target.role.display_name, task.rules, decision.body, now):
            raise InputError(
                explain_rule(
                    "ExpirationRule",
                    target.role.display_name,
                    target.directory_scope_id,
                    policy,
                    task.rules,
                    decision.body,
                    "",
                ),
                duration=p["duration"],
            )

    if decision.action in ("activate", "extend"):
        # What Graph would refuse and the module can know: no eligibility (EligibilityRule), a missing
        # justification or ticket (Enablement_EndUser_Assignment): refused before any request, in check mode too.
        refusal = eligibility_refusal(state, target, now, task.role_name_of) if decision.action == "activate" else None
        refusal = refusal or _pim.enablement_message("assignment", target.role.display_name, task.rules, decision.body)
        if refusal:
            raise InputError(refusal)

    before = describe_activation(target, state.activation, state.eligibility) if state.activation else None
    result = dict(
        changed=decision.action != "none",
        action_taken="none",
        status=decision.status,
        changes=decision.reasons,
        role_name=target.role.display_name,
        directory_scope_id=target.directory_scope_id,
        duration=None,
        activation=before,
    )
    result["start"], result["end"] = _window_result(schedule=state.activation)
    if decision.action in ("activate", "extend"):
        result["duration"] = sched.format_duration(duration)
        result["duration_source"] = source
    if state.pending:
        result["request"] = snake_case_keys(state.pending[0])

    if decision.action == "none":
        _finish_pending(task, result, state)
    elif decision.action == "activate":
        _activate(task, result, decision.body)
    elif decision.action == "extend":
        _extend(task, result, decision)
    elif decision.action == "deactivate":
        _deactivate(task, result, decision.body)
    else:  # cancel
        result["action_taken"] = "canceled"
        result["status"] = "inactive"
        if not module.check_mode:
            for request_id in decision.cancel_ids:
                task.cancel(request_id)

    if module._diff:
        # The same views before and after, in check mode too (the check-mode branches record the
        # request they would send), so a change is never an empty diff (issue 14 point 18).
        pending_before = state.pending[0] if state.pending else None
        after_request = task.request
        if after_request is None and decision.action == "none":
            after_request = pending_before
        result["diff"] = {
            "before": diff_view(target, before, pending_before, state.eligibility),
            "after": diff_view(target, result.get("activation"), after_request, state.eligibility),
        }
    if p["require_active"] and result["status"] not in ("active", "assigned"):
        raise PimError(_not_active_message(task, result), status_word=result["status"], request=result.get("request"))
    return result


def _finish_pending(task, result, state):
    """Nothing to send; with wait + require_active, wait for a pending request to be decided."""
    p = task.p
    if not (state.pending and p["wait"] and p["require_active"]) or task.module.check_mode:
        return
    request, _finished = task.wait_request(state.pending[0], through_approval=True)
    _apply_request(task, result, request)


def _apply_request(task, result, request):
    """Put a (possibly re-read) request into the result: status, window, activation."""
    if not request:
        return
    task.request = request
    result["request"] = snake_case_keys(request)
    result["status"] = status_of_request(request)
    if result["status"] in ("active", "provisioning", "pending_approval"):
        result["start"], result["end"] = _window_result(request=request)
    if result["status"] == "active":
        schedule = dict(request, id=request.get("targetScheduleId") or request.get("id"), assignmentType="Activated")
        result["activation"] = describe_activation(task.target, schedule, task.state.eligibility, "Provisioned")


def _activate(task, result, body):
    module, p = task.module, task.p
    result["action_taken"] = "activated"
    if module.check_mode:
        task.validate(body)
        policy = task.read_policy()
        result["status"] = "pending_approval" if policy is not None and policy.require_approval else "active"
        _planned(task, result, body, "PendingApproval" if result["status"] == "pending_approval" else "Provisioned")
        return
    outcome = task.post(body, confirm=task.confirm_activation)
    request = outcome.request
    if request is None:  # confirmed by a re-read after a lost answer
        state = task.state
        request = state.pending[0] if state.pending else None
        if request is None and state.activation is not None:
            result["status"] = "active"
            result["activation"] = describe_activation(task.target, state.activation, state.eligibility)
            result["start"], result["end"] = _window_result(schedule=state.activation)
            return
    if p["wait"]:
        request, finished = task.wait_request(request, through_approval=p["require_active"])
        if not finished:
            _apply_request(task, result, request)
            raise PimError(_not_active_message(task, result, waited=True), status_word=result["status"])
    _apply_request(task, result, request)
    if result["status"] in ("denied", "failed", "canceled", "revoked"):
        raise PimError(_not_active_message(task, result), status_word=result["status"], request=result.get("request"))


def _extend(task, result, decision):
    module, p = task.module, task.p
    if module.check_mode:
        result["action_taken"] = "extended"
        try:
            answer = task.validate(decision.body) or {}
        except GraphError as err:
            if err.details.get("failed_rules"):
                raise
            result["action_taken"] = "reactivated"
            result["extend_refused"] = err.msg
            _planned(task, result, decision.fallback, "Provisioned")
            return
        if answer.get("status") in APPROVAL:
            # The same decision the real run makes (see below), without sending anything.
            policy = task.read_policy()
            if policy is None or policy.require_approval:
                result["action_taken"] = "extension_requested"
                result["status"] = "pending_approval"
                _planned(task, result, decision.body, answer["status"], keep_activation=True)
                return
            result["action_taken"] = "reactivated"
            result["extend_refused"] = "Graph would send the extension to an administrator (%s)" % answer["status"]
            _planned(task, result, decision.fallback, "Provisioned")
            return
        _planned(task, result, decision.body, "Provisioned")
        return
    refused = None
    request = None
    try:
        request = task.post(decision.body).request
    except GraphError as err:
        if err.details.get("failed_rules") or err.code == "RoleAssignmentRequestAcrsValidationFailed":
            raise
        refused = err.msg
    if request is not None:
        status = request.get("status")
        if status in IN_EFFECT or status in PROVISIONING:
            result["action_taken"] = "extended"
            if p["wait"]:
                request, _finished = task.wait_request(request, through_approval=False)
            _apply_request(task, result, request)
            return
        if status in APPROVAL:
            policy = task.read_policy()
            if policy is None or policy.require_approval:
                # Ending the activation now would leave the user without the role until an approver decides.
                result["action_taken"] = "extension_requested"
                task.request = request
                result["request"] = snake_case_keys(request)
                result["status"] = "pending_approval"
                if p["wait"] and p["require_active"]:
                    request, _finished = task.wait_request(request, through_approval=True)
                    if request and request.get("status") in IN_EFFECT:
                        task.reread()
                        task.request = request
                        result["request"] = snake_case_keys(request)
                        result["status"] = "active"
                        result["activation"] = describe_activation(
                            task.target, task.state.activation, task.state.eligibility
                        )
                        result["start"], result["end"] = _window_result(schedule=task.state.activation)
                return
            task.cancel(request["id"])
            refused = "Graph sent the extension (request %s) to an administrator for a decision (%s)" % (
                request.get("id"),
                status,
            )
        else:
            refused = "Graph answered the extension request with status %s" % status
    # Fall back: end the activation and activate again for the full duration.
    result["action_taken"] = "reactivated"
    result["extend_refused"] = refused
    task.deactivate(request_body("selfDeactivate", task.target))
    fresh = request_body("selfActivate", task.target, Desired("active", *_desired_tail(decision)), _now())
    _activate(task, result, fresh)
    result["action_taken"] = "reactivated"


def _planned(task, result, body, status, keep_activation=False):
    """Check mode: the result shows what the request it would send will give (never sent)."""
    task.request = dict(body, status=status)
    if status in IN_EFFECT:
        result["activation"] = request_view(task.target, task.request, task.state.eligibility)
        result["activation"].pop("request_id", None)
        result["start"], result["end"] = result["activation"]["start"], result["activation"]["end"]
    elif not keep_activation:
        result["activation"] = None


def _desired_tail(decision):
    """(duration, min_remaining, justification, ticket_number, ticket_system) back from a planned body."""
    body = decision.fallback or decision.body
    duration = sched.parse_duration(body["scheduleInfo"]["expiration"]["duration"])
    ticket = body.get("ticketInfo") or {}
    return duration, None, body.get("justification"), ticket.get("ticketNumber"), ticket.get("ticketSystem")


def _deactivate(task, result, body):
    module = task.module
    result["action_taken"] = "deactivated"
    if module.check_mode:
        try:
            task.validate(body)
        except GraphError as err:
            if err.code != "ActiveDurationTooShort" or not task.p["wait"]:
                raise
            when = deactivation_possible_at(task.state.activation)
            result["changes"] = result["changes"] + [
                "would wait until %s to deactivate (5 minutes after activation)" % sched.format_datetime(when)
            ]
        result["status"] = "inactive"
        result["activation"] = None
        return
    outcome = task.deactivate(body)
    if outcome is not None and outcome.request:
        result["request"] = snake_case_keys(outcome.request)
    result["status"] = "inactive"
    result["activation"] = None
    result["start"] = result["end"] = None


def _not_active_message(task, result, waited=False):
    role = task.target.role.display_name
    request = result.get("request") or {}
    rid = request.get("id")
    status = result["status"]
    if waited:
        return (
            "Waited %d seconds (wait_timeout) but the activation of role '%s' is not in effect: request %s is %s."
            % (task.p["wait_timeout"], role, rid, request.get("status") or status)
        )
    if status == "pending_approval":
        return (
            "The activation of role '%s' is waiting for approval (request %s), and require_active is true. The "
            "request stays pending; run again after an approver decides, or set wait=true to wait for the decision."
            % (role, rid)
        )
    if status in ("denied", "failed", "canceled", "revoked"):
        return "The activation request %s for role '%s' was %s%s." % (
            rid,
            role,
            status,
            " by an approver" if status == "denied" else "",
        )
    return "Role '%s' is not active (status %s), and require_active is true." % (role, status)
