#!/usr/bin/env bash
# Gate a TensorFlow upgrade for real: two virtual environments, the bundled catalogue trained in
# each, both results files compared into one verdict, a markdown summary and an HTML report.
#
#   scripts/upgrade_gate.sh OLD NEW [OUT]        e.g. scripts/upgrade_gate.sh 2.19.0 2.21.0
#
# Environment: KERAS_OLD / KERAS_NEW pin Keras next to each TensorFlow (default: what pip picks),
# VENV_OLD / VENV_NEW reuse existing environments, SUITE (default: fixtures), REPEAT (sessions per
# version, default 3, alternating old and new; their histories must be bit-identical and the
# gate compares the fastest timing of each run), PACKAGE (default: tensorflow-cpu), PLOTS
# (case[dtype] names whose old and new curves to draw into OUT/case-dtype.png).
# RESULTS_OLD / RESULTS_NEW reuse a results file already trained on this machine instead of training
# (e.g. one 2.21.0 run judged against two old versions).
# For Keras 2 on TensorFlow 2.16+, give a VENV_* with tf-keras installed and export
# TF_USE_LEGACY_KERAS=1 (it then applies to both sides).
set -euo pipefail
cd "$(dirname "$0")/.."
old="${1:?usage: scripts/upgrade_gate.sh OLD NEW [OUT]}"
new="${2:?usage: scripts/upgrade_gate.sh OLD NEW [OUT]}"
out="${3:-docs/gate-$old-to-$new}"
suite="${SUITE:-fixtures}"
package="${PACKAGE:-tensorflow-cpu}"
repeat="${REPEAT:-3}"
mkdir -p "$out" .gate

environment() {  # version keras_pin existing_venv -> prints the venv path
  local version="$1" keras="$2" venv="$3"
  if [ -z "$venv" ]; then
    venv=".gate/venv-$package-$version${keras:+-keras-$keras}"
    if [ ! -x "$venv/bin/python" ]; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet "$package==$version" ${keras:+"keras==$keras"} \
        pytest syrupy pytest-benchmark matplotlib >&2
      "$venv/bin/pip" install --quiet --no-deps -e . >&2
    fi
  fi
  echo "$venv"
}

session() {  # venv version k -> one session's results file
  local venv="$1" version="$2" k="$3"
  local part=".gate/results-$version-$k.json" log="$out/pytest-$version.log"
  [ "$k" = 1 ] || log=".gate/pytest-$version-$k.log"
  echo "== session $k of $repeat: $suite on $package $version ($venv)" >&2
  # Test failures (an expectation or a snapshot that no longer holds) do not stop the gate: the
  # results file records them and the comparison decides. A missing results file does stop it.
  rm -f "$part"
  "$venv/bin/python" -m pytest "$suite" --convergence -q -p no:cacheprovider --snapshot-warn-unused \
    --convergence-results="$part" >"$log" 2>&1 || true
  tail -n 1 "$log" >&2
  [ -s "$part" ] || { echo "no results from $version: see $log" >&2; exit 2; }
}

combine() {  # venv version [reused results]: the sessions' timings pooled into one results file
  local venv="$1" version="$2" reuse="${3:-}"
  local results="$out/results-$version.json"
  if [ -n "$reuse" ]; then
    [ "$reuse" -ef "$results" ] || cp "$reuse" "$results"
    return
  fi
  local parts=()
  for k in $(seq 1 "$repeat"); do parts+=(".gate/results-$version-$k.json"); done
  "$venv/bin/pytest-convergence" merge --repeats "$results" "${parts[@]}" >&2
}

venv_old="$(environment "$old" "${KERAS_OLD:-}" "${VENV_OLD:-}")"
venv_new="$(environment "$new" "${KERAS_NEW:-}" "${VENV_NEW:-}")"
# Sessions alternate between the versions, so a stretch of load on a shared machine slows both
# sides alike, and each case's timings are minutes apart rather than back to back.
for k in $(seq 1 "$repeat"); do
  [ -n "${RESULTS_OLD:-}" ] || session "$venv_old" "$old" "$k"
  [ -n "${RESULTS_NEW:-}" ] || session "$venv_new" "$new" "$k"
done
combine "$venv_old" "$old" "${RESULTS_OLD:-}"
combine "$venv_new" "$new" "${RESULTS_NEW:-}"
plots=()
for name in ${PLOTS:-}; do
  file="${name//[/-}"
  plots+=(--plot "$name" "$out/${file//]/}.png")
done
status=0
"$venv_new/bin/pytest-convergence" compare "$out/results-$old.json" "$out/results-$new.json" \
  --markdown "$out/verdict.md" --html "$out/report.html" "${plots[@]}" | tee "$out/verdict.txt" || status=$?
echo "verdict: $out/verdict.md, report: $out/report.html (exit $status)"
exit "$status"
