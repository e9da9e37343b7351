# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Standard ``attributes`` of entra.pim modules.

Internal to the entra.pim collection: not a public API, may change without notice.

A module's own ``attributes`` entries override these (add C(details) there when useful).
``DOCUMENTATION`` suits modules that change things; ``INFO_MODULE`` suits read-only modules.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and report what would change, without changing anything in the tenant.
    support: full
  diff_mode:
    description: Returns the state before and after the change when run with C(--diff).
    support: full
  idempotent:
    description:
      - When run twice in a row with the same options, the second run reports C(changed=false) and changes nothing.
      - Compares the desired state with what Microsoft Graph reports by meaning, not by text.
    support: full
  action_group:
    description: Use C(group/entra.pim.pim) in C(module_defaults) to set the authentication options once for every
      entra.pim module.
    support: full
    membership:
      - entra.pim.pim
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode. The module only reads, so it behaves the same with and without check mode.
    support: full
  diff_mode:
    description: The module changes nothing, so there is nothing to show as a difference.
    support: N/A
  idempotent:
    description: The module only reads from Microsoft Graph; running it again changes nothing.
    support: full
  action_group:
    description: Use C(group/entra.pim.pim) in C(module_defaults) to set the authentication options once for every
      entra.pim module.
    support: full
    membership:
      - entra.pim.pim
"""
