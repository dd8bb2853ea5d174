#!/usr/bin/env bash
# cardlink on a Debian 12 machine, for admins who push it with their tools (Ansible, Salt, a shell
# loop): installs the application to /opt/cardlink with its production dependencies only, puts
# `cardlink` on the PATH, registers the reader driver with pcscd, writes the machine-wide client
# config, enables the daemon's systemd user unit for every user and the tray's XDG autostart entry.
# Idempotent: a second run with the same parameters changes nothing and says so. Upgrades in place
# and keeps the config unless new settings are given. docs/install.md describes every file written.
#
#   sudo install-scripts/linux/install.sh --server-url https://cards.example.com/ \
#        --issuer https://idp.example.com/ --client-id cardlink [--ca-file ca.pem] [--silent]
#
# Run from a staged tree (what the .deb and stage.sh lay out) or from a built checkout (it is
# staged first). Exit codes (also in docs/install.md):
#   0 installed, or nothing to change      2 bad parameter (message names it)
#   3 not run as root                      4 a prerequisite is missing (Node.js >= 20.19, a tool)
#   5 apt-get failed (network, mirror)     6 the client settings were refused by `cardlink daemon --check`
#   7 a step failed part-way (the message names it; rerun after fixing: the script is idempotent)
set -euo pipefail
umask 022
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
source_tree=$(cd "$here/../.." && pwd)

PREFIX=/opt/cardlink
CONF_DIR=/etc/cardlink
STATE=/var/lib/cardlink-install
MANIFEST=$STATE/manifest
READER_CONF=/etc/reader.conf.d/cardlink
USER_UNIT=/etc/systemd/user/cardlink-daemon.service
USER_WANTS=/etc/systemd/user/default.target.wants/cardlink-daemon.service
SERVER_UNIT=/etc/systemd/system/cardlink-server.service
AUTOSTART=/etc/xdg/autostart/cardlink-tray.desktop
BIN_LINK=/usr/local/bin/cardlink
SERVER_USER=cardlink-server
# Debian packages the installed client needs at run time (the reader driver is prebuilt).
CLIENT_PACKAGES="pcscd libpcsclite1 opensc"

usage() {
  cat <<'USAGE'
usage: install.sh [options]
  --server-url URL     the card server (https://...); writes /etc/cardlink/daemon.json
  --issuer URL         an OpenID Provider for `cardlink login` and the tray (with --client-id);
                       repeat it for several, the first is the default (up to 8)
  --client-id ID       cardlink's client id there: once for every issuer, or once per --issuer
                       in the same order
  --ca-file FILE       PEM file to trust for the server's certificate (copied to /etc/cardlink)
  --slots N            card slots in the virtual reader, 1..8 (default 4, or the installed value)
  --user NAME          the user whose daemon may serve cards into the reader (default: the
                       installed value, else $SUDO_USER, else root)
  --variant V          client (default), server, or full (both)
  --server-config FILE the server's settings, copied to /etc/cardlink/server.json (server, full)
  --skip-apt           do not install Debian packages (they are present)
  --dry-run            say what would change and change nothing
  --silent             print nothing but errors
  -h, --help           this text
USAGE
}

silent=0 dry=0 skip_apt=0 package=0
server_url="" ca_file="" slots="" user="" variant="" server_config=""
issuers=() client_ids=()
fail() { local code=$1; shift; echo "cardlink install: error: $*" >&2; exit "$code"; }
say() { [ "$silent" = 1 ] || echo "cardlink install: $*"; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then fail 2 "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server-url) need_value "$@"; server_url=$2; shift 2 ;;
    # Repeatable: the daemon's login.issuers lists several identity providers, the first the default.
    --issuer) need_value "$@"; issuers+=("$2"); shift 2 ;;
    --client-id) need_value "$@"; client_ids+=("$2"); shift 2 ;;
    --ca-file) need_value "$@"; ca_file=$2; shift 2 ;;
    --slots) need_value "$@"; slots=$2; shift 2 ;;
    --user) need_value "$@"; user=$2; shift 2 ;;
    --variant) need_value "$@"; variant=$2; shift 2 ;;
    --server-config) need_value "$@"; server_config=$2; shift 2 ;;
    --skip-apt) skip_apt=1; shift ;;
    # From the .deb's postinst: dpkg owns /opt/cardlink and /usr/bin/cardlink and did the Depends.
    --package) package=1; skip_apt=1; shift ;;
    --dry-run) dry=1; shift ;;
    --silent) silent=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail 2 "unknown parameter '$1'" ;;
  esac
