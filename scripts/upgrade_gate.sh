#!/usr/bin/env bash
# Gate a TensorFlow upgrade for real: two virtual environments, the bundled catalogue trained in
# each, both results files compared into one verdict, a markdown summary and an HTML report.
#
#   scripts/upgrade_gate.sh OLD NEW [OUT]        e.g. scripts/upgrade_gate.sh 2.19.0 2.21.0
#
# Environment: KERAS_OLD / KERAS_NEW pin Keras next to each TensorFlow (default: what pip picks),
# VENV_OLD / VENV_NEW reuse existing environments, SUITE (default: fixtures), REPEAT (timings per
# run, default 3; the gate compares the fastest), PACKAGE (default: tensorflow-cpu), PLOTS
# (case[dtype] names whose old and new curves to draw into OUT/case-dtype.png).
# For Keras 2 on TensorFlow 2.16+, give a VENV_* with tf-keras installed and export
# TF_USE_LEGACY_KERAS=1 (it then applies to both sides).
set -euo pipefail
cd "$(dirname "$0")/.."
old="${1:?usage: scripts/upgrade_gate.sh OLD NEW [OUT]}"
new="${2:?usage: scripts/upgrade_gate.sh OLD NEW [OUT]}"
out="${3:-docs/gate-$old-to-$new}"
suite="${SUITE:-fixtures}"
package="${PACKAGE:-tensorflow-cpu}"
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

train() {  # venv version -> results file
  local venv="$1" version="$2"
  local results="$out/results-$version.json"
  echo "== training $suite on $package $version ($venv)" >&2
  # Test failures (an expectation or a snapshot that no longer holds) do not stop the gate: the
  # results file records them and the comparison decides. A missing results file does stop it.
  rm -f "$results"
  "$venv/bin/python" -m pytest "$suite" --convergence -q -p no:cacheprovider --snapshot-warn-unused \
    --convergence-repeat="${REPEAT:-3}" --convergence-results="$results" >"$out/pytest-$version.log" 2>&1 || true
  tail -n 3 "$out/pytest-$version.log" >&2
  [ -s "$results" ] || { echo "no results from $version: see $out/pytest-$version.log" >&2; exit 2; }
}

venv_old="$(environment "$old" "${KERAS_OLD:-}" "${VENV_OLD:-}")"
venv_new="$(environment "$new" "${KERAS_NEW:-}" "${VENV_NEW:-}")"
train "$venv_old" "$old"
train "$venv_new" "$new"
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
