# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Credentials, clouds, token caches and the HTTP adapter MSAL uses.

Internal to the entra.pim collection: not a public API, may change without notice.

``AUTH_ARGSPEC`` is documented option by option in ``plugins/doc_fragments/_auth.py``;
keep the two in step (ansible-test sanity compares them).
"""

from __future__ import annotations

import abc
import base64
import email.utils
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import stat
import subprocess
import tempfile
import time
import traceback
import warnings
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError

try:
    import requests

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only where requests is missing
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

try:
    import msal

    HAS_MSAL = True
    MSAL_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only where msal is missing
    msal = None
    HAS_MSAL = False
    MSAL_IMPORT_ERROR = traceback.format_exc()


def _env(*names):
    return (env_fallback, list(names))


AUTH_METHODS = (
    "auto",
    "client_secret",
    "certificate",
    "federated_token",
    "managed_identity",
    "access_token",
    "username_password",
    "azure_cli",
)

AUTH_ARGSPEC = dict(
    auth_method=dict(type="str", default="auto", choices=list(AUTH_METHODS), fallback=_env("ENTRA_PIM_AUTH_METHOD")),
    tenant_id=dict(type="str", fallback=_env("ENTRA_PIM_TENANT_ID", "AZURE_TENANT_ID")),
    client_id=dict(type="str", fallback=_env("ENTRA_PIM_CLIENT_ID", "AZURE_CLIENT_ID")),
    client_secret=dict(type="str", no_log=True, fallback=_env("ENTRA_PIM_CLIENT_SECRET", "AZURE_CLIENT_SECRET")),
    client_certificate_path=dict(
        type="path", fallback=_env("ENTRA_PIM_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PATH")
    ),
    client_certificate_password=dict(
        type="str",
        no_log=True,
        fallback=_env("ENTRA_PIM_CLIENT_CERTIFICATE_PASSWORD", "AZURE_CLIENT_CERTIFICATE_PASSWORD"),
    ),
    # A path to a token, not a token: no_log would only hide where the file is.
    federated_token_file=dict(
        type="path", no_log=False, fallback=_env("ENTRA_PIM_FEDERATED_TOKEN_FILE", "AZURE_FEDERATED_TOKEN_FILE")
    ),
    managed_identity_client_id=dict(type="str", fallback=_env("ENTRA_PIM_MANAGED_IDENTITY_CLIENT_ID")),
    access_token=dict(type="str", no_log=True, fallback=_env("ENTRA_PIM_ACCESS_TOKEN")),
    username=dict(type="str", fallback=_env("ENTRA_PIM_USERNAME", "AZURE_USERNAME")),
    password=dict(type="str", no_log=True, fallback=_env("ENTRA_PIM_PASSWORD", "AZURE_PASSWORD")),
    azure_cli_path=dict(type="path", fallback=_env("ENTRA_PIM_AZURE_CLI_PATH")),
    cloud=dict(type="str", choices=["public", "usgov", "usgov_dod", "china"], fallback=_env("ENTRA_PIM_CLOUD")),
    authority_host=dict(type="str", fallback=_env("ENTRA_PIM_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST")),
    graph_url=dict(type="str", fallback=_env("ENTRA_PIM_GRAPH_URL")),
    ca_bundle=dict(type="path", fallback=_env("ENTRA_PIM_CA_BUNDLE")),
    validate_certs=dict(type="bool", default=True, fallback=_env("ENTRA_PIM_VALIDATE_CERTS")),
    # These two look like secrets by name only: a switch and a file path.
    token_cache=dict(type="bool", default=True, no_log=False, fallback=_env("ENTRA_PIM_TOKEN_CACHE")),
    token_cache_path=dict(
        type="path",
        default="~/.cache/entra.pim/token_cache.json",
        no_log=False,
        fallback=_env("ENTRA_PIM_TOKEN_CACHE_PATH"),
    ),
    request_timeout=dict(type="int", default=60, fallback=_env("ENTRA_PIM_REQUEST_TIMEOUT")),
    max_retries=dict(type="int", default=5, fallback=_env("ENTRA_PIM_MAX_RETRIES")),
    max_retry_wait=dict(type="int", default=60, fallback=_env("ENTRA_PIM_MAX_RETRY_WAIT")),
)

# Environment names per option, in lookup order; used in messages that say what is missing.
ENV_NAMES = {name: list(spec["fallback"][1]) for name, spec in AUTH_ARGSPEC.items() if "fallback" in spec}

# cloud -> (authority host, Graph URL)
CLOUDS = {
    "public": ("login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": ("login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgov_dod": ("login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": ("login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}

# Hosts MSAL may run instance discovery against; any other authority (the sandbox, ADFS-like
# test servers) gets instance_discovery=False so MSAL never calls login.microsoftonline.com for it.
KNOWN_AUTHORITY_HOSTS = frozenset(
    [
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    ]
)

# What each method needs, in the order `auto` tries them. Managed identity and the Azure CLI
# need nothing and are never picked by this table (see select_auth_method).
REQUIRED = {
    "access_token": ("access_token",),
    "client_secret": ("tenant_id", "client_id", "client_secret"),
    "certificate": ("tenant_id", "client_id", "client_certificate_path"),
    "federated_token": ("tenant_id", "client_id", "federated_token_file"),
    "username_password": ("client_id", "username", "password"),
    "managed_identity": (),
    "azure_cli": (),
}
AUTO_ORDER = ("access_token", "client_secret", "certificate", "federated_token", "username_password")

# Options that identify a credential; when any is set, `auto` never falls back to managed identity.
_CREDENTIAL_OPTIONS = (
    "client_secret",
    "client_certificate_path",
    "federated_token_file",
    "access_token",
    "username",
    "password",
)
_MANAGED_IDENTITY_ENV = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def _describe_option(name):
    envs = ENV_NAMES.get(name)
    if envs:
        return "%s (or %s)" % (name, " / ".join(envs))
    return name


def _join(names):
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return "%s and %s" % (", ".join(names[:-1]), names[-1])


def select_auth_method(settings, environ=None):
    """Return the auth method to use, or raise AuthError saying what is missing.

    ``auto`` takes the first complete set in AUTO_ORDER; managed identity only when no
    credential option is set at all and the environment shows a managed identity endpoint.
    """
    environ = os.environ if environ is None else environ
    method = settings.get("auth_method") or "auto"

    def missing(m):
        return [opt for opt in REQUIRED[m] if not settings.get(opt)]

    if method != "auto":
        lacking = missing(method)
        if lacking:
            raise AuthError(
                "auth_method=%s needs %s. Missing: %s."
                % (method, _join(REQUIRED[method]), "; ".join(_describe_option(o) for o in lacking)),
                auth_method=method,
            )
        return method

    for candidate in AUTO_ORDER:
        if not missing(candidate):
            return candidate
    if not any(settings.get(o) for o in _CREDENTIAL_OPTIONS) and any(environ.get(v) for v in _MANAGED_IDENTITY_ENV):
        return "managed_identity"

    started = [m for m in AUTO_ORDER if any(settings.get(o) for o in REQUIRED[m]) and m != "access_token"]
    lines = []
    for m in started or AUTO_ORDER[1:]:
        lines.append("%s needs %s (missing: %s)" % (m, _join(REQUIRED[m]), _join(missing(m))))
    raise AuthError(
        "No complete set of credentials for Microsoft Graph was found in the task options or the environment. "
        + "; ".join(lines)
        + ". Alternatively set access_token, or choose auth_method=managed_identity or auth_method=azure_cli. "
        "Each option can also come from its environment variable, e.g. AZURE_TENANT_ID, AZURE_CLIENT_ID, "
        "AZURE_CLIENT_SECRET.",
        auth_method="auto",
    )


def _normalize_url(value, what):
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise AuthError("%s must be a URL like https://host[:port]; got %r." % (what, value))
    return value


def resolve_endpoints(settings):
    """Return ``(cloud, authority_host_url, graph_url)``; URLs have a scheme and no trailing slash."""
    cloud = settings.get("cloud")
    authority_host = settings.get("authority_host")
    if authority_host:
        authority_host = _normalize_url(authority_host, "authority_host")
    if not cloud:
        host = urlsplit(authority_host).hostname if authority_host else None
        cloud = next((name for name, (h, _g) in CLOUDS.items() if h == host), "public")
    default_authority, default_graph = CLOUDS[cloud]
    authority_host = authority_host or "https://" + default_authority
    graph_url = settings.get("graph_url")
    if graph_url:
        graph_url = _normalize_url(graph_url, "graph_url")
        if graph_url.endswith("/v1.0") or graph_url.endswith("/beta"):
            graph_url = graph_url.rsplit("/", 1)[0]
    else:
        graph_url = default_graph
    return cloud, authority_host, graph_url


def is_known_authority(authority_host):
    return urlsplit(authority_host).hostname in KNOWN_AUTHORITY_HOSTS


def tls_verify(settings):
    """The ``verify=`` value for every request (Graph and MSAL alike)."""
    if not settings.get("validate_certs", True):
        return False
    return settings.get("ca_bundle") or True


# --------------------------------------------------------------------------- retry policy


class RetryPolicy:
    """One retry policy for Graph and the identity platform: Retry-After within a bound,
    otherwise jittered exponential backoff, at most ``max_retries`` retries."""

    RETRY_STATUSES = frozenset([429, 503, 504])

    def __init__(self, max_retries=5, max_retry_wait=60, log=None, sleep=None, rand=None, stats=None):
        self.max_retries = max(0, int(max_retries))
        self.max_retry_wait = max(0, float(max_retry_wait))
        self.log = log or (lambda msg: None)
        self.sleep = sleep or time.sleep
        self.rand = rand or random.random
        self.stats = stats if stats is not None else {}

    @staticmethod
    def parse_retry_after(value, now=None):
        """Seconds from a Retry-After header (delta-seconds, fractional allowed, or HTTP date)."""
        if value is None:
            return None
        value = str(value).strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)

    def delay(self, retry_number, retry_after=None):
        """Seconds to wait before retry number ``retry_number`` (1-based)."""
        parsed = self.parse_retry_after(retry_after)
        if parsed is not None:
            return min(parsed, self.max_retry_wait), "Retry-After"
        base = min(self.max_retry_wait, 2.0 ** (retry_number - 1))
        # Jitter between half and all of the exponential step spreads parallel workers apart.
        return base * (0.5 + 0.5 * self.rand()), "backoff"

    def wait(self, retry_number, retry_after, what):
        seconds, why = self.delay(retry_number, retry_after)
        self.stats["retries"] = self.stats.get("retries", 0) + 1
        self.log("entra.pim: %s; retry %d of %d in %.1f s (%s)." % (what, retry_number, self.max_retries, seconds, why))
        if seconds > 0:
            self.sleep(seconds)
        return seconds


# --------------------------------------------------------------------------- connection errors


def _exception_chain(exc):
    seen = set()
    stack = [exc]
    while stack:
        cur = stack.pop()
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        stack.extend([getattr(cur, "reason", None), cur.__cause__, cur.__context__])
        stack.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))


_NOT_SENT_NAMES = frozenset(["NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectTimeout"])


def classify_connection_error(exc):
    """'tls', 'not_sent' (safe to repeat anything) or 'lost' (the request may have arrived)."""
    chain = list(_exception_chain(exc))
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if "SSLError" in names or "SSLCertVerificationError" in names:
        return "tls"
    if names & _NOT_SENT_NAMES:
        return "not_sent"
    return "lost"


def describe_connection_error(exc):
    """A short reason without a Python repr dump."""
    kind = classify_connection_error(exc)
    chain = list(_exception_chain(exc))
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if kind == "tls":
        for e in chain:
            if type(e).__name__ == "SSLCertVerificationError":
                return "TLS certificate verification failed (%s)" % (getattr(e, "verify_message", None) or "untrusted")
        return "TLS handshake failed"
    texts = " ".join(str(e) for e in chain)
    if "NameResolutionError" in names or "Name or service not known" in texts or "nodename nor servname" in texts:
        return "the host name could not be resolved"
    if "ConnectionRefusedError" in names or "Connection refused" in texts:
        return "the connection was refused"
    # urllib3 2 makes NewConnectionError a subclass of ConnectTimeoutError: compare exact types here.
    exact = {type(e).__name__ for e in chain}
    if exact & {"ConnectTimeoutError", "ConnectTimeout"} or "timed out" in texts and "NewConnectionError" in names:
        return "connecting timed out"
    if exact & {"ReadTimeout", "ReadTimeoutError"}:
        return "no response arrived before request_timeout"
    if "NewConnectionError" in names:
        return "a connection could not be opened"
    if "RemoteDisconnected" in names or "ProtocolError" in names or "ChunkedEncodingError" in names:
        return "the connection closed before a complete response arrived"
    return "the connection failed (%s)" % type(exc).__name__


def tls_hint(verify):
    if verify is False:
        return ""
    return (
        " If the server uses a private certificate authority (such as the PIM sandbox), set ca_bundle "
        "(ENTRA_PIM_CA_BUNDLE) to its CA file."
    )


# --------------------------------------------------------------------------- MSAL HTTP adapter


class MsalHttpClient:
    """The ``http_client`` given to MSAL: the shared Session, with ``verify`` and ``timeout`` on
    every call (REQUESTS_CA_BUNDLE would otherwise override Session.verify), our User-Agent,
    and the shared retry policy for throttling and connection failures."""

    def __init__(self, session, verify, timeout, retry_policy, user_agent=None, stats=None):
        self.session = session
        self.verify = verify
        self.timeout = timeout
        self.retry = retry_policy
        self.user_agent = user_agent
        self.stats = stats if stats is not None else {}

    def get(self, url, params=None, headers=None, **kwargs):
        return self._send("GET", url, params=params, headers=headers, **kwargs)

    def post(self, url, params=None, data=None, headers=None, **kwargs):
        return self._send("POST", url, params=params, data=data, headers=headers, **kwargs)

    def close(self):
        # The session belongs to the GraphClient, which closes it.
        pass

    def _send(self, method, url, headers=None, **kwargs):
        kwargs.pop("verify", None)
        kwargs.pop("timeout", None)
        headers = dict(headers or {})
        if self.user_agent:
            headers.setdefault("User-Agent", self.user_agent)
        endpoint = "%s %s" % (method, url.split("?", 1)[0])
        attempt = 0
        while True:
            attempt += 1
            self.stats["identity_requests"] = self.stats.get("identity_requests", 0) + 1
            try:
                resp = self.session.request(
                    method, url, headers=headers, verify=self.verify, timeout=self.timeout, **kwargs
                )
            except requests.exceptions.RequestException as exc:
                kind = classify_connection_error(exc)
                reason = describe_connection_error(exc)
                # Token and discovery requests are safe to repeat even when a response was lost.
                if kind != "tls" and attempt <= self.retry.max_retries:
                    self.retry.wait(attempt, None, "identity platform %s: %s" % (endpoint, reason))
                    continue
                raise AuthError(
                    "Could not reach the identity platform (%s): %s%s%s"
                    % (
                        endpoint,
                        reason,
                        "" if kind == "tls" else "; gave up after %d attempts." % attempt,
                        tls_hint(self.verify) if kind == "tls" else "",
                    ),
                    attempts=attempt,
                )
            if resp.status_code in RetryPolicy.RETRY_STATUSES and attempt <= self.retry.max_retries:
                self.retry.wait(
                    attempt,
                    resp.headers.get("Retry-After"),
                    "identity platform %s answered %d" % (endpoint, resp.status_code),
                )
                continue
            return resp


# --------------------------------------------------------------------------- cache files


def _check_private_file(path):
    """Refuse a cache file other users can read or write, or that someone else owns."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not stat.S_ISREG(st.st_mode):
        raise AuthError("The token cache path %s exists but is not a regular file." % path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise AuthError(
            "Refusing to use the token cache %s: its mode is %04o, so other users can read it, and it holds "
            "access tokens. Run 'chmod 600 %s', choose another token_cache_path, or set token_cache=false."
            % (path, mode, path),
            token_cache_path=path,
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise AuthError(
            "Refusing to use the token cache %s: it belongs to another user (uid %d). Choose another "
            "token_cache_path or set token_cache=false." % (path, st.st_uid),
            token_cache_path=path,
        )
    return True


def _check_private_dir(directory):
    """Refuse a cache directory that other users can write to, or that another user owns.

    Whoever can write to the directory can replace or plant the cache files in it (a rename
    needs no permission on the file itself), so a private file in a shared directory is not
    private. A missing directory is fine: ``write_private_file`` creates it with mode 0700.
    """
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not stat.S_ISDIR(st.st_mode):
        # Not a directory: nothing can be read there, and saving fails with a warning (see save()).
        return False
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and mode & stat.S_ISVTX:
        # A shared directory by design (/tmp, /var/tmp): making it private would break everyone else.
        raise AuthError(
            "Refusing to use the token cache directory %s: its mode is %04o, a directory shared by every user, who "
            "can plant files in it. Choose a token_cache_path in a private directory (mode 0700, such as the default "
            "~/.cache/entra.pim/token_cache.json), or set token_cache=false." % (directory, mode),
            token_cache_path=directory,
        )
    if mode & 0o022:
        raise AuthError(
            "Refusing to use the token cache directory %s: its mode is %04o, so other users can write to it and "
            "replace or plant the cached tokens there. Run 'chmod 700 %s', choose a token_cache_path in a private "
            "directory, or set token_cache=false." % (directory, mode, directory),
            token_cache_path=directory,
        )
    if hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0):
        raise AuthError(
            "Refusing to use the token cache directory %s: it belongs to another user (uid %d), who can replace "
            "the cached tokens there. Choose a token_cache_path in a directory of your own, or set "
            "token_cache=false." % (directory, st.st_uid),
            token_cache_path=directory,
        )
    return True


def write_private_file(path, text):
    """Atomically replace ``path`` with ``text``, mode 0600, directory 0700 when created."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # makedirs applies the umask; the cache directory is exactly 0700 whatever the umask is.
        os.chmod(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".entra-pim-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _CachedResponse:
    """What MSAL's http cache keeps for a discovery GET: status, body and headers."""

    def __init__(self, status_code, text, headers):
        self.status_code = status_code
        self.text = text
        self.headers = dict(headers or {})

    def raise_for_status(self):
        if self.status_code >= 400:
            raise ValueError("HTTP %d" % self.status_code)


# The resolver's cache of names → ids, next to the token cache (see _resolve.DirectoryCache).
DIRECTORY_CACHE_FILE = "directory_cache.json"


class CacheFiles:
    """The persistent MSAL token cache and http cache (discovery documents).

    Both files are mode 0600 in a directory that only its owner can write to; they are written
    atomically and only when their content changed. Only 2xx GET entries of the http cache are
    persisted: they are public metadata, while the POST entries are keyed by a hash that covers
    the credential.

    The token cache file is partitioned by the credential itself (see ``credential_material``):
    each partition is one MSAL cache, stored under an HMAC-SHA256 of the credential, keyed with
    a random key kept in the same file. A task sees only the partition of the credential it was
    given, so a wrong secret, certificate or password finds no token and must ask the identity
    platform, which refuses it. docs/security.md ("Token cache") gives the threat model.
    """

    _INDEX = "_index_"
    FORMAT = "entra.pim token cache"
    VERSION = 2

    def __init__(self, path, enabled=True, warn=None, load=True):
        self.enabled = bool(enabled and path)
        self.path = os.path.expanduser(path) if path else None
        self.directory = os.path.dirname(os.path.abspath(self.path)) if self.path else None
        self.http_path = os.path.join(os.path.dirname(self.path), "http_cache.json") if self.path else None
        # Names → ids (roles, principals) for the resolver's warm path: same directory, same rules.
        self.directory_path = os.path.join(os.path.dirname(self.path), DIRECTORY_CACHE_FILE) if self.path else None
        self.warn = warn or (lambda msg: None)
        self.token_cache = msal.SerializableTokenCache()
        self.http_cache = {}
        self._http_text = None
        self._dir_checked = False
        self._material = None  # the credential's bytes, kept in memory only (see open_partition)
        self._key = None
        # load=False: only the directory cache is wanted (the resolver); the token files stay unread.
        if self.enabled and load:
            self._load()

    def _check_dir(self):
        if not self._dir_checked:
            _check_private_dir(self.directory)
            self._dir_checked = True

    def _load(self):
        self._check_dir()
        _check_private_file(self.path)
        if _check_private_file(self.http_path):
            try:
                with open(self.http_path, encoding="utf-8") as handle:
                    text = handle.read()
                self.http_cache = self._decode_http(json.loads(text))
                self._http_text = self._encode_http()
            except (OSError, ValueError, TypeError, KeyError):
                self.http_cache = {}

    # ----------------------------------------------------------------- partitions

    @staticmethod
    def _partition_id(key, material):
        return hmac.new(key, material, hashlib.sha256).hexdigest()

    def _read_token_file(self, warn=False):
        """The token cache file as ``(key, partitions)``, or ``(None, {})`` when missing or unusable.

        A file in the format before partitions (one MSAL cache for every credential) cannot say
        which credential earned its tokens, so none of them is trusted: it is replaced.
        """
        if not _check_private_file(self.path):
            return None, {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.loads(handle.read())
            if not isinstance(data, dict) or data.get("format") != self.FORMAT:
                return None, {}
            key = base64.b64decode(data["key"].encode("ascii"), validate=True)
            partitions = data["partitions"]
            if len(key) < 32 or not isinstance(partitions, dict):
                raise ValueError("malformed key or partitions")
        except (OSError, ValueError, TypeError, KeyError, AttributeError, UnicodeError) as exc:
            if warn:
                self.warn(
                    "Ignoring an unreadable token cache %s (%s); it will be rewritten."
                    % (self.path, getattr(exc, "strerror", None) or type(exc).__name__)
                )
            return None, {}
        return key, {k: v for k, v in partitions.items() if isinstance(v, dict)}

    def open_partition(self, material):
        """Load the partition of the credential ``material`` (bytes) into ``token_cache``.

        Call once, before MSAL uses the cache. Without a partition nothing is read or saved.
        """
        self._material = material
        if not self.enabled:
            return
        self._check_dir()
        key, partitions = self._read_token_file(warn=True)
        self._key = key or os.urandom(32)
        mine = partitions.get(self._partition_id(self._key, material))
        if mine:
            try:
                self.token_cache.deserialize(json.dumps(mine))
            except ValueError:
                self.token_cache = msal.SerializableTokenCache()

    @staticmethod
    def _partition_is_spent(partition, now):
        """True when a partition can give nothing: no refresh token and every access token expired."""
        if partition.get("RefreshToken"):
            return False
        for item in (partition.get("AccessToken") or {}).values():
            try:
                if int(item.get("expires_on")) > now:
                    return False
            except (TypeError, ValueError, AttributeError):
                continue
        return True

    def _save_tokens(self):
        """Write this credential's partition, merged into the file as it is on disk now.

        The file is re-read just before writing, so parallel tasks with other credentials keep
        their partitions (the last writer of one partition wins, as for any cache). Partitions
        that can no longer give a token are dropped, so rotated secrets do not pile up.
        """
        try:
            key, partitions = self._read_token_file()
        except AuthError:
            # The file turned non-private since it was loaded: replace it (never merge it).
            key, partitions = None, {}
        key = key or self._key
        mine = self._partition_id(key, self._material)
        partitions[mine] = json.loads(self.token_cache.serialize())
        now = time.time()
        partitions = {k: v for k, v in partitions.items() if k == mine or not self._partition_is_spent(v, now)}
        data = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "key": base64.b64encode(key).decode("ascii"),
            "partitions": partitions,
        }
        write_private_file(self.path, json.dumps(data, sort_keys=True))
        self._key = key

    def _decode_http(self, data):
        out = {}
        entries = data.get("entries", {})
        for key, value in entries.items():
            out[key] = _CachedResponse(int(value["status_code"]), value["text"], value.get("headers"))
        sequence = [list(e) for e in data.get("sequence", []) if len(e) == 3 and e[2] in out]
        timestamps = {k: list(v) for k, v in data.get("timestamps", {}).items() if k in out}
        out[self._INDEX] = (sequence, timestamps)
        return out

    def _encode_http(self):
        sequence, timestamps = self.http_cache.get(self._INDEX, ([], {}))
        entries = {}
        for key, value in self.http_cache.items():
            if key == self._INDEX or not key.startswith("GET "):
                continue
            status = getattr(value, "status_code", None)
            if not isinstance(status, int) or not 200 <= status < 300:
                continue
            entries[key] = {
                "status_code": status,
                "text": value.text,
                "headers": dict(getattr(value, "headers", {}) or {}),
            }
        data = {
            "entries": entries,
            "sequence": [list(e) for e in sequence if e[2] in entries],
            "timestamps": {k: list(v) for k, v in timestamps.items() if k in entries},
        }
        return json.dumps(data, sort_keys=True)

    def save(self):
        if not self.enabled:
            return
        try:
            if self.token_cache.has_state_changed and self._material is not None:
                self._save_tokens()
                self.token_cache.has_state_changed = False
            text = self._encode_http()
            if text != self._http_text:
                write_private_file(self.http_path, text)
                self._http_text = text
        except OSError as exc:
            self.warn(
                "Could not save the token cache under %s (%s); the next task will request a new token."
                % (os.path.dirname(self.path), exc.strerror or exc)
            )
            self.enabled = False

    def read_directory(self):
        """The directory cache's text, or None when disabled or missing.

        Refused like the token cache when other users can read or write it, or it belongs to
        someone else: it names the tenant's people and groups, and a planted file could point a
        name at the wrong object (the resolver verifies every cached id, but refuses all the same).
        """
        if not self.enabled:
            return None
        self._check_dir()
        try:
            if not _check_private_file(self.directory_path):
                return None
        except AuthError as exc:
            raise AuthError(
                str(exc)
                .replace("the token cache", "the directory cache")
                .replace("The token cache", "The directory cache")
                .replace("it holds access tokens", "it holds directory names and ids"),
                token_cache_path=self.directory_path,
            )
        try:
            with open(self.directory_path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return None

    def write_directory(self, text):
        """Atomically replace the directory cache (0600); a failure warns once and disables it."""
        if not self.enabled:
            return
        self._check_dir()
        try:
            write_private_file(self.directory_path, text)
        except OSError as exc:
            self.warn(
                "Could not save the directory cache under %s (%s); the next task will look names up again."
                % (os.path.dirname(self.directory_path), exc.strerror or exc)
            )
            self.enabled = False

    def forget_access_token(self, token):
        """Drop a cached access token that Graph refused (e.g. signed by a previous sandbox)."""
        at_type = msal.TokenCache.CredentialType.ACCESS_TOKEN
        for item in list(self.token_cache.search(at_type)):
            if item.get("secret") == token:
                self.token_cache.remove_at(item)


# --------------------------------------------------------------------------- token errors

# AADSTS code -> what a person should check. Codes from the identity platform's error reference.
AADSTS_HINTS = {
    7000215: "The client secret is wrong. Copy the secret VALUE (not its ID) from the app registration.",
    7000222: "The client secret has expired. Create a new secret in the app registration.",
    700016: "The application (client_id) was not found in this tenant: check client_id and tenant_id, "
    "and that the app is registered in (or consented to) that tenant.",
    90002: "The tenant was not found: check tenant_id and that cloud matches the tenant's cloud.",
    900023: "tenant_id is not a valid tenant id or domain name.",
    90072: "The account is not a member of this tenant.",
    700027: "The certificate is not registered on the app, or the key does not match it: upload the "
    "certificate's public part to the app registration.",
    700024: "The client assertion (federated token) is expired or not yet valid; make sure the token file "
    "is refreshed by its issuer.",
    70021: "No federated identity credential on the app matches the token's issuer, subject and audience.",
    700211: "The federated token's issuer is not configured on the app.",
    700213: "No federated identity credential matches the token's subject.",
    7000218: "The app is a public client here: enable 'Allow public client flows' for username_password, or "
    "use a confidential credential.",
    50126: "The username or password is wrong.",
    50034: "The user account does not exist in this tenant.",
    50053: "The account is locked after too many sign-in attempts.",
    50055: "The password has expired.",
    50076: "The account needs multi-factor authentication, which username_password cannot do.",
    50079: "The account must register for multi-factor authentication, which username_password cannot do.",
    53003: "Conditional Access blocked the sign-in.",
    65001: "Admin consent is missing: grant consent for the app's Microsoft Graph permissions.",
    500011: "Microsoft Graph's service principal was not found in the tenant: check graph_url/cloud.",
    1002012: "The requested scope is invalid: check graph_url.",
    700082: "The cached refresh token expired; the next run signs in again.",
}


def _short_description(description):
    text = (description or "").replace("\r", "\n").split("\n", 1)[0].strip()
    for marker in (" Trace ID:", " Correlation ID:", " Timestamp:"):
        text = text.split(marker, 1)[0]
    return text[:400]


def token_error(result, method, authority, graph_url, secrets=()):
    """Turn an MSAL error result into an AuthError with the AADSTS code and a hint."""
    codes = result.get("error_codes") or []
    error = result.get("error") or "unknown_error"
    description = _short_description(result.get("error_description"))
    for secret in secrets:
        if secret:
            description = description.replace(secret, "********")
    hint = next((AADSTS_HINTS[c] for c in codes if c in AADSTS_HINTS), "")
    code_text = "AADSTS%s" % codes[0] if codes else error
    if description.startswith(code_text):
        text = description
    else:
        text = "%s: %s" % (code_text, description) if description else code_text
    msg = "Could not get a Microsoft Graph token for %s from %s with auth_method=%s (%s)." % (
        graph_url,
        authority,
        method,
        text,
    )
    if hint:
        msg += " " + hint
    return AuthError(
        msg,
        auth_method=method,
        error=error,
        aadsts_code=codes[0] if codes else None,
        correlation_id=result.get("correlation_id"),
    )


# --------------------------------------------------------------------------- credentials


def decode_jwt_claims(token):
    """The payload of a JWT, NOT verified; {} when the token is not a JWT."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")).decode("utf-8"))
    except (IndexError, ValueError, UnicodeError, AttributeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class Credential(abc.ABC):
    """Gives access tokens. ``get_token()`` returns ``(token, from_cache)``."""

    method = None
    can_refresh = False

    @abc.abstractmethod
    def get_token(self):
        """Each way of signing in says how it gets a token."""

    def invalidate(self, token):
        """Forget a token Graph refused; True when a fresh one may now be tried."""
        return False

    def secret_values(self):
        return []


class StaticTokenCredential(Credential):
    method = "access_token"

    def __init__(self, token):
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        self.token = token

    def get_token(self):
        return self.token, True

    def secret_values(self):
        return [self.token]


class _MsalCredential(Credential):
    can_refresh = True

    def __init__(self, method, app, scopes, authority, graph_url, cache, secrets=()):
        self.method = method
        self.app = app
        self.scopes = scopes
        self.authority = authority
        self.graph_url = graph_url
        self.cache = cache
        self._secrets = list(secrets)
        self._tokens = []
        self._current = None
        self._current_until = 0

    @abc.abstractmethod
    def _acquire(self):
        """The MSAL call for this flow; returns MSAL's result dict."""

    def get_token(self):
        # Reuse the token in memory until 5 minutes before it expires: no cache lookup per request.
        if self._current and time.time() < self._current_until:
            return self._current, True
        try:
            result = self._acquire()
        except (ValueError, KeyError) as exc:
            # MSAL raises ValueError for malformed input (bad authority, bad key material, ...).
            text = str(exc)
            for secret in self.secret_values():
                if secret:
                    text = text.replace(secret, "********")
            raise AuthError(
                "Could not get a Microsoft Graph token with auth_method=%s: %s" % (self.method, text[:400]),
                auth_method=self.method,
            )
        if not result or "access_token" not in result:
            raise token_error(result or {}, self.method, self.authority, self.graph_url, self.secret_values())
        token = result["access_token"]
        self._tokens.append(token)
        try:
            lifetime = int(result.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0
        self._current, self._current_until = token, time.time() + lifetime - 300
        self.cache.save()
        return token, result.get("token_source") == "cache"

    def invalidate(self, token):
        self._current = None
        self.cache.forget_access_token(token)
        self.cache.save()
        return True

    def secret_values(self):
        return self._secrets + self._tokens


class ConfidentialCredential(_MsalCredential):
    def _acquire(self):
        return self.app.acquire_token_for_client(scopes=self.scopes)


class FederatedAssertion:
    """Reads the federated token file at every acquisition: the issuer (GitHub, AKS) rotates it."""

    def __init__(self, path):
        self.path = path
        self.seen = []

    def __call__(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise AuthError(
                "Could not read federated_token_file %s: %s." % (self.path, exc.strerror or exc),
                auth_method="federated_token",
            )
        if not value:
            raise AuthError("federated_token_file %s is empty." % self.path, auth_method="federated_token")
        self.seen.append(value)
        return value


class FederatedCredential(ConfidentialCredential):
    def __init__(self, *args, assertion=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.assertion = assertion

    def secret_values(self):
        return super().secret_values() + list(self.assertion.seen)


class UsernamePasswordCredential(_MsalCredential):
    def __init__(self, *args, username=None, password=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.username = username
        self.password = password

    def _acquire(self):
        for account in self.app.get_accounts(username=self.username):
            result = self.app.acquire_token_silent(self.scopes, account=account)
            if result and "access_token" in result:
                result.setdefault("token_source", "cache")
                return result
        with warnings.catch_warnings():
            # MSAL deprecates this flow; the option is documented as legacy, for test tenants and the sandbox.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.app.acquire_token_by_username_password(self.username, self.password, scopes=self.scopes)


class ManagedIdentityCredential(_MsalCredential):
    def _acquire(self):
        return self.app.acquire_token_for_client(resource=self.graph_url)


class AzureCliCredential(Credential):
    method = "azure_cli"

    def __init__(self, az_path, graph_url, tenant_id=None, timeout=60):
        self.az_path = az_path
        self.graph_url = graph_url
        self.tenant_id = tenant_id
        self.timeout = timeout
        self.token = None

    def get_token(self):
        if self.token:
            return self.token, True
        az = self.az_path or shutil.which("az")
        if not az or not os.path.exists(az):
            raise AuthError(
                "auth_method=azure_cli needs the Azure CLI ('az'), which was not found%s. Install it and run "
                "'az login', or set azure_cli_path." % (" at %s" % self.az_path if self.az_path else " on PATH"),
                auth_method=self.method,
            )
        cmd = [az, "account", "get-access-token", "--resource", self.graph_url, "--output", "json"]
        if self.tenant_id:
            cmd += ["--tenant", self.tenant_id]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuthError("Could not run the Azure CLI (%s): %s." % (az, exc), auth_method=self.method)
        if proc.returncode != 0:
            first = next((ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()), "no output")
            raise AuthError(
                "The Azure CLI could not give a token for %s (exit code %d): %s. Run 'az login'%s."
                % (
                    self.graph_url,
                    proc.returncode,
                    first[:300],
                    " --tenant %s" % self.tenant_id if self.tenant_id else "",
                ),
                auth_method=self.method,
            )
        try:
            data = json.loads(proc.stdout)
            token = data["accessToken"]
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                "The Azure CLI answered 'az account get-access-token' with output that has no accessToken.",
                auth_method=self.method,
            )
        self.token = token
        return token, False

    def secret_values(self):
        return [self.token] if self.token else []


def _load_certificate(path, password):
    """Read a PEM (key + certificate) or PFX file. Returns MSAL's client_credential dict.

    cryptography is already a dependency of msal, so using it adds no runtime requirement.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.serialization import pkcs12
    except ImportError:  # pragma: no cover - msal always brings cryptography
        raise AuthError("auth_method=certificate needs the Python 'cryptography' package (a dependency of msal).")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise AuthError(
            "Could not read client_certificate_path %s: %s." % (path, exc.strerror or exc), auth_method="certificate"
        )
    pw = password.encode("utf-8") if password else None
    key = cert = None
    if b"-----BEGIN" in data:
        certs = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
        cert = certs[0] if certs else None
        try:
            key = serialization.load_pem_private_key(data, password=pw)
        except TypeError:
            raise AuthError(
                "The private key in %s is encrypted: set client_certificate_password." % path
                if not pw
                else "The private key in %s is not encrypted: remove client_certificate_password." % path,
                auth_method="certificate",
            )
        except ValueError:
            raise AuthError(
                "Could not load the private key from %s: the file needs a PEM private key (and certificate), and "
                "client_certificate_password must match it if the key is encrypted." % path,
                auth_method="certificate",
            )
    else:
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, pw)
        except (ValueError, TypeError):
            raise AuthError(
                "Could not open %s as a PFX/PKCS#12 file: wrong client_certificate_password, or not a PFX file." % path,
                auth_method="certificate",
            )
    if key is None or cert is None:
        raise AuthError(
            "%s must contain both the private key and its certificate (PEM or PFX)." % path, auth_method="certificate"
        )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    # SHA-1 thumbprint (x5t): accepted by Entra and by every msal release we support.
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    # The token cache partition: the certificate's SHA-256 thumbprint and the key's public part, so a
    # file whose key does not belong to its certificate never shares the registered certificate's tokens.
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    identity = cert.fingerprint(hashes.SHA256()) + hashlib.sha256(public).digest()
    return {"private_key": pem_key, "thumbprint": thumbprint}, pem_key, identity


def credential_material(method, *parts):
    """The bytes a token cache partition is keyed by: the method and what proves the credential.

    Never stored: ``CacheFiles`` keeps only an HMAC of it. See docs/security.md ("Token cache").
    """
    out = [method.encode("utf-8")]
    for part in parts:
        out.append(part if isinstance(part, bytes) else str(part or "").encode("utf-8"))
    # Length-prefixed, so that no two different tuples give the same bytes.
    return b"".join(b"%d:%s" % (len(p), p) for p in out)


def build_credential(settings, method, session, verify, timeout, retry_policy, cache, user_agent, stats):
    """Create the Credential for ``method`` (already selected and complete)."""
    _cloud, authority_host, graph_url = resolve_endpoints(settings)
    if method == "access_token":
        return StaticTokenCredential(settings["access_token"])
    if method == "azure_cli":
        return AzureCliCredential(settings.get("azure_cli_path"), graph_url, settings.get("tenant_id"), timeout)
    if not HAS_MSAL:
        raise AuthError("auth_method=%s needs the Python library msal." % method)

    http_client = MsalHttpClient(session, verify, timeout, retry_policy, user_agent, stats)
    scopes = ["%s/.default" % graph_url]
    tenant = settings.get("tenant_id") or "organizations"
    authority = "%s/%s" % (authority_host, tenant)
    common = dict(
        authority=authority,
        http_client=http_client,
        token_cache=cache.token_cache,
        http_cache=cache.http_cache,
    )
    if not is_known_authority(authority_host):
        common["instance_discovery"] = False

    def make(cls, credential=None):
        try:
            if credential is None:
                return cls(settings["client_id"], **common)
            return cls(settings["client_id"], client_credential=credential, **common)
        except ValueError as exc:
            raise AuthError("Could not set up sign-in against %s: %s" % (authority, str(exc)[:400]), auth_method=method)

    # The token cache partition comes first: MSAL must only ever see this credential's tokens.
    if method == "client_secret":
        cache.open_partition(credential_material(method, settings["client_secret"]))
        app = make(msal.ConfidentialClientApplication, settings["client_secret"])
        return ConfidentialCredential(
            method, app, scopes, authority, graph_url, cache, secrets=[settings["client_secret"]]
        )
    if method == "certificate":
        credential, pem_key, identity = _load_certificate(
            settings["client_certificate_path"], settings.get("client_certificate_password")
        )
        cache.open_partition(credential_material(method, identity))
        app = make(msal.ConfidentialClientApplication, credential)
        return ConfidentialCredential(
            method,
            app,
            scopes,
            authority,
            graph_url,
            cache,
            secrets=[pem_key, settings.get("client_certificate_password")],
        )
    if method == "federated_token":
        assertion = FederatedAssertion(settings["federated_token_file"])
        # Partitioned by the assertion itself: a token is reused only by a task holding the very
        # assertion that earned it; when the issuer rotates the file, the next task signs in again.
        cache.open_partition(credential_material(method, assertion()))
        app = make(msal.ConfidentialClientApplication, {"client_assertion": assertion})
        return FederatedCredential(method, app, scopes, authority, graph_url, cache, assertion=assertion)
    if method == "username_password":
        # The user and the password: a wrong password never reaches the right password's refresh token.
        cache.open_partition(credential_material(method, settings["username"].strip().lower(), settings["password"]))
        app = make(msal.PublicClientApplication)
        if not is_known_authority(authority_host):
            # MSAL asks {host}/common/userrealm/ before a password sign-in and drops the port from the host,
            # so a sandbox on 127.0.0.1:PORT is unreachable there. Only Microsoft's hosts have federated
            # realms; mark this one as having none, which is what MSAL does itself after a 404.
            skip = getattr(getattr(msal, "authority", None), "Authority", None)
            skip = getattr(skip, "_domains_without_user_realm_discovery", None)
            if isinstance(skip, set):
                skip.add(app.authority.instance)
        return UsernamePasswordCredential(
            method,
            app,
            scopes,
            authority,
            graph_url,
            cache,
            secrets=[settings["password"]],
            username=settings["username"],
            password=settings["password"],
        )
    if method == "managed_identity":
        if not hasattr(msal, "ManagedIdentityClient"):
            raise AuthError("auth_method=managed_identity needs msal 1.29 or later.", auth_method=method)
        mi_client_id = settings.get("managed_identity_client_id")
        # No secret to key by: the partition is the identity and the endpoint that vouches for it.
        endpoint = next((os.environ[v] for v in _MANAGED_IDENTITY_ENV if os.environ.get(v)), "imds")
        cache.open_partition(credential_material(method, mi_client_id or "system-assigned", endpoint))
        identity = (
            msal.UserAssignedManagedIdentity(client_id=mi_client_id)
            if mi_client_id
            else msal.SystemAssignedManagedIdentity()
        )
        app = msal.ManagedIdentityClient(
            identity, http_client=http_client, token_cache=cache.token_cache, http_cache=cache.http_cache
        )
        return ManagedIdentityCredential(method, app, None, "the managed identity endpoint", graph_url, cache)
    raise AuthError("Unknown auth_method %r." % method)  # pragma: no cover - choices prevent it
