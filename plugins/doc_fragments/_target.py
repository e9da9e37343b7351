# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Options that name what a role module works on: the role, its scope, and the request's ticket.

Internal to the entra.pim collection: not a public API, may change without notice.

``DOCUMENTATION`` suits the modules that write one eligibility or assignment;
``FILTERS`` suits the info modules that list them.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  principal_type:
    description:
      - What kind of object O(principal) names. V(auto) looks for users when the value contains C(@), otherwise for
        groups and service principals.
      - Set it to search one kind only, for example V(user) to find a user by display name, or V(service_principal)
        for an automation identity.
    type: str
    choices: [auto, user, group, service_principal]
    default: auto
    version_added: 0.1.0
  role:
    description:
      - The directory role, by display name (case-insensitive, for example V(User Administrator)), role definition
        id or template id.
      - An unknown name fails and suggests up to five similar role names.
    type: str
    required: true
    version_added: 0.1.0
  directory_scope:
    description:
      - Where the role applies. V(/) is the whole tenant.
      - An administrative unit as V(/administrativeUnits/{id}), its object id, or its display name (for example
        V(Sales AU)).
      - An empty or blank value is refused, so that an unset variable never widens a grant to the whole tenant;
        omit the option, or give V(/), for the tenant.
    type: str
    default: /
    version_added: 0.1.0
  app_scope:
    description:
      - The application scope, for custom roles that apply to application objects only. Leave it out otherwise.
    type: str
    version_added: 0.1.0
  ticket_number:
    description:
      - The number of the change or incident ticket behind this request, when the role's policy asks for one.
    type: str
    version_added: 0.1.0
  ticket_system:
    description:
      - The system O(ticket_number) belongs to, for example V(ServiceNow).
    type: str
    version_added: 0.1.0
  validate_only:
    description:
      - Ask Microsoft Graph whether the change would be accepted, without making it (Graph's C(isValidationOnly)).
      - The answer is in RV(validation); a policy refusal is explained there and does not fail the task.
      - Works in check mode too, which otherwise sends nothing to Graph but reads.
    type: bool
    default: false
    version_added: 0.1.0
"""

    FILTERS = r"""
options:
  principal_type:
    description:
      - What kind of object O(principal) names; V(auto) guesses from the value.
    type: str
    choices: [auto, user, group, service_principal]
    default: auto
    version_added: 0.1.0
  role:
    description:
      - Only this role, by display name (case-insensitive), role definition id or template id.
    type: str
    version_added: 0.1.0
  directory_scope:
    description:
      - Only this scope, V(/), V(/administrativeUnits/{id}) or an administrative unit's name.
      - Leave it out for every scope. An empty or blank value is refused; it never means every scope.
    type: str
    version_added: 0.1.0
"""
