# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PIM domain: read role schedules, plan changes (pure), build and send requests, explain errors.

Internal to the entra.pim collection: not a public API, may change without notice.

Generic over two kinds: ``eligibility`` (roleEligibilitySchedule*) and ``assignment``
(roleAssignmentSchedule*, ``assignmentType: Assigned`` only). The flow of every caller:

    target  = Target(principal, role, directory_scope_id, app_scope_id)       # resolved
    current = read_current(client, kind, target, include_pending=...)          # schedules, never requests
    p       = plan(kind, target, Desired(...), current, now)                    # pure
    outcome = execute(client, kind, p, confirm=...)                             # unless check mode

pim_role_eligibility and pim_role_assignment run exactly that through ``run_schedule_module``,
with hooks for what differs (an assignment also reports the principal's activation).

State comes from schedules (and instances for the info modules), never from requests: Graph
purges requests after about 45 days (notes §3.1, §8). Requests are read only to find a
*pending* one, which ``absent`` cancels instead of removing (notes §4).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import namedtuple
from datetime import datetime, timedelta, timezone

from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote, snake_case_keys
from ansible_collections.entra.pim.plugins.module_utils._resolve import (
    follow_pages,
    require_guid,
    send_all,
)

UTC = timezone.utc
BASE = "/roleManagement/directory"

Kind = namedtuple("Kind", "name schedules instances requests level noun nouns schedule_on_remove")
KINDS = {
    "eligibility": Kind(
        name="eligibility",
        schedules=BASE + "/roleEligibilitySchedules",
        instances=BASE + "/roleEligibilityScheduleInstances",
        requests=BASE + "/roleEligibilityScheduleRequests",
        level="Eligibility",
        noun="eligibility",
        nouns="eligible assignments",
        schedule_on_remove=False,
    ),
    "assignment": Kind(
        name="assignment",
        schedules=BASE + "/roleAssignmentSchedules",
        instances=BASE + "/roleAssignmentScheduleInstances",
        requests=BASE + "/roleAssignmentScheduleRequests",
        level="Assignment",
        noun="active assignment",
        nouns="active assignments",
        # Graph requires scheduleInfo on assignment requests (notes §3.1, §8).
        schedule_on_remove=True,
    ),
}

# Request statuses that mean "asked for, not yet in effect, still cancelable" (notes §4;
# terraform azuread's status-aware delete uses the same set).
PENDING_STATUSES = frozenset(
    {"PendingApproval", "PendingAdminDecision", "PendingProvisioning", "PendingScheduleCreation", "Granted"}
)
# Schedules in these states are history, not state.
_ENDED_STATUSES = frozenset({"Revoked", "Canceled", "Denied", "Failed", "Expired"})

ACTIONS = ("none", "create", "update", "remove", "cancel")
GRAPH_ACTIONS = {"create": "adminAssign", "update": "adminUpdate", "remove": "adminRemove"}

Target = namedtuple("Target", "principal role directory_scope_id app_scope_id")
Target.__doc__ = "principal: _resolve.Principal, role: _resolve.Role, scopes as Graph ids (app_scope_id may be None)."

Desired = namedtuple("Desired", "state schedule justification ticket_number ticket_system")
Desired.__new__.__defaults__ = (None, None, None, None)
Desired.__doc__ = "state present|absent; schedule: _schedule.Desired (present only)."

Current = namedtuple("Current", "schedule window pending inherited other")
Current.__doc__ = """What Graph holds for one target.

schedule: the Direct schedule this task manages (Graph dict) or None; window: its _schedule.Window.
pending: pending request dicts for the target (only when read with include_pending).
inherited: schedules the principal holds through a group (memberType Group/Inherited): reported, never touched.
other: same principal and role but not managed here (e.g. assignmentType Activated): reported, never touched.
"""

Plan = namedtuple("Plan", "action reasons before after body cancel_ids")
Plan.__doc__ = """The one structure that decides changed, the diff and the request.

action: none | create | update | remove | cancel; reasons: human sentences (why);
before/after: dicts for the diff (None when absent); body: the request body for
create/update/remove (None otherwise); cancel_ids: request ids to cancel.
"""


def empty_current():
    return Current(None, None, [], [], [])


# ------------------------------------------------------------------ resolving


def resolve_target(client, resolver, role, principal, principal_type="auto", directory_scope="/", app_scope=None):
    """Role, principal and scope → Target, with every lookup in ONE round trip.

    The role list (unless already cached for this run), the principal lookup(s) and an
    administrative unit's name go into one $batch; what the answers mean is decided by the
    same resolver code as the one-by-one path, so errors are identical.
    """
    scope_id = _resolve.directory_scope_local(directory_scope)
    app_scope_id = _resolve.app_scope(app_scope)
    named = []
    if not resolver.roles_cached():
        named.append(("roles", resolver.role_list_request()))
    pairs = resolver.principal_requests(principal, principal_type)
    named.extend(("principal", pair[1]) for pair in pairs)
    if scope_id is None:
        named.append(("scope", _resolve.directory_scope_request(directory_scope)))
    elif _resolve.unit_of_scope(scope_id):
        # An administrative unit given by id must exist: checked in the same round trip, before any write.
        named.append(("unit", _resolve.unit_request(_resolve.unit_of_scope(scope_id))))

    answers = send_all(client, [pair[1] for pair in named])
    principal_answers = []
    for (name, _req), answer in zip(named, answers, strict=True):
        if name == "unit":
            error = _resolve.unit_answer_error(directory_scope, answer)
            if error is not None:
                raise error
            continue
        if isinstance(answer, GraphError):
            if name == "scope":
                raise _resolve.directory_scope_error(directory_scope, answer)
            raise answer
        if name == "roles":
            resolver.load_roles(follow_pages(client, answer))
        elif name == "principal":
            principal_answers.append(answer)
        else:
            scope_id = _resolve.directory_scope_from_answer(directory_scope, follow_pages(client, answer))
    found_role = resolver.role(role)
    found_principal = resolver.principal_from_answers(
        principal, principal_type, [pair[0] for pair in pairs], principal_answers
    )
    return Target(found_principal, found_role, scope_id, app_scope_id)


def resolve_and_read(
    client,
    resolver,
    kind,
    role,
    principal,
    principal_type="auto",
    directory_scope="/",
    app_scope=None,
    include_pending=True,
    include_policy=False,
):
    """resolve_target + read_state, in ONE round trip when the task names role and principal by id.

    With a role id, a principal object id and a scope that needs no lookup, the role, the
    principal (getByIds) and the schedules (+ pending requests) all go into one $batch. If the
    ids turn out to be something else (a template id, an appId), the state is read again for
    the real ids, so the answer is always right. Otherwise: resolve_target, then read_state.
    ``include_policy`` adds the role's policy rules to the state read (no extra round trip).
    Returns (Target, Current, rules or None).
    """
    role_value = (role or "").strip()
    principal_value = (principal or "").strip()
    scope_id = _resolve.directory_scope_local(directory_scope)
    # Ids given, or names an earlier task resolved (directory cache): a guess, verified below.
    role_id = resolver.known_role_id(role_value)
    principal_id = resolver.known_principal_id(principal_value, principal_type)
    if not (role_id and principal_id and scope_id is not None):
        target = resolve_target(client, resolver, role, principal, principal_type, directory_scope, app_scope)
        return (target,) + read_state(client, kind, target, include_pending, include_policy)

    guess = Target(
        _resolve.Principal(principal_id, None, None, None, None),
        _resolve.Role(role_id, None, None, None),
        scope_id,
        _resolve.app_scope(app_scope),
    )
    named = []
    if resolver.role_needs_check():
        named.append(("role", resolver.role_request(role_id)))
    pairs = resolver.principal_requests(principal_value, principal_type)
    named.extend(("principal", pair[1]) for pair in pairs)
    if _resolve.unit_of_scope(scope_id):
        # An administrative unit given by id must exist: it rides in the state's $batch (no extra round trip).
        named.append(("unit", _resolve.unit_request(_resolve.unit_of_scope(scope_id))))
    named.extend(read_requests(kind, guess, include_pending=include_pending, include_policy=include_policy))
    answers = dict(schedules=None, requests=None, policy=None)
    principal_answers = []
    found_role = None
    for (name, _req), answer in zip(named, send_all(client, [pair[1] for pair in named]), strict=True):
        if name == "unit":
            error = _resolve.unit_answer_error(directory_scope, answer)
            if error is not None:
                raise error
            continue
        if name == "role":
            # Not found by id: it may be a template id, which the full list resolves.
            found_role = None if isinstance(answer, GraphError) and answer.status == 404 else answer
            continue
        if name == "policy":
            answers[name] = policy_answer(client, answer)
            continue
        if isinstance(answer, GraphError):
            raise answer
        if name == "principal":
            principal_answers.append(answer)
        else:
            answers[name] = follow_pages(client, answer)
    found_role = resolver.confirm_role(role_value, found_role)
    found_principal = resolver.principal_from_answers(
        principal_value, principal_type, [pair[0] for pair in pairs], principal_answers
    )
    target = guess._replace(principal=found_principal, role=found_role)
    if found_role.id.lower() != guess.role.id or found_principal.id.lower() != guess.principal.id:
        return (target,) + read_state(client, kind, target, include_pending, include_policy)
    return target, current_from_answers(kind, target, answers["schedules"], answers["requests"]), answers["policy"]


# ------------------------------------------------------------------ reading


def _filter_for(target):
    principal_id = require_guid(target.principal.id, "principal id")
    role_id = require_guid(target.role.id, "role id")
    return "principalId eq %s and roleDefinitionId eq %s" % (odata_quote(principal_id), odata_quote(role_id))


def read_requests(kind, target, include_pending=False, include_instances=False, include_policy=False):
    """The GETs that read one target's state, batch-ready: [(name, {method, path, params, url})].

    Names: "schedules" always, "instances", "requests" and "policy" (the role's policy rules)
    when asked. Filtered server-side by principal and role (ids validated, values quoted);
    scopes are matched locally.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    flt = _filter_for(target)
    out = [("schedules", kind.schedules)]
    if include_instances:
        out.append(("instances", kind.instances))
    if include_pending:
        out.append(("requests", kind.requests))
    named = [(name, _resolve.get_request(path, {"$filter": flt})) for name, path in out]
    if include_policy:
        named.append(("policy", policy_request(target.role.id)))
    return named


def policy_answer(client, answer):
    """A policy read's answer → the rules, or None when Graph refused it (no RoleManagementPolicy.Read)."""
    return None if isinstance(answer, GraphError) else rules_of(follow_pages(client, answer))


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def same_scope(item, target):
    """Graph item at the target's scope? directoryScopeId and appScopeId, case-insensitive ('' == None)."""
    return _lower(item.get("directoryScopeId") or "/") == _lower(target.directory_scope_id or "/") and _lower(
        item.get("appScopeId") or None
    ) == _lower(target.app_scope_id or None)


def current_from_answers(kind, target, schedules, requests=None):
    """Sort Graph's schedules (and requests) for one principal and role into a Current."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    managed, inherited, other = [], [], []
    for item in schedules or []:
        if item.get("status") in _ENDED_STATUSES or not same_scope(item, target):
            continue
        if _lower(item.get("principalId")) != _lower(target.principal.id) or _lower(
            item.get("roleDefinitionId")
        ) != _lower(target.role.id):
            continue
        member_type = item.get("memberType") or "Direct"
        if member_type != "Direct":
            inherited.append(item)
        elif kind.name == "assignment" and (item.get("assignmentType") or "Assigned") != "Assigned":
            other.append(item)
        else:
            managed.append(item)
    # Graph keeps one schedule per principal, role and scope; if it ever showed two, manage
    # the most recent and leave the rest visible.
    managed.sort(key=lambda s: s.get("createdDateTime") or "", reverse=True)
    schedule = managed[0] if managed else None
    other.extend(managed[1:])
    pending = [
        r
        for r in (requests or [])
        if r.get("status") in PENDING_STATUSES
        and same_scope(r, target)
        and (r.get("action") or "").lower() not in ("adminremove", "selfdeactivate")
    ]
    window = sched.window_from_schedule_info(schedule.get("scheduleInfo")) if schedule else None
    return Current(schedule, window, pending, inherited, other)


def read_all(client, requests):
    """Batch-ready GETs → their lists (every page), in order, in one round trip; an error answer raises."""
    lists = []
    for answer in send_all(client, requests):
        if isinstance(answer, GraphError):
            raise answer
        lists.append(follow_pages(client, answer))
    return lists


def read_current(client, kind, target, include_pending=False):
    """Read one target's state: schedules (+ pending requests in the same $batch). 1 round trip."""
    return read_state(client, kind, target, include_pending)[0]


def read_state(client, kind, target, include_pending=False, include_policy=False):
    """read_current, and the role's policy rules in the same round trip when asked: (Current, rules or None)."""
    named = read_requests(kind, target, include_pending=include_pending, include_policy=include_policy)
    found = {}
    for (name, _req), answer in zip(named, send_all(client, [pair[1] for pair in named]), strict=True):
        if name == "policy":
            found[name] = policy_answer(client, answer)
        elif isinstance(answer, GraphError):
            raise answer
        else:
            found[name] = follow_pages(client, answer)
    return current_from_answers(kind, target, found["schedules"], found.get("requests")), found.get("policy")


POLICY_ASSIGNMENTS = "/policies/roleManagementPolicyAssignments"


def policy_request(role_id, scope_id="/"):
    """The GET of the role's policy assignment with its rules expanded (notes §1.3), batch-ready."""
    flt = "scopeId eq %s and scopeType eq 'DirectoryRole' and roleDefinitionId eq %s" % (
        odata_quote(scope_id or "/"),
        odata_quote(require_guid(role_id, "role id")),
    )
    return _resolve.get_request(POLICY_ASSIGNMENTS, {"$filter": flt, "$expand": "policy($expand=rules)"})


def rules_of(assignments):
    """Policy assignments (with policy and rules expanded) → the rules, or None."""
    for item in assignments or []:
        rules = ((item or {}).get("policy") or {}).get("rules")
        if rules is not None:
            return rules
    return None


def read_policy_rules(client, role_id, scope_id="/"):
    """The rules of the role's PIM policy (notes §1.3), or None when they cannot be read."""
    req = policy_request(role_id, scope_id)
    try:
        return rules_of(client.list(req["path"], params=req["params"]))
    except GraphError:
        return None


# ------------------------------------------------------------------ planning (pure)


def describe(kind, target, window, schedule=None, status=None):
    """The dict used for diffs and results (snake_case, our names)."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    out = {
        "id": (schedule or {}).get("id"),
        "principal_id": target.principal.id,
        "principal_name": target.principal.display_name,
        "principal_type": target.principal.type,
        "role_definition_id": target.role.id,
        "role_name": target.role.display_name,
        "directory_scope_id": target.directory_scope_id or "/",
        "app_scope_id": target.app_scope_id,
        "member_type": (schedule or {}).get("memberType") or "Direct",
        "status": status or (schedule or {}).get("status"),
    }
    if kind.name == "assignment":
        out["assignment_type"] = (schedule or {}).get("assignmentType") or "Assigned"
    out.update(sched.describe(window))
    return out


def request_body(kind, action, target, schedule_info=None, justification=None, ticket_number=None, ticket_system=None):
    """The JSON body of a schedule request (notes §3.1, §8)."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    body = {
        "action": action,
        "principalId": target.principal.id,
        "roleDefinitionId": target.role.id,
        "directoryScopeId": target.directory_scope_id or "/",
    }
    if target.app_scope_id:
        body["appScopeId"] = target.app_scope_id
    if justification:
        body["justification"] = justification
    if schedule_info is not None:
        body["scheduleInfo"] = schedule_info
    if ticket_number or ticket_system:
        body["ticketInfo"] = {"ticketNumber": ticket_number, "ticketSystem": ticket_system}
    return body


