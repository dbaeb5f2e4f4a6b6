#!/usr/bin/env bash
# The catalogue on a GPU against the same machine's CPU, on Keras 3's JAX (and PyTorch) backends:
# what TF32 on and off do to each run's history (docs/gpu.md).
#
#   ./dev gpu --prepare   here (network): the wheels the GPU machine lacks, into build/gpu-wheels
#   ./dev gpu             there: needs python3 with JAX (and/or PyTorch) on CUDA, nothing else
#                         fetched, no TensorFlow; builds nothing but `pip install --no-deps` of
#                         those wheels into a temporary folder
#
# There, each backend's catalogue is trained three times, each session in its own copy of
# fixtures/ (snapshots written there with --snapshot-update, so that missing snapshots or
# another backend's fail nothing): on the GPU with --convergence-tf32=on, on the GPU with
# --convergence-tf32=off, and on the CPU; then `pytest-convergence compare` reads CPU against
# each GPU session. What comes back is written under $OUT (the device tool's folder), else
# build/gpu-out: summary.md, one verdict per comparison and gpu-check.tar.gz (results files,
# logs, comparisons' text).
#
# Settings (environment):
#   GPU_CHECK_BACKENDS  backends to check, of jax and torch (default: those importable)
#   GPU_CHECK_K         the pytest -k expression of every session (default: "float32 or float64";
#                       set and empty: every dtype)
#   GPU_CHECK_JAX_SPECS, GPU_CHECK_TORCH_SPECS  each backend's spec files (default: below)
#   GPU_CHECK_BUDGET    seconds one backend's sessions may take together before they are
#                       interrupted (Ctrl-C: the results file keeps the runs that finished,
#                       marked unfinished) (default: 330 for JAX, 150 for PyTorch)
#   GPU_CHECK_JAX_GPU   JAX_PLATFORMS of the "GPU" sessions (default: cuda, so that a JAX that
#                       finds no GPU fails instead of training on the CPU; cpu: a smoke test here)
#   PYTHON              the interpreter (default: python3)
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=build/gpu-wheels
py="${PYTHON:-python3}"
[[ "$py" == */* ]] && py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # sessions run elsewhere

# JAX: every spec file of the catalogue trains without TensorFlow (all 15 did here with TensorFlow
# hidden from the import path); fixtures/test_keras_io.py is left out (tf.data pipelines).
jax_specs_default="fixtures/*.convergence.toml"
# PyTorch's loop is train_step in a Python loop (not much faster than fit): a few short specs
torch_specs_default="fixtures/linear-regression.convergence.toml fixtures/xor-hidden.convergence.toml fixtures/two-moons.convergence.toml"
# float32, where TF32 acts, and float64 beside it: 30 of the JAX catalogue's 59 runs, about half
# its cost (the whole catalogue took ~480 CPU s in one session here, too long for one device call)
k_default="float32 or float64"

prepare() {
  local here="${PYTHON:-.venv/bin/python}"
  [ -x "$here" ] || here=python3
  rm -rf "$wheels" && mkdir -p "$wheels"
  "$here" -m pip wheel --quiet --no-deps -w "$wheels" . || return 1
  # Keras's requirements, syrupy and pytest-benchmark at the versions tested here; on the
  # machine each is installed only where it is missing, except keras and syrupy (see
  # install_wheels)
  local pins
  pins=$("$here" - <<'EOF'
import importlib.metadata as m
names = ["keras", "namex", "optree", "absl-py", "ml-dtypes", "rich", "h5py", "packaging", "pygments",
         "markdown-it-py", "mdurl", "syrupy", "pytest-benchmark", "py-cpuinfo2", "pytest", "pluggy",
         "iniconfig"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
EOF
) || return 1
  # the GPU machine's python3 is CPython 3.12 on x86-64 (the device tool's KINDS.md)
  # shellcheck disable=SC2086
  "$here" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$wheels" $pins || return 1
  du -sh "$wheels"
  ls "$wheels"
  echo "now run ./dev gpu on the GPU machine with carry: [\"$wheels\"] (docs/gpu.md)"
}

install_wheels() {  # into $site: ours, keras and syrupy always; the rest only where missing
  local wheel name missing=()
  for wheel in "$wheels"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '_' '-' | tr '[:upper:]' '[:lower:]')
    case "$name" in
      pytest-convergence|keras|syrupy) missing+=("$wheel") ;;  # pure Python, at our versions
      pytest|pluggy|iniconfig)  # syrupy 7 needs pytest 8 or later
        "$py" -c "import pytest, sys; sys.exit(int(pytest.__version__.split('.')[0]) < 8)" 2>/dev/null \
          || missing+=("$wheel") ;;
      *) "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null \
           || missing+=("$wheel") ;;
    esac
  done
  echo "installing: ${missing[*]##*/}"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${missing[@]}"
}

session() {  # NAME SPECS EXTRA_PYTEST_ARGS ENV...: one pytest session in its own copy of fixtures/
  local name=$1 specs=$2 extra=$3
  shift 3
  mkdir -p "$work/$name" && cp -r fixtures "$work/$name/"
  local start=$SECONDS
  # shellcheck disable=SC2086
  (cd "$work/$name" && env "$@" timeout --signal=INT --kill-after=20 "$budget" \
    "$py" -m pytest --convergence $specs $extra -p no:cacheprovider --snapshot-update \
    --snapshot-warn-unused --convergence-results="$work/$name.json" -q -W ignore \
    >"$work/$name.log" 2>&1)
  local rc=$?
  echo "| $name | $rc | $((SECONDS - start)) | $(grep -E '(passed|failed|error)' "$work/$name.log" | tail -1) |" \
    >>"$work/sessions.md"
}

