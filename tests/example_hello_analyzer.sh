#!/usr/bin/env bash
# Installs the SDK from the build tree into a scratch prefix, builds examples/hello-analyzer out of
# tree against it with find_package(aquin), and runs it through AQUIN_PLUGIN_PATH.
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/examples/hello-analyzer" -B "$work/hello" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$work/hello" >/dev/null
export AQUIN_HOME="$work/home"
export AQUIN_PLUGIN_PATH="$work/hello"
aquin="$work/prefix/bin/aquin"
# Outputs go to files first: with pipefail, `grep -q` closing the pipe early would fail the run.
"$aquin" plugins > "$work/plugins.txt"
grep -q "analyzer.*hello.*1.0.0" "$work/plugins.txt"
"$aquin" session start --id ex --model "$src/tests/data/models/tiny-llama" >/dev/null
out=$("$aquin" hello --checkpoint "$src/tests/data/ckpt/llama-ft-step300.pt" --output json)
grep -q '"card": "hello"' <<< "$out"
grep -q '"q": 2' <<< "$out"
"$aquin" tools > "$work/tools.json"
grep -q '"run_hello"' "$work/tools.json"
echo "hello-analyzer: built out of tree, discovered, ran"