def plan(kind, target, desired, current, now):
    """Desired vs current → Plan. Pure: no I/O, ``now`` passed in.

    present: nothing there → create (adminAssign); there with another schedule → update
    (adminUpdate, in place); the same by meaning → none. A pending request that already asks
    for the desired schedule counts as "there" (re-sending it would be refused as a duplicate).
    absent: a schedule → remove (adminRemove), but one that has not started yet → cancel its
    Granted request (``requests_not_started``); only a pending request → cancel; nothing → none.
    Inherited and other (e.g. activated) schedules never influence the action.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    current = current or empty_current()
    before = describe(kind, target, current.window, current.schedule) if current.schedule else None
    extras = dict(
        justification=desired.justification, ticket_number=desired.ticket_number, ticket_system=desired.ticket_system
    )

    if desired.state == "absent":
        not_started = requests_not_started(current, now)
        if not_started:
            # Status-aware removal (notes §4, §8): a schedule that has not started is still its
            # Granted request, which is cancelled; adminRemove would leave that request behind.
            ids = [r["id"] for r in not_started]
            reason = "the %s has not started (request %s is Granted): cancel it" % (kind.noun, ", ".join(ids))
            return Plan("cancel", [reason], before, None, None, ids)
        if current.schedule:
            info = sched.schedule_info(sched.Desired(None, None, None, None), now, current.window)
            body = request_body(kind, "adminRemove", target, info if kind.schedule_on_remove else None, **extras)
            return Plan("remove", ["the %s exists and must be absent" % kind.noun], before, None, body, [])
        if current.pending:
            ids = [r["id"] for r in current.pending]
            pending_before = _pending_description(kind, target, current.pending[0])
            reason = "a pending request (%s) exists and must be absent: cancel it" % ", ".join(
                "%s %s" % (r.get("status"), r["id"]) for r in current.pending
            )
            return Plan("cancel", [reason], pending_before, None, None, ids)
        return Plan("none", ["the %s is already absent" % kind.noun], None, None, None, [])

    want = desired.schedule or sched.Desired(None, None, None, None)
    if current.schedule:
        reasons = sched.differences(want, current.window, now)
        if not reasons:
            return Plan("none", ["the %s already matches" % kind.noun], before, before, None, [])
        info = sched.schedule_info(want, now, current.window)
        after = describe(kind, target, sched.applied_window(info, now), current.schedule)
        body = request_body(kind, "adminUpdate", target, info, **extras)
        return Plan("update", reasons, before, after, body, [])

    for req in current.pending:
        pending_window = sched.window_from_schedule_info(req.get("scheduleInfo"))
        if not sched.differences(want, pending_window, now):
            desc = _pending_description(kind, target, req)
            return Plan(
                "none", ["request %s (%s) already asks for this" % (req["id"], req.get("status"))], desc, desc, None, []
            )
    info = sched.schedule_info(want, now)
    after = describe(kind, target, sched.applied_window(info, now), None)
    body = request_body(kind, "adminAssign", target, info, **extras)
    return Plan("create", ["the %s does not exist" % kind.noun], None, after, body, [])


def requests_not_started(current, now):
    """The Granted requests behind a schedule that starts after ``now``, or [] (pure).

    [] unless the request that created the schedule (its ``createdUsing``, or the schedule's own
    id, notes §5) is among the pending ones and still Granted: only then does cancelling it take
    the schedule away (notes §4). Granted requests that target the same schedule (a not yet
    started adminUpdate) go with it.
    """
    schedule = (current or empty_current()).schedule
    window = current.window if schedule else None
    if window is None or window.start is None or window.start <= now:
        return []
    schedule_id = _lower(schedule.get("id"))
    creator_id = _lower(schedule.get("createdUsing") or schedule.get("id"))
    granted = [r for r in current.pending if r.get("status") == "Granted"]
    if not any(_lower(r.get("id")) == creator_id for r in granted):
        return []
    return [r for r in granted if _lower(r.get("id")) == creator_id or _lower(r.get("targetScheduleId")) == schedule_id]


def _pending_description(kind, target, req):
    window = sched.window_from_schedule_info(req.get("scheduleInfo"))
    out = describe(kind, target, window, None, status=req.get("status"))
    out["request_id"] = req.get("id")
    return out


def changed(p):
    return p.action != "none"


def plan_satisfied(p, desired, current, now):
    """Pure: does ``current`` (re-read after a lost or refused write) show the plan's effect?"""
    current = current or empty_current()
    if p.action in ("create", "update"):
        want = desired.schedule or sched.Desired(None, None, None, None)
        return current.schedule is not None and not sched.differences(want, current.window, now)
    if p.action == "remove":
        return current.schedule is None
    if p.action == "cancel":
        return not {r.get("id") for r in current.pending} & set(p.cancel_ids)
    return True


