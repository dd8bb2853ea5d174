#!/usr/bin/env bash
# cardlink on Debian 12: installs what the client needs, builds it, and registers the cardlink
# reader driver with pcscd. Idempotent and non-interactive; run as root (sudo) from the checkout.
#
#   sudo bash install-scripts/debian/setup.sh
#
# Settings (environment):
#   CARDLINK_USER       the user allowed to serve cards into the reader (default: $SUDO_USER or root)
#   CARDLINK_SLOTS      number of card slots in the virtual reader (default 4)
#   CARDLINK_PREFIX     where the reader driver is installed (default /usr/local/lib/cardlink)
#   CARDLINK_SKIP_APT=1 do not call apt-get (packages already present)
#
# Client settings for every user of the machine (optional; written to /etc/cardlink/daemon.json and
# checked with `cardlink daemon --check`, see docs/daemon-config.md):
#   CARDLINK_SERVER_URL  the card server (https://...); without it no daemon config is written
#   CARDLINK_SERVER_CA   PEM file to trust for the server's certificate (copied to /etc/cardlink)
#   CARDLINK_ISSUER      the OpenID Provider for `cardlink login`
#   CARDLINK_CLIENT_ID   cardlink's client id at that provider
# With a server URL, a systemd user unit (cardlink-daemon.service) is installed and enabled for
# every user, and /usr/local/bin/cardlink points at this checkout.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
repo=$(pwd)

die() { echo "cardlink setup: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo bash $0)"

node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>20||(a===20&&b>=19)?1:0)' 2>/dev/null || echo 0)
[ "$node_ok" = 1 ] || die "Node.js 20.19 or later is required (found: $(node --version 2>/dev/null || echo none))"

if [ "${CARDLINK_SKIP_APT:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  needed="pcscd libpcsclite-dev pkg-config make gcc g++ python3 opensc"
  missing=$(for p in $needed; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "cardlink setup: installing Debian packages: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

echo "cardlink setup: installing npm dependencies and building"
npm ci --no-fund --no-audit --loglevel=error
npm run -s build

prefix=${CARDLINK_PREFIX:-/usr/local/lib/cardlink}
user=${CARDLINK_USER:-${SUDO_USER:-root}}
uid=$(id -u "$user") || die "CARDLINK_USER '$user' is not a user on this machine"
slots=${CARDLINK_SLOTS:-4}
case "$slots" in ''|*[!0-9]*) die "CARDLINK_SLOTS must be a number from 1 to 8 (got '$slots')";; esac
{ [ "$slots" -ge 1 ] && [ "$slots" -le 8 ]; } || die "CARDLINK_SLOTS must be a number from 1 to 8 (got '$slots')"

install -d -m 0755 "$prefix"
install -m 0644 daemon/ifd-handler/build/libifd-cardlink.so "$prefix/libifd-cardlink.so"
install -d -m 0755 /etc/reader.conf.d
sed -e "s|@SOCKET@|/run/cardlink/bridge.sock|" -e "s|@SLOTS@|$slots|" -e "s|@UID@|$uid|" \
    -e "s|@LIBPATH@|$prefix/libifd-cardlink.so|" daemon/ifd-handler/reader.conf.in > /etc/reader.conf.d/cardlink
chmod 0644 /etc/reader.conf.d/cardlink
echo "cardlink setup: reader driver registered in /etc/reader.conf.d/cardlink (slots: $slots, user: $user)"

if [ -n "${CARDLINK_SERVER_URL:-}" ]; then
  install -d -m 0755 /etc/cardlink
  ca_json=""
  if [ -n "${CARDLINK_SERVER_CA:-}" ]; then
    [ -f "$CARDLINK_SERVER_CA" ] || die "CARDLINK_SERVER_CA '$CARDLINK_SERVER_CA' is not a file"
    install -m 0644 "$CARDLINK_SERVER_CA" /etc/cardlink/server-ca.pem
    ca_json=/etc/cardlink/server-ca.pem
  fi
  # JSON written by node so that no value can break the quoting.
  CA="$ca_json" node -e '
    const e = process.env, c = { server: { url: e.CARDLINK_SERVER_URL } };
    if (e.CA) c.server.caFile = e.CA;
    if (e.CARDLINK_ISSUER || e.CARDLINK_CLIENT_ID)
      c.login = { issuer: e.CARDLINK_ISSUER, clientId: e.CARDLINK_CLIENT_ID, resource: e.CARDLINK_SERVER_URL };
    process.stdout.write(JSON.stringify(c, null, 2) + "\n");' > /etc/cardlink/daemon.json.new
  CARDLINK_SYSTEM_CONFIG=/etc/cardlink/daemon.json.new HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent \
    "$repo/bin/cardlink" daemon --check >/dev/null || { rm -f /etc/cardlink/daemon.json.new; die "the client settings were refused (see above)"; }
  chmod 0644 /etc/cardlink/daemon.json.new
  mv /etc/cardlink/daemon.json.new /etc/cardlink/daemon.json
  ln -sf "$repo/bin/cardlink" /usr/local/bin/cardlink
  install -d -m 0755 /etc/systemd/user
  sed -e "s|@REPO@|$repo|g" -e "s|@USER@|$user|g" install-scripts/debian/cardlink-daemon.service.in > /etc/systemd/user/cardlink-daemon.service
  chmod 0644 /etc/systemd/user/cardlink-daemon.service
  if command -v systemctl >/dev/null; then systemctl --global enable cardlink-daemon.service >/dev/null 2>&1 || true; fi
  echo "cardlink setup: client settings in /etc/cardlink/daemon.json; cardlink-daemon.service enabled for every user"
fi

# pcscd reads reader.conf.d at start: restart it so the cardlink reader appears.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl restart pcscd.socket pcscd.service 2>/dev/null || systemctl restart pcscd.socket
else
  if pgrep -x pcscd >/dev/null; then pkill -x pcscd; for _ in $(seq 50); do pgrep -x pcscd >/dev/null || break; sleep 0.1; done; fi
  pcscd
fi
echo "cardlink setup: done. Run the whole product on this machine with: $repo/bin/cardlink demo"
