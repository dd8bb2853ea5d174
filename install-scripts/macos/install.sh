#!/bin/bash
# cardlink on macOS (written to the Linux install's contract; NOT tested: no Mac here, see
# docs/install.md). Installs a staged client tree to /usr/local/cardlink, `cardlink` on the PATH,
# the machine-wide client config (checked by `cardlink daemon --check` before it replaces the old
# one), vsmartcard's vpcd as the reader (reversed mode: vpcd connects to the daemon on loopback),
# and launchd agents for the daemon and the tray in every user's session. Idempotent.
# Runs with macOS's bash 3.2 (no mapfile, no associative arrays).
#
#   sudo install-scripts/macos/install.sh --server-url https://cards.example.com/ \
#        --issuer https://idp.example.com/ --client-id cardlink [--ca-file ca.pem] [--silent]
#
# Prerequisites (docs/install.md): Node.js 20.19+ (nodejs.org's pkg or Homebrew), vsmartcard's vpcd
# (its macOS pkg, installing /usr/local/libexec/SmartCardServices/drivers/ifd-vpcd.bundle).
# Exit codes as install-scripts/linux/install.sh: 0 done or nothing to change, 2 bad parameter,
# 3 not root, 4 prerequisite missing, 6 settings refused, 7 a step failed.
set -euo pipefail
umask 022
here=$(cd "$(dirname "$0")" && pwd)
source_tree=$(cd "$here/../.." && pwd)

PREFIX=/usr/local/cardlink
CONF_DIR=/etc/cardlink
AGENTS=/Library/LaunchAgents
BIN_LINK=/usr/local/bin/cardlink
VPCD_BUNDLE=/usr/local/libexec/SmartCardServices/drivers/ifd-vpcd.bundle
# vsmartcard's default vpcd port (0x8C7B); slot 1 is the next port.
DEFAULT_VPCD_PORT=35963

silent=0 dry=0 package=0
server_url="" issuer="" client_id="" ca_file="" vpcd_port=$DEFAULT_VPCD_PORT
fail() { code=$1; shift; echo "cardlink install: error: $*" >&2; exit "$code"; }
say() { if [ "$silent" = 0 ]; then echo "cardlink install: $*"; fi; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then fail 2 "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server-url) need_value "$@"; server_url=$2; shift 2 ;;
    --issuer) need_value "$@"; issuer=$2; shift 2 ;;
    --client-id) need_value "$@"; client_id=$2; shift 2 ;;
    --ca-file) need_value "$@"; ca_file=$2; shift 2 ;;
    --vpcd-port) need_value "$@"; vpcd_port=$2; shift 2 ;;
    --package) package=1; shift ;;
    --dry-run) dry=1; shift ;;
    --silent) silent=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) fail 2 "unknown parameter '$1' (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || fail 3 "run as root (sudo $0 ...)"
case "$vpcd_port" in ''|*[!0-9]*) fail 2 "--vpcd-port must be a number (got '$vpcd_port')" ;; esac
case "$server_url" in ''|https://*) ;; *) fail 2 "--server-url must be an https:// URL" ;; esac
[ -z "$ca_file" ] || [ -f "$ca_file" ] || fail 2 "--ca-file '$ca_file' is not a file"
node=$(command -v node || true)
[ -n "$node" ] || for n in /usr/local/bin/node /opt/homebrew/bin/node; do if [ -x "$n" ]; then node=$n; break; fi; done
[ -n "$node" ] || fail 4 "Node.js 20.19 or later is required (nodejs.org or Homebrew)"
node_ok=$("$node" -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>20||(a===20&&b>=19)?1:0)')
[ "$node_ok" = 1 ] || fail 4 "Node.js 20.19 or later is required (found $("$node" --version))"
[ -d "$VPCD_BUNDLE" ] || fail 4 "vsmartcard's vpcd is not installed ($VPCD_BUNDLE): install its macOS package first"
grep -q '"cardlinkVariant"' "$source_tree/package.json" ||
  fail 2 "run from a staged tree (install-scripts/linux/stage.sh client <dir> on a Mac, or the .pkg)"

changes=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
changed() {
  changes=$((changes + 1))
  if [ "$dry" = 1 ]; then say "would change: $*"; else say "changed: $*"; fi
}
put_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then return 0; fi
  changed "$2"
  if [ "$dry" = 0 ]; then install -d -m 0755 "$(dirname "$2")"; install -m "$3" "$1" "$2"; fi
}