ALREADY_SO = frozenset({"RoleAssignmentExists", "RoleAssignmentDoesNotExist"})


def settle(kind, target, p, desired, current, now, err=None, ours=True):
    """What a re-read after a doubtful write means. Pure; one rule for the single modules and pim_access.

    ``err``: Graph's refusal of the write (None after a lost answer); ``ours``: an earlier attempt
    of ours may have been carried out (its answer was lost), so whatever is there may be our doing.
    Returns ``(verdict, plan)``:

    * ``("confirmed", None)``: the plan's effect is there and may be ours: report the change;
    * ``("already", None)``: it is there, Graph said so (RoleAssignmentExists to an adminAssign,
      RoleAssignmentDoesNotExist to an adminRemove) and no attempt of ours can have made it:
      another writer did, e.g. the same task running in parallel. Nothing was changed by us;
    * ``("resend", plan)``: not there; ``plan`` is what to send now: ``p`` when the target is
      absent, an adminUpdate when Graph says the grant exists but the re-read shows another schedule;
    * ``("refused", None)``: Graph's "already so" answer and the re-read disagree; the error stands.
    """
    current = current or empty_current()
    if plan_satisfied(p, desired, current, now):
        already = err is not None and err.code in ALREADY_SO and not ours
        return ("already" if already else "confirmed"), None
    if err is not None and err.code in ALREADY_SO:
        if err.code == "RoleAssignmentExists" and p.action in ("create", "update") and current.schedule is not None:
            again = plan(kind, target, desired, current, now)
            if again.action == "update":
                return "resend", again
        return "refused", None
    return "resend", p


