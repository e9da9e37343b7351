# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The token cache is partitioned by the credential (issue 14, point 1) and lives in a private
directory (point 2).

A task sees only the tokens its own credential earned: a wrong secret, another certificate, a
wrong password or another federated assertion must go to the token endpoint (and be refused
there), while the same credential keeps its warm cache. The file holds no secret in clear.
"""

from __future__ import annotations

import json
import os
import re
import stat

import msal
import pytest
from ansible_collections.entra.pim.plugins.module_utils import _auth
from ansible_collections.entra.pim.plugins.module_utils._errors import AuthError
from ansible_collections.entra.pim.plugins.module_utils._graph import GraphClient
from cryptography.hazmat.primitives.asymmetric import rsa
from entra_pim_unit_fakes import (
    AUTHORITY,
    CLIENT,
    GRAPH,
    SECRET,
    TENANT,
    USER_PASSWORD,
    FakeSession,
    add_identity,
    make_jwt,
    make_response,
)

from pim_emulator.tls import self_signed_pem

V1 = GRAPH + "/v1.0"
OTHER_SECRET = "an0ther-Secret-Value-5e6f~AbC"
OTHER_PASSWORD = "Wr0ng-Pa55word!-kk02"
USER = "alice@contoso.example"


def settings_with(base, **kw):
    s = dict(base)
    s.update(kw)
    return s


def secret_settings(base, secret=SECRET, **kw):
    return settings_with(base, tenant_id=TENANT, client_id=CLIENT, client_secret=secret, **kw)


def new_client(settings, session):
    client = GraphClient(settings, log=[].append, warn=[].append, session=session, sleep=[].append)
    return client


def graph_ok(session):
    return session.add("GET", V1, make_response(200, {"value": []}))


def token_posts(session):
    return [c for c in session.identity_calls() if c.method == "POST"]


def refused(code, error, description):
    return make_response(
        401 if error == "invalid_client" else 400,
        {"error": error, "error_description": "AADSTS%d: %s" % (code, description), "error_codes": [code]},
    )


def run(settings, session):
    client = new_client(settings, session)
    try:
        return client.get("/users"), client
    finally:
        client.close()


def cache_file(settings):
    with open(settings["token_cache_path"]) as handle:
        return handle.read()


def make_pem(tmp_path, name, key=None, cert_key=None):
    """A PEM file with a private key and a self-signed certificate (of ``cert_key`` when given)."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / (name + ".pem")
    path.write_bytes(self_signed_pem(name, key=key, cert_key=cert_key))
    return str(path), key


# --------------------------------------------------------------------------- point 1: partitions


def test_a_wrong_secret_never_gets_the_cached_token(base_settings):
    run(secret_settings(base_settings), graph_ok(add_identity(FakeSession())))

    wrong = add_identity(
        FakeSession(), token_answers=[refused(7000215, "invalid_client", "Invalid client secret provided.")]
    )
    with pytest.raises(AuthError) as info:
        run(secret_settings(base_settings, secret=OTHER_SECRET), graph_ok(wrong))
    assert "AADSTS7000215" in info.value.msg and "The client secret is wrong" in info.value.msg
    # It asked the token endpoint with its own secret, and Graph never saw a request.
    assert [c.form()["client_secret"] for c in token_posts(wrong)] == [OTHER_SECRET]
    assert wrong.graph_calls() == []

    # The right secret still finds its token: no identity request at all.
    warm = graph_ok(FakeSession())
    run(secret_settings(base_settings), warm)
    assert warm.identity_calls() == [] and len(warm.graph_calls()) == 1


def test_two_credentials_keep_their_own_partitions_in_one_file(base_settings):
    token_a, token_b = make_jwt(jti="a"), make_jwt(jti="b")
    run(secret_settings(base_settings), graph_ok(add_identity(FakeSession(), token=token_a)))
    run(secret_settings(base_settings, secret=OTHER_SECRET), graph_ok(add_identity(FakeSession(), token=token_b)))
    for secret, token in ((SECRET, token_a), (OTHER_SECRET, token_b)):
        warm = graph_ok(FakeSession())
        run(secret_settings(base_settings, secret=secret), warm)
        assert warm.identity_calls() == []
        assert warm.graph_calls()[0].headers["Authorization"] == "Bearer " + token

    text = cache_file(base_settings)
    data = json.loads(text)
    assert data["format"] == "entra.pim token cache" and data["version"] == 2
    assert len(data["partitions"]) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", pid) for pid in data["partitions"])
    # No secret in clear, and no plain (unkeyed) hash of one either.
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in text
        assert _auth.hashlib.sha256(secret.encode()).hexdigest() not in text


