#!/usr/bin/env bash
# One validator for configs (hardening): `pocketmoe plugins -c` and `run` accept and reject exactly
# the same configs, with the same FILE:LINE:COL error; plugin options are checked against the
# manifest's typed schema (ints with ranges, enums, sizes, bools); a plugin shadowed by another of
# the same name is named in errors about it.
# Usage: config_validation.sh POCKETMOE FIXTURES_DIR
set -euo pipefail
PM="$1"; FIX="$2"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-f32.gguf"

# name | config body | expected: ok, or a fragment of the error
cases=(
  "good|compute: { plugin: cpu-onednn, threads: 2 }|ok"
  "good-streamed|compute: { plugin: cpu-onednn }
storage: { plugin: storage-posix, workers: 2, direct_io: false }
cache: { policy: lru, budget: 64MiB }|ok"
  "int-range|storage: { plugin: storage-posix, workers: 0 }|:1:"
  "int-type|storage: { plugin: storage-posix, workers: many }|option 'workers'"
  "bool-type|storage: { plugin: storage-posix, direct_io: maybe }|option 'direct_io'"
  "unknown-option|compute: { plugin: cpu-onednn, thread: 2 }|did you mean 'threads'"
  "enum|compute: { plugin: vulkan, fp16: sometimes }|option 'fp16'"
  "size|cache: { policy: lru, budget: 12 parsecs }|budget"
  "unknown-plugin|compute: { plugin: cpu-onedn }|did you mean 'cpu-onednn'"
  "wrong-kind|storage: { plugin: cpu-onednn }|is a compute implementation"
  "fallback-unknown|storage: { plugin: storage-uring, fallback: storage-posx }|storage fallback"
  "fallback-ok|storage: { plugin: storage-uring, fallback: storage-posix }|ok"
  "yaml|compute: { plugin: cpu-onednn|:1:"
  "weights-read|weights: { load: read }|ok"
  "weights-mmap|weights: { load: mmap }|ok"
  "weights-read-streamed|weights: { load: read }
cache: { policy: lru, budget: 64MiB }|cache.budget streams"
  "weights-load|weights: { load: huge }|must be auto, mmap or read"
)
for c in "${cases[@]}"; do
  name="${c%%|*}"; rest="${c#*|}"; body="${rest%|*}"; want="${rest##*|}"
  printf '%s\n' "$body" > "$W/$name.yaml"
  prc=0; "$PM" plugins -c "$W/$name.yaml" > "$W/p.out" 2> "$W/p.err" || prc=$?
  rrc=0; "$PM" run -m "$MODEL" -c "$W/$name.yaml" -p "Hi" -n 2 -s 1 > /dev/null 2> "$W/r.err" || rrc=$?
  if [ "$want" = ok ]; then
    { [ "$prc" = 0 ] && [ "$rrc" = 0 ]; } || { echo "$name: plugins rc $prc, run rc $rrc, both should accept"; cat "$W/p.err" "$W/r.err"; exit 1; }
  else
    { [ "$prc" != 0 ] && [ "$rrc" != 0 ]; } || { echo "$name: plugins rc $prc, run rc $rrc, both should reject"; cat "$W/p.err" "$W/r.err"; exit 1; }
    perr="$(grep '^error:' "$W/p.err" | head -1)"; rerr="$(grep '^error:' "$W/r.err" | head -1)"
    [ "$perr" = "$rerr" ] || { echo "$name: different errors:"; echo " plugins: $perr"; echo " run:     $rerr"; exit 1; }
    grep -qF -- "$want" <<< "$perr" || { echo "$name: error lacks '$want': $perr"; exit 1; }
    grep -qF "$W/$name.yaml:" <<< "$perr" || { echo "$name: error lacks FILE:LINE:COL: $perr"; exit 1; }
  fi
done

# A manifest that shadows the installed storage-posix but whose library is missing: run in RAM
# never reads through storage, yet both refuse the config, and the error names both manifests.
mkdir -p "$W/shadow"
INSTALLED="$("$PM" plugins | sed -n 's/^ *manifest: \(.*storage-posix.yaml\)$/\1/p' | head -1)"
sed -e '/^library:/d' "$INSTALLED" > "$W/shadow/storage-posix.yaml"
echo "library: libgone.so" >> "$W/shadow/storage-posix.yaml"
printf 'plugin_paths: ["%s"]\ncompute: { plugin: cpu-onednn }\nstorage: { plugin: storage-posix }\n' "$W/shadow" > "$W/shadow.yaml"
prc=0; "$PM" plugins -c "$W/shadow.yaml" > /dev/null 2> "$W/p.err" || prc=$?
rrc=0; "$PM" run -m "$MODEL" -c "$W/shadow.yaml" -p "Hi" -n 2 > /dev/null 2> "$W/r.err" || rrc=$?
{ [ "$prc" != 0 ] && [ "$rrc" != 0 ]; } || { echo "shadow: plugins rc $prc, run rc $rrc, both should reject"; exit 1; }
grep -q "which shadows .*storage-posix.yaml" "$W/r.err" || { echo "shadow: error does not name the shadowed manifest"; cat "$W/r.err"; exit 1; }
echo "config validation: ${#cases[@]} configs + shadowing agree between plugins -c and run"
