#!/usr/bin/env bash
# Gate a TensorFlow upgrade of this repository: a wrapper around `pytest-convergence gate`, which
# builds a virtual environment for each version (pytest-convergence installed from this checkout
# with its own declared dependencies, under constraints.txt less its TensorFlow and Keras pins),
# trains the suite in both, compares the results and writes the verdict, a markdown summary and an
# HTML report. See `pytest-convergence gate --help`.
#
#   tools/upgrade_gate.sh OLD NEW [OUT] [OPTION...]    e.g. tools/upgrade_gate.sh 2.19.0 2.21.0
#
# OUT defaults to docs/gate-OLD-to-NEW; OPTIONs go to the command as they are (--dry-run prints
# every command it would run and runs none). The environment variables of earlier versions of this script
# still work, each as the option of the command it maps to:
#   KERAS_OLD / KERAS_NEW      --keras-old / --keras-new   pin Keras next to each TensorFlow
#   VENV_OLD / VENV_NEW        --venv-old / --venv-new     reuse existing environments as they are
#   SUITE                      --suite                     what to train (default: fixtures)
#   REPEAT                     --repeat                    sessions per version (default: 3)
#   PACKAGE                    --package                   default: tensorflow-cpu
#   PLOTS                      --plot, once per name       case[dtype] names to draw into OUT
#   RESULTS_OLD / RESULTS_NEW  --results-old / --results-new   reuse a results file, train nothing
# For Keras 2 on TensorFlow 2.16+, give a VENV_* with tf-keras installed and export
# TF_USE_LEGACY_KERAS=1 (it then applies to both sides).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: tools/upgrade_gate.sh OLD NEW [OUT] [OPTION...]"
old="${1:?$usage}"
new="${2:?$usage}"
out="docs/gate-$old-to-$new"
shift 2
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  out="$1"
  shift
fi

args=(gate "$old" "$new" --out "$out" --constraints constraints.txt)
[ -z "${SUITE:-}" ] || args+=(--suite "$SUITE")
[ -z "${REPEAT:-}" ] || args+=(--repeat "$REPEAT")
[ -z "${PACKAGE:-}" ] || args+=(--package "$PACKAGE")
[ -z "${KERAS_OLD:-}" ] || args+=(--keras-old "$KERAS_OLD")
[ -z "${KERAS_NEW:-}" ] || args+=(--keras-new "$KERAS_NEW")
[ -z "${VENV_OLD:-}" ] || args+=(--venv-old "$VENV_OLD")
[ -z "${VENV_NEW:-}" ] || args+=(--venv-new "$VENV_NEW")
[ -z "${RESULTS_OLD:-}" ] || args+=(--results-old "$RESULTS_OLD")
[ -z "${RESULTS_NEW:-}" ] || args+=(--results-new "$RESULTS_NEW")
set -f  # PLOTS is split on spaces, and its names are not globs: 'spirals[float64]'
for name in ${PLOTS:-}; do
  args+=(--plot "$name")
done
set +f

python=python3
[ ! -x .venv/bin/python ] || python=.venv/bin/python
exec "$python" -m pytest_convergence.cli "${args[@]}" "$@"
