#!/usr/bin/env bash
# Render a refract HTML report in headless Chromium (Debian's `chromium` package) and save a
# screenshot, to check how a report looks: light (default) and dark colour schemes.
#   tools/screenshot_report.sh report.html [out-prefix]   → out-prefix-{light,dark}.png
set -euo pipefail
html="$(realpath "$1")"
out="${2:-${html%.html}}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }
for scheme in light dark; do
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --force-prefers-color-scheme="$scheme" --blink-settings=preferredColorScheme="$([ "$scheme" = dark ] && echo 0 || echo 1)" \
    --window-size=1200,3000 --screenshot="$out-$scheme.png" "file://$html" >/dev/null 2>&1
  echo "$out-$scheme.png"
done
