#!/usr/bin/env bash
# Builds sdk/examples/hello-storage against the *installed* SDK, the way a third party would, and
# checks the result like any plugin: install the build tree into a scratch prefix, configure the
# example with nothing but that prefix, build it, then find it through POCKETMOE_PLUGIN_PATH with
# `pocketmoe plugins` (the runtime's registry) and run the storage conformance suite on it.
#   run_hello_storage.sh <build dir> <source dir> <work dir> <storage_conformance> [<pocketmoe>]
set -euo pipefail
build=$1 src=$2 work=$3 conformance=$4 cli=${5:-}
example=$src/sdk/examples/hello-storage

rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$example" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >"$work/configure.log"
cmake --build "$work/build"

# The example saw the installed headers, never the source tree's.
cc="$work/build/compile_commands.json"
if grep -q -- "$src/sdk/include" "$cc" || ! grep -q -- "$work/prefix/include" "$cc"; then
  echo "FAIL: hello-storage was not compiled against the installed SDK:"; cat "$cc"; exit 1
fi

export POCKETMOE_PLUGIN_PATH=$work/build
if [[ -n $cli && -x $cli ]]; then
  "$cli" plugins >"$work/plugins.txt" 2>&1 || true
  # The block of hello-storage: from its header line to the next plugin's.
  block=$(awk '/^  [^ ]/ { on = ($1 == "hello-storage") } on' "$work/plugins.txt")
  if ! grep -q "loads: *ok" <<<"$block" || ! grep -q -- "- hello-storage \[storage\]" <<<"$block"; then
    echo "FAIL: 'pocketmoe plugins' does not list hello-storage as loading:"; cat "$work/plugins.txt"
    exit 1
  fi
  echo "pocketmoe plugins:"; echo "$block"
else
  echo "note: no pocketmoe CLI given; the registry check is skipped"
fi
"$conformance" --impl=hello-storage --data-dir="$work"