def test_same_secret_in_another_cache_file_gets_another_partition_id(base_settings, tmp_path):
    """The partition id is keyed by a random key of each cache, so it says nothing across caches."""
    other = settings_with(base_settings, token_cache_path=str(tmp_path / "other" / "token_cache.json"))
    run(secret_settings(base_settings), graph_ok(add_identity(FakeSession())))
    run(secret_settings(other), graph_ok(add_identity(FakeSession())))
    first = json.loads(cache_file(base_settings))
    second = json.loads(cache_file(other))
    assert first["key"] != second["key"]
    assert set(first["partitions"]).isdisjoint(second["partitions"])


def test_another_certificate_asks_the_token_endpoint(base_settings, tmp_path):
    registered, key = make_pem(tmp_path, "registered")
    unregistered, _other_key = make_pem(tmp_path, "unregistered")
    # The registered certificate with a key that is not its own: never the registered one's tokens either.
    mismatched, _k = make_pem(tmp_path, "mismatched", cert_key=key)

    def cert_settings(path):
        return settings_with(base_settings, tenant_id=TENANT, client_id=CLIENT, client_certificate_path=path)

    run(cert_settings(registered), graph_ok(add_identity(FakeSession())))
    warm = graph_ok(FakeSession())
    run(cert_settings(registered), warm)
    assert warm.identity_calls() == []

    for path in (unregistered, mismatched):
        session = add_identity(
            FakeSession(),
            token_answers=[refused(700027, "invalid_client", "The certificate is not registered on application.")],
        )
        with pytest.raises(AuthError) as info:
            run(cert_settings(path), graph_ok(session))
        assert "AADSTS700027" in info.value.msg and "not registered on the app" in info.value.msg
        assert len(token_posts(session)) == 1 and session.graph_calls() == []


def test_a_wrong_password_never_reaches_the_refresh_token(base_settings):
    def user_settings(password):
        return settings_with(base_settings, tenant_id=TENANT, client_id=CLIENT, username=USER, password=password)

    user_token = make_jwt({"scp": "RoleManagement.ReadWrite.Directory", "upn": USER}, roles=None)
    run(user_settings(USER_PASSWORD), graph_ok(add_identity(FakeSession(), token=user_token)))
    partition = list(json.loads(cache_file(base_settings))["partitions"].values())[0]
    assert partition["RefreshToken"], "the warm-up left no refresh token to protect"

    wrong = add_identity(
        FakeSession(),
        token_answers=[refused(50126, "invalid_grant", "Error validating credentials due to invalid password.")],
    )
    with pytest.raises(AuthError) as info:
        run(user_settings(OTHER_PASSWORD), graph_ok(wrong))
    assert "AADSTS50126" in info.value.msg and "The username or password is wrong" in info.value.msg
    forms = [c.form() for c in token_posts(wrong)]
    assert [f["grant_type"] for f in forms] == ["password"] and forms[0]["password"] == OTHER_PASSWORD
    assert wrong.graph_calls() == []
    text = cache_file(base_settings)
    assert USER_PASSWORD not in text and OTHER_PASSWORD not in text

    warm = graph_ok(FakeSession())
    run(user_settings(USER_PASSWORD), warm)
    assert warm.identity_calls() == []


def test_federated_token_partition_follows_the_assertion(base_settings, tmp_path):
    token_file = tmp_path / "federated"
    token_file.write_text("assertion-one")
    settings = settings_with(base_settings, tenant_id=TENANT, client_id=CLIENT, federated_token_file=str(token_file))
    run(settings, graph_ok(add_identity(FakeSession())))
    warm = graph_ok(FakeSession())
    run(settings, warm)
    assert warm.identity_calls() == []

    token_file.write_text("assertion-two")
    rotated = graph_ok(add_identity(FakeSession()))
    run(settings, rotated)
    assert [c.form()["client_assertion"] for c in token_posts(rotated)] == ["assertion-two"]
    assert "assertion-one" not in cache_file(settings) and "assertion-two" not in cache_file(settings)


