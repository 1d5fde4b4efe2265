#!/usr/bin/env bash
# OpenSSH server binary for tests/test_ssh_*.py (idempotent). The tests start their own sshd
# processes on free 127.0.0.1 ports (tests/sshd.py); nothing is started or enabled here.
set -euo pipefail
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "openssh-server is missing and this script is not root: apt-get install openssh-server" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
  # Debian starts the packaged daemon where an init system runs; the tests never use it.
fi
command -v ssh >/dev/null || { echo "the ssh client binary is missing (openssh-client)" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "ssh-keygen is missing (openssh-client)" >&2; exit 1; }
mkdir -p /run/sshd 2>/dev/null || true
echo "sshd ready: $(/usr/sbin/sshd -V 2>&1 | head -1 || true)"
