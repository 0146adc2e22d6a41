#!/usr/bin/env bash
# The demo: validate -> plan -> apply -> drift -> edit -> apply -> history -> a console edit that drift
# cannot see, corrected by apply --replace; against the built-in sandbox, in a scratch copy of the
# shipped example (so it can be run again and leaves nothing behind).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
sandbox_pid=""
cleanup() { [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cp -r "$here/reconciler.yaml" "$here/profiles" "$here/schemas" "$work/"
cd "$work"
bold="" plain=""
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }
step() { say "\$ $*"; "$@"; }

step reconciler validate
step reconciler plan

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "\$ reconciler sandbox --port $port &"
reconciler sandbox --port "$port" &
sandbox_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# Demo keys: the sandbox accepts any non-empty key. Real keys only ever live in the environment.
export KALEYRA_ENDPOINT="http://127.0.0.1:$port" KALEYRA_API_KEY_ACME_IN=demo-key-acme-in KALEYRA_API_KEY_ACME_US=demo-key-acme-us

step reconciler apply --auto-approve
step reconciler drift

say "# Someone edits one field of one profile..."
sed -i.bak 's/^about: .*/about: "We answer within 30 minutes"/' "profiles/acme-us/+14155550100.yaml"
rm -f profiles/acme-us/*.bak
step reconciler drift || echo "(drift exits 2: desired and applied differ)"
step reconciler apply --auto-approve
step reconciler history +14155550100

# The sandbox's own endpoints: an edit as Kaleyra's console makes one (loopback only), and what it holds.
console_edit() { python3 -c 'import json, sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], json.dumps({"about": sys.argv[2]}).encode()))' "$KALEYRA_ENDPOINT/_sandbox/console/$1" "$2"; }
held_about() { python3 -c 'import json, sys, urllib.request as u; print([a["numbers"][sys.argv[2]]["about"] for a in json.load(u.urlopen(sys.argv[1]))["accounts"] if sys.argv[2] in a["numbers"]][0])' "$KALEYRA_ENDPOINT/_sandbox/numbers" "$1"; }
say "# Someone edits +14155550100 in Kaleyra's console (no API call), behind the reconciler's back..."
console_edit +14155550100 "Closed forever"
echo "Kaleyra now holds about: $(held_about +14155550100)"
step reconciler drift
say "# Kaleyra has no read API, so drift cannot see it; re-sending the profile corrects it:"
step reconciler apply --replace +14155550100 --auto-approve
echo "Kaleyra now holds about: $(held_about +14155550100)"
step reconciler plan --detailed-exitcode