def test_a_cache_in_the_format_before_partitions_is_not_trusted(base_settings):
    """A file with one MSAL cache for every credential cannot say who earned its tokens."""
    settings = secret_settings(base_settings)
    legacy = msal.SerializableTokenCache()
    legacy.add(
        {
            "client_id": CLIENT,
            "scope": [GRAPH + "/.default"],
            "token_endpoint": "%s/%s/oauth2/v2.0/token" % (AUTHORITY, TENANT),
            "response": {"access_token": make_jwt(jti="legacy"), "expires_in": 3600, "token_type": "Bearer"},
        }
    )
    _auth.write_private_file(settings["token_cache_path"], legacy.serialize())
    session = graph_ok(add_identity(FakeSession()))
    run(settings, session)
    assert len(token_posts(session)) == 1
    assert "legacy" not in json.dumps(json.loads(cache_file(settings))["partitions"])


def test_spent_partitions_of_other_credentials_are_dropped(base_settings, monkeypatch):
    run(secret_settings(base_settings, secret=OTHER_SECRET), graph_ok(add_identity(FakeSession())))
    # An hour and more later, the other secret's only token has expired: its partition can give nothing.
    later = _auth.time.time() + 7200
    monkeypatch.setattr(_auth.time, "time", lambda: later)
    run(secret_settings(base_settings), graph_ok(add_identity(FakeSession())))
    assert len(json.loads(cache_file(base_settings))["partitions"]) == 1


# --------------------------------------------------------------------------- point 2: the directory


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757, 0o720], ids=oct)
def test_a_cache_directory_others_can_write_is_refused(base_settings, mode):
    settings = secret_settings(base_settings)
    directory = os.path.dirname(settings["token_cache_path"])
    os.makedirs(directory)
    os.chmod(directory, mode)
    session = graph_ok(add_identity(FakeSession()))
    with pytest.raises(AuthError) as info:
        run(settings, session)
    msg = info.value.msg
    assert "Refusing to use the token cache directory %s" % directory in msg
    assert "its mode is %04o" % (mode & 0o7777) in msg and "chmod 700 %s" % directory in msg
    assert session.calls == []  # refused before any sign-in
    assert os.listdir(directory) == []  # and nothing written there


def test_a_shared_sticky_directory_is_refused_without_advising_chmod(base_settings, tmp_path):
    """A /tmp-like directory (1777) is shared by design: the fix is another path, not chmod."""
    shared = tmp_path / "tmp-like"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    session = graph_ok(add_identity(FakeSession()))
    with pytest.raises(AuthError) as info:
        run(secret_settings(base_settings, token_cache_path=str(shared / "token_cache.json")), session)
    msg = info.value.msg
    assert "Refusing to use the token cache directory %s: its mode is 1777" % shared in msg
    assert "Choose a token_cache_path in a private directory" in msg and "chmod" not in msg
    assert session.calls == [] and os.listdir(shared) == []


def test_a_cache_directory_of_another_user_is_refused(base_settings, monkeypatch):
    settings = secret_settings(base_settings)
    directory = os.path.dirname(settings["token_cache_path"])
    os.makedirs(directory, mode=0o700)
    if os.getuid() == 0:
        os.chown(directory, 4242, -1)
    else:
        owner = os.stat(directory).st_uid
        monkeypatch.setattr(_auth.os, "getuid", lambda: owner + 1)
    with pytest.raises(AuthError) as info:
        run(settings, FakeSession())
    assert "Refusing to use the token cache directory %s" % directory in info.value.msg
    assert "belongs to another user" in info.value.msg


def test_a_private_or_read_only_shared_directory_is_used(base_settings):
    settings = secret_settings(base_settings)
    directory = os.path.dirname(settings["token_cache_path"])
    os.makedirs(directory)
    os.chmod(directory, 0o755)  # others may list it, not write to it
    run(settings, graph_ok(add_identity(FakeSession())))
    assert stat.S_IMODE(os.stat(settings["token_cache_path"]).st_mode) == 0o600


def test_a_missing_cache_directory_is_created_0700_whatever_the_umask(base_settings):
    settings = secret_settings(base_settings)
    old = os.umask(0o277)
    try:
        run(settings, graph_ok(add_identity(FakeSession())))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(os.path.dirname(settings["token_cache_path"])).st_mode) == 0o700


def test_the_directory_cache_is_refused_in_a_shared_directory(base_settings, tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    files = _auth.CacheFiles(str(directory / "token_cache.json"), enabled=True, load=False)
    with pytest.raises(AuthError) as info:
        files.read_directory()
    assert "Refusing to use the token cache directory %s" % directory in info.value.msg
    with pytest.raises(AuthError):
        files.write_directory("{}")
    assert not (directory / "directory_cache.json").exists()
