#!/usr/bin/env bash
# Installs Postfix (Debian/Ubuntu package "postfix") for the benchmark and the LMTP test:
# the load client smtp-source, and the server that benchmarks/run.py and
# tests/test_postfix_lmtp.py start as private instances (own config, queue and ports in
# a temporary folder), without configuring, starting or enabling the system's mail server:
#   - debconf is preseeded with "No configuration" (no main.cf is written);
#   - a temporary policy-rc.d (exit 101) keeps the package scripts from starting the
#     service, unless the system already has one;
#   - the systemd unit the package enables is disabled again (no Postfix on port 25 at
#     the next boot), and stopped if systemd runs;
#   - afterwards, any Postfix master process is stopped (there should be none).
# Needs root (or sudo). Does nothing if Postfix is already installed (a Postfix the
# system already had is left exactly as it was).
set -euo pipefail

have_postfix() {
    [ -x /usr/sbin/postfix ] && { command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ]; }
}

if have_postfix; then
    echo "postfix already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_postfix.sh: needs root or sudo to install Postfix" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install_postfix.sh: no apt-get; install Postfix (postfix, smtp-source) by hand" >&2
    exit 1
}

POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=""
cleanup() {
    if [ -n "$CREATED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, benchmarks/install_postfix.sh: start no services\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    CREATED_POLICY=1
fi

echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix

# The package enables its systemd unit even when policy-rc.d keeps it from starting:
# disable it (and stop it where systemd runs), so no Postfix binds port 25 at boot.
if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable postfix.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl stop postfix.service >/dev/null 2>&1 || true
    fi
    state=$(systemctl is-enabled postfix.service 2>/dev/null || true)
    if [ "$state" = "enabled" ]; then
        echo "install_postfix.sh: could not disable postfix.service" >&2
        exit 1
    fi
fi

# No Postfix daemon may be left running: stop the master process if one was started.
for pid in $(pgrep -x master || true); do
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "/usr/lib/postfix/sbin/master" ]; then
        echo "stopping Postfix master process $pid"
        $SUDO postfix stop 2>/dev/null || $SUDO kill "$pid"
    fi
done

have_postfix || {
    echo "install_postfix.sh: the postfix package is installed but postfix or smtp-source is missing" >&2
    exit 1
}
echo "postfix installed (no service enabled or running): /usr/sbin/postfix, /usr/sbin/smtp-source"
