#!/usr/bin/env bash
# CI: run the test suite under Bazel, offline. Installs Debian's bazel-bootstrap (Bazel 4.2.3)
# when missing; needs the venv (.venv) that the README's Quickstart creates.
# Usage: .ci/bazel.sh [bazel test arguments]   (default: //...; e.g. --config=fast //...)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bazel >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ci: installing bazel-bootstrap"
  $sudo apt-get install -y bazel-bootstrap || { $sudo apt-get update && $sudo apt-get install -y bazel-bootstrap; }
fi
if [ ! -x .venv/bin/python ]; then
  echo "ci: .venv/bin/python is missing: create the venv as the README's Quickstart does" >&2
  exit 1
fi
[ "$#" -gt 0 ] || set -- //...
echo "ci: bazel test $*"
start=$(date +%s)
status=0
bazel test "$@" || status=$?
echo "ci: bazel test took $(( $(date +%s) - start )) s"
# Free the Bazel server's memory (its caches stay on disk under ~/.cache/bazel).
bazel shutdown
exit "$status"
