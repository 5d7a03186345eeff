#!/usr/bin/env bash
# Installs Postfix (Debian/Ubuntu package "postfix") for the benchmark: its load client
# smtp-source, and the server run.py starts as a private instance ("postfix" column, its
# own config and queue in a temporary folder), without configuring or starting the
# system's mail server:
#   - debconf is preseeded with "No configuration" (no main.cf is written);
#   - a temporary policy-rc.d (exit 101) keeps the package scripts from starting the
#     service, unless the system already has one;
#   - afterwards, any Postfix master process is stopped (there should be none).
# Needs root (or sudo). Does nothing if smtp-source is already installed.
set -euo pipefail

if command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ]; then
    echo "smtp-source already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_smtp_source.sh: needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install_smtp_source.sh: no apt-get; install Postfix's smtp-source by hand" >&2
    exit 1
}

POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=""
cleanup() {
    if [ -n "$CREATED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, benchmarks/install_smtp_source.sh: start no services\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    CREATED_POLICY=1
fi

echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix

# No Postfix daemon may be left running: stop the master process if one was started.
for pid in $(pgrep -x master || true); do
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "/usr/lib/postfix/sbin/master" ]; then
        echo "stopping Postfix master process $pid"
        $SUDO postfix stop 2>/dev/null || $SUDO kill "$pid"
    fi
done

command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ] || {
    echo "install_smtp_source.sh: postfix installed but smtp-source not found" >&2
    exit 1
}
echo "smtp-source installed: /usr/sbin/smtp-source"
