#!/usr/bin/env bash
# Renders a `replay report` HTML file to PNG in headless Chromium, to look at it as a person would.
# Not part of CI. Needs Debian's `chromium` package (apt-get install -y chromium).
#
#   scripts/screenshot-report.sh report.html report.png [WIDTHxHEIGHT]
#
# The report runs no script and fetches nothing, so Chromium is started with the network off.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT, default 1200x6000]" >&2
    exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1200x6000}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    echo "$0: chromium not found (apt-get install -y chromium)" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --proxy-server="127.0.0.1:9" --proxy-bypass-list="<-loopback>" \
    --window-size="${size/x/,}" --screenshot="$out" "file://$html" >/dev/null 2>&1
echo "$out"
