"""Baseline (c): the reconciliation a person would write by hand with Microsoft's msgraph-sdk.

Sequential and straightforward: look each role up by name once, then for every grant find the
user by UPN, read its eligibility schedule for the role, and POST an adminAssign when it is
missing. Pointed at the PIM sandbox as issue 7 describes: an httpx client that trusts the
sandbox CA (with the SDK's default middleware), the adapter's base_url set to the sandbox's
/v1.0, the sandbox host in the auth provider's allowed_hosts, and azure-identity given the
sandbox authority with instance discovery off.

Usage: python bench/msgraph_sdk_baseline.py CONNECTION_JSON GRANTS_JSON
Prints one JSON line: {"added": n, "unchanged": n}.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from urllib.parse import urlsplit

import httpx
from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.expiration_pattern import ExpirationPattern
from msgraph.generated.models.expiration_pattern_type import ExpirationPatternType
from msgraph.generated.models.request_schedule import RequestSchedule
from msgraph.generated.models.unified_role_eligibility_schedule_request import UnifiedRoleEligibilityScheduleRequest
from msgraph.generated.models.unified_role_schedule_request_actions import UnifiedRoleScheduleRequestActions
from msgraph.generated.role_management.directory.role_definitions.role_definitions_request_builder import (
    RoleDefinitionsRequestBuilder,
)
from msgraph.generated.role_management.directory.role_eligibility_schedules.role_eligibility_schedules_request_builder import (
    RoleEligibilitySchedulesRequestBuilder,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory


def _quote(value):
    return "'%s'" % value.replace("'", "''")


async def reconcile(conn, grants):
    ca = conn["ca_bundle"]
    credential = ClientSecretCredential(
        conn["tenant_id"],
        conn["client_id"],
        conn["client_secret"],
        authority=conn["authority_host"],
        disable_instance_discovery=True,
        connection_verify=ca,
    )
    host = urlsplit(conn["graph_url"]).hostname
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=[conn["graph_url"] + "/.default"], allowed_hosts=[host]
    )
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=ca, timeout=60))
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = conn["graph_url"] + "/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    directory = client.role_management.directory

    role_ids = {}
    for name in sorted({g["role"] for g in grants}):
        query = RoleDefinitionsRequestBuilder.RoleDefinitionsRequestBuilderGetQueryParameters(
            filter="displayName eq %s" % _quote(name), select=["id", "displayName"]
        )
        page = await directory.role_definitions.get(RequestConfiguration(query_parameters=query))
        role_ids[name] = page.value[0].id

    added = unchanged = 0
    for grant in grants:
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter="userPrincipalName eq %s" % _quote(grant["principal"]), select=["id"]
        )
        users = await client.users.get(RequestConfiguration(query_parameters=query))
        principal_id = users.value[0].id
        role_id = role_ids[grant["role"]]
        query = RoleEligibilitySchedulesRequestBuilder.RoleEligibilitySchedulesRequestBuilderGetQueryParameters(
            filter="principalId eq %s and roleDefinitionId eq %s" % (_quote(principal_id), _quote(role_id))
        )
        schedules = await directory.role_eligibility_schedules.get(RequestConfiguration(query_parameters=query))
        if [s for s in schedules.value or [] if (s.directory_scope_id or "/") == "/"]:
            unchanged += 1
            continue
        now = datetime.datetime.now(datetime.timezone.utc)
        # The SDK serialises a timedelta as "180 days, 0:00:00", which Graph refuses as an
        # Edm.Duration, so the end is sent as a date, as a user of the SDK ends up doing.
        body = UnifiedRoleEligibilityScheduleRequest(
            action=UnifiedRoleScheduleRequestActions.AdminAssign,
            principal_id=principal_id,
            role_definition_id=role_id,
            directory_scope_id="/",
            justification=grant.get("justification") or "bench",
            schedule_info=RequestSchedule(
                start_date_time=now,
                expiration=ExpirationPattern(
                    type=ExpirationPatternType.AfterDateTime, end_date_time=now + datetime.timedelta(days=180)
                ),
            ),
        )
        await directory.role_eligibility_schedule_requests.post(body)
        added += 1
    await credential.close()
    return {"added": added, "unchanged": unchanged}


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        conn = json.load(fh)
    with open(sys.argv[2], encoding="utf-8") as fh:
        grants = json.load(fh)
    print(json.dumps(asyncio.run(reconcile(conn, grants))))


if __name__ == "__main__":
    main()
