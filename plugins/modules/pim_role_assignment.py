#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_role_assignment
short_description: Give a user, group or service principal an active Microsoft Entra directory role with PIM
version_added: 0.1.0
description:
  - Manages one Privileged Identity Management (PIM) active assignment, that is a directory role a user, a
    role-assignable group or a service principal holds without having to activate it, for a time or permanently.
  - Declarative. With O(state=present) a missing assignment is created (C(adminAssign)); an existing one whose
    schedule differs is updated in place (C(adminUpdate)), never removed and created again; an equal one is left
    alone. With O(state=absent) an assignment is removed (C(adminRemove)), and a request still waiting for its start
    or for approval is cancelled instead.
  - Schedules are compared by meaning. A start in the past is not a change; end times less than a minute apart are
    equal; O(duration) is counted from the start of the existing assignment; permanent and expiring always differ.
  - Manages assignments of type C(Assigned) only. An activation of an eligible role (type C(Activated), made by the
    user with M(entra.pim.pim_role_activation)) is never changed or counted as the managed assignment; when one
    exists it is reported in RV(activation).
  - Assignments held through a group are reported in RV(inherited) and never changed.
  - The current state is read from PIM schedules, never from past requests (Microsoft Graph deletes those after
    about 45 days).
  - A refusal by the role's PIM policy is explained with the policy's value, for example the longest active
    assignment the role allows.
  - Needs the Microsoft Graph application permissions C(RoleAssignmentSchedule.ReadWrite.Directory) (or
    C(RoleManagement.ReadWrite.Directory)), C(Directory.Read.All) (or C(User.Read.All), C(Group.Read.All) and
    C(Application.Read.All)) to find principals, and C(AdministrativeUnit.Read.All) only when O(directory_scope) is
    given by name.
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._target
  - entra.pim._attributes
options:
  principal:
    description:
      - Who gets the role.
      - A user's object id, user principal name or mail address (V(alice@contoso.com)); a group's object id or display
        name; a service principal's object id, display name or application (client) id.
      - A name that matches no object, or more than one, fails and lists the candidates. Give the object id then.
      - Groups must be role-assignable.
    type: str
    required: true
    version_added: 0.1.0
  start:
    description:
      - When the assignment begins, as an ISO 8601 date and time such as V(2026-12-01T08:00:00Z). A time without a
        time zone is UTC.
      - Leave it out, or say V(now), to begin now. When an existing assignment is updated, leaving it out keeps the
        start it has.
      - A start in the past is not treated as a change.
    type: str
    version_added: 0.1.0
  end:
    description:
      - When the assignment ends, as an ISO 8601 date and time. It must be later than O(start), and in the future.
      - Only one of O(end), O(duration) and O(permanent=true) may be given.
      - When none of them is given, an existing assignment keeps its end and a new one does not expire.
    type: str
    version_added: 0.1.0
  duration:
    description:
      - How long the assignment lasts, as an ISO 8601 duration such as V(P30D), V(P2W) or V(PT12H). It counts from
        the start of the assignment.
      - Months and years (V(P6M), V(P1Y)) are refused because their length varies; use days (V(P180D)).
      - Durations are kept to the second; one that is shorter than a second, zero or negative is refused, and so
        is one that would end after the year 9999. An empty value is refused; omit the option instead.
    type: str
    version_added: 0.1.0
  permanent:
    description:
      - V(true) makes the assignment never expire. The role's policy may forbid this (rule
        C(Expiration_Admin_Assignment)).
      - V(false) only makes sense together with O(end) or O(duration).
    type: bool
    version_added: 0.1.0
  justification:
    description:
      - Why the role is assigned, recorded with the request. The default policy of most roles requires it for active
        assignments (rule C(Enablement_Admin_Assignment)).
      - It is sent with every request this task makes; it is not compared, because Graph does not return it with the
        assignment.
    type: str
    version_added: 0.1.0
  state:
    description:
      - V(present) makes sure the assignment exists with the given schedule; V(absent) makes sure it does not.
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
notes:
  - The role's PIM policy is read with the current state, in the same round trip. A schedule longer than the
    policy allows, no end where the policy requires one, or no justification or ticket where its Enablement rule
    requires them, fails before anything is sent (also in check mode), naming the rule, the option and the policy's
    value. If the policy cannot be read, Graph's own refusal is explained instead.
  - A O(directory_scope) of V(/administrativeUnits/<id>) must name an existing administrative unit; it is read in the
    same round trip as the state and refused before anything is sent otherwise.
  - Graph requires a schedule on every active assignment request, so one is always sent, also to remove.
  - Justification and ticket are kept by Graph on the request, not on the assignment, so changing only them is not a
    change.
  - Graph keeps one active assignment per principal, role and scope. While the principal has the role activated, Graph
    refuses to create an assignment for it; the error says so and when the activation ends.
seealso:
  - module: entra.pim.pim_role_assignment_info
  - module: entra.pim.pim_role_eligibility
  - module: entra.pim.pim_role_activation
  - name: PIM APIs in Microsoft Graph
    description: How assignment schedules, instances and requests relate.
    link: https://learn.microsoft.com/graph/api/resources/privilegedidentitymanagementv3-overview
