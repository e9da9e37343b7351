#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_role_eligibility
short_description: Make a user or group eligible for a Microsoft Entra directory role with PIM
version_added: 0.1.0
description:
  - Manages one Privileged Identity Management (PIM) eligibility, that is the right of a user or a role-assignable
    group to activate a Microsoft Entra directory role when they need it.
  - Declarative. With O(state=present) a missing eligibility is created (C(adminAssign)); an existing one whose
    schedule differs is updated in place (C(adminUpdate)), never removed and created again; an equal one is left
    alone. With O(state=absent) an eligibility is removed (C(adminRemove)), and a request still waiting for approval
    or for its start is cancelled instead.
  - Schedules are compared by meaning. A start in the past is not a change; end times less than a minute apart are
    equal; O(duration) is counted from the start of the existing eligibility; permanent and expiring always differ.
  - The current state is read from PIM schedules, never from past requests (Microsoft Graph deletes those after
    about 45 days).
  - Eligibilities a user holds through a group are reported in RV(inherited) and never changed.
  - A refusal by the role's PIM policy is explained with the policy's value, for example the longest eligibility
    the role allows.
  - Needs the Microsoft Graph application permissions C(RoleEligibilitySchedule.ReadWrite.Directory) (or
    C(RoleManagement.ReadWrite.Directory)), C(Directory.Read.All) (or C(User.Read.All) and C(Group.Read.All)) to
    find principals, and C(AdministrativeUnit.Read.All) only when O(directory_scope) is given by name.
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._target
  - entra.pim._attributes
options:
  principal:
    description:
      - Who is made eligible.
      - A user's object id, user principal name or mail address (V(alice@contoso.com)); a group's object id or display
        name; a service principal's object id, display name or application (client) id.
      - A name that matches no object, or more than one, fails and lists the candidates. Give the object id then.
      - Only users and role-assignable groups can be eligible. A service principal fails with a hint to use
        M(entra.pim.pim_role_assignment) instead.
    type: str
    required: true
    version_added: 0.1.0
  start:
    description:
      - When the eligibility begins, as an ISO 8601 date and time such as V(2026-12-01T08:00:00Z). A time without a
        time zone is UTC.
      - Leave it out, or say V(now), to begin now. When an existing eligibility is updated, leaving it out keeps the
        start it has.
      - A start in the past is not treated as a change.
    type: str
    version_added: 0.1.0
  end:
    description:
      - When the eligibility ends, as an ISO 8601 date and time. It must be later than O(start), and in the future.
      - Only one of O(end), O(duration) and O(permanent=true) may be given.
      - When none of them is given, an existing eligibility keeps its end and a new one does not expire.
    type: str
    version_added: 0.1.0
  duration:
    description:
      - How long the eligibility lasts, as an ISO 8601 duration such as V(P90D), V(P2W) or V(PT12H). It counts from
        the start of the eligibility.
      - Months and years (V(P6M), V(P1Y)) are refused because their length varies; use days (V(P180D), V(P365D)).
      - Durations are kept to the second; one that is shorter than a second, zero or negative is refused, and so
        is one that would end after the year 9999. An empty value is refused; omit the option instead.
    type: str
    version_added: 0.1.0
  permanent:
    description:
      - V(true) makes the eligibility never expire. The role's policy may forbid this (the default policy allows it).
      - V(false) only makes sense together with O(end) or O(duration).
    type: bool
    version_added: 0.1.0
  justification:
    description:
      - Why the eligibility is given, recorded with the request. Some role policies require it.
      - It is sent with every request this task makes; it is not compared, because Graph does not return it with the
        eligibility.
    type: str
    version_added: 0.1.0
  state:
    description:
      - V(present) makes sure the eligibility exists with the given schedule; V(absent) makes sure it does not.
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
  - Justification and ticket are kept by Graph on the request, not on the eligibility, so changing only them is not
    a change.
  - An eligibility created with a start in the future shows C(status=Granted) until it starts.
seealso:
  - module: entra.pim.pim_role_eligibility_info
  - module: entra.pim.pim_policy
  - name: PIM APIs in Microsoft Graph
    description: How eligibility schedules, instances and requests relate.
    link: https://learn.microsoft.com/graph/api/resources/privilegedidentitymanagementv3-overview
