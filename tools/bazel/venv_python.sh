#!/bin/sh
# Runs the repository's venv python: Bazel's py_runtime interpreter. The runfiles copy of this
# script is a symlink into the source tree, so resolving it finds the checkout and its .venv.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../../.venv/bin/python" "$@"