class Confirmer:
    """A ``confirm()`` for ``execute``: re-reads the target and checks ``plan_satisfied``.

    ``settle(err, ours)`` applies the shared rule (``settle`` above) to a fresh read; ``current`` is
    the last read, ``p`` the plan being carried out (an adminUpdate after "exists, but differs").
    """

    def __init__(self, client, kind, target, desired, p, now):
        self.client, self.kind, self.target, self.desired, self.p, self.now = client, kind, target, desired, p, now
        self.current = None

    def _read(self):
        self.current = read_current(self.client, self.kind, self.target, include_pending=self.p.action == "cancel")
        return self.current

    def __call__(self):
        return plan_satisfied(self.p, self.desired, self._read(), self.now)

    def settle(self, err, ours):
        return settle(self.kind, self.target, self.p, self.desired, self._read(), self.now, err, ours)


def confirmer(client, kind, target, desired, p, now):
    """A ``confirm()`` for ``execute``: re-read the target and check ``plan_satisfied`` (see Confirmer)."""
    return Confirmer(client, kind, target, desired, p, now)


def diff(p):
    """Ansible's diff from the plan: before/after dicts ({} for absent)."""
    return {"before": p.before or {}, "after": p.after or {}}


# ------------------------------------------------------------------ writing


Outcome = namedtuple("Outcome", "request confirmed already plan")
Outcome.__new__.__defaults__ = (False, None)
Outcome.__doc__ = (
    "request: Graph's answer (dict) or None; confirmed: True when state was re-read to confirm a lost answer; "
    "already: True when Graph answered 'already so' and the re-read agreed (another writer made the change); "
    "plan: the plan carried out when it is not the one given (an adminUpdate after 'exists, but differs')."
)

# Codes that, after a lost or retried write, may just mean "your first attempt worked" (notes §6.2).
_CONFIRMABLE = frozenset({"RoleAssignmentExists", "RoleAssignmentDoesNotExist"})
# Replication lag of new objects (landscape: terraform azuread retries these).
_LAGGING = frozenset({"SubjectNotFound", "RoleNotFound"})
LAG_DELAYS = (2, 5, 10)


def execute(client, kind, p, confirm=None, sleep=time.sleep):
    """Send the plan's request(s). ``confirm()`` re-reads state and says whether the plan took effect.

    * A lost answer (GraphError code ResponseLost, raised by the client instead of re-sending
      a POST) → re-read; done if it took effect, otherwise send once more.
    * RoleAssignmentExists / RoleAssignmentDoesNotExist → re-read; done if the state is
      already what the plan wanted (Graph has answered these to writes it carried out). When no
      attempt of ours can have done it, ``Outcome.already``: another writer did (``settle``). A
      grant that exists with another schedule is updated in place (``Outcome.plan``).
    * SubjectNotFound / RoleNotFound → retried a few times: new objects take a while to reach PIM.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if p.action == "none":
        return Outcome(None, False)
    if p.action == "cancel":
        for request_id in p.cancel_ids:
            _with_confirmation(
                lambda rid=request_id: client.post("%s/%s/cancel" % (kind.requests, rid), {}), confirm, sleep
            )
        return Outcome(None, False)
    return _with_confirmation(lambda: client.post(kind.requests, p.body), confirm, sleep, client, kind)


def _with_confirmation(send, confirm, sleep, client=None, kind=None):
    lost = False
    replanned = None
    lag_delays = list(LAG_DELAYS)
    for _attempt in range(3 + len(LAG_DELAYS)):
        try:
            return Outcome(send(), False, False, replanned)
        except GraphError as err:
            if err.code == "ResponseLost":
                if confirm is not None and confirm():
                    return Outcome(None, True, False, replanned)
                if lost:
                    raise
                lost = True
                continue
            if err.code in _CONFIRMABLE and confirm is not None:
                if not hasattr(confirm, "settle"):
                    if confirm():
                        return Outcome(None, True)
                    raise
                verdict, again = confirm.settle(err, lost)
                if verdict in ("confirmed", "already"):
                    return Outcome(None, True, verdict == "already", replanned)
                if verdict == "resend" and again is not None and again is not confirm.p and replanned is None:
                    # Graph says the grant exists; the re-read shows another schedule: update it in place.
                    replanned = confirm.p = again
                    send = functools.partial(client.post, kind.requests, again.body)
                    continue
                raise
            if err.code in _LAGGING and lag_delays:
                sleep(lag_delays.pop(0))
                continue
            raise
    raise GraphError("the request could not be completed after repeated attempts", code="RetriesExhausted")


def validate(client, kind, p):
    """Ask Graph whether the plan's request would pass (isValidationOnly: nothing is persisted).

    Returns None when valid (or nothing to validate), else the GraphError Graph answered with.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if p.body is None:
        return None
    body = dict(p.body, isValidationOnly=True)
    try:
        client.post(kind.requests, body)
    except GraphError as err:
        if err.status is not None and 400 <= err.status < 500 and err.status not in (401, 403, 429):
            return err
        raise
    return None


