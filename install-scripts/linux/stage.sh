#!/usr/bin/env bash
# Lays out what goes to /opt/cardlink from a built checkout, with only production dependencies:
#
#   bash install-scripts/linux/stage.sh <full|client|server> <destination directory>
#
# full    everything (daemon, tray, server, demo)
# client  daemon, tray and CLI: no server database drivers or key-provider modules
#         (better-sqlite3, pg, pkcs11js, oidc-provider, kysely are left out)
# server  the card server and its admin commands: no pcsclite, no tray, no reader driver
#
# The checkout must be built (npm run build) and have its node_modules (npm ci). The destination
# is emptied first. Nothing here needs the network: the production tree is the checkout's
# node_modules pruned by npm against a package.json without the variant's excluded packages.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo=$(cd "$here/../.." && pwd)
variant=${1:-}
dest=${2:-}
die() { echo "cardlink stage: $*" >&2; exit 2; }
case "$variant" in full|client|server) ;; *) die "usage: stage.sh <full|client|server> <destination>";; esac
[ -n "$dest" ] || die "usage: stage.sh <full|client|server> <destination>"
[ -f "$repo/dist/bin/main.js" ] || die "not built: run 'npm run build' in $repo"
[ -d "$repo/node_modules" ] || die "no node_modules in $repo: run 'npm ci'"

# Packages only the server loads (database drivers, PKCS#11 key provider, the demo IdP) and only
# the client loads (the PC/SC binding, the tray's icon helper).
server_only="better-sqlite3 pg pkcs11js kysely oidc-provider"
client_only="pcsclite systray2 @napi-rs/keyring @homebridge/dbus-native"
case "$variant" in
  full) drop="" ;;
  client) drop=$server_only ;;
  server) drop=$client_only ;;
esac

rm -rf "$dest"
install -d -m 0755 "$dest"
cd "$repo"
cp -a bin "$dest/bin"
rm -f "$dest/bin/"*.ts
# Compiled code without tests, benchmarks, fuzzers and source maps (the .ts sources are not shipped).
tar -C dist --exclude=./test --exclude=./bench --exclude=./fuzz --exclude='*.map' -cf - . |
  (install -d "$dest/dist" && tar -C "$dest/dist" -xf -)
# The project's own native addons (each <part>/.../native/build/*.node, loaded by a path relative to
# the tree): the daemon's only for a client.
while IFS= read -r addon; do
  case "$addon" in daemon/*) [ "$variant" != server ] || continue ;; esac
  install -d "$dest/$(dirname "$addon")"
  install -m 0644 "$addon" "$dest/$addon"
done < <(find apdu daemon protocol server -path '*/native/build/*.node' -type f | sort)
if [ "$variant" != server ]; then
  install -d "$dest/daemon/ifd-handler/build"
  install -m 0644 daemon/ifd-handler/build/libifd-cardlink.so "$dest/daemon/ifd-handler/build/"
  install -m 0644 daemon/ifd-handler/reader.conf.in "$dest/daemon/ifd-handler/"
fi
# The install scripts travel with the tree (the .deb's and .pkg's maintainer steps, uninstall).
install -d "$dest/install-scripts"
cp -a install-scripts/linux install-scripts/macos "$dest/install-scripts/"
install -d "$dest/docs"
cp -a docs/install.md "$dest/docs/" 2>/dev/null || true
cp -a package.json package-lock.json "$dest/"
[ ! -f LICENSE ] || cp -a LICENSE "$dest/"

# Production dependencies: copy, then let npm remove dev packages and the variant's excluded ones
# (and whatever only they pulled in).
cp -a node_modules "$dest/node_modules"
(cd "$dest" && DROP="$drop" node -e '
  const fs = require("fs"), p = JSON.parse(fs.readFileSync("package.json", "utf8"));
  for (const name of (process.env.DROP || "").split(" ").filter(Boolean)) delete p.dependencies[name];
  delete p.devDependencies; delete p.scripts;
  p.cardlinkVariant = process.argv[1];
  fs.writeFileSync("package.json", JSON.stringify(p, null, 2) + "\n");' "$variant" &&
  npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null &&
  rm -f package-lock.json)
# npm re-extracts some packages while pruning (better-sqlite3), without their native build; their
# install scripts would compile it again (minutes for SQLite), so they are skipped above and the
# checkout's build is copied back for every package that is still there and lost it.
while IFS= read -r build; do
  pkg_dir=$(dirname "$build")
  if [ -d "$dest/$pkg_dir" ] && [ ! -e "$dest/$build" ]; then cp -a "$build" "$dest/$build"; fi
done < <(find node_modules/ -mindepth 2 -maxdepth 3 -type d -name build | sed 's|^node_modules//*|node_modules/|' | sort)
# Build leftovers of native modules that are not needed at run time.
find "$dest/node_modules" -depth \( -name '*.o' -o -name '*.a' -o -name obj.target -o -name '.deps' \) -exec rm -rf {} +
# Reproducible modes: files readable by all, nothing group/other-writable.
chmod -R u+rwX,go+rX,go-w "$dest"
