#!/usr/bin/env bash
# Installs pico-a1111-bridge as a systemd service, upgrades it, or removes it. See deploy/README.md.
#
# What it does (as root): checks Node >= 22.19; creates the system user pico-a1111-bridge; puts the code in
# /opt/pico-a1111-bridge with production dependencies only; writes /etc/pico-a1111-bridge/config.json and
# secrets.env from the examples only when they do not exist yet; installs the unit with the path of the Node
# it found; enables and (re)starts it. Run it again to upgrade: only the code and the unit change.
set -euo pipefail
umask 022

readonly NAME=pico-a1111-bridge
readonly NEED_MAJOR=22 NEED_MINOR=19
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SRC
# What goes into the install directory. Every entry must exist in the checkout: a missing one stops the
# install instead of leaving out, say, the licence that package.json names.
readonly PAYLOAD=(bin src package.json package-lock.json README.md LICENSE docs deploy scripts firmware-examples)

usage() {
  cat <<EOF
Usage: sudo scripts/install.sh [--node PATH] [--no-deps] [--root DIR]
       sudo scripts/install.sh --uninstall [--purge] [--root DIR]

Installs pico-a1111-bridge as the systemd service $NAME:
  code        /opt/$NAME (replaced on every run, production dependencies only)
  settings    /etc/$NAME/config.json   (written from deploy/config.example.json only if missing)
  secrets     /etc/$NAME/secrets.env   (written from deploy/secrets.example.env only if missing, 0640)
  state       /var/lib/$NAME            (DATA_DIR, made by systemd)
  unit        /etc/systemd/system/$NAME.service

Options:
  --node PATH   the Node.js (>= $NEED_MAJOR.$NEED_MINOR) the service runs with; default: node on PATH,
                /usr/bin/node, /usr/local/bin/node or /opt/node24/node_modules/.bin/node, first one new enough
  --no-deps     do not run 'npm ci --omit=dev' (for tests; the service needs node_modules to start)
  --root DIR    install into DIR as if it were / (also: DESTDIR=DIR): no systemctl, no useradd, no chown;
                prints what it would do on a real system instead
  --uninstall   stop and disable the service, remove the unit and /opt/$NAME; keep settings and state
  --purge       with --uninstall: also remove /etc/$NAME, /var/lib/$NAME and the user
  -h, --help    show this help

Environment: NODE (same as --node), NPM (the npm to run), DESTDIR (same as --root).
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

readonly ARGS=("$@")
ROOT=${DESTDIR:-}
ACTION=install
PURGE=0
DEPS=1
NODE_BIN=${NODE:-}

while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#--root=} ;;
    --node) [ $# -ge 2 ] || die "--node needs a path"; NODE_BIN=$2; shift ;;
    --node=*) NODE_BIN=${1#--node=} ;;
    --no-deps) DEPS=0 ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done
