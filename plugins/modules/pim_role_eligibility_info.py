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
  - entra.pim._attributes.INFO_MODULE
options:
  principal:
    description:
      - Only eligibilities of this user, group or service principal, given as for
        M(entra.pim.pim_role_eligibility) (object id, user principal name, mail, display name or application id).
      - Eligibilities the principal holds through a group are included when Graph reports them for it.
    type: str
    version_added: 0.1.0
  principal_type:
    description:
      - What kind of object O(principal) names; V(auto) guesses from the value.
    type: str
    choices: [auto, user, group, service_principal]
    default: auto
    version_added: 0.1.0
  role:
    description:
      - Only eligibilities for this role, by display name (case-insensitive), role definition id or template id.
    type: str
    version_added: 0.1.0
  directory_scope:
    description:
      - Only eligibilities at this scope, V(/), V(/administrativeUnits/{id}) or an administrative unit's name.
      - Leave it out for every scope.
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
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError
from ansible_collections.entra.pim.plugins.module_utils._graph import odata_quote
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule

ARGUMENT_SPEC = dict(
    principal=dict(type="str"),
    principal_type=dict(type="str", default="auto", choices=list(_resolve.PRINCIPAL_TYPES)),
    role=dict(type="str"),
    directory_scope=dict(type="str"),
    expiring_within=dict(type="str"),
)

KIND = pim.KINDS["eligibility"]


def list_eligibilities(
    client, resolver, principal_id=None, role_id=None, scope_id=None, expiring_within=None, now=None
):
    """Schedules and instances (one $batch), filtered server-side by principal and role, named in bulk."""
    now = now or datetime.now(timezone.utc)
    clauses = []
    if principal_id:
        clauses.append("principalId eq %s" % odata_quote(_resolve.require_guid(principal_id, "principal id")))
    if role_id:
        clauses.append("roleDefinitionId eq %s" % odata_quote(_resolve.require_guid(role_id, "role id")))
    params = {"$filter": " and ".join(clauses)} if clauses else {}
    reqs = [
        {"method": "GET", "path": path, "params": params, "url": _resolve.encode_url(path, params)}
        for path in (KIND.schedules, KIND.instances)
    ]
    answers = _resolve.send_all(client, reqs)
    lists = []
    for answer in answers:
        if isinstance(answer, GraphError):
            raise answer
        lists.append(_resolve.follow_pages(client, answer))
    schedules, instances = lists

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
    if expiring_within:
        limit = now + sched.parse_duration(expiring_within, "expiring_within")
        rows = [r for r in rows if r[1].end is not None and r[1].end <= limit]

    names = resolver.principals_by_ids([r[0].get("principalId") for r in rows]) if rows else {}
    out = []
    for item, window, effective in rows:
        principal = names.get((item.get("principalId") or "").lower())
        role = resolver.role_by_id(item.get("roleDefinitionId"))
        entry = {
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
        entry.update(sched.describe(window))
        out.append(entry)
    out.sort(
        key=lambda e: ((e["role_name"] or "").lower(), (e["principal_name"] or "").lower(), e["directory_scope_id"])
    )
    return out


def run(module):
    p = module.params
    now = datetime.now(timezone.utc)
    if p["expiring_within"]:
        sched.parse_duration(p["expiring_within"], "expiring_within")  # bad input fails before any request
    if p["directory_scope"]:
        _resolve.directory_scope_local(p["directory_scope"])  # likewise for a malformed scope id
    client = module.client
    resolver = _resolve.Resolver(client)
    principal_id = role_id = scope_id = None
    if p["principal"] and p["role"]:
        # Role list, principal and scope name in one round trip.
        target = pim.resolve_target(
            client, resolver, p["role"], p["principal"], p["principal_type"], p["directory_scope"] or "/"
        )
        principal_id, role_id = target.principal.id, target.role.id
        scope_id = target.directory_scope_id if p["directory_scope"] else None
    else:
        if p["principal"]:
            principal_id = resolver.principal(p["principal"], p["principal_type"]).id
        if p["role"]:
            role_id = resolver.role(p["role"]).id
        if p["directory_scope"]:
            scope_id = resolver.directory_scope(p["directory_scope"])
    eligibilities = list_eligibilities(client, resolver, principal_id, role_id, scope_id, p["expiring_within"], now)
    return dict(changed=False, eligibilities=eligibilities)


def main():
    PimModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True).run(run)


if __name__ == "__main__":
    main()
