#!/bin/bash
# Removes what install-scripts/macos/install.sh installed (NOT tested: no Mac here). Users' data
# (~/.local/state/cardlink, ~/.config/cardlink) stays unless --purge. vpcd itself is a
# prerequisite and stays installed; its reader goes back to vsmartcard's default only with --purge.
#
#   sudo /usr/local/cardlink/install-scripts/macos/uninstall.sh [--purge] [--silent]
#
# Exit codes: 0 removed, 2 bad parameter, 3 not root.
set -euo pipefail
purge=0 silent=0
say() { if [ "$silent" = 0 ]; then echo "cardlink uninstall: $*"; fi; }
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    --silent) silent=1 ;;
    *) echo "cardlink uninstall: error: unknown parameter '$arg'" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "cardlink uninstall: error: run as root" >&2; exit 3; }

console_uid=$(stat -f %u /dev/console 2>/dev/null || echo 0)
for agent in daemon tray; do
  if [ "$console_uid" != 0 ]; then launchctl bootout "gui/$console_uid/org.cardlink.$agent" 2>/dev/null || true; fi
  if [ -f "/Library/LaunchAgents/org.cardlink.$agent.plist" ]; then
    rm -f "/Library/LaunchAgents/org.cardlink.$agent.plist"; say "removed /Library/LaunchAgents/org.cardlink.$agent.plist"
  fi
done
if [ "$(readlink /usr/local/bin/cardlink 2>/dev/null || true)" = /usr/local/cardlink/bin/cardlink ]; then
  rm -f /usr/local/bin/cardlink; say "removed /usr/local/bin/cardlink"
fi
for f in /etc/cardlink/daemon.json /etc/cardlink/server-ca.pem /etc/cardlink/install.conf; do
  if [ -f "$f" ]; then rm -f "$f"; say "removed $f"; fi
done
rmdir /etc/cardlink 2>/dev/null || true
if [ -d /usr/local/cardlink ]; then rm -rf /usr/local/cardlink; say "removed /usr/local/cardlink"; fi
pkgutil --pkgs=org.cardlink.client >/dev/null 2>&1 && pkgutil --forget org.cardlink.client >/dev/null

if [ "$purge" = 1 ]; then
  # As root in a directory the user controls: only a real directory at exactly that place (no
  # symlink under the home, which could point root's rm elsewhere) owned by the home's owner.
  for home in /Users/*; do
    home_real=$(cd "$home" 2>/dev/null && pwd -P) || continue
    owner=$(stat -f %u "$home")
    for sub in .local/state/cardlink .config/cardlink; do
      d="$home/$sub"
      [ -d "$d" ] || continue
      real=$(cd "$d" 2>/dev/null && pwd -P) || continue
      if [ "$real" = "$home_real/$sub" ] && [ ! -L "$d" ] && [ "$(stat -f %u "$d")" = "$owner" ]; then
        rm -rf "$real"
        say "removed $d"
      else
        say "left alone: $d (not a directory of its user's own at that place)"
      fi
    done
  done
  plist=/usr/local/libexec/SmartCardServices/drivers/ifd-vpcd.bundle/Contents/Info.plist
  if [ -f "$plist" ]; then /usr/libexec/PlistBuddy -c 'Set :ifdFriendlyName:0 /dev/null:0x8C7B' "$plist" || true; fi
fi
say "done"
