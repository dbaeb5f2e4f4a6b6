#!/usr/bin/env bash
# Open a convergence-gate HTML report in headless Chromium: check that it loads and take a screenshot.
#
#   tools/check_report.sh REPORT.html OUT.png
#
# Dumps the DOM Chromium built from the page and fails (exit 1) unless it holds the verdict heading
# and exactly one <img> per figure (the report's data-figures count); then saves a screenshot of the
# whole page to OUT.png (exit 1 if Chromium wrote none). Needs /usr/bin/chromium (Debian: apt-get
# install chromium) or $CHROMIUM. Exit 2: bad arguments or no Chromium.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$(realpath -- "$1")
out=$(realpath -m -- "$2")
chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -f $report ]]; then
    echo "error: no report at $1" >&2
    exit 2
fi
if [[ ! -x $chromium ]]; then
    echo "error: $chromium not found: apt-get update && apt-get install -y chromium" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

browse() {
    # A fresh profile each time; no network, no first-run, no background services.
    timeout 90 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d -p "$work")" "$@" "file://$report" 2>>"$work/chromium.log"
}

if ! browse --dump-dom >"$work/dom.html"; then
    echo "error: chromium failed to load $report" >&2
    tail -n 20 "$work/chromium.log" >&2
    exit 1
fi
count() { { grep -o "$1" "$work/dom.html" || true; } | wc -l; }
heading=$(grep -oE '<h1 id="verdict"[^>]*>Convergence gate: <span[^>]*>(PASS|FAIL)</span>' "$work/dom.html" \
    | grep -oE '(PASS|FAIL)</span>' | head -n 1 | cut -d'<' -f1 || true)
declared=$(grep -oE '<body[^>]* data-figures="[0-9]+"' "$work/dom.html" | grep -oE '[0-9]+"$' | tr -d '"' || true)
figures=$(count '<figure')
images=$(count '<img')
problems=()
[[ -n $heading ]] || problems+=("no verdict heading (<h1 id=\"verdict\">Convergence gate: PASS|FAIL)")
[[ -n $declared ]] || problems+=("no data-figures count on <body>")
[[ $figures == "${declared:-?}" ]] || problems+=("$figures <figure> elements, the report declares ${declared:-?}")
[[ $images == "$figures" ]] || problems+=("$images <img> elements for $figures figures")
if ((${#problems[@]})); then
    for problem in "${problems[@]}"; do
        echo "error: $report: $problem" >&2
    done
    exit 1
fi

# Headless Chromium screenshots the window, not the document: make the window as tall as the page
# should be (a summary table, then two figures of about 360 px per line), at least 2400 px.
rows=$figures
height=$((700 + 40 * rows + 360 * ((figures + 1) / 2)))
((height < 2400)) && height=2400
((height > 16000)) && height=16000
rm -f -- "$out"
mkdir -p -- "$(dirname -- "$out")"
browse --hide-scrollbars --screenshot="$out" --window-size="1200,$height" >/dev/null || true
if [[ ! -s $out ]]; then
    echo "error: chromium wrote no screenshot to $out" >&2
    tail -n 20 "$work/chromium.log" >&2
    exit 1
fi
echo "$report: $heading, $figures figures, $images images; screenshot $out (1200x$height)"