def result_from_request(kind, target, response, p, now):
    """The managed item after a write, from Graph's answer (or the plan when there is none)."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if p.action in ("remove", "cancel"):
        return None
    after = dict(p.after or {})
    if response:
        if p.action == "create":
            after["id"] = response.get("targetScheduleId") or response.get("id")
        after["status"] = response.get("status") or after.get("status")
        info = response.get("scheduleInfo")
        if info:
            window = sched.window_from_schedule_info(info)
            if window.start is not None:
                after.update(sched.describe(window))
    return after


def request_result(response):
    """Graph's request object, snake_case, for the module result."""
    return snake_case_keys(response) if response else None


# ------------------------------------------------------------------ explaining errors

_RULES_RE = re.compile(r"policy rules failed:\s*(\[.*?\])", re.IGNORECASE | re.DOTALL)


def failed_rules(message):
    """``The following policy rules failed: ["ExpirationRule","MfaRule"]`` → ["ExpirationRule", "MfaRule"]."""
    match = _RULES_RE.search(message or "")
    if not match:
        return []
    text = match.group(1)
    try:
        names = json.loads(text)
    except ValueError:
        names = re.findall(r"[A-Za-z]+Rule", text)
    return [str(n) for n in names]


def _caller(request):
    """Admin for admin* actions, EndUser for self* (the rule ids' caller part, notes §3.10)."""
    action = (request or {}).get("action") or ""
    return "EndUser" if action.lower().startswith("self") else "Admin"


def find_rule(rules, rule_id):
    """The rule with this id (e.g. Expiration_Admin_Eligibility) among a policy's rules, or None."""
    for rule in rules or []:
        if rule.get("id") == rule_id:
            return rule
    return None


def _nouns(caller, level):
    if caller == "EndUser":
        return "activations", "activation"
    if level == "Eligibility":
        return "eligible assignments", "eligibility"
    return "active assignments", "active assignment"


def _asked(request, now=None):
    """What the request asked for, in words: 'a permanent eligibility', 'PT10H', 'until 2027-...'."""
    info = (request or {}).get("scheduleInfo") or {}
    expiration = info.get("expiration") or {}
    kind = (expiration.get("type") or "").lower()
    if kind in ("noexpiration", "notspecified", ""):
        return None
    if kind == "afterduration":
        return expiration.get("duration")
    start = sched.parse_graph_datetime(info.get("startDateTime")) or now or datetime.now(UTC)
    end = sched.parse_graph_datetime(expiration.get("endDateTime"))
    if end is None:
        return None
    return "%s (until %s)" % (sched.format_duration(end - start), sched.format_datetime(end))


def explain_rule(name, role_name, rules, request, level):
    """One failed policy rule, in our words, with the policy's value when we could read it."""
    caller = _caller(request)
    nouns, noun = _nouns(caller, level)
    role = "role '%s'" % role_name
    if name == "ExpirationRule":
        rule = find_rule(rules, "Expiration_%s_%s" % (caller, level))
        asked = _asked(request)
        article = "an" if noun[0] in "aeiou" else "a"
        asked_text = "%s %s of %s" % (article, noun, asked) if asked else "a permanent %s" % noun
        if rule is None:
            return "ExpirationRule: %s limits how long %s may last; the request asked for %s." % (
                role,
                nouns,
                asked_text,
            )
        maximum = rule.get("maximumDuration")
        if rule.get("isExpirationRequired") and not asked:
            return "ExpirationRule: %s requires %s to expire within %s; the request asked for %s." % (
                role,
                nouns,
                maximum,
                asked_text,
            )
        return "ExpirationRule: %s allows %s of at most %s; the request asked for %s." % (
            role,
            nouns,
            maximum,
            asked_text,
        )
    if name == "JustificationRule":
        return "JustificationRule: %s requires a justification for %s; set justification." % (role, nouns)
    if name == "TicketingRule":
        return "TicketingRule: %s requires ticket information for %s; set ticket_number and ticket_system." % (
            role,
            nouns,
        )
    if name == "MfaRule":
        if caller == "Admin":
            return (
                "MfaRule: %s requires multi-factor authentication for %s (rule Enablement_Admin_%s); "
                "app-only credentials can never satisfy it: use a delegated token that carries MFA, "
                "or remove MultiFactorAuthentication from that rule." % (role, nouns, level)
            )
        return (
            "MfaRule: %s requires multi-factor authentication for %s, and the access token has no MFA claim; "
            "sign in with MFA (e.g. az login, then az account get-access-token --resource-type ms-graph) and "
            "pass that token." % (role, nouns)
        )
    if name == "EligibilityRule":
        scope = (request or {}).get("directoryScopeId") or "/"
        return "EligibilityRule: the principal is not eligible for %s at scope '%s', so it cannot be activated." % (
            role,
            scope,
        )
    if name == "ApprovalRule":
        return "ApprovalRule: %s requires approval for %s." % (role, nouns)
    return "%s: %s refused the request (policy rule %s)." % (name, role, name)


def requested_length(request, now):
    """How long the request's schedule lasts: a timedelta, or None for no expiration."""
    info = (request or {}).get("scheduleInfo") or {}
    expiration = info.get("expiration") or {}
    kind = (expiration.get("type") or "").lower()
    if kind == "afterduration":
        return sched.parse_duration(expiration.get("duration"), "duration")
    if kind != "afterdatetime":
        return None
    start = sched.parse_graph_datetime(info.get("startDateTime"))
    # A start in the past counts from when Graph processes the request, as Graph does (notes §6.2).
    start = now if start is None or start < now else start
    return sched.parse_graph_datetime(expiration.get("endDateTime")) - start


