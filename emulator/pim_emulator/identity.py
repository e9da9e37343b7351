"""The Entra (Azure AD) side: OpenID configuration, JWKS, the v2.0 token endpoint, JWT mint/validate.

Supported grants on ``POST /{tenant}/oauth2/v2.0/token``:

* ``client_credentials`` with ``client_secret`` or with ``client_assertion`` (a JWT signed
  by a certificate registered on the app: header ``x5t`` = SHA-1 or ``x5t#S256`` = SHA-256
  thumbprint, RS256 or PS256, ``aud`` = the token endpoint, ``iss`` = ``sub`` = client id,
  unexpired). Scope must be ``{resource}/.default``.
* ``password`` (ROPC) for seeded users (their sandbox-only ``password``): delegated token
  with ``scp`` and ``amr: ["pwd"]``; also returns ``id_token``, ``client_info`` and a
  ``refresh_token``.
* ``refresh_token`` for the refresh tokens issued above.

Access tokens are RS256 JWTs signed by the sandbox key (published in the JWKS). Token
times use the wall clock, not the emulator clock, so advancing the emulator clock does not
expire tokens that MSAL has cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pim_emulator.errors import GraphError
from pim_emulator.routing import Response, route

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_HOST = "https://graph.microsoft.com"
TOKEN_LIFETIME = 3600
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}

# route keys the server counts as token / discovery requests in the stats
TOKEN_ROUTE_KEYS = {"POST /{tenant}/oauth2/v2.0/token"}
DISCOVERY_ROUTE_KEYS = {
    "GET /{tenant}/v2.0/.well-known/openid-configuration",
    "GET /{tenant}/discovery/v2.0/keys",
    "GET /common/discovery/instance",
    "GET /common/userrealm/{username}",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """An AAD-style OAuth error (rendered by ``token_error_response``)."""

    def __init__(self, error: str, code: int, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.code, self.description, self.status = error, code, description, status


def token_error_response(e: TokenError, correlation_id: str) -> Response:
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = str(uuid.uuid4())
    body = {
        "error": e.error,
        "error_description": f"AADSTS{e.code}: {e.description} Trace ID: {trace} Correlation ID: {correlation_id} "
        f"Timestamp: {now}",
        "error_codes": [e.code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={e.code}",
    }
    headers = {"WWW-Authenticate": 'Basic realm=""'} if e.status == 401 else {}
    return Response(e.status, body, headers)


class Identity:
    def __init__(self, keys, emulator):
        self.keys = keys
        self.emu = emulator
        pub = keys.signing_key.public_key()
        der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = b64url(hashlib.sha1(der).digest())
        self._private_pem = keys.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._public = pub
        self._cache: dict[str, dict] = {}
        self._cache_lock = threading.Lock()
        # certificates the sandbox knows the public key of, by thumbprint (sha1 hex and sha256 hex)
        self.certificates: dict[str, x509.Certificate] = {}
        self.register_certificate(keys.client_cert)

    def register_certificate(self, cert: x509.Certificate) -> str:
        sha1 = cert.fingerprint(hashes.SHA1()).hex()
        self.certificates[sha1] = cert
        self.certificates[cert.fingerprint(hashes.SHA256()).hex()] = cert
        return sha1

    # -- endpoints data --------------------------------------------------------
    @property
    def authority_host(self) -> str:
        return self.emu.base_url

    def issuer(self, tenant: str) -> str:
        return f"{self.authority_host}/{tenant}/v2.0"

    def openid_configuration(self, tenant: str) -> dict:
        base = f"{self.authority_host}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer(tenant),
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.emu.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "sandbox.local",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": self.emu.base_url.split("://", 1)[1],
            "rbac_url": self.emu.base_url,
        }

    def jwks(self) -> dict:
        numbers = self._public.public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": b64url(n),
                    "e": b64url(e),
                    "alg": "RS256",
                }
            ]
        }

    # -- minting ---------------------------------------------------------------
    def sign(self, claims: dict, typ: str = "JWT") -> str:
        return jwt.encode(
            claims, self._private_pem, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid, "typ": typ}
        )

    def audiences(self) -> set[str]:
        g = self.emu.base_url
        return {g, g + "/", GRAPH_HOST, GRAPH_HOST + "/", GRAPH_APP_ID}

    def mint_app_token(self, app: dict, tx, audience: str | None = None, extra: dict | None = None, acr="1") -> str:
        now = int(time.time())
        tenant = self.emu.tenant_id
        sp_oid = self.service_principal_id(tx, app["appId"])
        claims = {
            "aud": audience or self.emu.base_url,
            "iss": self.issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "aio": b64url(uuid.uuid4().bytes),
            "app_displayname": app.get("displayName", ""),
            "appid": app["appId"],
            "appidacr": acr,
            "azp": app["appId"],
            "azpacr": acr,
            "idp": self.issuer(tenant).rsplit("/", 1)[0],
            "idtyp": "app",
            "oid": sp_oid,
            "rh": "0.sandbox.",
            "roles": sorted(app.get("roles") or []),
            "sub": sp_oid,
            "tid": tenant,
            "uti": b64url(uuid.uuid4().bytes),
            "ver": "1.0",
            "jti": str(uuid.uuid4()),
        }
        if not claims["roles"]:
            del claims["roles"]
        claims.update(extra or {})
        return self.sign(claims)

    def delegated_scopes(self, app: dict) -> list[str]:
        scopes = app.get("delegatedScopes") or app.get("scopes") or app.get("roles") or []
        return sorted(set(scopes))

    def mint_user_token(
        self, app: dict, user: dict, scopes: list[str], audience: str | None = None, extra: dict | None = None, acr="0"
    ) -> str:
        now = int(time.time())
        tenant = self.emu.tenant_id
        claims = {
            "aud": audience or self.emu.base_url,
            "iss": self.issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "acct": 0,
            "acr": "1",
            "aio": b64url(uuid.uuid4().bytes),
            "amr": ["pwd"],
            "app_displayname": app.get("displayName", ""),
            "appid": app["appId"],
            "appidacr": acr,
            "azp": app["appId"],
            "azpacr": acr,
            "family_name": user.get("surname") or "",
            "given_name": user.get("givenName") or "",
            "idtyp": "user",
            "ipaddr": "127.0.0.1",
            "name": user.get("displayName") or "",
            "oid": user["id"],
            "scp": " ".join(scopes),
            "sub": b64url(hashlib.sha256((user["id"] + app["appId"]).encode()).digest()[:32]),
            "tid": tenant,
            "unique_name": user.get("userPrincipalName") or "",
            "upn": user.get("userPrincipalName") or "",
            "uti": b64url(uuid.uuid4().bytes),
            "ver": "1.0",
            "jti": str(uuid.uuid4()),
        }
        claims.update(extra or {})
        return self.sign(claims)

    def id_token(self, app: dict, user: dict) -> str:
        now = int(time.time())
        tenant = self.emu.tenant_id
        return self.sign(
            {
                "aud": app["appId"],
                "iss": self.issuer(tenant),
                "iat": now,
                "nbf": now,
                "exp": now + TOKEN_LIFETIME,
                "name": user.get("displayName") or "",
                "oid": user["id"],
                "preferred_username": user.get("userPrincipalName") or "",
                "sub": b64url(hashlib.sha256((user["id"] + app["appId"]).encode()).digest()[:32]),
                "tid": tenant,
                "ver": "2.0",
            }
        )

    def refresh_token(self, app: dict, user: dict, scopes: list[str], audience: str) -> str:
        now = int(time.time())
        return self.sign(
            {
                "typ": "refresh",
                "aud": self.emu.base_url + "/refresh",
                "iss": self.issuer(self.emu.tenant_id),
                "iat": now,
                "exp": now + 90 * 86400,
                "client_id": app["appId"],
                "oid": user["id"],
                "scp": scopes,
                "res": audience,
            }
        )

    # -- lookups ---------------------------------------------------------------
    @staticmethod
    def find_app(tx, client_id: str) -> dict | None:
        low = (client_id or "").lower()
        for app in tx.list("applications"):
            if str(app.get("appId", "")).lower() == low:
                return app
        return None

    @staticmethod
    def find_user(tx, name_or_id: str) -> dict | None:
        low = (name_or_id or "").lower()
        doc = tx.get("users", name_or_id)
        if doc is not None:
            return doc
        # candidates from the UPN index plus the id itself, checked in insertion order
        found = tx.find("users", "userPrincipalName", name_or_id or "")
        candidates = tx.order("users", [*found, low])
        for user_id in candidates:
            user = tx.peek("users", user_id)
            if str(user.get("userPrincipalName", "")).lower() == low or str(user.get("id", "")).lower() == low:
                return tx.get("users", user_id)
        return None

    @staticmethod
    def service_principal_id(tx, app_id: str) -> str:
        low = app_id.lower()
        for sp in tx.find_docs("servicePrincipals", "appId", app_id):
            if str(sp.get("appId", "")).lower() == low:
                return sp["id"]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "sandbox-sp:" + low))

    # -- validation of Graph bearer tokens -------------------------------------
    def validate_bearer(self, header: str | None) -> dict:
        """Authorization header -> claims; GraphError 401 InvalidAuthenticationToken otherwise."""
        if not header or not header.strip():
            raise _unauth("Access token is empty.")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauth("Access token is empty.")
        cached = self._cache.get(token)
        now = time.time()
        if cached is not None:
            if cached["exp"] <= now or cached.get("nbf", 0) > now + 300:
                raise _unauth("Lifetime validation failed, the token is expired.")
            if cached.get("tid") != self.emu.tenant_id:
                raise _unauth("Access token validation failure. Invalid audience.")
            return cached
        if token.count(".") != 2:
            raise _unauth("CompactToken parsing failed with error code: 80049217")
        try:
            header_obj = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauth("CompactToken parsing failed with error code: 80049217") from None
        if header_obj.get("alg") != "RS256" or header_obj.get("kid") not in (None, self.kid):
            raise _unauth("Access token validation failure. Invalid signature.")
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                options={"verify_aud": False, "require": ["exp", "iat", "aud", "tid"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError:
            raise _unauth("Lifetime validation failed, the token is expired.") from None
        except jwt.ImmatureSignatureError:
            raise _unauth("Access token has expired or is not yet valid.") from None
        except jwt.InvalidSignatureError:
            raise _unauth("Access token validation failure. Invalid signature.") from None
        except jwt.PyJWTError:
            raise _unauth("Access token validation failure.") from None
        if claims.get("typ") == "refresh":
            raise _unauth("Access token validation failure.")
        aud = claims.get("aud")
        # the port is ignored in aud and iss: tokens signed by this sandbox's key (kept in the data
        # dir) stay valid after a restart on another port (MSAL's cache ignores the port too)
        if aud not in self.audiences() and _strip_port(aud) != _strip_port(self.emu.base_url):
            raise _unauth("Access token validation failure. Invalid audience.")
        if claims.get("tid") != self.emu.tenant_id or _strip_port(claims.get("iss")) != _strip_port(
            self.issuer(self.emu.tenant_id)
        ):
            raise _unauth("Access token validation failure. Invalid audience.")
        with self._cache_lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[token] = claims
        return claims

    def forget_cached(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # -- token endpoint --------------------------------------------------------
    def token(self, tenant: str, form: dict, headers, tx) -> dict:
        if not self.emu.tenant_matches(tx, tenant):
            raise TokenError(
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
            )
        grant = form.get("grant_type")
        if not grant:
            raise TokenError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        client_id, basic_secret = form.get("client_id"), None
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                user_pass = base64.b64decode(auth[6:].strip()).decode()
                cid, _, basic_secret = user_pass.partition(":")
                client_id = client_id or cid
            except (ValueError, UnicodeDecodeError):
                raise TokenError(
                    "invalid_client", 7000218, "The client credentials in the Authorization header are malformed.", 401
                ) from None
        if not client_id:
            raise TokenError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        app = self.find_app(tx, client_id)
        if app is None:
            raise TokenError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.emu.tenant_id}'. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        scope = form.get("scope")
        if grant == "client_credentials":
            acr = self._client_auth(app, form, basic_secret, tenant, required=True)
            audience = self._app_scope(scope)
            return self._response(self.mint_app_token(app, tx, audience, acr=acr), scope=f"{audience}/.default")
        if grant == "password":
            acr = self._client_auth(app, form, basic_secret, tenant, required=False)
            username, password = form.get("username"), form.get("password")
            if not username or password is None:
                raise TokenError(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'username' and 'password'.",
                )
            user = self.find_user(tx, username)
            if user is None or not user.get("userPrincipalName"):
                raise TokenError(
                    "invalid_grant",
                    50034,
                    f"The user account {username} does not exist in the {self.emu.tenant_id} directory. To sign into this application, the account must be added to the directory.",
                )
            if user.get("accountEnabled") is False:
                raise TokenError("invalid_grant", 50057, "The user account is disabled.")
            if user.get("password") is None or password != user.get("password"):
                raise TokenError(
                    "invalid_grant", 50126, "Error validating credentials due to invalid username or password."
                )
            audience, scopes = self._user_scopes(app, scope)
            return self._user_response(app, user, audience, scopes, acr, form)
        if grant == "refresh_token":
            acr = self._client_auth(app, form, basic_secret, tenant, required=False)
            try:
                rt = jwt.decode(
                    form.get("refresh_token") or "",
                    self._public,
                    algorithms=["RS256"],
                    audience=self.emu.base_url + "/refresh",
                )
            except jwt.PyJWTError:
                raise TokenError(
                    "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
                ) from None
            if rt.get("client_id", "").lower() != app["appId"].lower():
                raise TokenError("invalid_grant", 70000, "Provided grant is invalid or malformed.")
            user = self.find_user(tx, rt["oid"])
            if user is None:
                raise TokenError("invalid_grant", 50034, "The user account does not exist in the directory.")
            return self._user_response(app, user, rt["res"], rt["scp"], acr, form)
        raise TokenError("unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")

    def _user_response(self, app, user, audience, scopes, acr, form):
        access = self.mint_user_token(app, user, scopes, audience, acr=acr)
        full = [f"{audience}/{s}" for s in scopes] + ["openid", "profile", "email"]
        out = self._response(access, scope=" ".join(full))
        out["id_token"] = self.id_token(app, user)
        out["client_info"] = b64url(json.dumps({"uid": user["id"], "utid": self.emu.tenant_id}).encode())
        out["refresh_token"] = self.refresh_token(app, user, scopes, audience)
        return out

    @staticmethod
    def _response(access_token: str, scope: str) -> dict:
        return {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": access_token,
        }

    def _resources(self) -> list[str]:
        return [self.emu.base_url, GRAPH_HOST, GRAPH_APP_ID]

    def _split_resource(self, scope_item: str):
        for res in self._resources():
            if scope_item.lower().startswith(res.lower() + "/"):
                return res, scope_item[len(res) + 1 :]
        return None, scope_item

    def _app_scope(self, scope: str | None) -> str:
        if not scope:
            raise TokenError(
                "invalid_request",
                90014,
                "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
            )
        items = [s for s in scope.split() if s not in OIDC_SCOPES]
        if len(items) != 1:
            raise TokenError(
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        res, rest = self._split_resource(items[0])
        if res is None:
            raise TokenError(
                "invalid_resource",
                500011,
                f"The resource principal named {items[0].rsplit('/', 1)[0]} was not found in the tenant named {self.emu.tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
            )
        if rest != ".default":
            raise TokenError(
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        return res

    def _user_scopes(self, app: dict, scope: str | None):
        items = [s for s in (scope or "").split() if s not in OIDC_SCOPES]
        if not items:
            raise TokenError(
                "invalid_request",
                90014,
                "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
            )
        allowed = self.delegated_scopes(app)
        allowed_low = {s.lower(): s for s in allowed}
        audience, granted = None, []
        for item in items:
            res, rest = self._split_resource(item)
            if res is None:
                if "/" in item:
                    raise TokenError(
                        "invalid_resource",
                        500011,
                        f"The resource principal named {item.rsplit('/', 1)[0]} was not found in the tenant named {self.emu.tenant_id}.",
                    )
                res, rest = self.emu.base_url, item  # bare scope names are Graph's (as in Entra)
            if audience is not None and res != audience:
                raise TokenError(
                    "invalid_request",
                    28000,
                    "Provided value for the input parameter scope is not valid because it contains more than one resource.",
                )
            audience = res
            if rest == ".default":
                granted.extend(allowed)
            elif rest.lower() in allowed_low:
                granted.append(allowed_low[rest.lower()])
            else:
                raise TokenError(
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the application with ID '{app['appId']}' named '{app.get('displayName', '')}'. Send an interactive authorization request for this user and resource.",
                )
        return audience, sorted(set(granted))

    def _client_auth(self, app, form, basic_secret, tenant, required: bool) -> str:
        """Validate the client's credential; -> appidacr ("0" none, "1" secret, "2" certificate)."""
        secret = form.get("client_secret") if form.get("client_secret") is not None else basic_secret
        assertion = form.get("client_assertion")
        if secret is not None:
            if not app.get("clientSecret") or secret != app.get("clientSecret"):
                raise TokenError(
                    "invalid_client",
                    7000215,
                    f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                    f"value, not the client secret ID, for a secret added to app '{app['appId']}'.",
                    401,
                )
            return "1"
        if assertion is not None:
            self._check_assertion(app, form, assertion, tenant)
            return "2"
        if required:
            raise TokenError(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                401,
            )
        return "0"

    def _check_assertion(self, app, form, assertion: str, tenant: str) -> None:
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            raise TokenError(
                "invalid_request",
                7000219,
                "'client_assertion_type' must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
                400,
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise TokenError("invalid_client", 700025, "Client assertion is not a well-formed JWT.", 401) from None
        thumb = None
        try:
            if header.get("x5t#S256"):
                thumb = _b64url_decode(header["x5t#S256"]).hex()
            elif header.get("x5t"):
                thumb = _b64url_decode(header["x5t"]).hex()
        except (ValueError, TypeError):
            thumb = None
        if not thumb:
            raise TokenError(
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found.]",
                401,
            )
        registered = {t.lower() for t in app.get("certificateThumbprints") or []}
        cert = self.certificates.get(thumb)
        registered_match = thumb in registered or (
            cert is not None and cert.fingerprint(hashes.SHA1()).hex() in registered
        )
        if cert is None or not registered_match:
            raise TokenError(
                "invalid_client",
                700027,
                f"The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumb.upper()}']",
                401,
            )
        alg = header.get("alg")
        if alg not in ("RS256", "PS256"):
            raise TokenError(
                "invalid_client",
                700027,
                f"Client assertion contains an invalid signature. [Reason - unsupported algorithm {alg}.]",
                401,
            )
        expected_aud = f"{self.authority_host}/{tenant}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),
                algorithms=[alg],
                audience=[expected_aud, f"{self.authority_host}/{self.emu.tenant_id}/oauth2/v2.0/token"],
                options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError(
                "invalid_client", 700024, "Client assertion is not within its valid time range.", 401
            ) from None
        except jwt.ImmatureSignatureError:
            raise TokenError(
                "invalid_client", 700024, "Client assertion is not within its valid time range.", 401
            ) from None
        except jwt.InvalidAudienceError:
            raise TokenError(
                "invalid_client",
                700212,
                f"No matching federated identity record found for presented assertion audience. The audience must be '{expected_aud}'.",
                401,
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenError(
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The signature could not be verified.]",
                401,
            ) from None
        except jwt.PyJWTError as e:
            raise TokenError("invalid_client", 700025, f"Client assertion is invalid: {e}.", 401) from None
        if (
            claims.get("iss", "").lower() != app["appId"].lower()
            or claims.get("sub", "").lower() != app["appId"].lower()
        ):
            raise TokenError(
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
                401,
            )


