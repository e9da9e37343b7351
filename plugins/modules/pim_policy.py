#!/usr/bin/python
# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pim_policy
short_description: Manage the PIM role settings (policies) of Microsoft Entra directory roles
version_added: 0.1.0
description:
  - Sets the Privileged Identity Management role settings of one or many Microsoft Entra directory roles, that is how
    long an activation may last, what it requires (MFA, justification, ticket, approval, an authentication context),
    how long eligible and active assignments may last, and who gets email notifications.
  - Declarative and partial. Only the settings you give are managed; every other setting stays as it is.
  - The same settings go to every role in O(roles), so one task can harden all privileged roles.
  - Only the policy rules that really change are sent, together in Microsoft Graph C($batch) requests of up to 20.
  - The O(settings) take the same shape that M(entra.pim.pim_policy_info) returns, so an export can be restored.
  - Needs the Microsoft Graph permission C(RoleManagementPolicy.ReadWrite.Directory) (or
    C(RoleManagement.ReadWrite.Directory)). Microsoft documents rule updates as delegated only; if your tenant
    refuses an application token, sign in as a user who holds Privileged Role Administrator (see
    O(auth_method)).
author:
  - entra.pim contributors (@entra-pim)
extends_documentation_fragment:
  - entra.pim._auth
  - entra.pim._attributes
