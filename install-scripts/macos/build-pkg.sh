#!/bin/bash
# Builds cardlink-client.pkg with pkgbuild (on a Mac; NOT tested: no Mac here). The payload is a
# staged client tree in /usr/local/cardlink and the `cardlink` link; postinstall runs install.sh
# --package with the admin's preseed /etc/cardlink/install.conf (as the Linux .deb), so an MDM
# (Jamf, Intune) pushes the pkg and that file.
#
#   bash install-scripts/macos/build-pkg.sh <output directory>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: build-pkg.sh <output directory>}
command -v pkgbuild >/dev/null || { echo "build-pkg: pkgbuild (Xcode command line tools) is needed" >&2; exit 4; }
version=$(node -p 'require(process.argv[1]).version' "$repo/package.json")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$repo/install-scripts/linux/stage.sh" client "$work/root/usr/local/cardlink"
install -d "$work/root/usr/local/bin" "$work/scripts"
ln -s /usr/local/cardlink/bin/cardlink "$work/root/usr/local/bin/cardlink"
cat > "$work/scripts/postinstall" <<'POST'
#!/bin/bash
# pkg postinstall: the install steps with the settings of /etc/cardlink/install.conf, if any.
set -e
set -- --package
if [ -f /etc/cardlink/install.conf ]; then
  value() { sed -n "s/^$1=//p" /etc/cardlink/install.conf | tail -1; }
  for pair in server-url:CARDLINK_SERVER_URL issuer:CARDLINK_ISSUER client-id:CARDLINK_CLIENT_ID ca-file:CARDLINK_CA_FILE vpcd-port:CARDLINK_VPCD_PORT; do
    v=$(value "${pair#*:}")
    if [ -n "$v" ]; then set -- "$@" "--${pair%%:*}" "$v"; fi
  done
fi
exec /usr/local/cardlink/install-scripts/macos/install.sh "$@"
POST
chmod 0755 "$work/scripts/postinstall"
install -d "$out"
pkgbuild --root "$work/root" --scripts "$work/scripts" --identifier org.cardlink.client \
  --version "$version" --install-location / "$out/cardlink-client-$version.pkg"
echo "$out/cardlink-client-$version.pkg"