done

[ "$(id -u)" = 0 ] || fail 3 "run as root (sudo $0 ...)"

# Settings an earlier install recorded; parameters given now win.
setting() { if [ -f "$CONF_DIR/install.conf" ]; then sed -n "s/^$1=//p" "$CONF_DIR/install.conf" | tail -1; fi; }
[ -n "$variant" ] || variant=$(setting CARDLINK_VARIANT)
[ -n "$variant" ] || variant=client
[ -n "$slots" ] || slots=$(setting CARDLINK_SLOTS)
[ -n "$slots" ] || slots=4
[ -n "$user" ] || user=$(setting CARDLINK_USER)
[ -n "$user" ] || user=${SUDO_USER:-root}
case "$variant" in client|server|full) ;; *) fail 2 "--variant must be client, server or full (got '$variant')" ;; esac
case "$slots" in ''|*[!0-9]*) fail 2 "--slots must be a number from 1 to 8 (got '$slots')" ;; esac
{ [ "$slots" -ge 1 ] && [ "$slots" -le 8 ]; } || fail 2 "--slots must be a number from 1 to 8 (got '$slots')"
client=0 server=0
[ "$variant" = server ] || client=1
[ "$variant" = client ] || server=1
if [ "$client" = 1 ]; then
  uid=$(id -u "$user" 2>/dev/null) || fail 2 "--user '$user' is not a user on this machine"
fi
case "$server_url" in ''|https://*|http://127.*|http://localhost*|http://\[::1\]*) ;;
  *) fail 2 "--server-url must be an https:// URL (got '$server_url')" ;; esac
[ -z "$ca_file" ] || [ -f "$ca_file" ] || fail 2 "--ca-file '$ca_file' is not a file"
[ -z "$server_config" ] || [ -f "$server_config" ] || fail 2 "--server-config '$server_config' is not a file"
[ -n "$server_url" ] || { [ "${#issuers[@]}${#client_ids[@]}" = 00 ] && [ -z "$ca_file" ]; } ||
  fail 2 "--issuer, --client-id and --ca-file need --server-url"
if { [ "${#issuers[@]}" -gt 0 ] && [ "${#client_ids[@]}" = 0 ]; } || { [ "${#issuers[@]}" = 0 ] && [ "${#client_ids[@]}" -gt 0 ]; }; then
  fail 2 "--issuer and --client-id go together"
fi
if [ "${#client_ids[@]}" -gt 1 ] && [ "${#client_ids[@]}" != "${#issuers[@]}" ]; then
  fail 2 "--client-id: give one for every issuer, or one per --issuer (${#issuers[@]} issuers, ${#client_ids[@]} client ids)"
fi
for v in "${issuers[@]}" "${client_ids[@]}"; do
  # install.conf keeps each list on one line, separated by spaces.
  case "$v" in *[[:space:]]*) fail 2 "--issuer and --client-id values may not contain spaces (got '$v')" ;; esac
done
# As one line each (URLs and client ids have no spaces): install.conf and the JSON writer.
issuer="${issuers[*]}" client_id="${client_ids[*]}"

node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>20||(a===20&&b>=19)?1:0)' 2>/dev/null || echo 0)
[ "$node_ok" = 1 ] || fail 4 "Node.js 20.19 or later must be on the PATH (found: $(node --version 2>/dev/null || echo none)); see docs/install.md"

