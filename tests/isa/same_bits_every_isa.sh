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
# same_bits LABEL MODEL TOKENS [FLAG]: the logits under every kernel set equal the scalar ones
same_bits() {
  local label="$1" model="$2" tokens="$3" flag="${4:-}" ref="" f isa
  for isa in scalar avx2 avx512_vnni avx512_vbmi; do
    f="$OUT/$(echo "$label" | tr -c 'a-zA-Z0-9_\n-' _).$isa.bin"
    PMOE_CPU_MAX_ISA=$isa "$PM" logits -m "$model" --tokens-file "$tokens" $flag -o "$f" >/dev/null
    if [ -z "$ref" ]; then
      ref="$f"
    elif ! cmp -s "$ref" "$f"; then
      echo "FAIL: $label: kernel set $isa differs from scalar" >&2
      exit 1
    fi
  done
  echo "$label: identical under every kernel set"
}
for entry in quant/models/st-k-q4_k_m:quant/logits/st-k.text quant/models/st-k-q4_0:quant/logits/st-k.text \
             quant/models/st-k-iq4_xs:quant/logits/st-k.text models/st-a-q8_0:logits/st-a.text; do
  model="$(basename "${entry%%:*}")"
  same_bits "$model batch" "$FIX/${entry%%:*}.gguf" "$FIX/${entry#*:}.tokens.json"
  same_bits "$model sequential" "$FIX/${entry%%:*}.gguf" "$FIX/${entry#*:}.tokens.json" --sequential
done
t="$(tr -d '[] \n' < "$FIX/quant/logits/st-k.text.tokens.json")"
echo "[$t,$t,$t,$t,$t]" > "$OUT/long.tokens.json"
same_bits "st-k-q4_k_m, 160 tokens one at a time" "$FIX/quant/models/st-k-q4_k_m.gguf" "$OUT/long.tokens.json" --sequential
