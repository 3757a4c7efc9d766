# shellcheck shell=bash
# Helpers sourced by the scripts in scripts/servers/ and scripts/test (not executable on its own).

# Repo root = two levels above this file, so the scripts work from any cwd (CI runs in a fresh clone).
TAP_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Root's PATH on some machines lacks sbin, where mariadbd lives.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# apt-get install, non-interactive. The package lists may be stale or empty on a
# fresh machine, so only if the plain install fails do we run apt-get update and retry.
apt_install() {
  local APT=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install $*" >&2; return 1; }
    APT=(sudo)
  fi
  # Wait for a concurrent apt/dpkg instead of failing on the lock.
  APT+=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q)
  echo "apt-get install $* ..." >&2
  if ! "${APT[@]}" install --no-install-recommends "$@" >/tmp/tap-apt-install.log 2>&1; then
    "${APT[@]}" update >>/tmp/tap-apt-install.log 2>&1 || true
    "${APT[@]}" install --no-install-recommends "$@" >>/tmp/tap-apt-install.log 2>&1 \
      || { tail -n 30 /tmp/tap-apt-install.log >&2; return 1; }
  fi
}

# Python venvs at the repo root. Two, not one: tapflow depends on the PyPI package 'bson'
# (py-bson), which overwrites pymongo's 'bson' module that SecantusDB imports (ImportError:
# Decimal128), and pip check does not notice. So: .venv = tapflow client (TAP_TEST_PYTHON),
# .venv-secantus = the SecantusDB server.
# ensure_venv VENV_DIR — create it if missing.
ensure_venv() {
  if [ ! -x "$1/bin/python" ]; then
    python3 -m venv "$1" >&2
  fi
}

# venv_has VENV_DIR DIST VERSION — true if exactly that version is installed (saves a pip round-trip).
venv_has() {
  "$1/bin/python" - "$2" "$3" <<'PY' 2>/dev/null
import sys, importlib.metadata as m
try:
    sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
except m.PackageNotFoundError:
    sys.exit(1)
PY
}

# True if OS user $1 can reach (search) directory $2: postgres/mysql run as their
# own users, so every parent of their data dir must be traversable by them.
traversable_by() {
  local user=$1 dir=$2
  [ "$(id -u)" = 0 ] || return 0          # not root: servers run as us, nothing to check
  id "$user" >/dev/null 2>&1 || return 0  # user not created yet: checked via 'nobody' by the caller
  runuser -u "$user" -- test -x "$dir" 2>/dev/null
}

# True if process $1 exists and is not a zombie. kill -0 alone is not enough here: PID 1 on
# these machines reaps orphans ~2 s late, so a killed server lingers as a zombie (state Z).
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ -d /proc/self ] || return 0   # no procfs: trust kill -0
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1 || true)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