changes=0
changed() {
  changes=$((changes + 1))
  if [ "$dry" = 1 ]; then say "would change: $*"; else say "changed: $*"; fi
}
[ "$dry" = 0 ] || say "dry run: nothing is changed"
# Every path this script creates, for uninstall.sh (recorded even when it already existed as ours).
installed=()
record() { installed+=("$@"); }
# Creates a directory (and its parents), recording the ones that did not exist: uninstall.sh
# removes those when they are empty again.
make_dir() {
  local dir=$1 new_dirs=()
  while [ ! -d "$dir" ]; do new_dirs+=("$dir/"); dir=$(dirname "$dir"); done
  [ "${#new_dirs[@]}" = 0 ] || record "${new_dirs[@]}"
  [ "$dry" = 1 ] || install -d -m 0755 "$1"
}

# Writes $2 with mode $3 from the file $1 when its content or mode differs.
put_file() {
  local from=$1 to=$2 mode=$3
  record "$to"
  if [ -f "$to" ] && cmp -s "$from" "$to" && [ "$(stat -c %a "$to")" = "${mode#0}" ]; then return 0; fi
  changed "$to"
  make_dir "$(dirname "$to")"
  [ "$dry" = 1 ] && return 0
  install -m "$mode" "$from" "$to.cardlink-new"
  mv -f "$to.cardlink-new" "$to"
}
put_link() {
  local target=$1 link=$2
  record "$link"
  [ "$(readlink "$link" 2>/dev/null)" = "$target" ] && return 0
  [ ! -e "$link" ] || [ -L "$link" ] || fail 7 "$link exists and is not a link: move it away and rerun"
  changed "$link -> $target"
  make_dir "$(dirname "$link")"
  [ "$dry" = 1 ] && return 0
  ln -sfn "$target" "$link"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The tree to install: staged already (the .deb, a copy of stage.sh's output) or staged now.
if grep -q '"cardlinkVariant"' "$source_tree/package.json" 2>/dev/null; then
  staged=$source_tree
  have=$(node -p 'require(process.argv[1]).cardlinkVariant' "$source_tree/package.json")
  [ "$have" = full ] || [ "$have" = "$variant" ] || fail 2 "this tree was staged for '$have', not '$variant'"
else
  say "staging the $variant tree from the checkout $source_tree"
  bash "$here/stage.sh" "$variant" "$tmp/stage" || fail 7 "staging failed (is the checkout built? npm ci && npm run build)"
  staged=$tmp/stage
fi
# The machine-wide client config, checked before anything changes: settings the daemon refuses
# stop the install here with nothing changed.
if [ "$client" = 1 ] && [ -n "$server_url" ]; then
  ca_json=""
  if [ -n "$ca_file" ]; then ca_json=$CONF_DIR/server-ca.pem; fi
  # JSON written by node so that no value can break the quoting.
  client_json() {
    URL="$server_url" CA="$1" ISSUER="$issuer" CLIENT_ID="$client_id" node -e '
      const e = process.env, c = { server: { url: e.URL } };
      const issuers = e.ISSUER.split(" ").filter(Boolean), ids = e.CLIENT_ID.split(" ").filter(Boolean);
      if (e.CA) c.server.caFile = e.CA;
      // One issuer: the short form (what earlier installs wrote, so their file stays as it is).
      if (issuers.length === 1) c.login = { issuer: issuers[0], clientId: ids[0], resource: e.URL };
      if (issuers.length > 1)
        c.login = { resource: e.URL, issuers: issuers.map((issuer, i) => ({ issuer, clientId: ids[ids.length === 1 ? 0 : i] })) };
      process.stdout.write(JSON.stringify(c, null, 2) + "\n");'
  }
  client_json "$ca_json" > "$tmp/daemon.json"
  # Checked by the daemon code being installed, with the CA file where it is now (its copy in
  # /etc/cardlink does not exist yet in a dry run), before the old file is replaced.
  client_json "$ca_file" > "$tmp/daemon-check.json"
  env -i PATH="$PATH" CARDLINK_SYSTEM_CONFIG="$tmp/daemon-check.json" HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent \
    "$staged/bin/cardlink" daemon --check >/dev/null 2>"$tmp/check.err" ||
    { cat "$tmp/check.err" >&2; fail 6 "the client settings were refused (above); $CONF_DIR/daemon.json is unchanged"; }
fi

# 2. Debian packages, then the application in /opt/cardlink, compared file by file.
if [ "$client" = 1 ] && [ "$skip_apt" = 0 ]; then
  missing=$(for p in $CLIENT_PACKAGES; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    changed "Debian packages: $(echo "$missing" | tr '\n' ' ')"
    if [ "$dry" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      # shellcheck disable=SC2086 # a list of package names
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; } ||
        fail 5 "apt-get could not install: $(echo "$missing" | tr '\n' ' ')(check the network and the mirror, or install them and use --skip-apt)"
    fi
  fi
fi

record "$PREFIX"
app_changed=0
if [ "$staged" != "$PREFIX" ]; then
  if [ -d "$PREFIX" ] && diff -r --no-dereference -q "$staged" "$PREFIX" >/dev/null 2>&1; then
    :
  else
    changed "$PREFIX (application)"
    app_changed=1
    if [ "$dry" = 0 ]; then
      rm -rf "$PREFIX.cardlink-new" "$PREFIX.cardlink-old"
      cp -a "$staged" "$PREFIX.cardlink-new"
      [ ! -d "$PREFIX" ] || mv "$PREFIX" "$PREFIX.cardlink-old"
      mv "$PREFIX.cardlink-new" "$PREFIX"
      rm -rf "$PREFIX.cardlink-old"
    fi
  fi
fi
# The .deb ships /usr/bin/cardlink itself (a package does not write to /usr/local).
[ "$package" = 1 ] || put_link "$PREFIX/bin/cardlink" "$BIN_LINK"

# 3. The settings this install used, so an upgrade without parameters keeps them.
# The client settings given now (or kept from the file: the .deb reads them there at its first
# install) are recorded too, but only parameters given on the command line rewrite daemon.json.
{
  printf 'CARDLINK_VARIANT=%s\nCARDLINK_SLOTS=%s\nCARDLINK_USER=%s\n' "$variant" "$slots" "$user"
  for pair in "CARDLINK_SERVER_URL:$server_url" "CARDLINK_ISSUER:$issuer" "CARDLINK_CLIENT_ID:$client_id" \
              "CARDLINK_CA_FILE:$ca_file" "CARDLINK_SERVER_CONFIG:$server_config"; do
    key=${pair%%:*} value=${pair#*:}
    [ -n "$value" ] || value=$(setting "$key")
    [ -z "$value" ] || printf '%s=%s\n' "$key" "$value"
  done
} > "$tmp/install.conf"
put_file "$tmp/install.conf" "$CONF_DIR/install.conf" 0644

reader_changed=0
if [ "$client" = 1 ]; then
  # 4. The reader driver, registered with pcscd. It admits root and one uid (the driver's rule).
  before=$changes
  sed -e "s|@SOCKET@|/run/cardlink/bridge.sock|" -e "s|@SLOTS@|$slots|" -e "s|@UID@|$uid|" \
      -e "s|@LIBPATH@|$PREFIX/daemon/ifd-handler/build/libifd-cardlink.so|" \
      "$source_tree/daemon/ifd-handler/reader.conf.in" > "$tmp/reader.conf"
  put_file "$tmp/reader.conf" "$READER_CONF" 0644
  # A new reader file or a new driver needs a pcscd restart; a config change does not. The driver's
  # hash is kept beside the manifest: under dpkg the files change before this script runs.
  sha256sum "$PREFIX/daemon/ifd-handler/build/libifd-cardlink.so" 2>/dev/null | cut -d' ' -f1 > "$tmp/driver.sha256" ||
    sha256sum "$staged/daemon/ifd-handler/build/libifd-cardlink.so" | cut -d' ' -f1 > "$tmp/driver.sha256"
  if [ "$changes" != "$before" ] || [ "$app_changed" = 1 ] || ! cmp -s "$tmp/driver.sha256" "$STATE/driver.sha256"; then
    reader_changed=1
  fi
  record "$STATE/driver.sha256"
  [ "$dry" = 1 ] || { install -d -m 0755 "$STATE"; install -m 0644 "$tmp/driver.sha256" "$STATE/driver.sha256"; }

  # 5. The machine-wide client config (checked above), replacing the old one.
  if [ -n "$server_url" ]; then
    if [ -n "$ca_file" ]; then put_file "$ca_file" "$CONF_DIR/server-ca.pem" 0644; fi
    put_file "$tmp/daemon.json" "$CONF_DIR/daemon.json" 0644
  elif [ ! -f "$CONF_DIR/daemon.json" ]; then
    say "no --server-url and no $CONF_DIR/daemon.json: each user configures the daemon (docs/daemon-config.md)"
  fi

  # 6. The daemon as a systemd user unit, enabled for every user; the tray at desktop login.
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER@|$user|g" "$here/cardlink-daemon.service.in" > "$tmp/daemon.service"
  put_file "$tmp/daemon.service" "$USER_UNIT" 0644
  # `systemctl --global enable` makes exactly this link; made directly it also works where
  # systemctl is missing (containers, chroots).
  put_link "$USER_UNIT" "$USER_WANTS"
  sed -e "s|@PREFIX@|$PREFIX|g" "$here/cardlink-tray.desktop.in" > "$tmp/tray.desktop"
  put_file "$tmp/tray.desktop" "$AUTOSTART" 0644
fi

if [ "$server" = 1 ]; then
  # 7. The card server as a system service under its own unprivileged user.
  if ! getent passwd "$SERVER_USER" >/dev/null; then
    changed "system user $SERVER_USER"
    [ "$dry" = 1 ] || useradd --system --user-group --home-dir /var/lib/cardlink-server --no-create-home \
      --shell /usr/sbin/nologin --comment "cardlink card server" "$SERVER_USER" || fail 7 "could not create the user $SERVER_USER"
  fi
  if [ -n "$server_config" ]; then
    node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$server_config" 2>/dev/null ||
      fail 2 "--server-config '$server_config' is not valid JSON"
    put_file "$server_config" "$CONF_DIR/server.json" 0640
    [ "$dry" = 1 ] || chgrp "$SERVER_USER" "$CONF_DIR/server.json"
  fi
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@USER@|$SERVER_USER|g" "$here/cardlink-server.service.in" > "$tmp/server.service"
  put_file "$tmp/server.service" "$SERVER_UNIT" 0644
  if [ "$dry" = 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -f "$CONF_DIR/server.json" ]; then systemctl enable --now cardlink-server.service >/dev/null 2>&1 ||
      fail 7 "cardlink-server.service did not start: journalctl -u cardlink-server"; fi
  fi
fi

# 8. What uninstall.sh removes (directories last, removed only when empty).
record "$MANIFEST" "$STATE/"
# With the earlier manifest's entries: a file an earlier run wrote (a config) is still ours.
{ printf '%s\n' "${installed[@]}"; [ ! -f "$MANIFEST" ] || cat "$MANIFEST"; } | sort -u > "$tmp/manifest"
if [ ! -f "$MANIFEST" ] || ! cmp -s "$tmp/manifest" "$MANIFEST"; then
  [ "$dry" = 1 ] || { install -d -m 0755 "$STATE"; install -m 0644 "$tmp/manifest" "$MANIFEST"; }
fi

# 9. pcscd reads reader.conf.d when it starts: restart it where it runs, only after a change.
if [ "$client" = 1 ] && [ "$reader_changed" = 1 ] && [ "$dry" = 0 ]; then
  bash "$here/restart-pcscd.sh" || say "pcscd was not restarted: restart it (or reboot) to see the cardlink reader"
fi

if [ "$changes" = 0 ]; then
  say "nothing to change: cardlink is installed as asked"
else
  if [ "$dry" = 1 ]; then say "$changes change(s) would be made"; else say "$changes change(s) made"; fi
fi
