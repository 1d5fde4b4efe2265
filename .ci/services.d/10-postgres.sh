#!/usr/bin/env bash
# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) for the shared-state-store tests.
set -euo pipefail
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && exit 0; sleep 1; done
echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
exit 1