def expiration_refusal(kind, role_name, rules, request, now):
    """The ExpirationRule sentence when ``request`` asks for longer than the role's policy allows, else None.

    Pure. Mirrors Graph's check (notes §3.10 rules 1, 6 and 11; §6.2): the maximum binds only
    while the rule requires expiry, and then no expiration is refused too. Without rules
    (policy unreadable) it says nothing, and Graph's own refusal is explained after the write.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    caller = _caller(request)
    rule = find_rule(rules, "Expiration_%s_%s" % (caller, kind.level))
    if not rule or not rule.get("isExpirationRequired"):
        return None
    length = requested_length(request, now)
    try:
        maximum = sched.parse_duration(rule.get("maximumDuration"), "maximumDuration")
    except InputError:
        maximum = None
    # Graph allows a second of slack for the time between our clock and its own.
    if length is not None and (maximum is None or length <= maximum + timedelta(seconds=1)):
        return None
    return explain_rule("ExpirationRule", role_name, rules, request, kind.level)


POLICY_SECTIONS = {"Eligibility": "eligible_assignment", "Assignment": "active_assignment"}


def _enablement_way_out(caller, level, flag):
    """Where pim_policy turns one Enablement requirement off (a setting, else the raw rules)."""
    section = "activation" if caller == "EndUser" else POLICY_SECTIONS[level]
    setting = {"Justification": "require_justification", "Ticketing": "require_ticket"}[flag]
    if caller != "EndUser" and flag == "Ticketing":
        return "remove Ticketing from the rule's enabledRules with entra.pim.pim_policy (option rules)"
    return "set settings.%s.%s: false with entra.pim.pim_policy" % (section, setting)


def enablement_refusals(kind, role_name, rules, request):
    """The sentences for what the request lacks that the role's Enablement (and Approval) rules require.

    Pure; [] when nothing is missing or the rules could not be read (Graph then explains its own
    refusal after the write). Mirrors Graph's JustificationRule and TicketingRule (docs/graph-behaviour.md §2, §3):
    ``Enablement_<caller>_<level>`` lists Justification / Ticketing in enabledRules, and an activation
    needs a justification too when ``Approval_EndUser_Assignment`` requires approval with
    isRequestorJustificationRequired. Each sentence names the rule, the role, the policy value and the way out.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if rules is None:
        return []
    caller = _caller(request)
    nouns, _noun = _nouns(caller, kind.level)
    rule_id = "Enablement_%s_%s" % (caller, kind.level)
    enabled = [str(e) for e in (find_rule(rules, rule_id) or {}).get("enabledRules") or []]
    lowered = {e.lower() for e in enabled}
    request = request or {}
    out = []
    if not str(request.get("justification") or "").strip():
        if "justification" in lowered:
            out.append(
                "%s: role '%s' requires a justification for %s (enabledRules: %s); set justification, or %s."
                % (
                    rule_id,
                    role_name,
                    nouns,
                    ", ".join(enabled),
                    _enablement_way_out(caller, kind.level, "Justification"),
                )
            )
        elif caller == "EndUser":
            approval = (find_rule(rules, "Approval_EndUser_Assignment") or {}).get("setting") or {}
            if approval.get("isApprovalRequired") and approval.get("isRequestorJustificationRequired"):
                out.append(
                    "Approval_EndUser_Assignment: role '%s' requires approval for activations with a justification "
                    "from the requestor (isRequestorJustificationRequired: true); set justification." % role_name
                )
    if "ticketing" in lowered and not str((request.get("ticketInfo") or {}).get("ticketNumber") or "").strip():
        out.append(
            "%s: role '%s' requires ticket information for %s (enabledRules: %s); set ticket_number and "
            "ticket_system, or %s."
            % (rule_id, role_name, nouns, ", ".join(enabled), _enablement_way_out(caller, kind.level, "Ticketing"))
        )
    return out


def policy_refusal(kind, role_name, rules, request, now, asked_by):
    """Every check of a planned write against the role's policy, as one task error, or None (pure).

    The expiration rule (``above_policy_message``) and the Enablement rules (``enablement_refusals``):
    what Graph would refuse, said before anything is sent, in check mode too.
    """
    return above_policy_message(kind, role_name, rules, request, now, asked_by) or enablement_message(
        kind, role_name, rules, request
    )


def enablement_message(kind, role_name, rules, request):
    """``enablement_refusals`` as one task error, or None (pure)."""
    missing = enablement_refusals(kind, role_name, rules, request)
    if missing:
        return "The role's PIM policy would refuse this request, so nothing was sent. " + " ".join(missing)
    return None


def above_policy_message(kind, role_name, rules, request, now, asked_by):
    """``expiration_refusal`` as a task error: names the option, the limit and the two ways out; else None."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    refusal = expiration_refusal(kind, role_name, rules, request, now)
    if refusal is None:
        return None
    rule = find_rule(rules, "Expiration_Admin_%s" % kind.level) or {}
    return (
        "%s is outside what the role's PIM policy allows, so nothing was sent. %s Give an end or duration of at "
        "most %s, or change settings.%s (max_duration, allow_permanent) with entra.pim.pim_policy."
        % (asked_by, refusal, rule.get("maximumDuration") or "the maximum", POLICY_SECTIONS[kind.level])
    )


def schedule_option(params):
    """Which schedule option a task gave, with its value, for messages: "duration 'P400D'", "permanent=true"."""
    for name in ("end", "duration"):
        if params.get(name) not in (None, ""):
            return "%s '%s'" % (name, params[name])
    if params.get("permanent"):
        return "permanent=true"
    return "no end (none of end, duration or permanent given)"


def explain_policy_error(err, role, policy_rules, request, level=None):
    """RoleAssignmentRequestPolicyValidationFailed → one sentence per failed rule, with policy values.

    ``level`` is "Eligibility" or "Assignment": which of the role's rules the request is
    judged by (eligibility requests by the *_Eligibility rules, assignments and activations
    by the *_Assignment ones).
    """
    level = level or "Eligibility"
    role_name = getattr(role, "display_name", None) or getattr(role, "id", None) or "the role"
    names = failed_rules(err.graph_message or err.msg)
    if not names:
        return "%s refused the request: %s" % ("role '%s' policy" % role_name, err.graph_message or err.msg)
    return " ".join(explain_rule(name, role_name, policy_rules, request, level) for name in names)


def explain_graph_error(err, kind, target=None, request=None, policy_rules=None):
    """Any GraphError from a PIM write → the same error with a message written for people.

    Keeps status, code and request ids. ``policy_rules`` are the role's rules when the caller
    read them (only needed for RoleAssignmentRequestPolicyValidationFailed).
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    role_name = target.role.display_name if target else "the role"
    scope = (target.directory_scope_id if target else None) or "/"
    who = "'%s'" % (target.principal.display_name or target.principal.id) if target else "the principal"
    code = err.code or ""
    if code == "RoleAssignmentRequestPolicyValidationFailed" or failed_rules(err.graph_message):
        msg = explain_policy_error(err, target.role if target else None, policy_rules, request, kind.level)
    elif code == "RoleAssignmentExists":
        msg = (
            "%s already has an %s for role '%s' at scope '%s' that Graph would not replace (RoleAssignmentExists)."
            % (
                who,
                kind.noun,
                role_name,
                scope,
            )
        )
    elif code == "RoleAssignmentDoesNotExist":
        msg = "%s has no %s for role '%s' at scope '%s' to change or remove (RoleAssignmentDoesNotExist)." % (
            who,
            kind.noun,
            role_name,
            scope,
        )
    elif code == "ActiveDurationTooShort":
        msg = (
            "ActiveDurationTooShort: Graph does not end an activation of role '%s' within 5 minutes of its "
            "start; try again later." % role_name
        )
    elif code == "SubjectNotFound":
        msg = (
            "SubjectNotFound: PIM does not know %s yet; a newly created user, group or service principal can "
            "take a few minutes to replicate. Try again shortly." % who
        )
    elif code == "RoleNotFound":
        msg = (
            "RoleNotFound: PIM does not know role '%s' yet; a new custom role can take a few minutes to replicate."
            % role_name
        )
    elif err.status == 403:
        msg = "Could not manage the %s of %s for role '%s': %s" % (kind.noun, who, role_name, err.msg)
    else:
        return err
    return reworded(err, msg, attempts=err.attempts, failed_rules=failed_rules(err.graph_message) or None)