options:
  roles:
    description:
      - The roles to configure, each a display name (case-insensitive), a role definition id or a template id.
      - An empty list is refused.
    type: list
    elements: str
    required: true
    aliases: [role]
    version_added: 0.1.0
  scope:
    description:
      - The scope of the role settings. Directory roles have role settings at the tenant scope only.
      - An empty or blank value is refused, as for every scope option; omit it or give V(/).
    type: str
    default: /
    version_added: 0.1.0
  settings:
    description:
      - The role settings to enforce. Leave a setting out (or null) to leave it as it is.
      - Durations are ISO 8601 and compared by meaning, so V(PT8H) equals V(PT480M).
    type: dict
    version_added: 0.1.0
    suboptions:
      activation:
        description: What a member needs to activate the role.
        type: dict
        suboptions:
          max_duration:
            description:
              - Longest activation, ISO 8601, between V(PT30M) and V(P1D) as the Entra portal allows.
              - Rule C(Expiration_EndUser_Assignment).
            type: str
          require_mfa:
            description:
              - Activation needs multifactor authentication. Rule C(Enablement_EndUser_Assignment).
              - Cannot be V(true) together with O(settings.activation.authentication_context.enabled).
            type: bool
          require_justification:
            description: Activation needs a justification. Rule C(Enablement_EndUser_Assignment).
            type: bool
          require_ticket:
            description: Activation needs ticket information. Rule C(Enablement_EndUser_Assignment).
            type: bool
          require_approval:
            description:
              - Activation needs approval. Rule C(Approval_EndUser_Assignment).
              - Needs at least one approver, given in O(settings.activation.approvers) or already set.
            type: bool
          approvers:
            description:
              - The approvers of the (first) approval stage. Each item is a user's UPN or mail, a group's display
                name, an object id, or a dict with C(id) (and optionally C(type) V(user) or V(group) and C(name))
                as M(entra.pim.pim_policy_info) returns it.
              - The list replaces the current user and group approvers; order does not matter.
              - For several approval stages or escalation, use O(rules).
            type: list
            elements: raw
          authentication_context:
            description: Require a Conditional Access authentication context on activation. Rule
              C(AuthenticationContext_EndUser_Assignment).
            type: dict
            suboptions:
              enabled:
                description:
                  - Whether the authentication context is required. Switching it off forgets the claim value.
                type: bool
              claim_value:
                description: The authentication context id, for example V(c1). Needed when enabled.
                type: str
      eligible_assignment:
        description: Eligible assignments. Rules C(Expiration_Admin_Eligibility) and C(Enablement_Admin_Eligibility).
        type: dict
        suboptions:
          allow_permanent:
            description: Whether eligible assignments may be permanent.
            type: bool
          max_duration:
            description: Longest eligible assignment when permanent ones are not allowed, ISO 8601 such as V(P365D).
            type: str
          require_mfa:
            description: Assigning needs multifactor authentication.
            type: bool
          require_justification:
            description: Assigning needs a justification.
            type: bool
      active_assignment:
        description: Active assignments. Rules C(Expiration_Admin_Assignment) and C(Enablement_Admin_Assignment).
        type: dict
        suboptions:
          allow_permanent:
            description: Whether active assignments may be permanent.
            type: bool
          max_duration:
            description: Longest active assignment when permanent ones are not allowed, ISO 8601 such as V(P180D).
            type: str
          require_mfa:
            description: Assigning needs multifactor authentication.
            type: bool
          require_justification:
            description: Assigning needs a justification.
            type: bool
      notifications:
        description:
          - Email notifications. Each recipient takes C(default_recipients) (bool), C(level) (V(None), V(Critical) or
            V(All)) and C(additional_recipients) (email addresses; the list replaces the current one).
        type: dict
        suboptions:
          eligible_assignment:
            description: When someone is made eligible (rules C(Notification_*_Admin_Eligibility)).
            type: dict
            suboptions: &recipients
              admin:
                description: Mail to administrators.
                type: dict
                suboptions: &recipient
                  default_recipients:
                    description: Whether the default recipients get the mail.
                    type: bool
                  level:
                    description: Which mails are sent, V(None), V(Critical) or V(All) (case-insensitive).
                    type: str
                  additional_recipients:
                    description: More email addresses that get the mail.
                    type: list
                    elements: str
              requestor:
                description: Mail to the assignee (requestor).
                type: dict
                suboptions: *recipient
              approver:
                description: Mail to approvers.
                type: dict
                suboptions: *recipient
          active_assignment:
            description: When someone is assigned actively (rules C(Notification_*_Admin_Assignment)).
            type: dict
            suboptions: *recipients
          activation:
            description: When an eligible member activates (rules C(Notification_*_EndUser_Assignment)).
            type: dict
            suboptions: *recipients
  rules:
    description:
      - Raw policy rules for what O(settings) does not cover, such as two approval stages or escalation approvers.
      - Each item names a rule by C(id) and gives the fields to change, with snake_case or camelCase keys (the
        O(entra.pim.pim_policy_info#module:rules) output works). Nested dicts are merged over the current rule,
        lists replace.
      - Approver subjects are typed from their C(user_id), C(group_id), C(manager_level) or C(service_principal_id);
        an approver with none of them is refused before any rule is sent.
      - Applied after O(settings); where both touch the same field, O(rules) wins.
    type: list
    elements: dict
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    details: Reads the current settings and reports what would change, writing nothing.
  diff_mode:
    support: full
    details: Shows the changed settings (and raw rules) before and after, per role.
  idempotent:
    support: full
notes:
  - Does at most three Microsoft Graph round trips for any number of roles with up to 20 changed rules (the role
    list, one read of all policies and one C($batch)), plus one lookup when approvers are given by name.
  - Graph answers a rule update with 204 No Content; the returned RV(policies) are the planned state, not a re-read.
  - In Entra, requiring MFA and an authentication context on activation exclude each other; the module refuses the
    combination before anything is sent.
seealso:
  - module: entra.pim.pim_policy_info
  - name: Update PIM rules with Microsoft Graph
    description: The rules behind each setting.
    link: https://learn.microsoft.com/graph/how-to-pim-update-rules
"""

EXAMPLES = r"""
- name: Harden the most privileged roles in one task
  entra.pim.pim_policy:
    roles:
      - Global Administrator
      - Privileged Role Administrator
      - Privileged Authentication Administrator
    settings:
      activation:
        max_duration: PT2H
        require_mfa: true
        require_justification: true
        require_ticket: true
        require_approval: true
        approvers:
          - secops-lead@contoso.com
          - PIM Approvers
      eligible_assignment:
        allow_permanent: false
        max_duration: P180D
      active_assignment:
        allow_permanent: false
        max_duration: P15D
        require_justification: true
      notifications:
        activation:
          admin:
            level: All
            additional_recipients: [security@contoso.com]

- name: Require a Conditional Access authentication context instead of MFA
  entra.pim.pim_policy:
    role: Security Administrator
    settings:
      activation:
        require_mfa: false
        authentication_context:
          enabled: true
          claim_value: c1

- name: Two approval stages, through the raw rules
  entra.pim.pim_policy:
    role: Privileged Role Administrator
    rules:
      - id: Approval_EndUser_Assignment
        setting:
          is_approval_required: true
          approval_mode: Serial
          approval_stages:
            - approval_stage_time_out_in_days: 1
              is_approver_justification_required: true
              escalation_time_in_minutes: 0
              is_escalation_enabled: false
              primary_approvers: [{user_id: 10a08e2e-3ea2-4ce0-80cb-d5fdd4b05ea6}]
              escalation_approvers: []
            - approval_stage_time_out_in_days: 1
              is_approver_justification_required: true
              escalation_time_in_minutes: 0
              is_escalation_enabled: false
              primary_approvers: [{group_id: 14f2746d-7d6f-4ac6-acd8-8cac318b041b}]
              escalation_approvers: []

- name: Restore settings exported with entra.pim.pim_policy_info
  entra.pim.pim_policy:
    role: "{{ item.role_name }}"
    settings: "{{ item.settings }}"
  loop: "{{ lookup('ansible.builtin.file', 'role-settings.yml') | from_yaml }}"
  loop_control:
    label: "{{ item.role_name }}"
"""

RETURN = r"""
policies:
  description:
    - The settings of each role in O(roles) as they are after the task (planned from the current rules and the
      changes; Graph answers updates with no body). Same shape as M(entra.pim.pim_policy_info) returns.
  returned: always
  type: list
  elements: dict
  contains:
    role_id:
      description: The role definition id.
      type: str
      sample: 62e90394-69f5-4237-9190-012177145e10
    role_name:
      description: The role's display name.
      type: str
      sample: Global Administrator
    policy_id:
      description: The id of the role management policy.
      type: str
    settings:
      description:
        - All settings of the role (see O(settings) for their meaning), including those not managed by this task.
        - Approvers are C({type, id, name}) dicts.
      type: dict
      sample:
        activation:
          max_duration: PT2H
          require_mfa: true
          require_justification: true
          require_ticket: true
          require_approval: true
          approvers: [{type: user, id: 10a08e2e-3ea2-4ce0-80cb-d5fdd4b05ea6, name: SecOps Lead}]
          authentication_context: {enabled: false, claim_value: null}
        eligible_assignment: {allow_permanent: false, max_duration: P180D, require_mfa: false,
                              require_justification: false}
        active_assignment: {allow_permanent: false, max_duration: P15D, require_mfa: false,
                            require_justification: true}
        notifications:
          activation:
            admin: {default_recipients: true, level: All, additional_recipients: [security@contoso.com]}
    rules:
      description: The rules after the task, snake_case keys, no C(@odata) annotations.
      type: list
      elements: dict
updated_rules:
  description: The rules that were (or in check mode would be) updated.
  returned: always
  type: list
  elements: dict
  contains:
    role_id:
      description: The role definition id.
      type: str
    role_name:
      description: The role's display name.
      type: str
    rule_id:
      description: The policy rule id.
      type: str
      sample: Expiration_EndUser_Assignment
"""

from ansible_collections.entra.pim.plugins.module_utils import _policy
from ansible_collections.entra.pim.plugins.module_utils._errors import InputError
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from ansible_collections.entra.pim.plugins.module_utils._resolve import Resolver, scope_option

# ------------------------------------------------------------------ the task


def _has_any(value):
    if isinstance(value, dict):
        return any(_has_any(v) for v in value.values())
    return value is not None


def run(module):
    params = module.params
    # The same rule as every scope option: omitted is '/', an empty value is refused (never read as '/').
    scope = scope_option(params["scope"], "scope")
    if scope != "/":
        raise InputError("scope %r: directory roles have role settings only at the tenant scope '/'." % scope)
    if not params["roles"]:
        raise InputError("roles is an empty list; give at least one role, by display name, id or template id.")
    settings = params["settings"] or {}
    raw_rules = params["rules"] or []
    if not _has_any(settings) and not raw_rules:
        raise InputError("nothing to do: give settings (or raw rules) to apply to the roles.")
    # Everything that needs no Graph is checked before the first request.
    desired = _policy.validate_settings(settings)

    client = module.client
    resolver = Resolver(client)
    roles = _policy.resolve_roles(resolver, params["roles"])

    known_names = {}
    approvers = (desired.get("activation") or {}).get("approvers")
    if approvers is not None:
        resolved = _policy.resolve_approvers(client, resolver, approvers)
        desired["activation"]["approvers"] = resolved
        known_names = {a["id"].casefold(): a["name"] for a in resolved if a.get("name")}

    pairs = _policy.read_policy_assignments(client, roles)

    plans, changes = [], []
    diff = {"before": {}, "after": {}}
    for role, assignment in pairs:
        rules = _policy.policy_rules(assignment)
        changed_rules, role_diff = _policy.plan_settings(desired, rules, raw_rules, role.display_name)
        policy_id = assignment.get("policyId") or (assignment.get("policy") or {}).get("id")
        plans.append(
            (
                role,
                dict(
                    assignment,
                    policy=dict(assignment.get("policy") or {}, rules=_policy.planned_rules(rules, changed_rules)),
                ),
            )
        )
        for body in changed_rules:
            changes.append({"role_id": role.id, "role_name": role.display_name, "policy_id": policy_id, "body": body})
        if changed_rules:
            diff["before"][role.display_name] = role_diff["before"]
            diff["after"][role.display_name] = role_diff["after"]

    if changes and not module.check_mode:
        _policy.apply_changes(client, changes)

    policies = _policy.describe_policies(resolver, plans, known_names)
    return dict(
        changed=bool(changes),
        diff=diff,
        policies=policies,
        updated_rules=[
            {"role_id": c["role_id"], "role_name": c["role_name"], "rule_id": c["body"]["id"]} for c in changes
        ],
    )


def main():
    PimModule(
        argument_spec=dict(
            roles=dict(type="list", elements="str", required=True, aliases=["role"]),
            scope=dict(type="str", default="/"),
            settings=_policy.settings_argspec(),
            rules=dict(type="list", elements="dict"),
        ),
        supports_check_mode=True,
    ).run(run)


if __name__ == "__main__":
    main()