compare() {  # BACKEND GPU-SESSION: CPU against one GPU session
  local backend=$1 gpu=$2 stem="$1-cpu-vs-$2"
  [ -s "$work/$backend-cpu.json" ] && [ -s "$work/$backend-$gpu.json" ] || { echo "| $stem | no results |" >>"$work/compares.md"; return; }
  "$py" -m pytest_convergence.cli compare "$work/$backend-cpu.json" "$work/$backend-$gpu.json" \
    --markdown "$work/$stem.md" --speed off >"$work/$stem.txt" 2>&1
  local rc=$?
  # the verdict's title and count ("## Convergence gate: ✅ pass", "(0 of 55 failed)"), then the
  # text's first lines (the sides, and first of all a TF32 difference where there is one)
  echo "| $stem | $rc | $(head -1 "$work/$stem.md" 2>/dev/null | sed 's/^#* *//') $(grep -m1 -o '([0-9]* of [0-9]* failed)' "$work/$stem.md" 2>/dev/null) |" \
    >>"$work/compares.md"
  { echo; echo "$stem:"; echo '```'; head -4 "$work/$stem.txt"; echo '```'; } >>"$work/compare-heads.md"
  cp "$work/$stem.md" "$OUT/" 2>/dev/null || cp "$work/$stem.txt" "$OUT/$stem.md"
}

check_backend() {  # BACKEND SPECS GPU-ENV CPU-ENV
  local backend=$1 specs=$2 gpu_env=$3 cpu_env=$4
  # the three sessions at once: the GPU ones are bound by kernel launches, the CPU one by its cores
  # shellcheck disable=SC2086
  session "$backend-gpu-tf32-on" "$specs" --convergence-tf32=on KERAS_BACKEND="$backend" $gpu_env &
  # shellcheck disable=SC2086
  session "$backend-gpu-tf32-off" "$specs" --convergence-tf32=off KERAS_BACKEND="$backend" $gpu_env &
  # shellcheck disable=SC2086
  session "$backend-cpu" "$specs" "" KERAS_BACKEND="$backend" $cpu_env &
  wait
  compare "$backend" gpu-tf32-off
  compare "$backend" gpu-tf32-on
}

run_check() {
  [ -d "$wheels" ] || { echo "no $wheels: run ./dev gpu --prepare where pip can reach PyPI, and carry it" >&2; exit 2; }
  OUT="${OUT:-$PWD/build/gpu-out}"
  mkdir -p "$OUT"
  work=$(mktemp -d /tmp/gpu-check.XXXXXX)
  site="$work/site"
  install_wheels || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # three JAX processes share the GPU
  {
    echo "# GPU check"
    echo
    echo '```'
    date -u
    nvidia-smi -L 2>&1
    "$py" - <<'EOF' 2>&1
import importlib.metadata as m, importlib.util, platform
print("python", platform.python_version())
for name in ["pytest-convergence", "keras", "jax", "jaxlib", "torch", "numpy", "pytest", "syrupy"]:
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "absent")
print("tensorflow importable:", importlib.util.find_spec("tensorflow") is not None)
try:  # what each framework sees: a session on a framework that sees no GPU says so here
    import jax
    print("jax devices:", jax.devices())
except Exception as error:  # noqa: BLE001
    print("jax devices: none:", error)
try:
    import torch
    print("torch cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as error:  # noqa: BLE001
    print("torch cuda: none:", error)
EOF
    echo '```'
  } >"$work/summary.md"
  local backends="${GPU_CHECK_BACKENDS:-}" k="${GPU_CHECK_K-$k_default}"
  # -k through PYTEST_ADDOPTS, which pytest splits as a shell would
  export PYTEST_ADDOPTS="${k:+-k '$k'}"
  if [ -z "$backends" ]; then
    for b in jax torch; do "$py" -c "import $b" 2>/dev/null && backends="$backends $b"; done
  fi
  echo "| session | pytest exit | seconds | last line |" >"$work/sessions.md"
  echo "| --- | --- | --- | --- |" >>"$work/sessions.md"
  echo "| comparison (CPU vs GPU) | exit | verdict |" >"$work/compares.md"
  echo "| --- | --- | --- |" >>"$work/compares.md"
  for backend in $backends; do
    if [ "$backend" = jax ]; then
      budget="${GPU_CHECK_BUDGET:-330}"
      check_backend jax "$(echo ${GPU_CHECK_JAX_SPECS:-$jax_specs_default})" \
        "JAX_PLATFORMS=${GPU_CHECK_JAX_GPU:-cuda}" "JAX_PLATFORMS=cpu"
    else
      budget="${GPU_CHECK_BUDGET:-150}"
      check_backend torch "${GPU_CHECK_TORCH_SPECS:-$torch_specs_default}" "" "CUDA_VISIBLE_DEVICES="
    fi
  done
  {
    echo
    cat "$work/sessions.md"
    echo
    cat "$work/compares.md"
    cat "$work/compare-heads.md" 2>/dev/null
  } >>"$work/summary.md"
  cp "$work/summary.md" "$OUT/"
  tar -C "$work" -czf "$OUT/gpu-check.tar.gz" --exclude=site --exclude='*/fixtures' .
  cat "$work/summary.md"
}

case "${1:-}" in
  --prepare) prepare ;;
  "") run_check ;;
  *) echo "usage: ./dev gpu [--prepare]" >&2; exit 2 ;;
esac
