#!/usr/bin/env bash
# Run a command against a fresh PIM sandbox on a free loopback port; the sandbox is
# stopped by its PID when the command ends, whatever its exit status.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
old_umask=$(umask)
umask 077  # the sandbox's directory and its log hold secrets: ours only
py="$here/.venv/bin/python"
data=$(mktemp -d "${TMPDIR:-/tmp}/pim-sandbox.XXXXXX")
log="$data/sandbox.log"

"$py" -m pim_emulator serve --port 0 --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  if [ "${KEEP_SANDBOX:-0}" = 1 ]; then echo "sandbox data kept in $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT

for _ in $(seq 300); do
  [ -s "$data/connection.json" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then echo "the PIM sandbox did not start:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.1
done
[ -s "$data/connection.json" ] || { echo "the PIM sandbox did not become ready in 30s" >&2; cat "$log" >&2; exit 1; }

eval "$("$py" -m pim_emulator env --data-dir "$data")"
export ENTRA_PIM_SANDBOX_DIR="$data"
umask "$old_umask"
# Keep the token cache inside the sandbox's directory, not in the user's home.
export ENTRA_PIM_TOKEN_CACHE_PATH="$data/token_cache.json"
"$@"
