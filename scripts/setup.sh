#!/usr/bin/env bash
# Installs everything artfs and its tests need on a fresh Debian machine.
# Idempotent: a second run only checks. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in fuse3 libfuse3-dev pkg-config nginx attr rsync strace util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.artfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
  .venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING' || true
  .venv/bin/python -c 'import artfs, pyfuse3, blake3, boto3, trio' 
  touch "$stamp"
fi
