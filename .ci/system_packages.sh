#!/usr/bin/env bash
# Debian packages the test suite runs for real, installed when a program is missing
# (make test and make test-postgres call this; idempotent, quiet when all is there).
#   systemd      systemd-socket-activate, systemd-analyze (socket activation, unit files)
#   util-linux   setpriv (running a command as an unprivileged user)
#   chromium     the browser tests (tests/test_browser_*.py), driven by Playwright; never
#                a browser that `playwright install` would download
#   fonts-liberation  Arial's metrics for chromium, so the 1280 px layout test measures
#                what most staff see rather than a wider fallback font
set -euo pipefail

declare -A wanted=(
    [systemd-socket-activate]=systemd
    [systemd-analyze]=systemd
    [setpriv]=util-linux
    [chromium]=chromium
)

missing=()
for program in "${!wanted[@]}"; do
    command -v "${program}" >/dev/null 2>&1 || missing+=("${wanted[${program}]}")
done
[[ -d /usr/share/fonts/truetype/liberation ]] || missing+=(fonts-liberation)
[[ ${#missing[@]} -eq 0 ]] && exit 0

packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [[ $(id -u) -ne 0 ]]; then
    echo "The tests need these Debian packages: ${packages}" >&2
    echo "Install them as root: apt-get update && apt-get install -y ${packages}" >&2
    exit 1
fi
echo "Installing Debian packages for the tests: ${packages}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends ${packages} >/dev/null
