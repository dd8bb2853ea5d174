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
[ "$slots" -ge 1 ] && [ "$slots" -le 8 ] || die "CARDLINK_SLOTS must be a number from 1 to 8 (got '$slots')"

install -d -m 0755 "$prefix"
install -m 0644 daemon/ifd-handler/build/libifd-cardlink.so "$prefix/libifd-cardlink.so"
install -d -m 0755 /etc/reader.conf.d
sed -e "s|@SOCKET@|/run/cardlink/bridge.sock|" -e "s|@SLOTS@|$slots|" -e "s|@UID@|$uid|" \
    -e "s|@LIBPATH@|$prefix/libifd-cardlink.so|" daemon/ifd-handler/reader.conf.in > /etc/reader.conf.d/cardlink
chmod 0644 /etc/reader.conf.d/cardlink
echo "cardlink setup: reader driver registered in /etc/reader.conf.d/cardlink (slots: $slots, user: $user)"

# pcscd reads reader.conf.d at start: restart it so the cardlink reader appears.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl restart pcscd.socket pcscd.service 2>/dev/null || systemctl restart pcscd.socket
else
  if pgrep -x pcscd >/dev/null; then pkill -x pcscd; for _ in $(seq 50); do pgrep -x pcscd >/dev/null || break; sleep 0.1; done; fi
  pcscd
fi
echo "cardlink setup: done. Serve a local card with: $repo/bin/cardlink local-card --with-keys"
