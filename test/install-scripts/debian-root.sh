#!/usr/bin/env bash
# Builds (once) a clean Debian 12 root with debootstrap for the install test and prints the path of
# its tarball. The tarball is cached: later runs, and every test of the same CI run, reuse it.
#
#   bash test/install-scripts/debian-root.sh   ->  /var/cache/cardlink-test/debian12-root-<key>.tar
#
# CARDLINK_TEST_CACHE  the cache directory (default /var/cache/cardlink-test)
# DEBIAN_MIRROR        the mirror debootstrap reads (default http://deb.debian.org/debian)
#
# The root carries what a Debian 12 desktop that runs cardlink has before cardlink is installed:
# pcscd and OpenSC (the install's Debian dependencies, so that the test does not depend on the mirror
# twice) and systemd (for `systemctl --global enable`; no systemd runs inside the chroot).
set -euo pipefail
cache=${CARDLINK_TEST_CACHE:-/var/cache/cardlink-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
include="pcscd,libpcsclite1,opensc,ca-certificates,procps,systemd"
# The key changes when the package list changes, so a stale root is never reused.
key=$(printf '%s' "bookworm $include" | sha256sum | cut -c1-12)
tarball="$cache/debian12-root-$key.tar"
if [ ! -f "$tarball" ]; then
  [ "$(id -u)" = 0 ] || { echo "debian-root: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "debian-root: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  install -d -m 0755 "$cache"
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include="$include" bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # Do not keep the downloaded .debs in the tarball.
  rm -rf "$work/root/var/cache/apt/archives/"*.deb
  tar -C "$work/root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
echo "$tarball"
