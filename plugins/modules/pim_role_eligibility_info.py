#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_role_eligibility_info
short_description: List PIM eligibilities for Microsoft Entra directory roles
version_added: 0.1.0
description:
  - Lists Privileged Identity Management (PIM) eligibilities, that is who may activate which directory role, where,
    and until when.
  - Reads the eligibility schedules and their current instances, so the list shows both what was granted and whether
    it is in effect now. Past requests are not used (Microsoft Graph deletes them after about 45 days).
  - Filters by principal, role, scope and how soon eligibilities expire. Names of principals and roles are included.
  - Needs the Microsoft Graph application permissions C(RoleEligibilitySchedule.Read.Directory) (or
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
      - Only eligibilities of this user, group or service principal, given as for
        M(entra.pim.pim_role_eligibility) (object id, user principal name, mail, display name or application id).
      - Eligibilities the principal holds through a group are included when Graph reports them for it.
    type: str
    version_added: 0.1.0
  expiring_within:
    description:
      - Only eligibilities that end within this ISO 8601 duration from now, for example V(P30D). Permanent ones are
        left out.
    type: str
    version_added: 0.1.0
seealso:
  - module: entra.pim.pim_role_eligibility
"""

EXAMPLES = r"""
- name: Everything Alice is eligible for
  entra.pim.pim_role_eligibility_info:
    principal: alice@contoso.com
  register: alice

- name: Eligibilities for Global Administrator that expire within 30 days
  entra.pim.pim_role_eligibility_info:
    role: Global Administrator
    expiring_within: P30D
  register: expiring

- name: Tell who has to renew
  ansible.builtin.debug:
    msg: "{{ item.principal_name }} loses {{ item.role_name }} on {{ item.end }}"
  loop: "{{ expiring.eligibilities }}"
"""

RETURN = r"""
eligibilities:
  description: The eligibilities that match, sorted by role name, then principal name.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The eligibility schedule's id.
      type: str
      sample: 0b0c7d36-4b5e-4e46-9c0e-6a0a3f0b5f21
    principal_id:
      description: The object id of the user or group.
      type: str
      sample: 10000000-0000-4000-8000-000000000002
    principal_name:
      description: Its display name (null when the object no longer exists).
      type: str
      sample: Alice Anders
    principal_type:
      description: V(user), V(group) or V(service_principal); null when the object no longer exists.
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
      description: V(Direct), or V(Group) when held through a group.
      type: str
      sample: Direct
    status:
      description: Graph's status of the schedule, for example C(Provisioned).
      type: str
      sample: Provisioned
    in_effect:
      description: Whether Graph reports a current instance of it, that is it has started and not ended.
      type: bool
      sample: true
"""

from datetime import datetime, timezone

from ansible_collections.entra.pim.plugins.module_utils import _pim as pim
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils import _schedule as sched
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule

ARGUMENT_SPEC = dict(
    principal=dict(type="str"),
    principal_type=dict(type="str", default="auto", choices=list(_resolve.PRINCIPAL_TYPES)),
    role=dict(type="str"),
    directory_scope=dict(type="str"),
    expiring_within=dict(type="str"),
)

KIND = pim.KINDS["eligibility"]


def rows_from_lists(schedules, instances, scope_id=None):
    """Pure: Graph schedules + instances → [(item, window, in_effect)] at the scope (None: every scope)."""

    def keep(item):
        if item.get("status") in ("Revoked", "Canceled", "Denied", "Failed"):
            return False
        return scope_id is None or (item.get("directoryScopeId") or "/").lower() == scope_id.lower()

    in_effect = {i.get("roleEligibilityScheduleId") for i in instances if keep(i)}
    rows = []
    seen = set()
    for item in schedules:
        if keep(item):
            rows.append((item, sched.window_from_schedule_info(item.get("scheduleInfo")), item.get("id") in in_effect))
            seen.add(item.get("id"))
    # An instance without a schedule in this answer (e.g. reached through a group) is still an eligibility.
    for inst in instances:
        if keep(inst) and inst.get("roleEligibilityScheduleId") not in seen:
            rows.append(
                (
                    dict(inst, id=inst.get("roleEligibilityScheduleId") or inst.get("id")),
                    sched.window_from_instance(inst),
                    True,
                )
            )
    return rows


def run(module):
    p = module.params
    now = datetime.now(timezone.utc)
    pim.check_list_filters(p["directory_scope"], p["expiring_within"])  # bad input fails before any request
    client = module.client
    resolver = _resolve.Resolver(client)
    principal_id, role_id, scope_id = pim.resolve_filters(
        client, resolver, p["principal"], p["principal_type"], p["role"], p["directory_scope"]
    )
    schedules, instances = pim.read_lists(client, KIND, principal_id, role_id)
    rows = pim.expiring(rows_from_lists(schedules, instances, scope_id), p["expiring_within"], now)
    names = pim.name_principals(resolver, rows)
    eligibilities = pim.sort_listed([pim.describe_listed(resolver, names, *row) for row in rows])
    return dict(changed=False, eligibilities=eligibilities)


def main():
    PimModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True).run(run)


if __name__ == "__main__":
    main()
