#!/usr/bin/env bash
# Every cpu-onednn kernel set computes the same bits: the logits of llama-quantize files (a K-quant
# mix and a repacked Q4_0 file), in one batch and one token at a time, under each kernel set the
# CPU runs, must be identical byte for byte. Usage: same_bits_every_isa.sh POCKETMOE FIXTURES_DIR
set -euo pipefail
PM="$1"
FIX="$2"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for model in st-k-q4_k_m st-k-q4_0 st-k-iq4_xs; do
  for mode in batch sequential; do
    flag=""
    [ "$mode" = sequential ] && flag="--sequential"
    ref=""
    for isa in scalar avx2 avx512_vnni avx512_vbmi; do
      f="$OUT/$model.$mode.$isa.bin"
      PMOE_CPU_MAX_ISA=$isa "$PM" logits -m "$FIX/quant/models/$model.gguf" \
        --tokens-file "$FIX/quant/logits/st-k.text.tokens.json" $flag -o "$f" >/dev/null
      if [ -z "$ref" ]; then
        ref="$f"
      elif ! cmp -s "$ref" "$f"; then
        echo "FAIL: $model $mode: kernel set $isa differs from scalar" >&2
        exit 1
      fi
    done
    echo "$model $mode: identical under every kernel set"
  done
done
