#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_policy_info
short_description: Read the PIM role settings (policies) of Microsoft Entra directory roles
version_added: 0.1.0
description:
  - Reads the Privileged Identity Management role settings of one, several or all Microsoft Entra directory roles
    in a single paged Microsoft Graph request, however many roles you ask for.
  - Returns for each role the settings as the Entra portal shows them (activation, assignment and notification
    settings) and the raw policy rules.
  - The returned RV(policies[].settings) is valid input for the O(entra.pim.pim_policy#module:settings) option of
    M(entra.pim.pim_policy), and RV(policies[].rules) for its O(entra.pim.pim_policy#module:rules) option. Give both
    to restore a policy exactly, including what the settings do not model (a second approval stage, escalation,
    requestor-manager approvers); C(playbooks/export_policies.yml) and C(playbooks/restore_policies.yml) do that.
  - Needs the Microsoft Graph permission C(RoleManagementPolicy.Read.Directory) (or a broader one such as
    C(RoleManagement.Read.Directory)) and, to show approver names, C(Directory.Read.All) or C(User.Read.All) plus
    C(Group.Read.All).
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._attributes
  - entra.pim._attributes.info_module
options:
  roles:
    description:
      - The roles to read, each a display name (case-insensitive), a role definition id or a template id.
      - Omit it to read the settings of every directory role. An empty list is refused; it never means every role.
    type: list
    elements: str
    aliases: [role]
    version_added: 0.1.0
notes:
  - The settings of every role come from one request to C(/policies/roleManagementPolicyAssignments) with the
    policy and its rules expanded; approver names come from one further lookup of all approver ids together.
  - Only the tenant-wide scope (V(/)) has role settings for directory roles.
seealso:
  - module: entra.pim.pim_policy
  - name: Update PIM rules with Microsoft Graph
    description: How the role settings map to the rules of a role management policy.
    link: https://learn.microsoft.com/graph/how-to-pim-update-rules
"""

EXAMPLES = r"""
- name: Read the settings of one role
  entra.pim.pim_policy_info:
    roles: Global Administrator
  register: ga

- name: Show the maximum activation length
  ansible.builtin.debug:
    msg: "{{ ga.policies[0].settings.activation.max_duration }}"

- name: Read several roles
  entra.pim.pim_policy_info:
    roles:
      - Privileged Role Administrator
      - User Administrator
      - 62e90394-69f5-4237-9190-012177145e10

- name: Export every role's settings to a file
  entra.pim.pim_policy_info:
  register: all_roles

- name: Write them down
  ansible.builtin.copy:
    dest: role-settings.yml
    content: "{{ all_roles.policies | map('dict2items') | map('selectattr', 'key', 'in', ['role_name', 'settings'])
                 | map('items2dict') | to_nice_yaml }}"
    mode: "0600"
