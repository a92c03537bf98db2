#!/bin/sh
# The main job's command path end to end on a small subset: `cgrad train` must reach a
# sane test accuracy and write its weights and history; `cgrad eval` must reload the
# weights and report the same accuracy and test loss (both plain cross-entropy: train's
# label smoothing is printed separately); bad input must fail with a message, not a crash.
#   cli_smoke.sh <path to cgrad>
set -eu
cgrad=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$cgrad" train --subset 2000 --epochs 3 --quiet --out "$dir/m.safetensors" --history "$dir/h.csv" > "$dir/train.txt"
cat "$dir/train.txt"
acc=$(sed -n 's/.*test accuracy: \([0-9.]*\).*/\1/p' "$dir/train.txt")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.70) }' || { echo "train: test accuracy $acc < 0.70"; exit 1; }
[ "$(wc -l < "$dir/h.csv")" -eq 4 ] || { echo "history should have a header and 3 epochs"; exit 1; }
"$cgrad" eval --model "$dir/m.safetensors" > "$dir/eval.txt"
cat "$dir/eval.txt"
grep -q "test accuracy $acc" "$dir/eval.txt" || { echo "eval accuracy differs from train's $acc"; exit 1; }
loss=$(sed -n 's/.*test accuracy: [0-9.]* (loss \([0-9.]*\)).*/\1/p' "$dir/train.txt")
eloss=$(sed -n 's/.*test accuracy [0-9.]*, loss \([0-9.]*\).*/\1/p' "$dir/eval.txt")
[ -n "$loss" ] && [ "$loss" = "$eloss" ] || { echo "eval test loss '$eloss' differs from train's '$loss'"; exit 1; }
grep -q "with the training loss's label smoothing 0.1 it is [0-9]" "$dir/train.txt" || { echo "train does not say its smoothing"; exit 1; }
printf 'not a model' > "$dir/bad.safetensors"
if "$cgrad" eval --model "$dir/bad.safetensors" 2> "$dir/err.txt"; then echo "eval accepted a bad file"; exit 1; fi
grep -q "safetensors" "$dir/err.txt" || { echo "no message for a bad file"; cat "$dir/err.txt"; exit 1; }
echo "cli smoke: ok"
