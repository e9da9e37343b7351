"""Identifier formats used by Graph's PIM surface (notes §5).

* Request ids, schedule ids, approval ids: random GUIDs (``targetScheduleId`` == request id
  for a schedule created by that request, as in every doc example).
* Role assignment / active instance id: ``base64url_nopad(role.bytes_le + principal.bytes_le) + "-1"``
  (decoded from the doc example ``lAPpYvVpN0KRkAEhdxReEAWz5Gtet_xOv8wxvTtTpfg-1``).
* Eligibility instance id: the same base plus ``"-1-e"`` (doc example ``8MYkhImhnkm70CbBdTyW1BbHHAdHgZdDpbqyEFlRzAs-1-e``).
* For a scope other than ``/`` (an administrative unit, any directory object, or an app scope) the
  reference is silent; the sandbox appends the scope's 16 GUID bytes (or a name-based GUID of an
  app scope) to the encoded bytes so that ids stay unique per (role, principal, scope). See emulator/README.md, "Ids".
* Policy ids ``DirectoryRole_{tenantId}_{guid}``; policy assignment ids ``{policyId}_{roleDefinitionId}``.
"""

from __future__ import annotations

import base64
import re
import uuid

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Namespace for name-based (uuid5) ids the sandbox derives deterministically.
SANDBOX_NAMESPACE = uuid.UUID("5f0c1a8e-3b7d-4c29-9e61-0d2a4b8c7e13")


def is_guid(value) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


def new_guid() -> str:
    return str(uuid.uuid4())


def derived_guid(*parts: str) -> str:
    """A stable GUID derived from the given strings (same input -> same GUID)."""
    return str(uuid.uuid5(SANDBOX_NAMESPACE, "|".join(parts)))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _scope_bytes(directory_scope_id: str | None, app_scope_id: str | None) -> bytes:
    if directory_scope_id == "/" and not app_scope_id:
        return b""
    if directory_scope_id and directory_scope_id != "/":
        tail = directory_scope_id.rstrip("/").rsplit("/", 1)[-1]
        if is_guid(tail):
            return uuid.UUID(tail).bytes_le
        return uuid.UUID(derived_guid("directoryScope", directory_scope_id)).bytes_le
    return uuid.UUID(derived_guid("appScope", app_scope_id or "")).bytes_le


def _base(role_definition_id: str, principal_id: str, directory_scope_id="/", app_scope_id=None) -> str:
    raw = uuid.UUID(role_definition_id).bytes_le + uuid.UUID(principal_id).bytes_le
    return _b64(raw + _scope_bytes(directory_scope_id, app_scope_id))


def assignment_id(role_definition_id: str, principal_id: str, directory_scope_id="/", app_scope_id=None) -> str:
    """Role assignment id == active instance id (``...-1``)."""
    return _base(role_definition_id, principal_id, directory_scope_id, app_scope_id) + "-1"


def eligibility_instance_id(
    role_definition_id: str, principal_id: str, directory_scope_id="/", app_scope_id=None
) -> str:
    return _base(role_definition_id, principal_id, directory_scope_id, app_scope_id) + "-1-e"


def decode_assignment_id(value: str) -> tuple[str, str] | None:
    """``(roleDefinitionId, principalId)`` encoded in an assignment/instance id, or None."""
    if not isinstance(value, str):
        return None
    base = value[:-4] if value.endswith("-1-e") else value[:-2] if value.endswith("-1") else value
    try:
        raw = base64.urlsafe_b64decode(base + "=" * (-len(base) % 4))
    except (ValueError, TypeError):
        return None
    if len(raw) < 32:
        return None
    return str(uuid.UUID(bytes_le=raw[:16])), str(uuid.UUID(bytes_le=raw[16:32]))


def policy_id(tenant_id: str, role_definition_id: str, scope_type: str = "DirectoryRole") -> str:
    return f"{scope_type}_{tenant_id}_{derived_guid('policy', tenant_id, role_definition_id)}"


def policy_assignment_id(policy_id_: str, role_definition_id: str) -> str:
    return f"{policy_id_}_{role_definition_id}"