"""

EXAMPLES = r"""
- name: Give the deployment pipeline Application Administrator for 30 days
  entra.pim.pim_role_assignment:
    principal: Deploy Pipeline
    principal_type: service_principal
    role: Application Administrator
    duration: P30D
    justification: Release train 42

- name: The helpdesk group holds Helpdesk Administrator in the Sales administrative unit until the end of the year
  entra.pim.pim_role_assignment:
    principal: PIM-Helpdesk
    principal_type: group
    role: Helpdesk Administrator
    directory_scope: Sales AU
    end: "2026-12-31T23:59:59Z"
    justification: Sales helpdesk
    ticket_number: CHG-1042
    ticket_system: ServiceNow

- name: Ask Graph whether a permanent assignment would pass the role's policy, changing nothing
  entra.pim.pim_role_assignment:
    principal: bob@contoso.com
    role: Security Administrator
    permanent: true
    justification: Security on-call
    validate_only: true
  register: check
  failed_when: not check.validation.valid

- name: Remove the assignment (a request still pending is cancelled instead)
  entra.pim.pim_role_assignment:
    principal: alice@contoso.com
    role: User Administrator
    state: absent
    justification: Left the team
"""

RETURN = r"""
assignment:
  description:
    - The active assignment (type C(Assigned)) after the task (what it would be, in check mode). Null when
      O(state=absent).
    - With a pending request that already asks for this assignment, the request's view, with RV(assignment.status)
      such as C(Granted).
  returned: always
  type: dict
  contains:
    id:
      description: The assignment schedule's id. It stays the same when the schedule is updated. Null in check mode
        for an assignment not created yet.
      type: str
      sample: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
    principal_id:
      description: The object id of the user, group or service principal.
      type: str
      sample: 30000000-0000-4000-8000-000000000004
    principal_name:
      description: Its display name.
      type: str
      sample: Deploy Pipeline
    principal_type:
      description: V(user), V(group) or V(service_principal).
      type: str
      sample: service_principal
    role_definition_id:
      description: The role definition id.
      type: str
      sample: 9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3
    role_name:
      description: The role's display name.
      type: str
      sample: Application Administrator
    directory_scope_id:
      description: The directory scope, V(/) or V(/administrativeUnits/{id}).
      type: str
      sample: /
    app_scope_id:
      description: The application scope, or null.
      type: str
      sample: null
    start:
      description: When the assignment begins (UTC).
      type: str
      sample: "2026-11-29T10:00:00Z"
    end:
      description: When it ends (UTC); null when permanent.
      type: str
      sample: "2026-12-29T10:00:00Z"
    permanent:
      description: Whether it never expires.
      type: bool
      sample: false
    member_type:
      description: V(Direct) for an assignment given to the principal itself.
      type: str
      sample: Direct
    assignment_type:
      description: Always V(Assigned) here.
      type: str
      sample: Assigned
    status:
      description: Graph's status, for example C(Provisioned) or C(Granted) (starts later).
      type: str
      sample: Provisioned
activation:
  description:
    - The principal's current activation of the same role and scope (type C(Activated)), when there is one. It is
      reported only; this module never changes it. Same keys as RV(assignment).
  returned: always
  type: dict
  sample: null
request:
  description:
    - The schedule request Graph created for the change, with snake_case keys. Graph keeps requests only for about
      45 days; the assignment itself is in RV(assignment).
  returned: when a request was sent and Graph answered it
  type: dict
  sample:
    id: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
    action: adminAssign
    status: Provisioned
    target_schedule_id: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
changes:
  description: Why the task changed something (or why not), in words.
  returned: always
  type: list
  elements: str
  sample: ["end: 2027-01-01T00:00:00Z -> permanent"]
inherited:
  description:
    - Active assignments for the same role and scope that the principal holds through a group. Same keys as
      RV(assignment). They are never changed by this module.
  returned: always
  type: list
  elements: dict
  sample: []
validation:
  description: Graph's answer when O(validate_only=true).
  returned: when O(validate_only=true)
  type: dict
  contains:
    valid:
      description: Whether Graph would accept the change (true when there is nothing to change).
      type: bool
      sample: false
    message:
      description: Why Graph would refuse it, in words, with the policy's values.
      type: str
      sample: "JustificationRule: role 'Security Administrator' requires a justification for active assignments; set
        justification."
    failed_rules:
      description: The policy rules Graph named.
      type: list
      elements: str
      sample: [JustificationRule]
    error_code:
      description: Graph's error code.
      type: str
      sample: RoleAssignmentRequestPolicyValidationFailed
auth_method:
  description: Which authentication method was used.
  returned: always
  type: str
  sample: client_secret
"""

from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule


def run(module):
    # Only type Assigned is managed; the principal's activation is reported, and explains a refused create.
    return pim.run_schedule_module(
        module,
        "assignment",
        keep_pending=pim.is_admin_request,
        report=pim.report_activation,
        explain=pim.explain_assignment_error,
    )


def main():
    PimModule(
        argument_spec=pim.SCHEDULE_ARGSPEC,
        supports_check_mode=True,
        required_together=pim.SCHEDULE_REQUIRED_TOGETHER,
    ).run(run)


if __name__ == "__main__":
    main()