def reworded(err, msg, **details):
    """The same GraphError (status, code, Graph's message, request ids, method, URL) with our message."""
    return GraphError(
        msg,
        status=err.status,
        code=err.code,
        graph_message=err.graph_message,
        request_id=err.request_id,
        client_request_id=err.client_request_id,
        method=err.method,
        url=err.url,
        **details,
    )


# ------------------------------------------------------------------ input checks


def check_principal_for(kind, principal):
    """Refuse principals Graph cannot give this kind to, before any write (notes §3.1)."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if kind.name == "eligibility" and principal.type == "service_principal":
        raise InputError(
            "principal '%s' is a service principal (%s); service principals can only hold active assignments; "
            "use entra.pim.pim_role_assignment" % (principal.display_name, principal.id)
        )
    if principal.type == "group" and principal.role_assignable is False:
        raise InputError(
            "group '%s' (%s) is not role-assignable (isAssignableToRole is false); only groups created as "
            "role-assignable can hold directory roles" % (principal.display_name, principal.id)
        )


# ------------------------------------------------------------------ listing (the info modules)

# Reads through this path act for the signed-in user (notes §1.1), also covering their groups.
CURRENT_USER = "/filterByCurrentUser(on='principal')"


def check_list_filters(directory_scope=None, expiring_within=None):
    """The info modules' filters that need no Graph, checked before the first request."""
    if expiring_within is not None:
        sched.end_after(
            datetime.now(UTC),
            sched.parse_duration(expiring_within, "expiring_within"),
            "expiring_within",
            expiring_within,
        )
    if directory_scope is not None:
        # Omitted lists every scope; an empty value is refused like everywhere else, never read as "any".
        _resolve.directory_scope_local(directory_scope)


def resolve_filters(client, resolver, principal=None, principal_type="auto", role=None, directory_scope=None):
    """The info modules' principal, role and scope filters → (principal_id, role_id, scope_id); None = any.

    With both a principal and a role, every lookup goes into one round trip (resolve_target).
    """
    if principal is not None and role is not None:
        target = resolve_target(client, resolver, role, principal, principal_type, directory_scope)
        return target.principal.id, target.role.id, target.directory_scope_id if directory_scope is not None else None
    principal_id = resolver.principal(principal, principal_type).id if principal is not None else None
    role_id = resolver.role(role).id if role is not None else None
    scope_id = resolver.directory_scope(directory_scope) if directory_scope is not None else None
    return principal_id, role_id, scope_id


def read_lists(client, kind, principal_id=None, role_id=None, current_user=False, instance_params=None):
    """Schedules and instances of a kind in one $batch, filtered server-side by principal and role.

    ``current_user`` reads through filterByCurrentUser; ``instance_params`` adds to the instances
    read (e.g. ``$expand``). Returns (schedules, instances).
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    clauses = []
    if principal_id:
        clauses.append("principalId eq %s" % odata_quote(require_guid(principal_id, "principal id")))
    if role_id:
        clauses.append("roleDefinitionId eq %s" % odata_quote(require_guid(role_id, "role id")))
    base = {"$filter": " and ".join(clauses)} if clauses else {}
    suffix = CURRENT_USER if current_user else ""
    reqs = [
        _resolve.get_request(path + suffix, dict(base, **extra))
        for path, extra in ((kind.schedules, {}), (kind.instances, instance_params or {}))
    ]
    schedules, instances = read_all(client, reqs)
    return schedules, instances


def expiring(rows, expiring_within, now):
    """Keep the rows (item, window, ...) whose window ends within ``expiring_within`` of ``now`` (all when unset)."""
    if expiring_within is None:
        return rows
    limit = sched.end_after(now, sched.parse_duration(expiring_within, "expiring_within"), "expiring_within")
    return [r for r in rows if r[1].end is not None and r[1].end <= limit]


def name_principals(resolver, rows, known=None, denied_ok=False):
    """{principal id (lower case): Principal} for the rows, in bulk (getByIds), on top of ``known``.

    ``denied_ok``: a 401/403 leaves the names out instead of failing (an ordinary user may not
    read directory objects).
    """
    names = dict(known or {})
    wanted = {(r[0].get("principalId") or "").lower() for r in rows} - set(names)
    if wanted:
        try:
            names.update(resolver.principals_by_ids(list(wanted)))
        except GraphError as err:
            if not denied_ok or err.status not in (401, 403):
                raise
    return names


def describe_listed(resolver, names, item, window, effective):
    """One listed schedule (or instance) → the info modules' dict, with principal and role named."""
    principal = names.get((item.get("principalId") or "").lower())
    role = resolver.role_by_id(item.get("roleDefinitionId"))
    out = {
        "id": item.get("id"),
        "principal_id": item.get("principalId"),
        "principal_name": principal.display_name if principal else None,
        "principal_type": principal.type if principal else None,
        "role_definition_id": item.get("roleDefinitionId"),
        "role_name": role.display_name if role else None,
        "directory_scope_id": item.get("directoryScopeId") or "/",
        "app_scope_id": item.get("appScopeId"),
        "member_type": item.get("memberType") or "Direct",
        "status": item.get("status"),
        "in_effect": effective,
    }
    out.update(sched.describe(window))
    return out


def sort_listed(entries, *more):
    """Sorted by role name, principal name and scope (then the ``more`` keys), case-insensitive names."""
    entries.sort(
        key=lambda e: (
            ((e["role_name"] or "").lower(), (e["principal_name"] or "").lower(), e["directory_scope_id"])
            + tuple(e[k] for k in more)
        )
    )
    return entries


# ------------------------------------------------------------------ the single-target modules

