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
  - A role the user is not eligible for (at that scope, now), or a missing justification or ticket that the role's
    policy requires, is refused before anything is sent (also in check mode), with the roles the user is eligible
    for or the policy's rule and value.
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
      - An empty or blank value is refused; omit the option, or give V(/), for the tenant.
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
      - At least V(PT5M), since Graph does not end an activation within 5 minutes of its start; a shorter
        duration is refused before anything is sent.
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
    details:
      - Shows the activation before and after, in check mode as it would be after the request. A request waiting for
        an approver (an activation, or the extension of an activation) is shown with its status and C(request_id).
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
  description:
    - The activation after the task; null when the role is not active (or only pending).
    - In check mode, the activation the request would give.
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

from ansible_collections.entra.pim.plugins.module_utils import _activation as act
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


def main():
    PimModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_together=[("ticket_number", "ticket_system")],
    ).run(act.run)


if __name__ == "__main__":
    main()
