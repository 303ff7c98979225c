#!/usr/bin/env bash
# The GPU check: everything minicnn's cupy backend should be seen doing on a real NVIDIA GPU, in one go.
#
#   bash benchmarks/gpu_check.sh [--standin] [--quick] [OUT_DIR] [-- PYTEST_ARGS...]
#
# Runs, from the repository root, each step logged to $OUT if set (a device machine's folder that comes back),
# else OUT_DIR, and summed up in summary.txt there:
#   1. install the project (pip install --no-deps --no-build-isolation -e ., unless this checkout is installed already:
#      the GPU machine has no network, but numpy, cupy, torch, pytest and hypothesis);
#   2. the whole test suite, its cupy cases on real CuPy (PYTEST_ARGS, if given, replace the default ones),
#      and a check of the suite's own line saying where they ran;
#   3. python benchmarks/run.py --backend cupy: minicnn on CuPy against PyTorch CUDA, in one process;
#   4. minicnn --backend cupy train on the cat/dog photos (the default recipe, --seed 0, a few epochs: 3 at low
#      resolution, 1 at full size), then evaluate and predict with the trained model.
# The photos must be in .device-data/cats_vs_dogs (git-ignored): copy them there first with
#   mkdir -p .device-data && cp -r ../shared/data/cats_vs_dogs .device-data/
# --standin: the same steps on the CPU with tests/cupy_standin.py as cupy (no GPU needed; no GPU code runs), minus
#   the benchmarks against PyTorch CUDA, and a tiny training (a few photos per class, 32 px): proves the script and
#   the host/device discipline, not the device. --quick: the benchmarks' --quick, and one training epoch.
# Without --standin it refuses to start where CuPy sees no GPU. Every step runs even if one before failed; the exit
# status is 1 if any failed, 2 if it could not start.
set -euo pipefail
cd "$(dirname "$0")/.."

standin=0 quick=0 folder= pytest_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --standin) standin=1 ;;
        --quick) quick=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        -*) echo "gpu_check.sh: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
        *) folder=$1 ;;
    esac
    shift
done
out=${OUT:-$folder}
if [ -z "$out" ]; then
    echo "gpu_check.sh: give an output folder (or set \$OUT)" >&2
    exit 2
fi
data=.device-data/cats_vs_dogs
if [ ! -d "$data/train" ] || [ ! -d "$data/val" ]; then
    echo "gpu_check.sh: no photos in $data; copy them there first:" >&2
    echo "    mkdir -p .device-data && cp -r ../shared/data/cats_vs_dogs .device-data/" >&2
    exit 2
fi
if [ "$standin" = 0 ] && ! python -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() == 0)" 2> /dev/null; then
    echo "gpu_check.sh: CuPy sees no GPU here; --standin runs the steps on the CPU stand-in" >&2
    exit 2
fi
export MINICNN_DATA=${MINICNN_DATA:-$PWD/.device-data}  # where the tests and examples look for the photos
mkdir -p "$out"
out=$(cd "$out" && pwd)
: > "$out/summary.txt"
failed=0

# step NAME COMMAND...: run COMMAND, its output to the screen and OUT_DIR/NAME.log; note the outcome in summary.txt.
step() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "=== $name: $(printf '%q ' "$@")" | tee "$out/$name.log"
    "$@" 2>&1 | tee -a "$out/$name.log" || rc=$?
    local result="$name: ok in $((SECONDS - start)) s"
    if [ "$rc" -ne 0 ]; then
        result="$name: FAILED (exit status $rc) after $((SECONDS - start)) s, see $name.log"
        failed=1
    fi
    echo "$result" | tee -a "$out/summary.txt"
}

skip() {
    echo "$1: skipped ($2)" | tee -a "$out/summary.txt"
}

install() {
    if python -c "import minicnn, os, sys; sys.exit(os.path.dirname(minicnn.__file__) != os.path.abspath('minicnn'))"; then
        echo "minicnn is installed from this checkout already"
    else
        python -m pip install --no-deps --no-build-isolation -e .
    fi
}

# The Python packages the steps use (the install step installs none: --no-deps), and the GPU.
environment() {
    python - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "PIL", "tqdm", "cupy", "torch", "pytest", "hypothesis", "matplotlib", "onnx", "onnxruntime",
             "mpi4py", "jupytext", "nbclient"):
    try:
        module = importlib.import_module(name)
    except Exception as e:  # a missing optional package skips its tests; a missing required one fails them
        print(f"{name}: not usable ({type(e).__name__}: {e})")
        continue
    cuda = f", CUDA available: {module.cuda.is_available()}" if name in ("cupy", "torch") else ""
    print(f"{name} {getattr(module, '__version__', '?')}{cuda}")
EOF
    if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
}

# A few photos per class, for the stand-in's tiny training.
subset() {
    local split class
    for split in train val; do
        for class in "$data/$split"/*/; do
            mkdir -p "$out/photos/$split/$(basename "$class")"
            # sed, not head: reading all its input, it leaves sort no broken pipe for pipefail to report
            find "$class" -maxdepth 1 -type f | sort | sed -n "1,$([ "$split" = train ] && echo 24 || echo 8)p" |
                xargs cp -t "$out/photos/$split/$(basename "$class")"
        done
    done
}

if [ "$standin" = 1 ]; then
    minicnn=(python tests/cupy_standin.py minicnn --backend cupy)
    export MINICNN_TEST_CUPY=standin
    rm -rf "$out/photos" && subset
    photos=$out/photos train_args=(--epochs 2 --full-size-epochs 1 --image-size 32 --batch-size 16)
    cupy_cases="cupy cases: on a CPU stand-in"
    echo "cupy: the CPU stand-in tests/cupy_standin.py; no GPU code runs" | tee -a "$out/summary.txt"
else
    minicnn=(python -m minicnn --backend cupy)
    photos=$data train_args=(--epochs 4 --full-size-epochs 1)
    cupy_cases="cupy cases: real CuPy"
    if [ "$quick" = 1 ]; then
        train_args=(--epochs 1 --full-size-epochs 1)
    fi
fi
if [ ${#pytest_args[@]} -eq 0 ]; then
    pytest_args=(-q -rfEs)  # -rfEs: why each test failed or was skipped
fi

step environment environment
step install install
step tests python -m pytest "${pytest_args[@]}"
step cupy-cases grep "^$cupy_cases" "$out/tests.log"  # the tests' own line: where their cupy cases ran
if [ "$standin" = 1 ]; then
    skip benchmarks "they compare with PyTorch CUDA: a real GPU only"
else
    step benchmarks python benchmarks/run.py --backend cupy --out "$out/RESULTS-gpu.md" $([ "$quick" = 1 ] && echo --quick)
fi
rm -rf "$out/run"
step train "${minicnn[@]}" train "$photos" --out "$out/run" --seed 0 "${train_args[@]}"
step evaluate "${minicnn[@]}" evaluate "$out/run/model.npz" "$photos/val"
step predict "${minicnn[@]}" predict "$out/run/model.npz" "$(find "$photos/val" -type f | sort | sed -n 1p)"

echo "--- summary ($out/summary.txt)"
cat "$out/summary.txt"
exit "$failed"