# The options of pim_role_eligibility and pim_role_assignment (one principal, role and scope).
SCHEDULE_ARGSPEC = dict(
    principal=dict(type="str", required=True),
    principal_type=dict(type="str", default="auto", choices=list(_resolve.PRINCIPAL_TYPES)),
    role=dict(type="str", required=True),
    directory_scope=dict(type="str", default="/"),
    app_scope=dict(type="str"),
    start=dict(type="str"),
    end=dict(type="str"),
    duration=dict(type="str"),
    permanent=dict(type="bool"),
    justification=dict(type="str"),
    ticket_number=dict(type="str"),
    ticket_system=dict(type="str"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    validate_only=dict(type="bool", default=False),
)
SCHEDULE_REQUIRED_TOGETHER = [("ticket_number", "ticket_system")]


def describe_schedule(kind, target, schedule):
    """A Graph schedule of ``target`` → the dict of results and diffs."""
    return describe(kind, target, sched.window_from_schedule_info(schedule.get("scheduleInfo")), schedule)


def explain_write_error(client, kind, err, target, body, current=None, rules=None):
    """A Graph refusal in our words. When a policy rule failed, the role's ``rules`` explain it: the ones
    read with the state, or read now if there are none."""
    policy_failed = failed_rules(err.graph_message) or err.code == "RoleAssignmentRequestPolicyValidationFailed"
    if policy_failed and rules is None:
        rules = read_policy_rules(client, target.role.id)
    return explain_graph_error(err, kind, target, body, rules)


def run_schedule_module(module, kind, keep_pending=None, report=None, explain=None):
    """The task of pim_role_eligibility and pim_role_assignment: check, read, plan, write unless check mode.

    The hooks carry what differs between the two:

    * ``keep_pending(request) -> bool``: which pending requests are this task's (default: all).
    * ``report(kind, target, current, result)``: adds what the module reports besides the managed item.
    * ``explain(client, kind, err, target, body, current, rules) -> GraphError``: a refusal in words
      (default ``explain_write_error``); ``rules`` are the policy rules read with the state, or None.

    Returns the module result; the managed item is under the kind's name (``eligibility``, ``assignment``).
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    explain = explain or explain_write_error
    params = module.params
    now = datetime.now(UTC)
    state = params["state"]
    # Every option is checked before the first request, so bad input changes nothing.
    schedule = None
    if state == "present":
        schedule = sched.desired_schedule(
            params["start"], params["end"], params["duration"], params["permanent"], now=now
        )
    desired = Desired(state, schedule, params["justification"], params["ticket_number"], params["ticket_system"])

    client = module.client
    # Role, principal, scope, schedules and pending requests: one round trip when given by id,
    # two otherwise (lookups, then state); never a write before every check has passed.
    # The role's policy rides along when a write may follow, to refuse a too-long schedule before it.
    target, current, rules = resolve_and_read(
        client,
        _resolve.Resolver(client),
        kind,
        params["role"],
        params["principal"],
        params["principal_type"],
        params["directory_scope"],
        params["app_scope"],
        include_pending=True,
        include_policy=state == "present" and not params["validate_only"],
    )
    if state == "present":
        check_principal_for(kind, target.principal)
    if keep_pending is not None:
        current = current._replace(pending=[r for r in current.pending if keep_pending(r)])
    p = plan(kind, target, desired, current, now)
    if p.action in ("create", "update") and not params["validate_only"]:
        # What the role's policy refuses (too long, no justification or ticket): refused here, before any
        # write and in check mode too (docs/graph-behaviour.md §3: ExpirationRule, JustificationRule, TicketingRule).
        refusal = policy_refusal(kind, target.role.display_name, rules, p.body, now, schedule_option(params))
        if refusal:
            raise InputError(refusal)

    result = dict(
        changed=changed(p),
        changes=p.reasons,
        inherited=[describe_schedule(kind, target, s) for s in current.inherited],
    )
    result[kind.name] = p.after
    if report is not None:
        report(kind, target, current, result)
    if module._diff:
        result["diff"] = diff(p)

    if params["validate_only"]:
        refusal = validate(client, kind, p)
        validation = dict(valid=refusal is None, message=None, failed_rules=[], error_code=None)
        if refusal is not None:
            explained = explain(client, kind, refusal, target, p.body, current)
            validation.update(
                message=explained.msg, failed_rules=failed_rules(refusal.graph_message), error_code=refusal.code
            )
        result["validation"] = validation
        return result
    if module.check_mode or p.action == "none":
        return result

    confirm = confirmer(client, kind, target, desired, p, now)
    try:
        outcome = execute(client, kind, p, confirm=confirm)
    except GraphError as err:
        raise explain(client, kind, err, target, (confirm.p or p).body, current, rules)
    if outcome.already:
        # Graph answered "already so" to our first attempt and the re-read agrees: another writer
        # (the same task running in parallel) made this change, not us.
        after = confirm.current or empty_current()
        result.update(
            changed=False,
            changes=[
                "the %s was already %s when written (Graph: another request made it meanwhile)"
                % (kind.noun, "there" if p.action in ("create", "update") else "absent")
            ],
        )
        result[kind.name] = describe(kind, target, after.window, after.schedule) if after.schedule else None
        if module._diff:
            result["diff"] = {"before": result[kind.name] or {}, "after": result[kind.name] or {}}
        return result
    if outcome.plan is not None:
        # The grant appeared meanwhile with another schedule: it was updated in place instead.
        p = outcome.plan
        result["changes"] = p.reasons
        if module._diff:
            result["diff"] = diff(p)
    result[kind.name] = result_from_request(kind, target, outcome.request, p, now)
    if outcome.confirmed and p.action in ("create", "update"):
        # Graph's answer was lost but the re-read showed the change: report what is there.
        after = read_current(client, kind, target)
        result[kind.name] = describe(kind, target, after.window, after.schedule)
    if outcome.request:
        result["request"] = request_result(outcome.request)
    return result


# ------------------------------------------------------------------ active assignments and activations


def is_admin_request(request):
    """An adminAssign/Update/Remove request; a pending self-activation is the user's business, not the admin's."""
    return (request.get("action") or "").lower().startswith("admin")


def activation_of(current):
    """The principal's own activation (assignmentType Activated) among the schedules not managed here, or None."""
    for item in current.other:
        if (item.get("assignmentType") or "") == "Activated":
            return item
    return None


def report_activation(kind, target, current, result):
    """Add the principal's activation of the role (reported, never managed) to an assignment result."""
    activation = activation_of(current)
    result["activation"] = describe_schedule(kind, target, activation) if activation else None
    if activation is not None:
        result["changes"] = result["changes"] + [
            "an activation of the role by the principal exists (until %s); it is not managed by this task"
            % (sched.format_datetime(sched.window_from_schedule_info(activation.get("scheduleInfo")).end) or "no end")
        ]


def explain_assignment_error(client, kind, err, target, body, current, rules=None):
    """Like explain_write_error, and RoleAssignmentExists says when an activation is what blocks the write."""
    activation = activation_of(current)
    if err.code != "RoleAssignmentExists" or activation is None:
        return explain_write_error(client, kind, err, target, body, current, rules)
    window = sched.window_from_schedule_info(activation.get("scheduleInfo"))
    return reworded(
        err,
        "'%s' has role '%s' activated at scope '%s' (an activation of an eligible role, until %s); Graph does "
        "not create an active assignment while that activation is in effect. Wait until it ends, or have the "
        "user deactivate it (entra.pim.pim_role_activation state=inactive), then run again (RoleAssignmentExists)."
        % (
            target.principal.display_name or target.principal.id,
            target.role.display_name,
            target.directory_scope_id or "/",
            sched.format_datetime(window.end) or "it is deactivated",
        ),
    )
