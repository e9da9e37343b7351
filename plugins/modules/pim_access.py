#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_access
short_description: Reconcile many PIM role eligibilities and active assignments in one task
version_added: 0.1.0
description:
  - Makes the Privileged Identity Management (PIM) eligible and active assignments of Microsoft Entra directory roles
    match a list of O(grants), in one task, for hundreds or thousands of grants.
  - Declarative. Every grant is compared by meaning with what Microsoft Graph holds, exactly as
    M(entra.pim.pim_role_eligibility) does for one grant; missing grants are added, different schedules are updated
    in place, equal ones are left alone.
  - With O(purge=true), whatever sits inside the O(boundary) but is not in O(grants) is removed, or cancelled when it
    is still a pending request. Nothing outside the boundary is ever removed. Entries inherited through a group and
    O(protected_principals) are never removed; activations (a member's own just-in-time activation) are ended only
    with O(end_activations=true).
  - Built for scale. All principals and roles are resolved together, the current state of the whole boundary is read
    with as few paged requests as possible, and the changes are sent through Microsoft Graph C($batch) requests of
    20. Throttled requests are retried; a lost answer is settled by reading the state again, so nothing is sent
    twice.
  - One bad item (an unknown principal, a service principal asked to be eligible, a schedule that does not parse) is
    reported precisely. With O(fail_fast=true) it stops the task before anything is written; with
    O(fail_fast=false) it is skipped and the rest is applied.
  - Needs the Microsoft Graph permissions C(RoleEligibilitySchedule.ReadWrite.Directory) and
    C(RoleAssignmentSchedule.ReadWrite.Directory) (or C(RoleManagement.ReadWrite.Directory)), plus
    C(Directory.Read.All) (or C(User.Read.All), C(Group.Read.All) and C(Application.Read.All)) to find principals.
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._attributes
attributes:
  check_mode:
    description: Returns the full plan (every add, update, removal and the unchanged count) and writes nothing.
    support: full
  diff_mode:
    description: Shows the schedule of every item that changes, before and after, keyed by type, role, scope and
      principal.
    support: full
options:
  grants:
    description:
      - The desired eligible and active assignments inside the O(boundary).
      - Each grant takes the same options as M(entra.pim.pim_role_eligibility) for one item.
      - A principal, role and scope may appear once per O(grants[].type).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
    suboptions:
      principal:
        description:
          - Who gets the role. An object id, a user principal name or mail address, a group display name or mail, a
            service principal display name, or an application (client) id.
        type: str
        required: true
      principal_type:
        description:
          - What kind of object O(grants[].principal) names. V(auto) searches users, groups and service principals.
        type: str
        choices: [auto, user, group, service_principal]
        default: auto
      role:
        description: The directory role, by display name (case-insensitive), role definition id or template id.
        type: str
        required: true
      directory_scope:
        description:
          - Where the role applies. V(/) is the whole tenant; C(/administrativeUnits/{id}) or the display name of an
            administrative unit limits it to that unit.
          - An empty or blank value makes the grant a bad item (see O(fail_fast)), so that an unset variable never
            widens it to the whole tenant; omit the key, or give V(/), for the tenant.
        type: str
        default: /
      type:
        description:
          - V(eligible) makes the principal eligible to activate the role (a role eligibility).
          - V(active) gives the role directly (an active assignment); service principals can only be V(active).
        type: str
        choices: [eligible, active]
        default: eligible
      start:
        description:
          - When the grant starts, ISO 8601 (V(2026-11-29T10:00:00Z); a time without a timezone is UTC). Omitted or
            V(now) means now, and an existing grant keeps its start.
        type: str
      end:
        description: When the grant ends, ISO 8601. Mutually exclusive with O(grants[].duration) and
          O(grants[].permanent).
        type: str
      duration:
        description:
          - How long the grant lasts from its start, ISO 8601 (V(P365D), V(PT8H)).
          - Kept to the second; shorter than a second, zero, negative or ending after the year 9999 is refused.
        type: str
      permanent:
        description:
          - V(true) for a grant that never expires (if the role's policy allows it).
          - Without O(grants[].end), O(grants[].duration) or O(grants[].permanent), the end is not managed.
        type: bool
      justification:
        description: Why; sent with the request. Defaults to the task-level O(justification).
        type: str
      ticket_number:
        description: Ticket number sent with the request. Defaults to the task-level O(ticket_number).
        type: str
      ticket_system:
        description: Ticket system sent with the request. Defaults to the task-level O(ticket_system).
        type: str
  boundary:
    description:
      - What this task owns. O(purge) removes only what is inside it, and every grant must be inside it.
      - Each key restricts one dimension; an omitted key does not restrict it. An omitted or empty boundary owns
        everything, so with O(purge=true) it manages every eligible and active assignment of the tenant.
      - A key given as an empty list (for example O(boundary.principals=[]) from a variable that happens to be empty)
        is refused before any request, naming the key; it would otherwise own everything along that dimension. To
        own everything on purpose, omit the key.
    type: dict
    version_added: 0.1.0
    suboptions:
      principals:
        description:
          - Only these principals (same forms as O(grants[].principal)).
          - Omit it to own every principal; an empty list is refused.
        type: list
        elements: str
      roles:
        description:
          - Only these roles (display names or ids).
          - Omit it to own every role; an empty list is refused.
        type: list
        elements: str
      directory_scopes:
        description:
          - Only these scopes (V(/), C(/administrativeUnits/{id}) or an administrative unit's name).
          - Omit it to own every scope; an empty list is refused.
          - An empty or blank entry is refused; it never stands for the tenant.
        type: list
        elements: str
      types:
        description:
          - Only these kinds of grant.
          - Omit it to own both kinds; an empty list is refused.
        type: list
        elements: str
        choices: [eligible, active]
  purge:
    description:
      - V(true) removes every eligible or active assignment inside O(boundary) that O(grants) does not list, and
        cancels pending requests for them.
      - A principal's own pending requests are cancelled too when they could grant what the task takes away,
        that is a C(selfExtend) or C(selfRenew) of a grant that O(grants) does not list, and a C(selfActivate) that no
        grant covers when O(end_activations=true) or when no eligibility it could come from is left after the
        run.
      - V(false) only adds and updates.
    type: bool
    default: false
    version_added: 0.1.0
  end_activations:
    description:
      - When O(purge=true), activations (C(assignmentType) C(Activated), a principal's own just-in-time activation)
        inside the O(boundary) that no grant covers are ended with C(adminRemove) on
        C(roleAssignmentScheduleRequests). A grant of either type for the same principal, role and scope covers
        the activation.
      - The boundary must include O(boundary.types=active) for activations to be read.
      - Ended activations are listed in RV(changes) with RV(changes[].action=remove), RV(changes[].type=active)
        and RV(changes[].activated=true), and counted in RV(summary.removed).
      - V(false) never ends an activation, and neither does O(purge=false).
    type: bool
    default: false
    version_added: 0.1.0
  protected_principals:
    description:
      - Principals never removed, whatever O(purge) says (break-glass accounts, the automation's own identity).
      - A name that matches several objects protects all of them.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  protect_last_global_admin:
    description:
      - Refuse to remove an active Global Administrator assignment when no other principal would keep one.
    type: bool
    default: true
    version_added: 0.1.0
  fail_fast:
    description:
      - V(true) stops the task before any write when any item is bad, and lists every bad item.
      - V(false) skips bad items, applies the rest and reports the skipped ones in RV(errors). A skipped grant is
        never turned into a removal by O(purge).
    type: bool
    default: true
    version_added: 0.1.0
  justification:
    description:
      - Default justification for every request. Some role policies require one.
      - Sent with every removal O(purge) makes (C(adminRemove)), so the Microsoft Graph audit trail shows why.
        A cancel carries none, because Microsoft Graph's C(cancel) takes no request body.
    type: str
    version_added: 0.1.0
  ticket_number:
    description:
      - Default ticket number for every request, and the ticket of every removal O(purge) makes.
      - Requires O(ticket_system).
    type: str
    version_added: 0.1.0
  ticket_system:
    description: Default ticket system for every request, and of every removal O(purge) makes.
    type: str
    version_added: 0.1.0
notes:
  - The PIM policy of every role with a planned create or update is read in one batched round. A grant longer
    than its role's policy allows, or without the justification or ticket its Enablement rule requires, is a bad
    item, refused before any write (see O(fail_fast)).
  - An administrative unit given by id (V(/administrativeUnits/<id>)) is read with the other lookups; one that does
    not exist makes the grant a bad item.
  - State is read from schedules, never from requests, which Microsoft Graph deletes after about 45 days.
  - A change of schedule is sent as C(adminUpdate); nothing is removed and created again.
  - Requests are sent 20 to a C($batch); with O(grants) of 1000 items a first run takes about 55 Graph round trips
    and a run without changes about 6.
seealso:
  - module: entra.pim.pim_role_eligibility
  - module: entra.pim.pim_role_eligibility_info
"""

EXAMPLES = r"""
- name: Make three people eligible for User Administrator and one for Helpdesk Administrator
  entra.pim.pim_access:
    justification: Onboarding CHG-1234
    grants:
      - principal: alice@contoso.example
        role: User Administrator
        duration: P180D
      - principal: bob@contoso.example
        role: User Administrator
        duration: P180D
      - principal: PIM-Helpdesk
        principal_type: group
        role: Helpdesk Administrator
        permanent: true
      - principal: Deploy Pipeline
        principal_type: service_principal
        role: Application Administrator
        type: active
        duration: P30D

# "PIM state as code": a nightly job (e.g. an AWX schedule) that enforces the file in git.
# Everything eligible for these roles that the file does not list is removed; activations,
# group-inherited entries and the break-glass accounts are never touched.
- name: Enforce the privileged-roles file
  entra.pim.pim_access:
    grants: "{{ lookup('ansible.builtin.file', 'pim/privileged-roles.yml') | from_yaml }}"
    boundary:
      roles:
        - Global Administrator
        - Privileged Role Administrator
        - User Administrator
        - Helpdesk Administrator
      types: [eligible, active]
    purge: true
    protected_principals:
      - breakglass1@contoso.example
      - breakglass2@contoso.example
    fail_fast: true
    justification: Nightly reconciliation of PIM state as code
  register: pim_nightly

- name: Show what the nightly run did
  ansible.builtin.debug:
    var: pim_nightly.summary

- name: Preview the same run without writing anything (check mode plus diff)
  entra.pim.pim_access:
    grants: "{{ lookup('ansible.builtin.file', 'pim/privileged-roles.yml') | from_yaml }}"
    boundary:
      roles: [User Administrator]
    purge: true
  check_mode: true
  diff: true
  register: pim_plan

- name: Offboard one person - remove everything they hold and end their activations, keep going if one item fails
  entra.pim.pim_access:
    grants: []
    boundary:
      principals: [leaver@contoso.example]
    purge: true
    end_activations: true
    fail_fast: false
    justification: Offboarding of a leaver
    ticket_number: HR-5678
    ticket_system: HR
"""

RETURN = r"""
summary:
  description: How many items each outcome counts. RV(summary.skipped) counts bad grants that were not applied.
  returned: always
  type: dict
  contains:
    added:
      description: Grants created (C(adminAssign)), or that would be in check mode.
      type: int
    updated:
      description: Grants whose schedule was changed in place (C(adminUpdate)).
      type: int
    removed:
      description: Grants removed by O(purge) (C(adminRemove)), activations ended by O(end_activations) included.
      type: int
    cancelled:
      description: Pending requests cancelled by O(purge).
      type: int
    unchanged:
      description: Grants that already matched.
      type: int
    protected:
      description: Entries O(purge) would have removed but that belong to O(protected_principals).
      type: int
    failed:
      description: Writes Microsoft Graph refused or that a fresh read shows were not applied, and removals refused by
        O(protect_last_global_admin).
      type: int
    skipped:
      description: Bad grants that were skipped (O(fail_fast=false)).
      type: int
    unknown:
      description: Items whose outcome is not known, because the writes stopped on an error before the item's
        outcome was known, or a write's answer was lost and Microsoft Graph could not be read to tell
        (RV(changes[].status=unknown)).
      type: int
  sample: {added: 998, updated: 1, removed: 3, cancelled: 0, unchanged: 1, protected: 1, failed: 0, skipped: 0}
changes:
  description:
    - One entry per grant and per purge candidate, in that order.
    - Also returned when the task fails after writing, so the items already applied are known.
  returned: always
  type: list
  elements: dict
  contains:
    principal:
      description: The principal as given in O(grants[].principal), or its display name for a purge candidate.
      type: str
    principal_id:
      description: The principal's object id.
      type: str
    principal_name:
      description: The principal's display name.
      type: str
    principal_type:
      description: V(user), V(group) or V(service_principal).
      type: str
    role:
      description: The role's display name.
      type: str
    role_id:
      description: The role definition id.
      type: str
    directory_scope:
      description: The directory scope id.
      type: str
    type:
      description: V(eligible) or V(active).
      type: str
    activated:
      description: V(true) for an activation (a principal's own just-in-time activation) that
        O(end_activations) ends; V(false) otherwise.
      type: bool
    action:
      description: V(add), V(update), V(remove), V(cancel) or V(none).
      type: str
    reasons:
      description: Why, in words (for example C(end 2026-01-01T00:00:00Z -> permanent)).
      type: list
      elements: str
    before:
      description: The grant before (C(start), C(end), C(permanent), C(status) and ids), or null when absent. For a
        cancelled request, also its C(request_id) and, for a principal's own request, C(request_action)
        (for example C(selfActivate)).
      type: dict
    after:
      description: The grant after, or null when removed.
      type: dict
    request_id:
      description: The id of the schedule request Graph created, when one was sent and answered.
      type: str
    status:
      description:
        - V(unchanged), V(planned) (check mode), V(applied), V(confirmed) (the answer was lost or doubtful and a
          fresh read showed the change in place), V(failed), V(unknown), V(protected) or V(refused).
        - Each status is what Microsoft Graph holds. A write whose answer was lost, or answered 5xx, is read again
          (a failed read is read again too) and sent again while Graph shows it absent, a bounded number of times.
          V(failed) means Graph refused it or still shows it absent; V(unknown) only that its answer was lost and
          Graph could not be read to tell.
        - When Graph answers that the grant already exists (another task made it meanwhile, for example the same
          task running in parallel) and a fresh read shows it as desired, the item is V(unchanged) with
          RV(changes[].action=none) and does not make the task changed; if it exists with another schedule, it is
          updated in place (RV(changes[].action=update)).
        - V(unknown) also when the writes stopped on an error before this item's outcome was known (the task
          fails and still returns every item, so what was applied can be told apart).
      type: str
    error:
      description: Why the item failed, in words.
      type: str
  sample:
    - principal: alice@contoso.example
      principal_id: 7f3c1a52-64f1-4a43-9a0e-0c2f4f7d1a10
      principal_name: Alice Adams
      principal_type: user
      role: User Administrator
      role_id: fe930be7-5e62-47db-91af-98c3a49a38b1
      directory_scope: /
      type: eligible
      activated: false
      action: add
      reasons: [the eligibility does not exist]
      before: null
      after: {start: "2026-11-29T10:00:00Z", end: "2027-05-28T10:00:00Z", permanent: false}
      request_id: 3b2d6a4c-1f0e-4b9a-8d7c-5e6f7a8b9c0d
      status: applied
      error: null
errors:
  description: Every bad item and every failed write, each with the item it concerns and a message for people.
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: Which item, e.g. C(grants[3] (eligible 'User Administrator' at '/' for 'nobody@contoso.example')).
      type: str
    msg:
      description: What is wrong and what was expected.
      type: str
  sample:
    - item: "grants[3] (eligible 'User Administrator' at '/' for 'nobody@contoso.example')"
      msg: "principal 'nobody@contoso.example' not found; searched users (by id, UPN or mail), groups and service
        principals (by name, id or appId)"
"""

from ansible_collections.entra.pim.plugins.module_utils._bulk import reconcile
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule

GRANT_SPEC = dict(
    principal=dict(type="str", required=True),
    principal_type=dict(type="str", default="auto", choices=["auto", "user", "group", "service_principal"]),
    role=dict(type="str", required=True),
    directory_scope=dict(type="str", default="/"),
    type=dict(type="str", default="eligible", choices=["eligible", "active"]),
    start=dict(type="str"),
    end=dict(type="str"),
    duration=dict(type="str"),
    permanent=dict(type="bool"),
    justification=dict(type="str"),
    ticket_number=dict(type="str", no_log=False),
    ticket_system=dict(type="str"),
)

BOUNDARY_SPEC = dict(
    principals=dict(type="list", elements="str"),
    roles=dict(type="list", elements="str"),
    directory_scopes=dict(type="list", elements="str"),
    types=dict(type="list", elements="str", choices=["eligible", "active"]),
)

ARGUMENT_SPEC = dict(
    grants=dict(type="list", elements="dict", default=[], options=GRANT_SPEC),
    boundary=dict(type="dict", options=BOUNDARY_SPEC),
    purge=dict(type="bool", default=False),
    end_activations=dict(type="bool", default=False),
    protected_principals=dict(type="list", elements="str", default=[]),
    protect_last_global_admin=dict(type="bool", default=True),
    fail_fast=dict(type="bool", default=True),
    justification=dict(type="str"),
    ticket_number=dict(type="str", no_log=False),
    ticket_system=dict(type="str"),
)


def run(module):
    return reconcile(
        module.client,
        module.params,
        check_mode=module.check_mode,
        diff_mode=module._diff,
        warn=module.warn,
    )


def main():
    PimModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_together=[("ticket_number", "ticket_system")],
    ).run(run)


if __name__ == "__main__":
    main()