[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die "--purge goes with --uninstall"

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || ROOT=
fi
readonly ROOT ACTION PURGE DEPS

readonly OPT=$ROOT/opt/$NAME
readonly ETC=$ROOT/etc/$NAME
readonly STATE=$ROOT/var/lib/$NAME
readonly UNIT=$ROOT/etc/systemd/system/$NAME.service
readonly DROPINS=$ROOT/etc/systemd/system/$NAME.service.d

# On the real system: run it. Into a scratch root: say what would run on a real system, and run nothing.
system() {
  if [ -n "$ROOT" ]; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

check_host() {
  if [ -n "$ROOT" ]; then
    if [ "$ACTION" = install ]; then
      say "installing into the scratch root $ROOT (nothing outside it changes)"
    else
      say "removing from the scratch root $ROOT (nothing outside it changes)"
    fi
    return
  fi
  [ "$(id -u)" = 0 ] || die "run as root: sudo $0 ${ARGS[*]}"
  command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this installer is for systemd machines"
}

node_version() { "$1" -p 'process.versions.node' 2>/dev/null; }

version_ok() {
  local v=$1 major minor
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 1
  [ "$major" -gt "$NEED_MAJOR" ] || { [ "$major" -eq "$NEED_MAJOR" ] && [ "$minor" -ge "$NEED_MINOR" ]; }
}

how_to_get_node() {
  cat >&2 <<EOF
The service needs Node.js $NEED_MAJOR.$NEED_MINOR or newer (Node 24 recommended), installed outside any home
directory (the unit has ProtectHome=yes, so a Node from nvm under /home or /root cannot run it).
On a Jetson (aarch64, Ubuntu 22.04, JetPack 6) or any Debian/Ubuntu, either:
  - NodeSource packages, which put node and npm in /usr/bin:
      curl -fsSL https://deb.nodesource.com/setup_24.x | sudo -E bash -
      sudo apt-get install -y nodejs
  - or Node from the npm registry, with any npm (even apt's, or nvm's):
      sudo npm install --prefix /opt/node24 node@24 npm@11
    which this installer finds at /opt/node24/node_modules/.bin/node.
Then run this installer again (or pass --node /path/to/node).
EOF
}

# Sets NODE_BIN (as given, used to find npm) and NODE_REAL (symlinks resolved, written into the unit).
find_node() {
  local candidates=() c v found=''
  if [ -n "$NODE_BIN" ]; then
    candidates=("$NODE_BIN")
  else
    c=$(command -v node 2>/dev/null || true)
    [ -z "$c" ] || candidates+=("$c")
    candidates+=(/usr/bin/node /usr/local/bin/node /opt/node24/node_modules/.bin/node /opt/node24/bin/node)
  fi
  for c in "${candidates[@]}"; do
    [ -x "$c" ] || continue
    v=$(node_version "$c" || true)
    if version_ok "$v"; then
      found=$c
      break
    fi
    warn "$c is Node ${v:-(unknown version)}, older than $NEED_MAJOR.$NEED_MINOR"
  done
  if [ -z "$found" ]; then
    how_to_get_node
    die "no Node.js >= $NEED_MAJOR.$NEED_MINOR found"
  fi
  NODE_BIN=$found
  NODE_REAL=$(readlink -f "$found")
  NODE_VERSION=$v
  # The unit's command line takes the path verbatim: no spaces, and no % (a systemd specifier).
  [[ $NODE_REAL =~ ^/[A-Za-z0-9._+/-]+$ ]] || die "unusable Node path for a unit file: $NODE_REAL"
  case $NODE_REAL in
    /home/* | /root/* | /run/user/*)
      if [ -n "$ROOT" ]; then
        warn "$NODE_REAL is under a home directory: fine for a scratch root, but on a real system the service could not run it (ProtectHome=yes)"
      else
        how_to_get_node
        die "$NODE_REAL is under a home directory, which the service cannot see (ProtectHome=yes)"
      fi
      ;;
  esac
  say "Node $NODE_VERSION at $NODE_REAL"
}

cleanup_dirs=()
cleanup() {
  local d
  for d in "${cleanup_dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# npm ci of the production dependencies, in the staged copy. When package-lock.json did not change since the
# last install, the installed node_modules is reused (hard links), so a reinstall needs no network.
install_deps() {
  local stage=$1 npm
  if [ "$DEPS" = 0 ]; then
    say "skipping npm ci (--no-deps): the service cannot start without node_modules"
    return
  fi
  if [ -d "$OPT/node_modules" ] && cmp -s "$OPT/package-lock.json" "$stage/package-lock.json"; then
    say "package-lock.json unchanged: reusing the installed node_modules"
    cp -al "$OPT/node_modules" "$stage/node_modules"
    return
  fi
  npm=${NPM:-}
  if [ -z "$npm" ]; then
    if [ -x "$(dirname "$NODE_BIN")/npm" ]; then
      npm=$(dirname "$NODE_BIN")/npm
    elif [ -x "$(dirname "$NODE_REAL")/npm" ]; then
      npm=$(dirname "$NODE_REAL")/npm
    else
      npm=$(command -v npm 2>/dev/null) || die "npm not found: install it (it comes with NodeSource's nodejs) or set NPM=/path/to/npm"
    fi
  fi
  say "npm ci --omit=dev (production dependencies only) with $npm"
  # npm and the packages' install scripts run `node` from PATH: make it the Node the service will use.
  (cd "$stage" && PATH="$(dirname "$NODE_REAL"):$PATH" "$npm" ci --omit=dev --no-audit --no-fund) ||
    die "npm ci failed; the installed version in $OPT is unchanged"
}

install_code() {
  local stage=$ROOT/opt/.$NAME.new old=$ROOT/opt/.$NAME.old item
  rm -rf "$stage" "$old"
  cleanup_dirs+=("$stage" "$old")
  mkdir -p "$stage"
  for item in "${PAYLOAD[@]}"; do
    [ -e "$SRC/$item" ] || die "$SRC/$item is missing: is this a complete pico-a1111-bridge checkout?"
    cp -R "$SRC/$item" "$stage/"
  done
  install_deps "$stage"
  # dist/: the sources as plain JavaScript, which the unit runs (about 25 MB less memory than running the
  # .ts files). Built by the service's own Node, no dev dependency needed.
  "$NODE_REAL" "$stage/scripts/build.ts" --out "$stage/dist" >/dev/null || die "building dist/ failed"
  # Readable by the service user, writable by root only, whoever owned the checkout.
  chmod -R u=rwX,go=rX "$stage"
  # Swap only once everything is in place, so a failed run leaves the old version working.
  [ ! -e "$OPT" ] || mv "$OPT" "$old"
  mv "$stage" "$OPT"
  rm -rf "$old"
  say "code installed in $OPT"
}

ensure_user() {
  if [ -n "$ROOT" ]; then
    system useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "pico-a1111-bridge daemon" "$NAME"
  elif getent passwd "$NAME" >/dev/null; then
    say "user $NAME exists"
  else
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "pico-a1111-bridge daemon" "$NAME"
    say "created the system user $NAME (no login shell, no home)"
  fi
}

# owner / group on the real system; into a scratch root the user may not exist, so only say it.
set_owner() {
  if [ -n "$ROOT" ]; then
    printf 'would run: chown %s %s\n' "$1" "${2#"$ROOT"}"
  else
    chown "$1" "$2"
  fi
}

install_settings() {
  mkdir -p "$ETC"
  chmod 0755 "$ETC"
  if [ -e "$ETC/config.json" ]; then
    say "keeping $ETC/config.json"
  else
    install -m 0644 "$SRC/deploy/config.example.json" "$ETC/config.json"
    set_owner root:root "$ETC/config.json"
    say "wrote $ETC/config.json from deploy/config.example.json: edit it (A1111_BASE_URL, ports)"
  fi
  if [ -e "$ETC/secrets.env" ]; then
    say "keeping $ETC/secrets.env"
    # Never the content; but secrets readable by every user are a mistake worth fixing.
    if [ -n "$(find "$ETC/secrets.env" -perm /o=rwx)" ]; then
      chmod o-rwx "$ETC/secrets.env"
      warn "$ETC/secrets.env was readable by other users; removed their access"
    fi
  else
    install -m 0640 "$SRC/deploy/secrets.example.env" "$ETC/secrets.env"
    set_owner "root:$NAME" "$ETC/secrets.env"
    say "wrote $ETC/secrets.env (0640 root:$NAME): put A1111_PASSWORD, SERVICE_API_KEY there"
  fi
}

install_unit() {
  local tmp
  tmp=$(mktemp)
  cleanup_dirs+=("$tmp")
  {
    printf '# Installed by scripts/install.sh from deploy/systemd/%s.service, for Node %s.\n' "$NAME" "$NODE_VERSION"
    printf '# Do not edit: a reinstall replaces it. For local changes: systemctl edit %s\n' "$NAME"
    sed -e "s|^\(ExecStart[A-Za-z]*=\)/usr/bin/node |\1$NODE_REAL |" "$SRC/deploy/systemd/$NAME.service"
  } >"$tmp"
  grep -q "^ExecStart=$NODE_REAL " "$tmp" || die "could not set the Node path in the unit"
  install -D -m 0644 "$tmp" "$UNIT"
  say "unit installed: $UNIT"
}

start_service() {
  system systemctl daemon-reload
  system systemctl enable "$NAME.service"
  if [ -n "$ROOT" ]; then
    system systemctl restart "$NAME.service"
    return
  fi
  # A unit that hit its start limit (say, after bad settings) refuses to start until reset.
  systemctl reset-failed "$NAME.service" 2>/dev/null || true
  if systemctl is-active --quiet "$NAME.service"; then
    say "restarting $NAME"
    systemctl restart "$NAME.service" || start_failed
  else
    say "starting $NAME"
    systemctl start "$NAME.service" || start_failed
  fi
  wait_listening
}

start_failed() {
  journalctl -u "$NAME.service" -n 20 --no-pager -o cat >&2 || true
  die "$NAME did not start; fix what the lines above say (settings: $ETC/config.json), then run: systemctl restart $NAME"
}

# Type=exec says "started" once node runs; the daemon is ready when it logs "listening".
wait_listening() {
  local id i
  id=$(systemctl show -p InvocationID --value "$NAME.service")
  for i in $(seq 1 30); do
    if journalctl "_SYSTEMD_INVOCATION_ID=$id" -o cat --no-pager 2>/dev/null | grep -q '"msg":"listening"'; then
      say "$NAME is listening: $(journalctl "_SYSTEMD_INVOCATION_ID=$id" -o cat --no-pager | grep '"msg":"listening"' | tail -n 1)"
      return
    fi
    systemctl is-active --quiet "$NAME.service" || [ "$i" -lt 3 ] || start_failed
    sleep 1
  done
  warn "$NAME has not logged \"listening\" after 30 s; see: journalctl -u $NAME -o cat"
}

print_next_steps() {
  cat <<EOF

Installed. Check it with:
  systemctl status $NAME
  journalctl -u $NAME -o cat | npx pino-pretty       (add -f to follow)
Settings: /etc/$NAME/config.json, secrets: /etc/$NAME/secrets.env; after editing them:
  sudo systemctl restart $NAME
EOF
}

do_install() {
  check_host
  if [ ! -f "$SRC/package.json" ] || [ ! -f "$SRC/deploy/systemd/$NAME.service" ]; then
    die "$SRC does not look like a pico-a1111-bridge checkout"
  fi
  find_node
  ensure_user
  install_code
  install_settings
  install_unit
  start_service
  print_next_steps
}

do_uninstall() {
  check_host
  if [ -n "$ROOT" ] || systemctl cat "$NAME.service" >/dev/null 2>&1; then
    system systemctl disable --now "$NAME.service"
  fi
  rm -f "$UNIT"
  rm -rf "$OPT"
  say "removed the unit and $OPT"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ETC" "$STATE" "$DROPINS"
    if [ -n "$ROOT" ]; then
      system userdel "$NAME"
    elif getent passwd "$NAME" >/dev/null; then
      userdel "$NAME"
    fi
    say "purged $ETC, $STATE and the user $NAME"
  else
    say "kept the settings in $ETC and the state in $STATE (remove them with --uninstall --purge)"
  fi
  system systemctl daemon-reload
  [ -n "$ROOT" ] || systemctl reset-failed "$NAME.service" 2>/dev/null || true
}

if [ "$ACTION" = install ]; then
  do_install
else
  do_uninstall
fi