"""

EXAMPLES = r"""
- name: Make Alice eligible for User Administrator for 90 days
  entra.pim.pim_role_eligibility:
    principal: alice@contoso.com
    role: User Administrator
    duration: P90D
    justification: Helpdesk rotation Q1

- name: Make the helpdesk group eligible in the Sales administrative unit until the end of the year
  entra.pim.pim_role_eligibility:
    principal: PIM-Helpdesk
    principal_type: group
    role: Helpdesk Administrator
    directory_scope: Sales AU
    end: "2026-12-31T23:59:59Z"
    ticket_number: CHG-1042
    ticket_system: ServiceNow

- name: Ask Graph whether a permanent eligibility would pass the role's policy, changing nothing
  entra.pim.pim_role_eligibility:
    principal: bob@contoso.com
    role: Security Administrator
    permanent: true
    validate_only: true
  register: check
  failed_when: not check.validation.valid

- name: Remove the eligibility (a request still pending approval is cancelled instead)
  entra.pim.pim_role_eligibility:
    principal: alice@contoso.com
    role: User Administrator
    state: absent

- name: Authenticate once for every entra.pim task of a play
  module_defaults:
    group/entra.pim.pim:
      tenant_id: "{{ vault_tenant_id }}"
      client_id: "{{ vault_client_id }}"
      client_secret: "{{ vault_client_secret }}"
  block:
    - name: Bob is eligible for Global Reader, permanently
      entra.pim.pim_role_eligibility:
        principal: bob@contoso.com
        role: Global Reader
        permanent: true
"""

RETURN = r"""
eligibility:
  description:
    - The eligibility after the task (what it would be, in check mode). Null when O(state=absent).
    - With a pending request that already asks for this eligibility, the request's view, with RV(eligibility.status)
      such as C(PendingApproval).
  returned: always
  type: dict
  contains:
    id:
      description: The eligibility schedule's id. It stays the same when the schedule is updated. Null in check mode
        for an eligibility not created yet.
      type: str
      sample: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
    principal_id:
      description: The object id of the user or group.
      type: str
      sample: 10000000-0000-4000-8000-000000000002
    principal_name:
      description: The display name of the user or group.
      type: str
      sample: Alice Anders
    principal_type:
      description: V(user) or V(group).
      type: str
      sample: user
    role_definition_id:
      description: The role definition id.
      type: str
      sample: fe930be7-5e62-47db-91af-98c3a49a38b1
    role_name:
      description: The role's display name.
      type: str
      sample: User Administrator
    directory_scope_id:
      description: The directory scope, V(/) or V(/administrativeUnits/{id}).
      type: str
      sample: /
    app_scope_id:
      description: The application scope, or null.
      type: str
      sample: null
    start:
      description: When the eligibility begins (UTC).
      type: str
      sample: "2026-11-29T10:00:00Z"
    end:
      description: When it ends (UTC); null when permanent.
      type: str
      sample: "2027-02-27T10:00:00Z"
    permanent:
      description: Whether it never expires.
      type: bool
      sample: false
    member_type:
      description: V(Direct) for an eligibility given to the principal itself.
      type: str
      sample: Direct
    status:
      description: Graph's status, for example C(Provisioned), C(Granted) (starts later) or C(PendingApproval).
      type: str
      sample: Provisioned
request:
  description:
    - The schedule request Graph created for the change, with snake_case keys. Graph keeps requests only for about
      45 days; the eligibility itself is in RV(eligibility).
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
    - Eligibilities for the same role and scope that the principal holds through a group. Same keys as
      RV(eligibility). They are never changed by this module.
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
      sample: "ExpirationRule: role 'User Administrator' requires eligible assignments to expire within P365D; the
        request asked for a permanent eligibility."
    failed_rules:
      description: The policy rules Graph named.
      type: list
      elements: str
      sample: [ExpirationRule]
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
    return pim.run_schedule_module(module, "eligibility")


def main():
    PimModule(
        argument_spec=pim.SCHEDULE_ARGSPEC,
        supports_check_mode=True,
        required_together=pim.SCHEDULE_REQUIRED_TOGETHER,
    ).run(run)


if __name__ == "__main__":
    main()
