# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Connection and authentication options shared by every entra.pim module.

Internal to the entra.pim collection: not a public API, may change without notice.

Documents ``AUTH_ARGSPEC`` in ``plugins/module_utils/_auth.py``; keep the two in step.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  auth_method:
    description:
      - How to sign in to Microsoft Entra ID to get a token for Microsoft Graph.
      - V(auto) uses the first complete set of credentials in this order, looking at task options and then
        environment variables - V(access_token) (O(access_token)); V(client_secret) (O(tenant_id), O(client_id),
        O(client_secret)); V(certificate) (O(tenant_id), O(client_id), O(client_certificate_path));
        V(federated_token) (O(tenant_id), O(client_id), O(federated_token_file)); V(username_password)
        (O(client_id), O(username), O(password)). If none is complete and no credential option is set at all,
        V(auto) uses V(managed_identity) when E(IDENTITY_ENDPOINT) or E(MSI_ENDPOINT) is set (App Service,
        Functions, Azure Arc, Cloud Shell). Otherwise the task fails and says which options are missing.
      - V(managed_identity) uses the managed identity of the Azure machine or service the module runs on. On an
        Azure VM choose it explicitly; the VM metadata endpoint has no environment variable to detect.
      - V(azure_cli) runs C(az account get-access-token) and uses the account you signed in with C(az login).
        It is never picked by V(auto).
      - V(username_password) is a legacy flow (resource owner password credentials). It cannot do
        multi-factor authentication and needs "Allow public client flows" on the app. It exists for test tenants
        and the PIM sandbox.
      - Results of every module include C(auth_method), the method that was used.
      - If not set, the value of the environment variable E(ENTRA_PIM_AUTH_METHOD) is used.
    type: str
    default: auto
    choices: [auto, client_secret, certificate, federated_token, managed_identity, access_token, username_password, azure_cli]
    version_added: 0.1.0
  tenant_id:
    description:
      - The directory (tenant) ID, a GUID, or a verified domain name of the tenant such as V(contoso.onmicrosoft.com).
      - Needed by V(client_secret), V(certificate) and V(federated_token). V(username_password) uses the
        V(organizations) endpoint when it is not set. V(azure_cli) passes it to C(az --tenant).
      - If not set, the value of E(ENTRA_PIM_TENANT_ID), then E(AZURE_TENANT_ID), is used.
    type: str
    version_added: 0.1.0
  client_id:
    description:
      - The application (client) ID of the app registration the modules sign in as.
      - The app needs Microsoft Graph B(application) permissions, granted with admin consent. Reading needs e.g.
        C(RoleManagement.Read.Directory) and C(Directory.Read.All); managing eligible and active assignments needs
        C(RoleEligibilitySchedule.ReadWrite.Directory) and C(RoleAssignmentSchedule.ReadWrite.Directory) (or
        C(RoleManagement.ReadWrite.Directory)); role settings need C(RoleManagementPolicy.ReadWrite.Directory).
        Each module lists what it needs. When Graph refuses a call, the error names the missing permission.
      - If not set, the value of E(ENTRA_PIM_CLIENT_ID), then E(AZURE_CLIENT_ID), is used.
    type: str
    version_added: 0.1.0
  client_secret:
    description:
      - A client secret of the app registration, for O(auth_method=client_secret). Use the secret's B(value),
        not its ID.
      - Keep it in Ansible Vault or the environment; it never appears in results, logs or errors.
      - If not set, the value of E(ENTRA_PIM_CLIENT_SECRET), then E(AZURE_CLIENT_SECRET), is used.
    type: str
    version_added: 0.1.0
  client_certificate_path:
    description:
      - A file with the app's certificate and its private key, for O(auth_method=certificate). PEM (private key
        and certificate in one file) and PFX/PKCS#12 files are accepted.
      - Upload the certificate (public part only) to the app registration under "Certificates & secrets".
      - If not set, the value of E(ENTRA_PIM_CLIENT_CERTIFICATE_PATH), then E(AZURE_CLIENT_CERTIFICATE_PATH), is
        used.
    type: path
    version_added: 0.1.0
  client_certificate_password:
    description:
      - The password of an encrypted private key (PEM) or PFX file in O(client_certificate_path).
      - If not set, the value of E(ENTRA_PIM_CLIENT_CERTIFICATE_PASSWORD), then
        E(AZURE_CLIENT_CERTIFICATE_PASSWORD), is used.
    type: str
    version_added: 0.1.0
  federated_token_file:
    description:
      - A file holding a token from an external identity provider (GitHub Actions OIDC, Kubernetes workload
        identity, ...), for O(auth_method=federated_token). The app registration needs a federated identity
        credential that trusts that issuer and subject.
      - The file is read again for every token request, so a rotated token is picked up.
      - If not set, the value of E(ENTRA_PIM_FEDERATED_TOKEN_FILE), then E(AZURE_FEDERATED_TOKEN_FILE), is used.
    type: path
    version_added: 0.1.0
  managed_identity_client_id:
    description:
      - The client ID of a user-assigned managed identity, for O(auth_method=managed_identity). Leave it unset to
        use the system-assigned identity.
      - If not set, the value of E(ENTRA_PIM_MANAGED_IDENTITY_CLIENT_ID) is used.
    type: str
    version_added: 0.1.0
  access_token:
    description:
      - An access token for Microsoft Graph that you obtained yourself, used as it is. It must be issued for
        Microsoft Graph (audience C(https://graph.microsoft.com)) and lasts about an hour.
      - If not set, the value of E(ENTRA_PIM_ACCESS_TOKEN) is used.
    type: str
    version_added: 0.1.0
  username:
    description:
      - The user principal name to sign in as, for O(auth_method=username_password).
      - If not set, the value of E(ENTRA_PIM_USERNAME), then E(AZURE_USERNAME), is used.
    type: str
    version_added: 0.1.0
  password:
    description:
      - The password of O(username), for O(auth_method=username_password).
      - If not set, the value of E(ENTRA_PIM_PASSWORD), then E(AZURE_PASSWORD), is used.
    type: str
    version_added: 0.1.0
  azure_cli_path:
    description:
      - The path of the Azure CLI executable, for O(auth_method=azure_cli). By default C(az) is looked up on the
        E(PATH).
      - If not set, the value of E(ENTRA_PIM_AZURE_CLI_PATH) is used.
    type: path
    version_added: 0.1.0
  cloud:
    description:
      - The Microsoft cloud of the tenant. It sets both the sign-in host and the Microsoft Graph host.
      - V(public) - C(login.microsoftonline.com) and C(graph.microsoft.com).
      - V(usgov) - C(login.microsoftonline.us) and C(graph.microsoft.us) (GCC High).
      - V(usgov_dod) - C(login.microsoftonline.us) and C(dod-graph.microsoft.us).
      - V(china) - C(login.chinacloudapi.cn) and C(microsoftgraph.chinacloudapi.cn) (operated by 21Vianet).
      - When not set, it follows O(authority_host) if that is one of these sign-in hosts, else V(public).
      - If not set, the value of E(ENTRA_PIM_CLOUD) is used.
    type: str
    choices: [public, usgov, usgov_dod, china]
    version_added: 0.1.0
  authority_host:
    description:
      - The sign-in (authority) host, overriding the one of O(cloud), for example V(https://127.0.0.1:8443) for
        the PIM sandbox. The scheme is optional and defaults to C(https).
      - For a host that is not a Microsoft sign-in host, no instance discovery request is sent to Microsoft.
      - If not set, the value of E(ENTRA_PIM_AUTHORITY_HOST), then E(AZURE_AUTHORITY_HOST), is used.
    type: str
    version_added: 0.1.0
  graph_url:
    description:
      - The Microsoft Graph base URL without a version, overriding the one of O(cloud), for example
        V(https://127.0.0.1:8443) for the PIM sandbox. Requests go to C(<graph_url>/v1.0), and tokens are
        requested for the scope C(<graph_url>/.default).
      - If not set, the value of E(ENTRA_PIM_GRAPH_URL) is used.
    type: str
    version_added: 0.1.0
  ca_bundle:
    description:
      - A PEM file of certificate authorities to trust for Microsoft Graph and the sign-in host, instead of the
        system's. Use it for a TLS-inspecting proxy or the PIM sandbox (its C(ca.pem)). A path that is not a
        readable file is refused before any request.
      - It applies to every request, even when E(REQUESTS_CA_BUNDLE) or E(CURL_CA_BUNDLE) is set.
      - If not set, the value of E(ENTRA_PIM_CA_BUNDLE) is used.
    type: path
    version_added: 0.1.0
  validate_certs:
    description:
      - Whether to check TLS certificates. Setting it to V(false) lets anyone on the network path read your
        credentials and tokens, so every run warns about it; prefer O(ca_bundle).
      - If not set, the value of E(ENTRA_PIM_VALIDATE_CERTS) is used.
    type: bool
    default: true
    version_added: 0.1.0
  token_cache:
    description:
      - Whether to keep tokens and sign-in metadata on disk between tasks, so that the next task of a play needs
        no new token and no discovery request. The files are readable only by their owner (mode 0600).
      - The cached tokens are partitioned by the credential (a keyed hash of the secret, the certificate, the user
        and password, the federated assertion or the managed identity), so a task only ever reuses tokens that its
        own credential earned.
      - Not used with V(access_token) or V(azure_cli), which have their own token.
      - If not set, the value of E(ENTRA_PIM_TOKEN_CACHE) is used.
    type: bool
    default: true
    version_added: 0.1.0
  token_cache_path:
    description:
      - The token cache file on the host the module runs on. Sign-in metadata is kept in C(http_cache.json) in
        the same directory. Missing directories are created with mode 0700.
      - The module refuses to use an existing file that other users can read or write, or that another user owns,
        and a directory that other users can write to or that another user owns.
      - If not set, the value of E(ENTRA_PIM_TOKEN_CACHE_PATH) is used.
    type: path
    default: ~/.cache/entra.pim/token_cache.json
    version_added: 0.1.0
  request_timeout:
    description:
      - Seconds to wait for Microsoft Graph or the sign-in host to connect and to answer, per request, from 1 to
        3600.
      - If not set, the value of E(ENTRA_PIM_REQUEST_TIMEOUT) is used.
    type: int
    default: 60
    version_added: 0.1.0
  max_retries:
    description:
      - How many times a request is retried after throttling (HTTP 429), HTTP 503 or 504, or a connection error,
        before the task fails, from 0 to 100. V(0) disables retries.
      - Writes whose response was lost are never sent again blindly; the module re-reads the state instead.
      - If not set, the value of E(ENTRA_PIM_MAX_RETRIES) is used.
    type: int
    default: 5
    version_added: 0.1.0
  max_retry_wait:
    description:
      - The longest wait, in seconds (0 to 3600), before one retry. A longer C(Retry-After) from Graph is cut to
        this value; without C(Retry-After) the wait grows exponentially (with jitter) up to it.
      - If not set, the value of E(ENTRA_PIM_MAX_RETRY_WAIT) is used.
    type: int
    default: 60
    version_added: 0.1.0
notes:
  - Settings are taken from the task options first, then from the E(ENTRA_PIM_*) environment variables, then
    from the E(AZURE_*) names that azure-identity uses (E(AZURE_TENANT_ID), E(AZURE_CLIENT_ID),
    E(AZURE_CLIENT_SECRET), ...). Use C(module_defaults) with C(group/entra.pim.pim) to set them once per play.
  - The modules need the Python libraries C(msal) and C(requests) on the host they run on (usually
    C(localhost)).
"""
