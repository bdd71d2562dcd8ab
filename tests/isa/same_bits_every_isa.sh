#!/usr/bin/env bash
# Every cpu-onednn kernel set computes the same bits: the logits of llama-quantize files (a K-quant
# mix, a repacked Q4_0 file, IQ4_XS) and of a Q8_0 file, in one batch and one token at a time, under each kernel set the
# CPU runs, must be identical byte for byte; then one token at a time over 160 tokens (the fixture's
# 32 five times), so that decode attention sums more than 64 keys (llama.cpp's 64 lanes and the
# tail after them). Usage: same_bits_every_isa.sh POCKETMOE FIXTURES_DIR
set -euo pipefail
PM="$1"
FIX="$2"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for entry in quant/models/st-k-q4_k_m:quant/logits/st-k.text quant/models/st-k-q4_0:quant/logits/st-k.text \
             quant/models/st-k-iq4_xs:quant/logits/st-k.text models/st-a-q8_0:logits/st-a.text; do
  model="$(basename "${entry%%:*}")"
  for mode in batch sequential; do
    flag=""
    [ "$mode" = sequential ] && flag="--sequential"
    ref=""
    for isa in scalar avx2 avx512_vnni avx512_vbmi; do
      f="$OUT/$model.$mode.$isa.bin"
      PMOE_CPU_MAX_ISA=$isa "$PM" logits -m "$FIX/${entry%%:*}.gguf" \
        --tokens-file "$FIX/${entry#*:}.tokens.json" $flag -o "$f" >/dev/null
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
t="$(tr -d '[] \n' < "$FIX/quant/logits/st-k.text.tokens.json")"
echo "[$t,$t,$t,$t,$t]" > "$OUT/long.tokens.json"
ref=""
for isa in scalar avx2 avx512_vnni avx512_vbmi; do
  f="$OUT/long.$isa.bin"
  PMOE_CPU_MAX_ISA=$isa "$PM" logits -m "$FIX/quant/models/st-k-q4_k_m.gguf" --tokens-file "$OUT/long.tokens.json" \
    --sequential -o "$f" >/dev/null
  if [ -z "$ref" ]; then
    ref="$f"
  elif ! cmp -s "$ref" "$f"; then
    echo "FAIL: st-k-q4_k_m, 160 tokens one at a time: kernel set $isa differs from scalar" >&2
    exit 1
  fi
done
echo "st-k-q4_k_m, 160 tokens one at a time: identical under every kernel set"
