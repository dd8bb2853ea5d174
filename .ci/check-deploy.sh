#!/usr/bin/env bash
# CI: the deployment files are checked like code.
#   - shellcheck on every shell script in the tree (*.sh and files whose first line names sh/bash),
#     the .deb's maintainer scripts included;
#   - systemd-analyze verify on every unit template, filled in the way install.sh fills it, with any
#     warning counted as a failure (verify itself exits 0 on unknown keys);
#   - the server unit's exposure (systemd-analyze security --offline) at most SERVER_EXPOSURE_MAX.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
repo=$(pwd)
# The server unit's exposure score x10 (1.3 when this was written); a change that weakens the
# sandbox fails here instead of passing unnoticed.
SERVER_EXPOSURE_MAX=13

mapfile -t scripts < <(git ls-files | while read -r f; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sh) echo "$f" ;;
    *) if head -n1 "$f" 2>/dev/null | grep -qE '^#!(/usr/bin/env )?(/bin/)?(ba|da)?sh\b'; then echo "$f"; fi ;;
  esac
done)
shellcheck -x "${scripts[@]}"
echo "check-deploy: shellcheck passed on ${#scripts[@]} scripts"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
install -d -m 0700 "$work/runtime"
units=0
while read -r template; do
  kind=system
  dir="$work/$(dirname "$template")"
  install -d "$dir"
  unit="$dir/$(basename "$template" .in)"
  # bin/cardlink of this checkout stands in for /opt/cardlink's (verify checks ExecStart exists).
  sed -e "s|@PREFIX@|$repo|g" -e "s|@REPO@|$repo|g" -e "s|@USER@|cardlink-server|g" "$template" > "$unit"
  if grep -q '^WantedBy=default.target' "$unit"; then kind=user; fi
  if [ "$kind" = user ]; then
    out=$(XDG_RUNTIME_DIR="$work/runtime" systemd-analyze --user verify --man=no "$unit" 2>&1) || { echo "$out" >&2; exit 1; }
  else
    out=$(systemd-analyze verify --man=no "$unit" 2>&1) || { echo "$out" >&2; exit 1; }
  fi
  if [ -n "$out" ]; then echo "check-deploy: systemd-analyze verify $template:" >&2; echo "$out" >&2; exit 1; fi
  units=$((units + 1))
done < <(git ls-files '*.service.in' '*.service')
echo "check-deploy: systemd-analyze verify passed on $units units"

server="$work/install-scripts/linux/cardlink-server.service"
systemd-analyze security --offline=yes --threshold="$SERVER_EXPOSURE_MAX" "$server" >/dev/null 2>&1 || {
  systemd-analyze security --offline=yes "$server" | tail -1 >&2
  echo "check-deploy: the server unit's exposure is above $SERVER_EXPOSURE_MAX/10" >&2
  exit 1
}
echo "check-deploy: server unit exposure $(systemd-analyze security --offline=yes "$server" 2>/dev/null | tail -1 | grep -oE '[0-9]+\.[0-9]+' | head -1) (max $SERVER_EXPOSURE_MAX/10)"
