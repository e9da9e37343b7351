#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_role_assignment_info
short_description: List active Microsoft Entra directory role assignments and activations (PIM)
version_added: 0.1.0
description:
  - Lists who holds which directory role right now, or from a set time, through Privileged Identity Management (PIM)
    - both active assignments made by an administrator (RV(assignments[].assignment_type=Assigned)) and activations of
    eligible roles (RV(assignments[].assignment_type=Activated)).
  - Reads the assignment schedules and their current instances, so the list shows both what was granted and whether
    it is in effect now. For an activation, the eligibility it was activated from is included. Past requests are not
    used (Microsoft Graph deletes them after about 45 days).
  - Filters by principal, role, scope and how soon assignments expire. Names of principals and roles are included.
  - With O(current_user=true) it lists the roles of the signed-in user (Graph's C(filterByCurrentUser)), which needs
    a delegated token but no directory reader role.
  - Needs the Microsoft Graph permissions C(RoleAssignmentSchedule.Read.Directory) (or
    C(RoleManagement.Read.Directory)) and C(Directory.Read.All) to name principals.
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._target.FILTERS
  - entra.pim._attributes.INFO_MODULE
options:
  principal:
    description:
      - Only assignments of this user, group or service principal, given as for M(entra.pim.pim_role_assignment)
        (object id, user principal name, mail, display name or application id).
      - Cannot be combined with O(current_user=true).
    type: str
    version_added: 0.1.0
  assignment_type:
    description:
      - Only V(assigned) (made by an administrator) or V(activated) (activations of eligible roles); V(all) for both.
    type: str
    choices: [all, assigned, activated]
    default: all
    version_added: 0.1.0
  expiring_within:
    description:
      - Only assignments that end within this ISO 8601 duration from now, for example V(PT1H) or V(P30D). Permanent
        ones are left out.
    type: str
    version_added: 0.1.0
  current_user:
    description:
      - List the signed-in user's own assignments and activations, including those through groups, with Graph's
        C(filterByCurrentUser(on='principal')).
      - Needs a delegated token (O(auth_method=access_token), V(azure_cli) or V(username_password)); an application
        token is refused with an explanation.
    type: bool
    default: false
    version_added: 0.1.0
seealso:
  - module: entra.pim.pim_role_assignment
  - module: entra.pim.pim_role_activation
"""

EXAMPLES = r"""
- name: Everyone who holds Global Administrator right now, assigned or activated
  entra.pim.pim_role_assignment_info:
    role: Global Administrator
  register: global_admins

- name: Activations that end within the next hour
  entra.pim.pim_role_assignment_info:
    assignment_type: activated
    expiring_within: PT1H
  register: ending

- name: My own active roles (token of the signed-in Azure CLI user)
  entra.pim.pim_role_assignment_info:
    auth_method: azure_cli
    current_user: true
  register: mine

- name: Show them
  ansible.builtin.debug:
    msg: "{{ item.role_name }} ({{ item.assignment_type }}) until {{ item.end | default('forever', true) }}"
  loop: "{{ mine.assignments }}"
"""

RETURN = r"""
assignments:
  description: The active assignments and activations that match, sorted by role name, then principal name.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The assignment schedule's id.
      type: str
      sample: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
    principal_id:
      description: The object id of the user, group or service principal.
      type: str
      sample: 10000000-0000-4000-8000-000000000002
    principal_name:
      description: Its display name (null when the object no longer exists or cannot be read).
      type: str
      sample: Alice Anders
    principal_type:
      description: V(user), V(group) or V(service_principal); null when unknown.
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
      description: The directory scope.
      type: str
      sample: /
    app_scope_id:
      description: The application scope, or null.
      type: str
      sample: null
    assignment_type:
      description: V(Assigned) (by an administrator) or V(Activated) (an activation of an eligible role).
      type: str
      sample: Activated
    member_type:
      description: V(Direct), or V(Group) when held through a group.
      type: str
      sample: Direct
    start:
      description: When it began or begins (UTC); null when Graph does not say (permanent direct assignments).
      type: str
      sample: "2026-11-29T10:00:00Z"
    end:
      description: When it ends (UTC); null when permanent.
      type: str
      sample: "2026-11-29T18:00:00Z"
    permanent:
      description: Whether it never expires.
      type: bool
      sample: false
    status:
      description: Graph's status of the schedule, for example C(Provisioned) or C(Granted) (starts later).
      type: str
      sample: Provisioned
    in_effect:
      description: Whether Graph reports a current instance of it, that is it has started and not ended.
      type: bool
      sample: true
    role_assignment_origin_id:
      description: Graph's C(roleAssignmentOriginId) of the current instance, when in effect.
      type: str
    activated_using:
      description:
        - For an activation, the eligibility (schedule instance) it was activated from, with snake_case keys
          (C(id), C(role_eligibility_schedule_id), C(start_date_time), C(end_date_time), C(member_type), ...). Null
          otherwise.
      type: dict
    eligibility_id:
      description: For an activation, the id of the eligibility schedule it was activated from; null otherwise.
      type: str
"""

from datetime import datetime, timezone

from ansible_collections.entra.pim.plugins.module_utils import _activation as act
from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._errors import InputError
from ansible_collections.entra.pim.plugins.module_utils._graph import snake_case_keys
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule

ARGUMENT_SPEC = dict(
    principal=dict(type="str"),
    principal_type=dict(type="str", default="auto", choices=list(_resolve.PRINCIPAL_TYPES)),
    role=dict(type="str"),
    directory_scope=dict(type="str"),
    assignment_type=dict(type="str", default="all", choices=["all", "assigned", "activated"]),
    expiring_within=dict(type="str"),
    current_user=dict(type="bool", default=False),
)

KIND = pim.KINDS["assignment"]
_ENDED = frozenset({"Revoked", "Canceled", "Denied", "Failed", "Expired"})


def rows_from_lists(schedules, instances, scope_id=None, assignment_type="all"):
    """Pure: Graph schedules + instances → [(item, window, in_effect, instance)] after the local filters."""

    def keep(item):
        if item.get("status") in _ENDED:
            return False
        if assignment_type != "all" and (item.get("assignmentType") or "Assigned").lower() != assignment_type:
            return False
        return scope_id is None or (item.get("directoryScopeId") or "/").lower() == scope_id.lower()

    by_schedule = {}
    for inst in instances or []:
        if keep(inst):
            by_schedule.setdefault(inst.get("roleAssignmentScheduleId"), inst)
    rows, seen = [], set()
    for item in schedules or []:
        if keep(item):
            inst = by_schedule.get(item.get("id"))
            rows.append((item, sched.window_from_schedule_info(item.get("scheduleInfo")), inst is not None, inst))
            seen.add(item.get("id"))
    # An instance whose schedule is not in this answer (e.g. a direct roleAssignments entry) still counts.
    for schedule_id, inst in by_schedule.items():
        if schedule_id not in seen:
            rows.append((dict(inst, id=schedule_id or inst.get("id")), sched.window_from_instance(inst), True, inst))
    return rows


def describe_rows(rows, resolver, names):
    out = []
    for item, window, effective, inst in rows:
        used = (inst or {}).get("activatedUsing")
        entry = pim.describe_listed(resolver, names, item, window, effective)
        entry.update(
            assignment_type=item.get("assignmentType") or "Assigned",
            status=item.get("status") or ("Provisioned" if effective else None),
            role_assignment_origin_id=(inst or {}).get("roleAssignmentOriginId"),
            activated_using=snake_case_keys(used) if used else None,
            eligibility_id=(used or {}).get("roleEligibilityScheduleId") or (used or {}).get("id") if used else None,
        )
        out.append(entry)
    return pim.sort_listed(out, "assignment_type")


def run(module):
    p = module.params
    now = datetime.now(timezone.utc)
    pim.check_list_filters(p["directory_scope"], p["expiring_within"])  # bad input fails before any request
    if p["current_user"] and p["principal"]:
        raise InputError(
            "principal and current_user=true exclude each other: current_user lists the signed-in user's roles"
        )

    client = module.client
    names = {}
    if p["current_user"]:
        claims = client.token_claims()
        act.require_delegated(claims, client.auth_method, what="list the signed-in user's roles (current_user=true)")
        user_id, user_name = act.signed_in_user(claims)
        names[user_id] = _resolve.Principal(user_id, "user", user_name, claims.get("upn"), None)
    resolver = _resolve.Resolver(client)
    principal_id, role_id, scope_id = pim.resolve_filters(
        client, resolver, p["principal"], p["principal_type"], p["role"], p["directory_scope"]
    )

    schedules, instances = pim.read_lists(
        client, KIND, principal_id, role_id, p["current_user"], instance_params={"$expand": "activatedUsing"}
    )
    rows = pim.expiring(
        rows_from_lists(schedules, instances, scope_id, p["assignment_type"]), p["expiring_within"], now
    )
    # An ordinary user may not read directory objects: then group names are left out.
    names = pim.name_principals(resolver, rows, names, denied_ok=p["current_user"])
    return dict(changed=False, assignments=describe_rows(rows, resolver, names))


def main():
    PimModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True).run(run)


if __name__ == "__main__":
    main()
