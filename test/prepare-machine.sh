#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (root, Node 20) for the whole test suite: the client set-up,
# the real middleware and services the tests drive, and the services started. Idempotent.
# The tray's tests (test/tray/) run a real X desktop: Xvfb, trayer (tray host), dunst
# (notifications), xdotool and xsetroot, ImageMagick (screenshots), tesseract (to read the menus) and
# xclip (the device sign-in copies its address to the clipboard).
# The browser tests (IdP login, PIN page) drive Debian's chromium with playwright-core.
# Deployment: shellcheck (.ci/check-deploy.sh) and debootstrap (the clean Debian 12 root the install
# test installs into, built here once per machine and cached: test/install-scripts/debian-root.sh).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
export DEBIAN_FRONTEND=noninteractive

packages="pcscd libpcsclite-dev pkg-config make gcc g++ python3 opensc pcsc-tools vsmartcard-vpcd
  yubico-piv-tool softhsm2 libengine-pkcs11-openssl gnutls-bin openssl postgresql openssh-server
  openssh-client dbus-daemon gnome-keyring libglib2.0-bin
  xvfb trayer xdotool x11-utils x11-xserver-utils dunst libayatana-appindicator3-1 imagemagick dbus-x11 xclip
  fonts-dejavu-core tesseract-ocr tesseract-ocr-eng chromium shellcheck debootstrap"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "prepare-machine: installing $(echo "$missing" | tr "\n" " ")"
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# vsmartcard-vpcd's stock reader file makes the system pcscd listen on 0.0.0.0:35963, where any host
# could insert a card. The tests run their own pcscd with their own reader files; take the stock one
# out of the system pcscd's configuration.
if [ -f /etc/reader.conf.d/vpcd ]; then
  dpkg-divert --quiet --local --rename --divert /etc/vpcd.reader.conf.disabled-by-cardlink --add /etc/reader.conf.d/vpcd
fi

CARDLINK_SKIP_APT=1 bash install-scripts/debian/setup.sh

# The install test's Debian 12 root (about 3 minutes the first time, then cached).
bash test/install-scripts/debian-root.sh >/dev/null

# PostgreSQL for the server's tests (127.0.0.1:5432, local trust for the postgres role).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432

# The tests connect as postgres over 127.0.0.1 without a password. A fresh Debian cluster asks for
# one on TCP; on this test machine, trust the postgres role from loopback only.
if ! psql -w -h 127.0.0.1 -U postgres -d postgres -qAt -c 'select 1' >/dev/null 2>&1; then
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  sed -i '1i host all postgres 127.0.0.1/32 trust  # added by cardlink test/prepare-machine.sh' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  sleep 0.5
fi
psql -w -h 127.0.0.1 -U postgres -d postgres -qAt -c 'select 1' >/dev/null
