#!/usr/bin/env bash
# Set up tf_lottery on a fresh Debian machine with Python 3.11: the offline Fashion-MNIST
# files, a virtual environment in .venv, and the package (with test extras when given --test).
# Safe to rerun: it installs only what is missing. DRY_RUN=1 prints what it would change instead.
set -euo pipefail
cd "$(dirname "$0")/.."

exec 3>&1  # the terminal's stdout, for dry-run lines of commands whose output is discarded
run() {
  if [ -n "${DRY_RUN:-}" ]; then echo "would run: $*" >&3; else "$@"; fi
}

PYTHON=$(command -v python3.11 || command -v python3 || true)
if [ -z "$PYTHON" ]; then
  echo "setup.sh: error: no python3.11 or python3 on PATH; install Debian's python3.11 (apt-get install python3.11)" >&2
  exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "setup.sh: error: tf_lottery needs Python 3.11, found %s at %s" % (sys.version.split()[0], sys.executable))'

# Debian splits venv's pip bootstrap (ensurepip) into python3.11-venv: without it `python3 -m venv`
# fails after creating a .venv with no pip in it.
PACKAGES=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || PACKAGES+=(dataset-fashion-mnist)
"$PYTHON" -c 'import ensurepip' 2>/dev/null || PACKAGES+=(python3.11-venv)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  run $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null 2>&1 ||
    { run $SUDO apt-get update -qq && run $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null; }
fi

# A .venv left without pip by an earlier failed attempt is made again.
if ! { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  run "$PYTHON" -m venv --clear .venv
fi
run .venv/bin/python -m pip install -q --upgrade pip
# setuptools warns on every editable install of a package_dir layout like ours ("Please be careful
# with folders in your working directory with the same name as your package"), and pip shows the
# backend's warnings even with -q: 10 lines on stderr at each run that need no action here (the
# folders of that name are this package's own sources). Only that warning is silenced.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation:UserWarning:setuptools.command.editable_wheel"
# --serving adds tensorflow-serving-api (lottery-export --warmup); --test adds it and the test tools.
case "${1:-}" in
  --test) run .venv/bin/python -m pip install -q -e ".[test]" ;;
  --serving) run .venv/bin/python -m pip install -q -e ".[serving]" ;;
  *) run .venv/bin/python -m pip install -q -e . ;;
esac
