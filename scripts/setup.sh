#!/usr/bin/env bash
# Installs artfs from this checkout on a Debian/Ubuntu machine, with what its tests need.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--quiet] [--relink]
#   - Debian packages (apt), each said with why;
#   - a virtualenv in .venv with artfs installed editable (`pip install -e '.[test]'`);
#   - /usr/local/bin/artfs, a link to .venv/bin/artfs, so `artfs` is on PATH (a link to another
#     checkout's artfs is left alone unless --relink).
# Long steps show progress on a terminal; their full output goes to .venv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
quiet=0
relink=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --relink) relink=1 ;;
    *) echo "usage: scripts/setup.sh [--quiet] [--relink]" >&2; exit 2 ;;
  esac
done
mkdir -p .venv  # (python3 -m venv fills it in below)
log="$top/.venv/setup.log"

say() { [ "$quiet" = 1 ] || echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

# step "what" command…: runs a long command with its output in $log; on a terminal a line
# shows the seconds so far and the command's latest output line; on failure, the log's tail.
step() {
  local what=$1; shift
  echo "== $what: $*" >>"$log"
  if [ "$quiet" = 1 ] || [ ! -t 1 ]; then
    [ "$quiet" = 1 ] || echo "setup: $what…"
    "$@" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "$what failed (whole output: $log)"; }
    return
  fi
  "$@" >>"$log" 2>&1 &
  local pid=$! start=$SECONDS last
  while kill -0 "$pid" 2>/dev/null; do
    last=$(tail -n 5 "$log" | tr -d '\r' | grep -v -e '^WARNING' -e '^== ' | tail -n 1 | cut -c1-60 || true)
    printf '\r\033[Ksetup: %s… %ds  %s' "$what" $((SECONDS - start)) "$last"
    sleep 1
  done
  if wait "$pid"; then
    printf '\r\033[Ksetup: %s: done in %ds\n' "$what" $((SECONDS - start))
  else
    printf '\r\033[K'
    tail -n 20 "$log" >&2
    die "$what failed (whole output: $log)"
  fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root, or install sudo: apt packages are needed"
  SUDO="sudo"
fi
apt_updated=0
apt_install() {  # apt_install "why" pkg…: installs the missing ones and says why
  local why=$1; shift
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "missing ${missing[*]} ($why), and this system has no apt-get: install them and rerun"
  say "installing ${missing[*]}: $why"
  if [ "$apt_updated" = 0 ]; then
    step "apt-get update" $SUDO apt-get update
    apt_updated=1
  fi
  step "apt-get install ${missing[*]}" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# -- Python: 3.11 or newer, with venv and its headers -----------------------------------------
command -v python3 >/dev/null || apt_install "artfs is a Python program" python3
py_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "artfs needs Python 3.11 or newer; python3 is $py_version: install a newer python3 (e.g. Debian 12, Ubuntu 24.04) and rerun"
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install "to make the virtualenv .venv" "python3-venv" "python$py_version-venv"
headers=$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["include"], "Python.h"))')
[ -f "$headers" ] || apt_install "Python headers, to build pyfuse3 (the FUSE binding)" "python3-dev"
command -v gcc >/dev/null || apt_install "a C compiler, to build pyfuse3" gcc

# -- what artfs needs, then what only its tests need --------------------------------------------
apt_install "FUSE, to mount (fusermount3)" fuse3
apt_install "libfuse headers and pkg-config, to build pyfuse3" libfuse3-dev pkg-config
apt_install "Graphviz (dot), to draw lineage graphs in artfs ui" graphviz
apt_install "for the tests only: nginx (HTTP references), attr (getfattr), rsync, strace, util-linux" \
  nginx attr rsync strace util-linux
apt_install "for the tests only: headless Chromium and its driver (the browser test of artfs ui)" \
  chromium chromium-driver

# -- the virtualenv -----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  step "making the virtualenv .venv" python3 -m venv .venv
fi
stamp=.venv/.artfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing artfs and its Python packages into .venv (pip install -e '.[test]')"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # PYTHONWARNINGS: setuptools' editable-install notice is a warning banner, not news to us.
  step "pip install --upgrade pip" env PYTHONWARNINGS=ignore .venv/bin/pip install --upgrade pip
  step "pip install -e '.[test]'" env PYTHONWARNINGS=ignore .venv/bin/pip install -e '.[test]'
  .venv/bin/python -c 'import artfs, pyfuse3, blake3, boto3, trio' \
    || die "artfs was installed but does not import (see $log)"
  touch "$stamp"
fi

# -- `artfs` on PATH ------------------------------------------------------------------------------
link=/usr/local/bin/artfs
target="$top/.venv/bin/artfs"
current=$(readlink "$link" 2>/dev/null || true)
if [ "$current" != "$target" ]; then
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    say "$link exists and is not a link: left alone; run this checkout's artfs as $target"
  elif [ -n "$current" ] && [ -x "$current" ] && [ "$relink" = 0 ]; then
    say "$link runs another checkout's artfs ($current): left alone; this one is $target (--relink points the link here)"
  else
    $SUDO ln -sfn "$target" "$link"
    say "linked $link -> $target: \`artfs\` is now on PATH"
  fi
fi
say "ready: $("$target" --version)"
