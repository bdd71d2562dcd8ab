#!/usr/bin/env bash
# Renders a `pocketmoe bench --report` file in headless Chromium (Debian's `chromium`) and saves
# a PNG screenshot, to check the report in a real browser. Network access is disabled: the
# report must be self-contained.
# Usage: bench/report-screenshot.sh REPORT.html [OUT.png] [WIDTHxHEIGHT, default 1280x2400]
set -euo pipefail
REPORT="$(realpath "$1")"
OUT="$(realpath -m "${2:-${1%.html}.png}")"
SIZE="${3:-1280x2400}"
command -v chromium >/dev/null || { echo "needs chromium: apt-get install chromium" >&2; exit 1; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --proxy-server="127.0.0.1:9" \
  --window-size="${SIZE/x/,}" --screenshot="$OUT" "file://$REPORT" 2>/dev/null
test -s "$OUT"
echo "$OUT"