def _strip_port(url) -> str | None:
    if not isinstance(url, str):
        return None
    return re.sub(r"^(https://(?:127\.0\.0\.1|localhost|\[::1\])):\d+", r"\1", url.rstrip("/"))


def _unauth(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={
            "WWW-Authenticate": f'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="{GRAPH_APP_ID}"'
        },
    )


# ----------------------------------------------------------------------------- routes


@route("GET", "/{tenant}/v2.0/.well-known/openid-configuration", permissions=None)
def _openid_configuration(ctx):
    emu = ctx.emulator
    if not emu.tenant_matches(ctx.tx, ctx.params["tenant"]):
        return Response(
            400,
            {
                "error": "invalid_tenant",
                "error_description": f"AADSTS90002: Tenant '{ctx.params['tenant']}' not found.",
                "error_codes": [90002],
            },
        )
    return emu.identity.openid_configuration(ctx.params["tenant"])


@route("GET", "/{tenant}/discovery/v2.0/keys", permissions=None)
def _jwks(ctx):
    return ctx.emulator.identity.jwks()


@route("GET", "/common/discovery/instance", permissions=None)
def _instance_discovery(ctx):
    # MSAL calls this only when instance discovery is on; answer like Entra does for a known cloud.
    host = ctx.base_url.split("://", 1)[1]
    return {
        "tenant_discovery_endpoint": f"{ctx.base_url}/{ctx.tenant_id}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }


@route("GET", "/common/userrealm/{username}", permissions=None)
def _user_realm(ctx):
    user = Identity.find_user(ctx.tx, ctx.params["username"])
    domain = ctx.params["username"].rpartition("@")[2]
    return {
        "ver": "1.0",
        "account_type": "Managed" if user else "Unknown",
        "domain_name": domain,
        "cloud_instance_name": "sandbox.local",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    }


@route("POST", "/{tenant}/oauth2/v2.0/token", permissions=None)
def _token(ctx):
    emu = ctx.emulator
    ctype = (ctx.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return token_error_response(
            TokenError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            ),
            ctx.client_request_id,
        )
    try:
        form = dict(parse_qsl((ctx.raw_body or b"").decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        form = {}
    try:
        return emu.identity.token(ctx.params["tenant"], form, ctx.headers, ctx.tx)
    except TokenError as e:
        return token_error_response(e, ctx.client_request_id)
