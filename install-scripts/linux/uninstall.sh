#!/usr/bin/env bash
# Removes what install-scripts/linux/install.sh installed, as listed in its manifest
# (/var/lib/cardlink-install/manifest): the application, the `cardlink` link, the reader driver's
# registration, the client config it wrote, the units and the autostart entry. Users' data (device
# keys, logs, per-user config) and the server's state directory stay unless --purge.
#
#   sudo /opt/cardlink/install-scripts/linux/uninstall.sh [--purge] [--dry-run] [--silent]
#
# Exit codes: 0 removed (or nothing was installed), 2 bad parameter, 3 not root, 7 a step failed.
set -euo pipefail
STATE=/var/lib/cardlink-install
MANIFEST=$STATE/manifest
PREFIX=/opt/cardlink

purge=0 dry=0 silent=0 package=0
fail() { local code=$1; shift; echo "cardlink uninstall: error: $*" >&2; exit "$code"; }
say() { [ "$silent" = 1 ] || echo "cardlink uninstall: $*"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1 ;;
    --dry-run) dry=1 ;;
    --silent) silent=1 ;;
    # From the .deb's prerm: dpkg removes /opt/cardlink; the config stays until purge (postrm).
    --package) package=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) fail 2 "unknown parameter '$1' (--purge, --dry-run, --silent)" ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || fail 3 "run as root (sudo $0)"
# Without a manifest there is nothing of ours to remove, but --purge still removes users' data
# (after an uninstall without it).
if [ ! -f "$MANIFEST" ]; then
  say "no $MANIFEST: nothing installed by install.sh to remove"
  entries=()
else
  # A copy: the manifest itself is in the list.
  mapfile -t entries < "$MANIFEST"
fi

remove() {
  if [ "$dry" = 1 ]; then say "would remove: $1"; return 0; fi
  rm -rf -- "$1" || fail 7 "could not remove $1"
  say "removed: $1"
}

# Stop what runs from the files first: the server (a system service) and, where systemd runs,
# every user's daemon comes down at their next logout; `systemctl --global disable` needs no
# session.
if [ "$dry" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  if [ -f /etc/systemd/system/cardlink-server.service ]; then
    systemctl disable --now cardlink-server.service >/dev/null 2>&1 || true
  fi
fi

# The restart script goes with /opt/cardlink: keep a copy for the end.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$(dirname "$(readlink -f "$0")")/restart-pcscd.sh" "$tmp/restart-pcscd.sh" 2>/dev/null || true

reader=0
dirs=()
for path in "${entries[@]}"; do
  case "$path" in
    '') ;;
    */) dirs+=("${path%/}") ;;
    "$PREFIX"|/etc/cardlink/*|"$STATE"/*) if [ "$package" = 1 ]; then continue; elif [ -e "$path" ]; then remove "$path"; fi ;;
    /usr/local/bin/cardlink)
      # Only our link: a cardlink of the checkout's setup.sh or another install is left alone.
      if [ -L "$path" ] && [ "$(readlink "$path")" = "$PREFIX/bin/cardlink" ]; then remove "$path"; fi ;;
    /etc/reader.conf.d/*) if [ -e "$path" ]; then remove "$path"; reader=1; fi ;;
    *) if [ -e "$path" ] || [ -L "$path" ]; then remove "$path"; fi ;;
  esac
done
# Directories the install created, deepest first, when nothing else is in them.
for dir in $([ "${#dirs[@]}" = 0 ] || printf '%s\n' "${dirs[@]}" | sort -r); do
  if [ -d "$dir" ] && [ -z "$(ls -A "$dir")" ]; then remove "$dir"; fi
done

if [ "$purge" = 1 ]; then
  # Users' cardlink data: device key files, logs, their own config. A device key in the desktop
  # keyring stays in the keyring (it is the user's; the card server can revoke the device).
  # As root in a directory the user controls: only a real directory at exactly that place (no
  # symlink anywhere under the home, which could point root's rm at /etc) owned by that user.
  while IFS=: read -r _ _ uid _ _ home _; do
    [ "$uid" -ge 1000 ] || [ "$uid" = 0 ] || continue
    home_real=$(cd "$home" 2>/dev/null && pwd -P) || continue
    for sub in .local/state/cardlink .config/cardlink; do
      d="$home/$sub"
      [ -d "$d" ] || continue
      real=$(cd "$d" 2>/dev/null && pwd -P) || continue
      if [ "$real" = "$home_real/$sub" ] && [ ! -L "$d" ] && [ "$(stat -c %u "$d")" = "$uid" ]; then
        remove "$real"
      else
        say "left alone: $d (not a directory of its user's own at that place)"
      fi
    done
  done < <(getent passwd)
  if [ -d /var/lib/cardlink-server ]; then remove /var/lib/cardlink-server; fi
  if getent passwd cardlink-server >/dev/null; then
    if [ "$dry" = 1 ]; then say "would remove: user cardlink-server"; else userdel cardlink-server && say "removed: user cardlink-server"; fi
  fi
  if [ -d /etc/cardlink ] && [ -z "$(ls -A /etc/cardlink)" ]; then remove /etc/cardlink; fi
fi

if [ "$reader" = 1 ] && [ "$dry" = 0 ]; then
  bash "$tmp/restart-pcscd.sh" || say "pcscd was not restarted: restart it (or reboot) to drop the cardlink reader"
fi
if [ "$purge" = 1 ]; then say "done (users' cardlink data purged)"; else say "done (users' cardlink data kept; --purge removes it)"; fi
