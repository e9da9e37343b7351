#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_role_activation
short_description: Activate (or deactivate) an eligible Microsoft Entra directory role for yourself, just in time
version_added: 0.1.0
description:
  - The signed-in user activates a directory role they are eligible for through Privileged Identity Management
    (PIM), for a limited time, or ends their activation early.
  - Idempotent. With O(state=active) a role that is already active with at least O(min_remaining) left is left
    alone. With less left, the activation is extended (C(selfExtend)); when Graph will not extend it in place (it
    usually sends self-extensions to an administrator), the module ends the activation and activates again, unless
    the role needs approval, in which case the extension request is left waiting for a decision. RV(action_taken)
    says which happened.
  - A request that needs approval is reported as RV(status=pending_approval) with C(changed=true), not as a failure,
    unless O(require_active=true).
  - With O(state=inactive) the activation is ended (C(selfDeactivate)). Graph does not allow that within 5 minutes of
    the activation's start; the error says when it becomes possible, and O(wait=true) waits for it. A request still
    waiting for approval is cancelled instead.
  - The role's PIM policy decides what an activation needs. When Graph refuses, the message says which rule, with the
    policy's value, and what to do, for example how to get a token that carries MFA.
  - B(Needs a delegated token), that is the user's own sign-in. Use O(auth_method=access_token) with a token from
    C(az account get-access-token --resource-type ms-graph), O(auth_method=azure_cli), or
    O(auth_method=username_password) (test tenants and the sandbox). An application (app-only) token is refused
    before anything is sent, because activation always acts for the signed-in user.
  - The token needs the delegated Microsoft Graph permission C(RoleAssignmentSchedule.ReadWrite.Directory); reading
    the role's default duration from its policy needs C(RoleManagementPolicy.Read.Directory).
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._attributes
options:
  role:
    description:
      - The directory role to activate, by display name (case-insensitive, for example V(Security Administrator)),
        role definition id or template id.
    type: str
    required: true
    version_added: 0.1.0
  directory_scope:
    description:
      - The scope of the eligibility to activate. V(/) is the whole tenant; an administrative unit is
        V(/administrativeUnits/{id}), its object id or its display name.
    type: str
    default: /
    version_added: 0.1.0
  state:
    description:
      - V(active) makes sure the role is active for the signed-in user; V(inactive) ends the activation.
    type: str
    choices: [active, inactive]
    default: active
    version_added: 0.1.0
  duration:
    description:
      - How long the activation lasts, as an ISO 8601 duration such as V(PT2H) or V(PT30M).
      - Defaults to the longest activation the role's policy allows (rule C(Expiration_EndUser_Assignment), for
        example V(PT8H)). When the policy cannot be read, V(PT1H) is asked for and RV(duration_source) says so.
      - Also the length of an extension.
    type: str
    version_added: 0.1.0
  min_remaining:
    description:
      - An active role with at least this much time left counts as active. With less left it is extended.
      - ISO 8601 duration.
    type: str
    default: PT15M
    version_added: 0.1.0
  justification:
    description:
      - Why you activate the role. Most role policies require it.
    type: str
    version_added: 0.1.0
  ticket_number:
    description:
      - The change or incident ticket behind the activation, when the role's policy asks for one.
    type: str
    version_added: 0.1.0
  ticket_system:
    description:
      - The system O(ticket_number) belongs to, for example V(ServiceNow).
    type: str
    version_added: 0.1.0
  wait:
    description:
      - Wait until the activation is in effect, or waiting for approval, before returning.
      - With O(state=inactive), wait until Graph allows the deactivation (5 minutes after the activation's start).
      - With O(require_active=true), keep waiting through the approval until the role is active or the request is
        denied.
      - Bounded by O(wait_timeout). Graph is polled every few seconds.
    type: bool
    default: false
    version_added: 0.1.0
  wait_timeout:
    description:
      - The longest time to wait, in seconds, when O(wait=true). The task fails when the wait runs out.
    type: int
    default: 300
    version_added: 0.1.0
  require_active:
    description:
      - Fail unless the role is active at the end of the task. A request waiting for approval then fails the task
        (after waiting up to O(wait_timeout) with O(wait=true)); the request itself stays in place.
    type: bool
    default: false
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    details:
      - Reads the current state and asks Graph to validate the request (C(isValidationOnly)) without making it, so a
        policy refusal (MFA, justification, ticket, duration, eligibility) fails in check mode just as it would for
        real. Nothing is activated, extended or deactivated.
  diff_mode:
    support: full
    details: Shows the activation before and after.
  idempotent:
    support: full
    details:
      - An active role with at least O(min_remaining) left, a pending request for it, or an inactive role with
        O(state=inactive) is not changed.
notes:
  - Graph keeps one activation per user, role and scope. A role held through an active (admin) assignment, directly
    or through a group, is already active; the module reports RV(status=assigned) and changes nothing.
  - The module reads with C(filterByCurrentUser), so an eligible user needs no directory reader role.
  - Times are compared with this machine's clock; keep it in sync.
seealso:
  - module: entra.pim.pim_role_eligibility
  - module: entra.pim.pim_role_assignment_info
  - module: entra.pim.pim_policy
  - name: Activate a role with Microsoft Graph (selfActivate)
    description: The request this module sends.
    link: https://learn.microsoft.com/graph/api/rbacapplication-post-roleassignmentschedulerequests
"""

EXAMPLES = r"""
- name: Get a Microsoft Graph token of the signed-in Azure CLI user (sign in with MFA first)
  ansible.builtin.command: az account get-access-token --resource-type ms-graph --query accessToken --output tsv
  register: graph_token
  changed_when: false
  no_log: true

- name: Activate Security Administrator for two hours and wait until it is in effect
  entra.pim.pim_role_activation:
    auth_method: access_token
    access_token: "{{ graph_token.stdout }}"
    role: Security Administrator
    duration: PT2H
    justification: Investigate incident INC-2231
    ticket_number: INC-2231
    ticket_system: ServiceNow
    wait: true
  register: activation

- name: Say when it ends (or that it waits for an approver)
  ansible.builtin.debug:
    msg: "{{ activation.status }} until {{ activation.end }}"

- name: Activate through the Azure CLI login, for the policy's maximum, and fail unless active within 10 minutes
  entra.pim.pim_role_activation:
    auth_method: azure_cli
    role: Exchange Administrator
    justification: Mailbox migration window
    wait: true
    wait_timeout: 600
    require_active: true

- name: Done - end the activation (waits if it started less than 5 minutes ago)
  entra.pim.pim_role_activation:
    auth_method: access_token
    access_token: "{{ graph_token.stdout }}"
    role: Security Administrator
    state: inactive
    wait: true
"""

RETURN = r"""
action_taken:
  description:
    - What the task did. V(none); V(activated); V(extended) (Graph extended the activation in place);
      V(extension_requested) (an extension waits for an administrator's decision); V(reactivated) (the activation
      was ended and activated again because Graph would not extend it); V(deactivated); V(canceled) (a pending
      request was cancelled).
    - In check mode, what the task would do.
  returned: always
  type: str
  sample: activated
status:
  description:
    - The state of the role for you after the task. V(active) (in effect); V(pending_approval) (waiting for an
      approver); V(provisioning) (accepted, not yet in effect); V(inactive); V(assigned) (you hold the role through
      an active assignment, not an activation); V(denied), V(failed), V(canceled) or V(revoked) when Graph refused the
      request.
  returned: always
  type: str
  sample: active
start:
  description: When the activation began or begins (UTC). Null when there is none.
  returned: always
  type: str
  sample: "2026-11-29T10:00:00Z"
end:
  description: When the activation ends (UTC). Null when there is none or it does not end.
  returned: always
  type: str
  sample: "2026-11-29T18:00:00Z"
request:
  description: The schedule request Graph created (or the pending one found), with snake_case keys.
  returned: when a request was sent, or a pending one exists
  type: dict
  sample:
    id: 5f2a3c1e-0d7b-4d0e-9a55-1f0a6c9b2e11
    action: selfActivate
    status: Provisioned
    principal_id: 10000000-0000-4000-8000-000000000002
    role_definition_id: 194ae4cb-b126-40b2-bd5b-6091b380977d
activation:
  description: The activation after the task; null when the role is not active (or only pending).
  returned: always
  type: dict
  contains:
    id:
      description: The activation's assignment schedule id.
      type: str
    principal_id:
      description: Your object id.
      type: str
    principal_name:
      description: Your name, from the token.
      type: str
    role_definition_id:
      description: The role definition id.
      type: str
    role_name:
      description: The role's display name.
      type: str
    directory_scope_id:
      description: The directory scope.
      type: str
    app_scope_id:
      description: The application scope, or null.
      type: str
    assignment_type:
      description: V(Activated).
      type: str
    member_type:
      description: V(Direct), or V(Group) when the eligibility comes through a group.
      type: str
    status:
      description: Graph's status of the activation.
      type: str
    start:
      description: When it began (UTC).
      type: str
    end:
      description: When it ends (UTC).
      type: str
    permanent:
      description: Whether it has no end.
      type: bool
    eligibility_id:
      description: The eligibility schedule the activation uses.
      type: str
role_name:
  description: The role's display name.
  returned: always
  type: str
  sample: Security Administrator
directory_scope_id:
  description: The directory scope.
  returned: always
  type: str
  sample: /
duration:
  description: The duration asked for (activation or extension); null when nothing was asked for.
  returned: always
  type: str
  sample: PT8H
duration_source:
  description: Where RV(duration) came from, V(task), V(policy) (the role's maximum) or V(fallback).
  returned: when RV(duration) is set
  type: str
  sample: policy
changes:
  description: Why the task did what it did, in words.
  returned: always
  type: list
  elements: str
  sample: ["role 'Security Administrator' is not active: activate it for PT8H"]
extend_refused:
  description: Why Graph did not extend the activation in place, when the module activated again instead.
  returned: when RV(action_taken=reactivated)
  type: str
auth_method:
  description: Which authentication method was used.
  returned: always
  type: str
  sample: access_token
"""

import time
from datetime import datetime, timezone

from ansible_collections.entra.pim.plugins.module_utils import _activation as act
from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError, PimError
from ansible_collections.entra.pim.plugins.module_utils._graph import snake_case_keys
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule

ARGUMENT_SPEC = dict(
    role=dict(type="str", required=True),
    directory_scope=dict(type="str", default="/"),
    state=dict(type="str", default="active", choices=["active", "inactive"]),
    duration=dict(type="str"),
    min_remaining=dict(type="str", default=act.DEFAULT_MIN_REMAINING),
    justification=dict(type="str"),
    ticket_number=dict(type="str"),
    ticket_system=dict(type="str"),
    wait=dict(type="bool", default=False),
    wait_timeout=dict(type="int", default=300),
    require_active=dict(type="bool", default=False),
)

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

    # -------------------------------------------------------------- reading

    def read(self, now):
        p = self.p
        self.claims = self.client.token_claims()
        act.require_delegated(self.claims, self.client.auth_method)
        user_id, user_name = act.signed_in_user(self.claims)
        scope_id = _resolve.directory_scope_local(p["directory_scope"])

        named = []
        if not self.resolver.roles_cached():
            named.append(("roles", self.resolver.role_list_request()))
        named.extend(act.read_requests())
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
        self.target = pim.Target(principal, role, scope_id, None)
        self.state = act.state_from_answers(
            user_id, role.id, scope_id, None, found["schedules"], found["requests"], found["eligibilities"]
        )
        return self.state

    def reread(self):
        answers = _resolve.send_all(self.client, [req for _name, req in act.read_requests(self.target.role.id)])
        lists = []
        for answer in answers:
            if isinstance(answer, GraphError):
                raise answer
            lists.append(_resolve.follow_pages(self.client, answer))
        self.state = act.state_from_answers(
            self.target.principal.id, self.target.role.id, self.target.directory_scope_id, None, *lists
        )
        return self.state

    def read_policy(self):
        if not self.policy_read:
            self.policy_read = True
            self.rules = pim.read_policy_rules(self.client, self.target.role.id)
            self.policy = act.policy_from_rules(self.rules)
        return self.policy

    # -------------------------------------------------------------- explaining

    def role_name_of(self, role_id):
        role = self.resolver.role_by_id(role_id)
        return role.display_name if role else role_id

    def explain(self, err, body):
        if (
            pim.failed_rules(err.graph_message)
            or "acrs" in (err.graph_message or "")
            or err.code
            in (
                "RoleAssignmentRequestPolicyValidationFailed",
                "RoleAssignmentRequestAcrsValidationFailed",
            )
        ):
            self.read_policy()
        eligible = act.describe_eligibilities((self.state.eligibilities if self.state else []), self.role_name_of)
        return act.explain_error(
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
        wrapper = pim.Plan("create", [], None, None, body, [])
        try:
            return pim.execute(self.client, "assignment", wrapper, confirm=confirm, sleep=SLEEP)
        except GraphError as err:
            raise self.explain(err, body)

    def validate(self, body):
        """Ask Graph with isValidationOnly (nothing is persisted); returns its answer, raises explained."""
        try:
            return self.client.post(act.ASSIGNMENT_REQUESTS, dict(body, isValidationOnly=True))
        except GraphError as err:
            raise self.explain(err, body)

    def cancel(self, request_id):
        try:
            self.client.post("%s/%s/cancel" % (act.ASSIGNMENT_REQUESTS, request_id), {}, idempotent=True)
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
        if act.settled(request, through_approval):
            return request, True
        last, finished = act.wait_for(
            act.request_reader(self.client, request["id"]),
            lambda r: act.settled(r, through_approval),
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
        last, finished = act.wait_for(
            attempt, lambda v: v[0] == "done", self.p["wait_timeout"], sleep=SLEEP, monotonic=MONOTONIC
        )
        if not finished:
            when = act.deactivation_possible_at(self.state.activation)
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
        window = act.window_of(schedule) if schedule else sched.Window(None, None)
    return sched.format_datetime(window.start), sched.format_datetime(window.end)


def run(module):
    p = module.params
    now = _now()
    # Bad input fails before any request.
    if p["duration"]:
        sched.parse_duration(p["duration"], "duration")
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
    duration, source = act.activation_duration(p["duration"], None)
    desired = act.Desired(
        p["state"], duration, min_remaining, p["justification"], p["ticket_number"], p["ticket_system"]
    )
    plan = act.plan(desired, state, target, now)
    if plan.action in ("activate", "extend") and not p["duration"]:
        duration, source = act.activation_duration(None, task.read_policy())
        if source == "fallback":
            module.warn(
                "Could not read the PIM policy of role '%s' for its longest activation; asking for %s. Set duration, "
                "or grant RoleManagementPolicy.Read.Directory."
                % (target.role.display_name, sched.format_duration(duration))
            )
        desired = desired._replace(duration=duration)
        plan = act.plan(desired, state, target, now)
    elif plan.action in ("activate", "extend") and not module.check_mode:
        # A duration above the role's maximum is refused here, before anything is sent (notes §6.2 ExpirationRule).
        policy = task.read_policy()
        too_long = policy is not None and policy.expiration_required and policy.max_duration is not None
        if too_long and duration > policy.max_duration:
            raise InputError(
                act.explain_rule(
                    "ExpirationRule",
                    target.role.display_name,
                    target.directory_scope_id,
                    policy,
                    task.rules,
                    plan.body,
                    "",
                ),
                duration=p["duration"],
            )

    before = act.describe_activation(target, state.activation, state.eligibility) if state.activation else None
    result = dict(
        changed=plan.action != "none",
        action_taken="none",
        status=plan.status,
        changes=plan.reasons,
        role_name=target.role.display_name,
        directory_scope_id=target.directory_scope_id,
        duration=None,
        activation=before,
    )
    result["start"], result["end"] = _window_result(schedule=state.activation)
    if plan.action in ("activate", "extend"):
        result["duration"] = sched.format_duration(duration)
        result["duration_source"] = source
    if state.pending:
        result["request"] = snake_case_keys(state.pending[0])

    if plan.action == "none":
        _finish_pending(task, result, state)
    elif plan.action == "activate":
        _activate(task, result, plan.body)
    elif plan.action == "extend":
        _extend(task, result, plan)
    elif plan.action == "deactivate":
        _deactivate(task, result, plan.body)
    else:  # cancel
        result["action_taken"] = "canceled"
        result["status"] = "inactive"
        if not module.check_mode:
            for request_id in plan.cancel_ids:
                task.cancel(request_id)

    if module._diff:
        result["diff"] = {"before": before or {}, "after": result.get("activation") or {}}
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
    result["request"] = snake_case_keys(request)
    result["status"] = act.status_of_request(request)
    if result["status"] in ("active", "provisioning", "pending_approval"):
        result["start"], result["end"] = _window_result(request=request)
    if result["status"] == "active":
        schedule = dict(request, id=request.get("targetScheduleId") or request.get("id"), assignmentType="Activated")
        result["activation"] = act.describe_activation(task.target, schedule, task.state.eligibility, "Provisioned")


def _activate(task, result, body):
    module, p = task.module, task.p
    result["action_taken"] = "activated"
    if module.check_mode:
        task.validate(body)
        policy = task.read_policy()
        result["status"] = "pending_approval" if policy is not None and policy.require_approval else "active"
        return
    outcome = task.post(body, confirm=task.confirm_activation)
    request = outcome.request
    if request is None:  # confirmed by a re-read after a lost answer
        state = task.state
        request = state.pending[0] if state.pending else None
        if request is None and state.activation is not None:
            result["status"] = "active"
            result["activation"] = act.describe_activation(task.target, state.activation, state.eligibility)
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


def _extend(task, result, plan):
    module, p = task.module, task.p
    if module.check_mode:
        result["action_taken"] = "extended"
        try:
            answer = task.validate(plan.body) or {}
        except GraphError as err:
            if err.details.get("failed_rules"):
                raise
            result["action_taken"] = "reactivated"
            result["extend_refused"] = err.msg
            return
        if answer.get("status") in act.APPROVAL:
            # The same decision the real run makes (see below), without sending anything.
            policy = task.read_policy()
            if policy is None or policy.require_approval:
                result["action_taken"] = "extension_requested"
                result["status"] = "pending_approval"
            else:
                result["action_taken"] = "reactivated"
                result["extend_refused"] = "Graph would send the extension to an administrator (%s)" % answer["status"]
        return
    refused = None
    request = None
    try:
        request = task.post(plan.body).request
    except GraphError as err:
        if err.details.get("failed_rules") or err.code == "RoleAssignmentRequestAcrsValidationFailed":
            raise
        refused = err.msg
    if request is not None:
        status = request.get("status")
        if status in act.IN_EFFECT or status in act.PROVISIONING:
            result["action_taken"] = "extended"
            if p["wait"]:
                request, _finished = task.wait_request(request, through_approval=False)
            _apply_request(task, result, request)
            return
        if status in act.APPROVAL:
            policy = task.read_policy()
            if policy is None or policy.require_approval:
                # Ending the activation now would leave the user without the role until an approver decides.
                result["action_taken"] = "extension_requested"
                result["request"] = snake_case_keys(request)
                result["status"] = "pending_approval"
                if p["wait"] and p["require_active"]:
                    request, _finished = task.wait_request(request, through_approval=True)
                    if request and request.get("status") in act.IN_EFFECT:
                        task.reread()
                        result["request"] = snake_case_keys(request)
                        result["status"] = "active"
                        result["activation"] = act.describe_activation(
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
    task.deactivate(act.request_body("selfDeactivate", task.target))
    fresh = act.request_body("selfActivate", task.target, act.Desired("active", *_desired_tail(plan)), _now())
    _activate(task, result, fresh)
    result["action_taken"] = "reactivated"


def _desired_tail(plan):
    """(duration, min_remaining, justification, ticket_number, ticket_system) back from a planned body."""
    body = plan.fallback or plan.body
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
            when = act.deactivation_possible_at(task.state.activation)
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


def main():
    PimModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_together=[("ticket_number", "ticket_system")],
    ).run(run)


if __name__ == "__main__":
    main()
