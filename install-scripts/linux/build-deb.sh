#!/usr/bin/env bash
# Builds a .deb from this checkout (built, with node_modules) for admins who push packages:
#
#   bash install-scripts/linux/build-deb.sh <client|server|full> <output directory>
#
# cardlink-client  daemon, tray, CLI and the reader driver; not the server's native modules
# cardlink-server  the card server; not pcsclite, the tray or the reader driver
# cardlink         both (one machine that is client and server, e.g. a demo)
# They all own /opt/cardlink and conflict with each other.
# CARDLINK_STAGED_TREE=<dir>: package that tree (stage.sh <variant> <dir>'s output) instead of staging.
#
# The maintainer scripts run the same steps as install.sh / uninstall.sh (those scripts, shipped
# in the package). Settings: put them in /etc/cardlink/install.conf before the first install
# (docs/install.md, "Debian package"); an upgrade keeps the config that is there.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo=$(cd "$here/../.." && pwd)
variant=${1:-}
out=${2:-}
die() { echo "cardlink build-deb: $*" >&2; exit 2; }
case "$variant" in
  client) name=cardlink-client; others="cardlink, cardlink-server"; depends="pcscd, libpcsclite1, opensc" ;;
  server) name=cardlink-server; others="cardlink, cardlink-client"; depends="passwd" ;;
  full) name=cardlink; others="cardlink-client, cardlink-server"; depends="pcscd, libpcsclite1, opensc, passwd" ;;
  *) die "usage: build-deb.sh <client|server|full> <output directory>" ;;
esac
[ -n "$out" ] || die "usage: build-deb.sh <client|server|full> <output directory>"
version=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/pkg
if [ -n "${CARDLINK_STAGED_TREE:-}" ]; then
  # A tree stage.sh made earlier from this checkout (the tests share one, staging takes a while).
  grep -q "\"cardlinkVariant\": \"$variant\"" "$CARDLINK_STAGED_TREE/package.json" 2>/dev/null ||
    die "CARDLINK_STAGED_TREE=$CARDLINK_STAGED_TREE is not a staged $variant tree (stage.sh $variant <dir>)"
  install -d "$pkg/opt"
  cp -a "$CARDLINK_STAGED_TREE" "$pkg/opt/cardlink"
else
  bash "$here/stage.sh" "$variant" "$pkg/opt/cardlink"
fi
install -d -m 0755 "$pkg/usr/bin" "$pkg/DEBIAN"
ln -s /opt/cardlink/bin/cardlink "$pkg/usr/bin/cardlink"

# Node.js is a prerequisite, not a dependency: Debian 12's nodejs is 18, and admins install 20+
# from NodeSource or a tarball (/usr/local/bin/node), which dpkg cannot see. preinst checks it.
cat > "$pkg/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: cardlink project <root@localhost>
Section: utils
Priority: optional
Depends: $depends
Conflicts: $others
Installed-Size: $(du -sk "$pkg" | cut -f1)
Description: virtual PIV smart cards on a remote card server ($variant)
 cardlink puts the PIV cards a user holds on a remote card server into the
 local PC/SC reader. Needs Node.js 20.19 or later on the PATH.
EOF

# The maintainer scripts (deb/, checked by shellcheck like every script here).
install -m 0755 "$here/deb/preinst" "$here/deb/prerm" "$here/deb/postrm" "$pkg/DEBIAN/"
sed -e "s|@VARIANT@|$variant|" "$here/deb/postinst.in" > "$pkg/DEBIAN/postinst"
chmod 0755 "$pkg/DEBIAN/preinst" "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

install -d "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$pkg" "$deb" >/dev/null
echo "$deb"