"""

RETURN = r"""
policies:
  description:
    - One entry per role, in the order the roles were given (all roles are sorted by name).
  returned: always
  type: list
  elements: dict
  contains:
    role_id:
      description: The role definition id.
      type: str
      sample: 62e90394-69f5-4237-9190-012177145e10
    role_name:
      description: The role's display name (null when the role definition is unknown).
      type: str
      sample: Global Administrator
    policy_id:
      description: The id of the role management policy that holds the role's settings.
      type: str
      sample: DirectoryRole_cab01047-8ad9-4792-8e42-569340767f1b_70c808b5-0d35-4863-a0ba-07888e99d448
    settings:
      description:
        - The role settings as the Entra portal shows them. Valid input for M(entra.pim.pim_policy).
        - A setting whose rule the policy lacks is null.
      type: dict
      contains:
        activation:
          description: What a member needs to activate the role.
          type: dict
          contains:
            max_duration:
              description: Longest activation, ISO 8601 (rule C(Expiration_EndUser_Assignment)).
              type: str
              sample: PT8H
            require_mfa:
              description: Activation needs multifactor authentication (rule C(Enablement_EndUser_Assignment)).
              type: bool
            require_justification:
              description: Activation needs a justification.
              type: bool
            require_ticket:
              description: Activation needs ticket information.
              type: bool
            require_approval:
              description: Activation needs approval (rule C(Approval_EndUser_Assignment)).
              type: bool
            approvers:
              description: The approvers of the first approval stage that are users or groups.
              type: list
              elements: dict
              contains:
                type:
                  description: V(user) or V(group).
                  type: str
                id:
                  description: The object id.
                  type: str
                name:
                  description: Display name (null when it cannot be read).
                  type: str
            authentication_context:
              description: Conditional Access authentication context on activation (rule
                C(AuthenticationContext_EndUser_Assignment)).
              type: dict
              contains:
                enabled:
                  description: Whether the authentication context is required.
                  type: bool
                claim_value:
                  description: The authentication context id, for example V(c1).
                  type: str
        eligible_assignment:
          description: Eligible assignments (rules C(Expiration_Admin_Eligibility), C(Enablement_Admin_Eligibility)).
          type: dict
          contains:
            allow_permanent:
              description: Whether eligible assignments may be permanent.
              type: bool
            max_duration:
              description: Longest eligible assignment when not permanent, ISO 8601.
              type: str
              sample: P365D
            require_mfa:
              description: Assigning needs multifactor authentication.
              type: bool
            require_justification:
              description: Assigning needs a justification.
              type: bool
        active_assignment:
          description: Active assignments (rules C(Expiration_Admin_Assignment), C(Enablement_Admin_Assignment)).
          type: dict
          contains:
            allow_permanent:
              description: Whether active assignments may be permanent.
              type: bool
            max_duration:
              description: Longest active assignment when not permanent, ISO 8601.
              type: str
              sample: P180D
            require_mfa:
              description: Assigning needs multifactor authentication.
              type: bool
            require_justification:
              description: Assigning needs a justification.
              type: bool
        notifications:
          description:
            - Email notifications, for C(eligible_assignment), C(active_assignment) and C(activation), each for the
              recipients C(admin), C(requestor) and C(approver).
            - Each entry has C(default_recipients) (bool), C(level) (V(None), V(Critical) or V(All)) and
              C(additional_recipients) (a list of email addresses).
          type: dict
          sample:
            activation:
              admin: {default_recipients: true, level: All, additional_recipients: []}
    rules:
      description:
        - The policy's rules as Graph returns them, with snake_case keys and without C(@odata) annotations.
      type: list
      elements: dict
      sample:
        - id: Expiration_EndUser_Assignment
          is_expiration_required: true
          maximum_duration: PT8H
          target: {caller: EndUser, level: Assignment, operations: [all], inheritable_settings: [],
                   enforced_settings: []}
"""

from ansible_collections.entra.pim.plugins.module_utils import _policy
from ansible_collections.entra.pim.plugins.module_utils._errors import InputError
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.module_utils._resolve import Resolver


def run(module):
    resolver = Resolver(module.client)
    names = module.params["roles"]
    roles = None
    if names is not None:
        if not names:
            # An empty list (an unset variable, say) is not "every role": that is what omitting it means.
            raise InputError(
                "roles is an empty list; omit it to read every role's settings, or give at least one role."
            )
        roles = _policy.resolve_roles(resolver, names)
    pairs = _policy.read_policy_assignments(module.client, roles)
    policies = _policy.describe_policies(resolver, pairs)
    if roles is None:
        policies.sort(key=lambda p: ((p["role_name"] or "~").casefold(), p["role_id"] or ""))
    return dict(changed=False, policies=policies)


def main():
    PimModule(
        argument_spec=dict(roles=dict(type="list", elements="str", aliases=["role"])),
        supports_check_mode=True,
    ).run(run)


if __name__ == "__main__":
    main()
