#!/usr/bin/env bash
# Restarts pcscd so that it reads /etc/reader.conf.d again (it does so only at start).
# Under systemd: the socket-activated service is restarted if it is active (a stopped one starts
# on the next client). Without systemd (containers, chroots): the pcscd whose pid file is in this
# root's /run, and only one whose root is this root, is stopped and started again; a pcscd of
# another root or container on the same kernel is never touched.
set -euo pipefail
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl try-restart pcscd.service
  exit 0
fi
pidfile=/run/pcscd/pcscd.pid
[ -f "$pidfile" ] || exit 0
pid=$(tr -dc 0-9 < "$pidfile")
case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
[ -d "/proc/$pid" ] && [ "/proc/$pid/root" -ef / ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pcscd ] || exit 0
kill -TERM "$pid"
for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.05; done
[ ! -d "/proc/$pid" ] || { echo "restart-pcscd: pcscd ($pid) did not stop" >&2; exit 1; }
pcscd