# The client settings, checked by the code being installed before anything changes.
if [ -n "$server_url" ]; then
  ca_json=""
  if [ -n "$ca_file" ]; then ca_json=$CONF_DIR/server-ca.pem; fi
  client_json() {
    URL="$server_url" CA="$1" ISSUER="$issuer" CLIENT_ID="$client_id" PORT="$vpcd_port" "$node" -e '
      const e = process.env, c = { server: { url: e.URL } };
      if (e.CA) c.server.caFile = e.CA;
      if (e.ISSUER) c.login = { issuer: e.ISSUER, clientId: e.CLIENT_ID, resource: e.URL };
      c.reader = { transport: "vpcd", vpcdHost: "127.0.0.1", vpcdPort: Number(e.PORT) };
      process.stdout.write(JSON.stringify(c, null, 2) + "\n");'
  }
  client_json "$ca_json" > "$tmp/daemon.json"
  client_json "$ca_file" > "$tmp/check.json"
  env -i PATH="$(dirname "$node"):/usr/bin:/bin" CARDLINK_SYSTEM_CONFIG="$tmp/check.json" HOME=/nonexistent \
    XDG_CONFIG_HOME=/nonexistent "$source_tree/bin/cardlink" daemon --check >/dev/null ||
    fail 6 "the client settings were refused (above); $CONF_DIR/daemon.json is unchanged"
fi

# The application.
if [ "$package" = 0 ]; then
  if [ -d "$PREFIX" ] && diff -r -q "$source_tree" "$PREFIX" >/dev/null 2>&1; then :; else
    changed "$PREFIX (application)"
    if [ "$dry" = 0 ]; then
      rm -rf "$PREFIX.new"; cp -R "$source_tree" "$PREFIX.new"
      rm -rf "$PREFIX"; mv "$PREFIX.new" "$PREFIX"
    fi
  fi
  if [ "$(readlink "$BIN_LINK" 2>/dev/null || true)" != "$PREFIX/bin/cardlink" ]; then
    changed "$BIN_LINK"
    if [ "$dry" = 0 ]; then install -d /usr/local/bin; ln -sfn "$PREFIX/bin/cardlink" "$BIN_LINK"; fi
  fi
fi

if [ -n "$server_url" ]; then
  if [ -n "$ca_file" ]; then put_file "$ca_file" "$CONF_DIR/server-ca.pem" 0644; fi
  put_file "$tmp/daemon.json" "$CONF_DIR/daemon.json" 0644
fi

# vpcd in reversed mode: its one reader connects to the daemon on localhost:<port> (the bundle's
# ifdFriendlyName is vpcd's host:port setting; /dev/null there would make it listen on every
# interface instead, where any host could insert a card).
plist="$VPCD_BUNDLE/Contents/Info.plist"
want=$(printf 'localhost:0x%X' "$vpcd_port")
have=$(/usr/libexec/PlistBuddy -c 'Print :ifdFriendlyName:0' "$plist" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  changed "$plist (ifdFriendlyName $want)"
  if [ "$dry" = 0 ]; then
    /usr/libexec/PlistBuddy -c "Set :ifdFriendlyName:0 $want" "$plist" || fail 7 "could not configure vpcd in $plist"
    # The smart card service reads drivers when it starts.
    launchctl kickstart -k system/com.apple.ifdreader 2>/dev/null || true
  fi
fi

# launchd agents for every user; loaded now for whoever is logged in at the console.
for agent in daemon tray; do
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@NODE_DIR@|$(dirname "$node")|g" "$here/org.cardlink.$agent.plist.in" > "$tmp/$agent.plist"
  before=$changes
  put_file "$tmp/$agent.plist" "$AGENTS/org.cardlink.$agent.plist" 0644
  console_uid=$(stat -f %u /dev/console 2>/dev/null || echo 0)
  if [ "$changes" != "$before" ] && [ "$dry" = 0 ] && [ "$console_uid" != 0 ]; then
    launchctl bootout "gui/$console_uid/org.cardlink.$agent" 2>/dev/null || true
    launchctl bootstrap "gui/$console_uid" "$AGENTS/org.cardlink.$agent.plist" ||
      say "org.cardlink.$agent starts at the next login"
  fi
done

if [ "$changes" = 0 ]; then say "nothing to change: cardlink is installed as asked"; else say "$changes change(s)"; fi
