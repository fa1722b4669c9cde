#!/usr/bin/env bash
# Installs what the benchmarks need on top of scripts/setup.sh (not part of CI's set-up):
# s3fs (Debian), rclone and py-spy (the `bench` extra), and PyTorch's CPU build for
# dataloader_bench.py. Idempotent. Usage: scripts/bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/setup.sh
if ! dpkg -s s3fs >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq s3fs >/dev/null
fi
.venv/bin/pip install -q -e '.[bench]' 2>&1 | grep -v '^WARNING' || true
# An exact version: this machine keeps the CPU build of 2.13.0 on disk, where pip finds it;
# a bare `torch` (or a range) would pull a CUDA build of several GB.
.venv/bin/python -c 'import torch' 2>/dev/null || \
  .venv/bin/pip install -q 'torch==2.13.0' 2>&1 | grep -v '^WARNING' || true
.venv/bin/python -c 'import torch, pyfuse3, boto3' && command -v s3fs >/dev/null && test -x .venv/bin/rclone && test -x .venv/bin/py-spy
