"""Trust in the sandbox itself (issue 14, points 19-22): bounded work per request, reads that do
not hold the store, a prompt SIGTERM, private files, the control key and the loopback Host
check, bounded JSON depth and clock (emulator/README.md "Control API", "Files in the data
directory", "OData" and "Graph platform behaviour")."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROLE_ASSIGNMENTS = "/roleManagement/directory/roleAssignments"
INSTANCES = "/roleManagement/directory/roleEligibilityScheduleInstances"
ALICE = "10000000-0000-4000-8000-000000000002"
KEY_HEADER = "X-PIM-Sandbox-Key"


def _error(resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message", "innerError"} <= set(body["error"]), body
    return body["error"]


# ----------------------------------------------------------------------------- 19: $expand depth


def _nested_expand_url(sb, target_len: int = 555) -> str:
    """A Graph URL of about ``target_len`` bytes whose $expand nests ``principal`` as deep as fits."""
    head = f"/v1.0{ROLE_ASSIGNMENTS}?$filter=principalId eq 'nobody'&$expand="
    depth = (target_len - len(head) - len("principal")) // (len("principal($expand=") + 1)
    expand = "principal($expand=" * depth + "principal" + ")" * depth
    return head + expand


def test_deep_nested_expand_answers_400_at_once(sandbox_factory, tmp_path):
    # Its own sandbox: on the old code this request never ends and holds the store lock.
    sb = sandbox_factory(tmp_path / "expand")
    url = _nested_expand_url(sb)
    assert 540 <= len(url.encode()) <= 560
    resp = sb.session.get(sb.base_url + url, headers={"Authorization": "Bearer " + sb.token()}, timeout=(5, 10))
    assert resp.status_code == 400
    err = _error(resp)
    assert err["code"] == "BadRequest" and "too deep" in err["message"] and "2" in err["message"]
    # depth 2 is what the collection uses (policy($expand=rules)) and still works
    ok = sb.get(
        "/policies/roleManagementPolicyAssignments",
        params={"$filter": "scopeId eq '/' and scopeType eq 'DirectoryRole'", "$expand": "policy($expand=rules)"},
    )
    assert ok.status_code == 200 and ok.json()["value"][0]["policy"]["rules"]
    three = sb.get(ROLE_ASSIGNMENTS, params={"$expand": "principal($expand=a($expand=b))"})
    assert three.status_code == 400 and "too deep" in three.json()["error"]["message"]
    assert sb.stats()["server_errors"] == 0


def test_long_filter_chain_is_400_not_500(fresh):
    chain = " and ".join(["id eq 'x'"] * 1500)  # 1500 levels of and: past Python's recursion limit
    resp = fresh.get("/users", params={"$filter": chain})
    assert resp.status_code == 400, resp.text[:300]
    assert _error(resp)["code"] == "BadRequest" and "nested deeper than 100" in _error(resp)["message"]
    ok = fresh.get("/users", params={"$filter": " or ".join([f"id eq '{ALICE}'"] * 50)})
    assert ok.status_code == 200 and [u["id"] for u in ok.json()["value"]] == [ALICE]
    assert fresh.stats()["server_errors"] == 0


# ----------------------------------------------------------------------------- 19: reads off the lock


HELPDESK_ADMIN = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
CAROL = "10000000-0000-4000-8000-000000000006"


class InProcess:
    """An Emulator without HTTP, whose roleAssignments ``principal`` expander waits for a signal:
    a request stuck while building its answer, for as long as the test wants."""

    def __init__(self, tmp_path, monkeypatch):
        from pim_emulator import roles
        from pim_emulator.server import CIHeaders, Emulator

        self.emu = Emulator(tmp_path / "data")
        self.emu.base_url = "https://127.0.0.1:1"
        self.entered, self.release = threading.Event(), threading.Event()
        original = roles.ASSIGNMENT_EXPANDERS["principal"]

        def waiting_principal(ctx, item, nested):
            self.entered.set()
            self.release.wait(30)
            return original(ctx, item, nested)

        monkeypatch.setitem(roles.ASSIGNMENT_EXPANDERS, "principal", waiting_principal)
        with self.emu.store.transaction() as tx:
            app = next(a for a in tx.list("applications") if a.get("primary"))
            token = self.emu.identity.mint_app_token(app, tx)
        self.headers = CIHeaders(
            [
                ("Host", "127.0.0.1:1"),
                ("Authorization", "Bearer " + token),
                (KEY_HEADER, getattr(self.emu, "control_key", "")),
            ]
        )
        self.results: dict[str, object] = {}

    def call(self, name, method, path, query=None, body=None):
        raw = json.dumps(body).encode() if body is not None else None
        self.results[name] = self.emu.run_safely(method, path, query or {}, raw, self.headers, name, name)[0]

    def thread(self, *args, **kwargs) -> threading.Thread:
        return threading.Thread(target=self.call, args=args, kwargs=kwargs, daemon=True)

    def others_finish_while_stuck(self, stuck: threading.Thread) -> None:
        """Start ``stuck``; once it waits in the expander, a write and a read must both finish."""
        others = [
            self.thread(
                "write",
                "POST",
                "/_emulator/objects",
                body={"type": "user", "displayName": "Quick", "userPrincipalName": "quick@contoso.example"},
            ),
            self.thread("read", "GET", f"/v1.0/users/{ALICE}"),
        ]
        stuck.start()
        try:
            assert self.entered.wait(30), "the slow request never reached its expander"
            for t in others:
                t.start()
            for t in others:
                t.join(10)
            blocked = [t for t in others if t.is_alive()]
            assert not blocked, "a request waited for the store while another one built its answer"
            assert self.results["write"].status == 201 and self.results["read"].status == 200
        finally:
            self.release.set()
            stuck.join(30)
            for t in others:
                t.join(30)


def test_a_slow_read_does_not_hold_up_other_requests(tmp_path, monkeypatch):
    """A read stuck while building its answer must not keep a write or another read from the
    store: reads run on a snapshot, the lock is held only to take it."""
    box = InProcess(tmp_path, monkeypatch)
    box.others_finish_while_stuck(box.thread("slow", "GET", "/v1.0" + ROLE_ASSIGNMENTS, {"$expand": "principal"}))
    assert box.results["slow"].status == 200
    with box.emu.store.transaction() as tx:
        assert any(u.get("userPrincipalName") == "quick@contoso.example" for u in tx.list("users"))
    box.emu.store.close()


def test_a_write_builds_its_answer_after_the_commit(tmp_path, monkeypatch):
    """A write's answer ($expand included) is shaped after its commit, on a snapshot: it holds
    no lock meanwhile, and it shows the write."""
    box = InProcess(tmp_path, monkeypatch)
    body = {"principalId": CAROL, "roleDefinitionId": HELPDESK_ADMIN, "directoryScopeId": "/"}
    box.others_finish_while_stuck(
        box.thread("slow", "POST", "/v1.0" + ROLE_ASSIGNMENTS, {"$expand": "principal"}, body=body)
    )
    created = box.results["slow"]
    assert created.status == 201 and created.body["principal"]["id"] == CAROL
    box.emu.store.close()


def test_a_write_with_bad_query_options_writes_nothing(fresh):
    body = {"principalId": CAROL, "roleDefinitionId": HELPDESK_ADMIN, "directoryScopeId": "/"}
    for params in ({"$select": "noSuchProperty"}, {"$expand": "noSuchNavigation"}, {"$expand": "principal($bogus=1)"}):
        resp = fresh.post(ROLE_ASSIGNMENTS, json=body, params=params)
        assert resp.status_code == 400, (params, resp.text)
    listed = fresh.get(ROLE_ASSIGNMENTS, params={"$filter": f"principalId eq '{CAROL}'"}).json()["value"]
    assert listed == []
    assert fresh.post(ROLE_ASSIGNMENTS, json=body, params={"$select": "id,principalId"}).status_code == 201


def test_snapshot_is_isolated_from_later_writes(tmp_path):
    from pim_emulator.store import Store

    s = Store(tmp_path / "s.sqlite3")
    with s.transaction() as tx:
        for i in range(3):
            tx.put("c", str(i), {"k": "a" if i < 2 else "b"})
        tx.meta_put("m", 1)
        assert tx.find("c", "k", "a") == ["0", "1"]  # index built in the live state
    with s.snapshot() as snap:
        with s.transaction() as tx:
            tx.put("c", "0", {"k": "b"})
            tx.delete("c", "1")
            tx.put("c", "9", {"k": "a"})
            tx.meta_put("m", 2)
        assert [d["k"] for d in snap.list("c")] == ["a", "a", "b"]
        assert snap.find("c", "k", "a") == ["0", "1"] and snap.meta_get("m") == 1
        with pytest.raises(RuntimeError):
            snap.put("c", "x", {})
    with s.snapshot() as snap:
        assert snap.find("c", "k", "a") == ["9"] and snap.find("c", "k", "b") == ["0", "2"]
        assert snap.meta_get("m") == 2
    s.close()


# ----------------------------------------------------------------------------- 19: SIGTERM mid-request


def test_sigterm_mid_request_exits_within_2_seconds(sandbox_factory, tmp_path):
    sb = sandbox_factory(tmp_path / "sigterm")
    ctx = ssl.create_default_context(cafile=sb.ca)
    raw = socket.create_connection(("127.0.0.1", sb.conn["port"]), timeout=10)
    conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        # a request whose body never completes: its handler is in flight until the socket times out
        conn.sendall(
            b"POST /v1.0/$batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"requests": ['
        )
        time.sleep(0.5)  # let the server read the head and start waiting for the body
        assert sb.proc.poll() is None
        sb.proc.send_signal(signal.SIGTERM)
        try:
            code = sb.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pytest.fail("the sandbox did not exit within 2 s of SIGTERM with a request in flight")
        assert code == 0
        assert not (sb.data_dir / "connection.json").exists()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- 20: private files


def _modes(path: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in path.iterdir() if p.is_file()}


def test_data_dir_is_0700_and_every_file_0600_even_with_loose_umask(sandbox_factory, tmp_path):
    data = tmp_path / "loose"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "notes.txt").write_text("left here before")
    os.chmod(data / "notes.txt", 0o644)
    old = os.umask(0o022)  # the child inherits it; the sandbox must not rely on it
    try:
        sb = sandbox_factory(data)
    finally:
        os.umask(old)
    sb.control("POST", "/objects", {"type": "user", "displayName": "Perm", "userPrincipalName": "perm@contoso.example"})
    assert sb.get(f"/users/{ALICE}").status_code == 200
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = _modes(data)
    for name in (
        "state.sqlite3",
        "state.sqlite3-wal",
        "state.sqlite3-shm",
        "connection.json",
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "signing-key.pem",
        "client-cert.pem",
        "sandbox.log",
        "notes.txt",
    ):
        assert name in modes, f"{name} missing from {sorted(modes)}"
    assert {n: oct(m) for n, m in modes.items() if m != 0o600} == {}


def test_files_are_private_without_the_cli_umask(tmp_path):
    """In-process (no CLI, umask 000): the modes come from the code, not from the umask."""
    from pim_emulator.server import Emulator, write_connection_file

    old = os.umask(0)
    try:
        emu = Emulator(tmp_path / "d")
        emu.base_url = "https://127.0.0.1:1"
        with emu.store.transaction() as tx:
            tx.put("scratch", "x", {"n": 1})
        write_connection_file(emu, 1)
    finally:
        os.umask(old)
    emu.store.close()
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    modes = _modes(tmp_path / "d")
    assert "state.sqlite3" in modes and "connection.json" in modes and "signing-key.pem" in modes
    assert {n: oct(m) for n, m in modes.items() if m != 0o600} == {}


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown")
def test_data_dir_of_another_user_is_refused(tmp_path):
    data = tmp_path / "theirs"
    data.mkdir()
    os.chown(data, 65534, 65534)
    proc = subprocess.run(
        [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "belongs to uid 65534" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(data.iterdir())


# ----------------------------------------------------------------------------- 21: control key, Host


def test_control_api_needs_the_key(fresh):
    url = fresh.control_url + "/tokens"
    missing = fresh.session.post(url, json={"user": "alice@contoso.example"}, timeout=30)
    assert missing.status_code == 401
    err = _error(missing)
    assert err["code"] == "Unauthorized" and KEY_HEADER in err["message"]
    wrong = fresh.session.post(url, json={"user": "alice@contoso.example"}, headers={KEY_HEADER: "x" * 43}, timeout=30)
    assert wrong.status_code == 403 and _error(wrong)["code"] == "Forbidden"
    for method, path in (
        ("GET", "/state"),
        ("POST", "/reset"),
        ("GET", "/stats"),
        ("DELETE", "/faults"),
        ("GET", "/no-such-endpoint"),
    ):
        assert fresh.session.request(method, fresh.control_url + path, timeout=30).status_code == 401, path
    right = fresh.control_raw("POST", "/tokens", {"user": "alice@contoso.example"})
    assert right.status_code == 200 and right.json()["access_token"]
    # the key is for the control API only: Graph neither needs nor minds it
    assert fresh.get(f"/users/{ALICE}").status_code == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "10.0.0.1:{port}", "localhost.evil.example"],
)
def test_non_loopback_host_is_refused(fresh, host):
    port = fresh.conn["port"]
    host = host.format(port=port)
    for path, extra in (("/_emulator/stats", fresh.control_headers()), (f"/v1.0/users/{ALICE}", fresh.headers())):
        resp = fresh.session.get(fresh.base_url + path, headers={"Host": host, **extra}, timeout=30)
        assert resp.status_code == 421, (host, path, resp.text)
        assert _error(resp)["code"] == "MisdirectedRequest"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LocalHost", "[::1]:{port}"])
def test_loopback_host_names_are_served(fresh, host):
    host = host.format(port=fresh.conn["port"])
    resp = fresh.session.get(
        fresh.control_url + "/stats", headers={"Host": host, **fresh.control_headers()}, timeout=30
    )
    assert resp.status_code == 200, resp.text


# ----------------------------------------------------------------------------- 22: JSON depth, clock


@pytest.mark.parametrize("depth", [100_000, 900])
def test_deep_json_body_is_400_and_the_sandbox_keeps_working(fresh, depth):
    deep = ("[" * depth + "]" * depth).encode()
    targets = [
        ("POST", fresh.graph + "/roleManagement/directory/roleEligibilityScheduleRequests", fresh.headers()),
        ("POST", fresh.control_url + "/objects", fresh.control_headers()),
        ("PATCH", fresh.control_url + "/settings", fresh.control_headers()),
    ]
    for method, url, headers in targets:
        resp = fresh.session.request(
            method, url, data=deep, headers={"Content-Type": "application/json", **headers}, timeout=30
        )
        assert resp.status_code == 400, (url, resp.status_code, resp.text[:300])
        assert _error(resp)["code"] == "BadRequest" and "nested deeper" in _error(resp)["message"]
    # a deep body inside a $batch item: the whole batch is read first, so it is refused the same way
    item_body: object = {}
    for _ in range(min(depth, 500)):  # deeper than the limit, yet within what the client can encode
        item_body = {"a": item_body}
    batch = json.dumps(
        {
            "requests": [
                {
                    "id": "1",
                    "method": "POST",
                    "url": "/directoryObjects/getByIds",
                    "headers": {"Content-Type": "application/json"},
                    "body": item_body,
                }
            ]
        }
    )
    resp = fresh.session.post(
        fresh.graph + "/$batch", data=batch, headers={"Content-Type": "application/json", **fresh.headers()}, timeout=30
    )
    assert resp.status_code == 400 and _error(resp)["code"] == "BadRequest"
    assert fresh.get(f"/users/{ALICE}").status_code == 200
    assert fresh.stats()["server_errors"] == 0


def test_moderately_nested_json_is_still_read(fresh):
    body = {"ids": [ALICE], "types": ["user"]}
    resp = fresh.post("/directoryObjects/getByIds", json=body)
    assert resp.status_code == 200 and resp.json()["value"][0]["id"] == ALICE


@pytest.mark.parametrize(
    "move",
    [
        {"advance": "P100000000D"},
        {"advance": "P999999999D"},
        {"advance": "-P999999D"},
        {"advance": "P1" + "0" * 30 + "D"},
        {"set": "9999-12-31T00:00:00Z"},
        {"set": "0001-01-01T00:00:00Z"},
    ],
)
def test_clock_out_of_range_is_400_and_changes_nothing(fresh, move):
    before = fresh.control("GET", "/clock")
    resp = fresh.control_raw("POST", "/clock", move)
    assert resp.status_code == 400, resp.text
    err = _error(resp)
    assert err["code"] == "BadRequest" and "1970-01-01" in err["message"] and "9000-01-01" in err["message"]
    after = fresh.control("GET", "/clock")
    assert abs(after["offset_seconds"] - before["offset_seconds"]) < 1
    # clock-dependent routes still work
    assert fresh.get(INSTANCES).status_code == 200
    assert (
        fresh.post(
            "/roleManagement/directory/roleEligibilityScheduleRequests",
            json={
                "action": "adminAssign",
                "principalId": ALICE,
                "roleDefinitionId": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
                "directoryScopeId": "/",
                "justification": "clock test",
                "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "P30D"}},
            },
        ).status_code
        == 201
    )
    assert fresh.stats()["server_errors"] == 0


def test_clock_within_range_still_moves(fresh):
    moved = fresh.control("POST", "/clock", {"set": "8999-06-01T00:00:00Z"})
    assert moved["now"].startswith("8999-06-01")
    assert fresh.get(INSTANCES).status_code == 200
    fresh.control("POST", "/clock", {"reset": True})


def test_each_start_makes_a_new_key(sandbox_factory, tmp_path):
    first = sandbox_factory(tmp_path / "restart")
    old_key = first.conn["control_key"]
    assert first.stop() == 0
    second = sandbox_factory(tmp_path / "restart")
    assert second.conn["control_key"] != old_key
    resp = second.control_raw("GET", "/stats", headers={KEY_HEADER: old_key})
    assert resp.status_code == 403
    assert second.control("GET", "/stats")["server_errors"] == 0
