"""Sandbox throughput benchmark (not a test): requests/s for GET by id and POST schedule request.

Starts its own sandbox on a free port in a temporary directory, runs each scenario with 1 and
8 concurrent keep-alive clients (one ``requests.Session`` per thread), prints a table and a
JSON line, and stops the sandbox by PID.

    .venv/bin/python emulator/bench_sandbox.py [--seconds 5] [--tenant 5000] [--json-out FILE]

``--tenant N`` (0 to skip) then loads a large tenant (N users, each eligible for one of five
roles) through ``POST /_emulator/seed`` and times the look-ups the collection makes against
it: a user by UPN (``$filter`` eq, ``in`` of 15 UPNs or mails, and ``/users/{upn}``), the
schedules and instances of one principal, and GET by id.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ALICE = "10000000-0000-4000-8000-000000000002"


def start(data_dir: Path) -> tuple[subprocess.Popen, dict]:
    log = open(data_dir / "sandbox.log", "wb")  # noqa: SIM115 - kept open for the child's life
    proc = subprocess.Popen(
        [sys.executable, "-m", "pim_emulator", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    path = data_dir / "connection.json"
    while time.monotonic() < deadline:
        if path.exists():
            return proc, json.loads(path.read_text())
        if proc.poll() is not None:
            raise SystemExit("sandbox exited: " + (data_dir / "sandbox.log").read_text())
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("sandbox did not start within 30 s")


def session(conn) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    s.verify = conn["ca_bundle"]
    # The control calls (/objects, /reset, /seed) need the key; Graph ignores the header.
    s.headers["X-PIM-Sandbox-Key"] = conn["control_key"]
    return s


def _load(threads: int, seconds: float, open_client, send) -> dict:
    """``send(client, i, n) -> ok`` in ``threads`` loops (one client each) for ``seconds``: rate and latency."""
    counts, errors, stop = [0] * threads, [0] * threads, threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def worker(i):
        client = open_client()
        n = 0
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                ok = send(client, i, n)
                latencies[i].append(time.perf_counter() - t0)
                n += 1
                counts[i] += 1
                if not ok:
                    errors[i] += 1
        finally:
            client.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0
    lat = sorted(x for lst in latencies for x in lst)
    total = sum(counts)
    return {
        "clients": threads,
        "requests": total,
        "errors": sum(errors),
        "rps": round(total / elapsed, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        "p95_ms": round(lat[int(len(lat) * 0.95)] * 1000, 2) if lat else None,
    }


def run(conn, token, threads: int, seconds: float, make_request) -> dict:
    def open_client():
        s = session(conn)
        s.headers["Authorization"] = "Bearer " + token
        return s

    return _load(threads, seconds, open_client, make_request)


def run_stdlib(conn, token, threads: int, seconds: float, path: str) -> dict:
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=conn["ca_bundle"])
    headers = {"Authorization": "Bearer " + token}

    def open_client():
        return http.client.HTTPSConnection("127.0.0.1", conn["port"], context=ctx, timeout=30)

    def send(c, i, n):
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status == 200

    return _load(threads, seconds, open_client, send)


def large_tenant(n: int) -> dict:
    """The default seed plus ``n`` users and ``n`` eligibilities (five roles, round robin)."""
    from pim_emulator.seed import default_seed

    seed = default_seed()
    roles = [
        "62e90394-69f5-4237-9190-012177145e10",  # Global Administrator
        "e8611ab8-c189-46e8-94e1-60213ab1f814",  # Privileged Role Administrator
        "fe930be7-5e62-47db-91af-98c3a49a38b1",  # User Administrator
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",  # Helpdesk Administrator
        "f2ef992c-3afb-46b9-b7cf-a126ee74c451",  # Global Reader
    ]
    seed["roleEligibilities"] = []
    for i in range(n):
        uid = f"20000000-0000-4000-8000-{i:012d}"
        upn = f"bulk{i:05d}@contoso.example"
        seed["users"].append({"id": uid, "userPrincipalName": upn, "displayName": f"Bulk {i}", "mail": upn})
        seed["roleEligibilities"].append({"principalId": uid, "roleDefinitionId": roles[i % len(roles)]})
    return seed


def time_lookups(s: requests.Session, graph: str, n: int, repeat: int = 30) -> list[dict]:
    """Median and p95 latency (one client, sequential) of the collection's hot look-ups."""
    pick = [(i * 7919) % n for i in range(repeat)]

    def upn(i):
        return f"bulk{i:05d}@contoso.example"

    def uid(i):
        return f"20000000-0000-4000-8000-{i:012d}"

    def in_list(i):
        return ",".join(f"'{upn((i + k) % n)}'" for k in range(15))

    cases = [
        (
            "users $filter=userPrincipalName eq",
            lambda i: (
                f"{graph}/users",
                {"$filter": f"userPrincipalName eq '{upn(i)}'", "$select": "id,displayName,userPrincipalName,mail"},
            ),
        ),
        (
            "users $filter=upn in (15) or mail in (15)",
            lambda i: (
                f"{graph}/users",
                {
                    "$filter": f"userPrincipalName in ({in_list(i)}) or mail in ({in_list(i)})",
                    "$select": "id,displayName,userPrincipalName,mail",
                },
            ),
        ),
        ("GET /users/{upn}", lambda i: (f"{graph}/users/{upn(i)}", None)),
        ("GET /users/{id}", lambda i: (f"{graph}/users/{uid(i)}", None)),
        (
            "eligibilitySchedules $filter=principalId eq",
            lambda i: (
                f"{graph}/roleManagement/directory/roleEligibilitySchedules",
                {"$filter": f"principalId eq '{uid(i)}'"},
            ),
        ),
        (
            "eligibilityScheduleInstances $filter=principalId eq",
            lambda i: (
                f"{graph}/roleManagement/directory/roleEligibilityScheduleInstances",
                {"$filter": f"principalId eq '{uid(i)}'"},
            ),
        ),
        (
            "eligibilitySchedules first page (no filter)",
            lambda i: (f"{graph}/roleManagement/directory/roleEligibilitySchedules", None),
        ),
    ]
    out = []
    for name, make in cases:
        lat = []
        for i in pick:
            url, params = make(i)
            t0 = time.perf_counter()
            r = s.get(url, params=params, timeout=120)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:300]}")
        lat.sort()
        out.append(
            {
                "scenario": name,
                "n": n,
                "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
                "p95_ms": round(lat[int(len(lat) * 0.95)] * 1000, 2),
            }
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario")
    ap.add_argument("--json-out", help="also write the results here")
    ap.add_argument("--tenant", type=int, default=5000, help="users and eligibilities of the large tenant (0: skip)")
    ap.add_argument("--only-tenant", action="store_true", help="skip the throughput scenarios")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pim-bench-") as tmp:
        proc, conn = start(Path(tmp))
        try:
            s = session(conn)
            control = conn["control_url"]
            token = s.post(control + "/tokens", json={}, timeout=30).json()["access_token"]
            roles = []
            url = conn["graph_url"] + "/v1.0/roleManagement/directory/roleDefinitions"
            while url:
                body = s.get(url, headers={"Authorization": "Bearer " + token}, timeout=30).json()
                roles += [d["id"] for d in body["value"]]
                url = body.get("@odata.nextLink")
            graph = conn["graph_url"] + "/v1.0"

            def get_by_id(sess, i, n):
                return sess.get(f"{graph}/users/{ALICE}", timeout=30).status_code == 200

            principals: dict[int, list[str]] = {}

            def post_request(sess, i, n):
                # a fresh (principal, role) pair every time so each request creates a schedule
                idx = n % len(roles)
                if idx == 0 or i not in principals:
                    upn = f"bench-{uuid.uuid4().hex[:10]}@contoso.example"
                    created = sess.post(
                        control + "/objects",
                        json={"type": "user", "displayName": upn, "userPrincipalName": upn},
                        timeout=30,
                    ).json()
                    principals[i] = [created["id"]]
                body = {
                    "action": "adminAssign",
                    "principalId": principals[i][0],
                    "roleDefinitionId": roles[idx],
                    "directoryScopeId": "/",
                    "justification": "benchmark",
                    "scheduleInfo": {
                        "startDateTime": "2026-01-01T00:00:00Z",
                        "expiration": {"type": "afterDuration", "duration": "P30D"},
                    },
                }
                r = sess.post(
                    f"{graph}/roleManagement/directory/roleEligibilityScheduleRequests", json=body, timeout=30
                )
                return r.status_code == 201

            results = []
            for name, fn in (
                ()
                if args.only_tenant
                else (("GET /users/{id}", get_by_id), ("POST roleEligibilityScheduleRequests", post_request))
            ):
                for clients in (1, 8):
                    s.post(control + "/reset", timeout=60)
                    res = run(conn, token, clients, args.seconds, fn)
                    res["scenario"] = name
                    results.append(res)
            # the same GET with the stdlib client, which costs the client far less CPU than requests:
            # closer to the sandbox's own capacity when client and server share the cores
            for clients in () if args.only_tenant else (1, 8):
                res = run_stdlib(conn, token, clients, args.seconds, f"/v1.0/users/{ALICE}")
                res["scenario"] = "GET /users/{id} (http.client)"
                results.append(res)
            print(f"{'scenario':42} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
            for r in results:
                print(
                    f"{r['scenario']:42} {r['clients']:>7} {r['rps']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['errors']:>7}"
                )
            lookups = []
            if args.tenant > 0:
                t0 = time.perf_counter()
                r = s.post(control + "/seed", json=large_tenant(args.tenant), timeout=600)
                r.raise_for_status()
                seeded = time.perf_counter() - t0
                s.headers["Authorization"] = "Bearer " + token
                lookups = time_lookups(s, graph, args.tenant)
                res = run(conn, token, 8, args.seconds, get_by_id)
                lookups.append({"scenario": "GET /users/{id} rps, 8 clients", "n": args.tenant, "rps": res["rps"]})
                print(f"\nlarge tenant: {args.tenant} users + {args.tenant} eligibilities (seeded in {seeded:.1f} s)")
                print(f"{'look-up':52} {'p50 ms':>8} {'p95 ms':>8}")
                for r in lookups:
                    if "rps" in r:
                        print(f"{r['scenario']:52} {r['rps']:>8} req/s")
                    else:
                        print(f"{r['scenario']:52} {r['p50_ms']:>8} {r['p95_ms']:>8}")
            out = {"sandbox_bench": results, "large_tenant": lookups}
            print(json.dumps(out))
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(out, indent=2))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
