"""CLI: ``python -m pim_emulator serve ...`` and ``python -m pim_emulator env --data-dir DIR``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path


def _serve(args) -> int:
    from pim_emulator.files import DataDirError
    from pim_emulator.server import Emulator, serve

    settings = {
        "page_size": args.page_size,
        "latency_ms": args.latency_ms,
        "throttle_rps": args.throttle_rps,
        "fault_seed": args.fault_seed,
        "app_only_policy_patch": args.app_only_policy_patch,
        "replication_lag_seconds": args.replication_lag_seconds,
    }
    # This process writes secrets only: whatever the caller's umask, nothing it creates is
    # readable by others (files.py also sets the modes explicitly).
    os.umask(0o077)
    try:
        emu = Emulator(args.data_dir, settings=settings, seed_path=args.seed, verbose=args.verbose)
    except DataDirError as e:
        print(f"cannot use the data directory: {e}", file=sys.stderr)
        return 2
    if args.faults:
        try:
            rules = json.loads(Path(args.faults).read_text(encoding="utf-8"))
            emu.faults.set(rules)
        except (OSError, ValueError) as e:
            print(f"cannot read fault rules from {args.faults}: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # GraphError from validation
            print(f"invalid fault rules in {args.faults}: {getattr(e, 'message', e)}", file=sys.stderr)
            return 2
    return serve(emu, args.port)


ENV_NAMES = [
    ("AZURE_TENANT_ID", "tenant_id"),
    ("AZURE_CLIENT_ID", "client_id"),
    ("AZURE_CLIENT_SECRET", "client_secret"),
    ("AZURE_AUTHORITY_HOST", "authority_host"),
    ("ENTRA_PIM_GRAPH_URL", "graph_url"),
    ("ENTRA_PIM_CA_BUNDLE", "ca_bundle"),
    ("ENTRA_PIM_SANDBOX_KEY", "control_key"),  # header X-PIM-Sandbox-Key of control calls
]


def _env(args) -> int:
    path = Path(args.data_dir) / "connection.json"
    try:
        conn = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(
            f"no running sandbox: {path} does not exist (start one with 'python -m pim_emulator serve')",
            file=sys.stderr,
        )
        return 1
    except ValueError:
        print(f"{path} is not valid JSON", file=sys.stderr)
        return 1
    for name, key in ENV_NAMES:
        print(f"export {name}={shlex.quote(str(conn.get(key) or ''))}")
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 999:
        raise argparse.ArgumentTypeError("must be between 1 and 999")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pim_emulator", description="PIM sandbox: a local Microsoft Graph PIM emulator."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the sandbox (HTTPS on 127.0.0.1)")
    s.add_argument("--port", type=_non_negative_int, default=0, help="TCP port; 0 picks a free one (default)")
    s.add_argument("--data-dir", required=True, help="state, keys and connection.json live here")
    s.add_argument("--seed", help="JSON fixture to load instead of the default tenant (first start and reset)")
    s.add_argument("--latency-ms", type=_non_negative_int, default=0, help="added to every Graph request")
    s.add_argument("--page-size", type=_page_size, default=100, help="server-driven page size (default 100)")
    s.add_argument("--fault-seed", type=int, default=0, help="seed for rate-based fault rules (deterministic)")
    s.add_argument("--faults", help="JSON file with fault rules (same shape as POST /_emulator/faults)")
    s.add_argument("--throttle-rps", type=_non_negative_float, default=0, help="token bucket per client app; 0 = off")
    s.add_argument(
        "--replication-lag-seconds",
        type=_non_negative_float,
        default=0,
        help="new principals answer SubjectNotFound this long",
    )
    s.add_argument(
        "--app-only-policy-patch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether app-only tokens may PATCH policy rules (docs say no; practice says yes) (default: allowed)",
    )
    s.add_argument("--verbose", action="store_true", help="log every request to stderr")
    s.set_defaults(func=_serve)
    e = sub.add_parser("env", help="print export lines pointing the collection at a running sandbox")
    e.add_argument("--data-dir", required=True)
    e.set_defaults(func=_env)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
