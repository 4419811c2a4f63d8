#!/usr/bin/env bash
# Program sizes against their budgets; README.md's size table is written from them.
#   - minimal device program (examples/src/bin/minimal.rs: load a plan, enrol, train a
#     linear adapter, predict; no importer), aarch64 Linux, profile `size`, stripped:
#     <= 1.5 MB (1,572,864 B);
#   - Cortex-M4 firmware (targets/cortex-m, opt-level z), with training and inference only:
#     .text <= 128 KB (131,072 B) each, their flash (vector table + .text + .rodata), and
#     when qemu-system-arm is here, each one's RAM in use from its own report (arena + heap
#     peak + painted stack peak + other statics) <= 256 KB (262,144 B).
# Exits non-zero when a budget is exceeded (after listing that program's largest symbols)
# or when README.md's table differs from what was measured by more than 0.5 % in a row.
#   tools/size_report.sh            measure, check the budgets and README.md
#   tools/size_report.sh --readme   measure, check the budgets, rewrite README.md's table
#   tools/size_report.sh --tract    also the peer: tract-onnx loading and running the same
#                                   model (tools/peers/src/bin/tract_run.rs), same target
#                                   and profile (a cold build takes ~20 min)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgetune-target}
mode=${1:-}

MINIMAL_BUDGET=$((3 * 512 * 1024))
FW_TEXT_BUDGET=$((128 * 1024))
FW_RAM_BUDGET=$((256 * 1024))

# The executable a cargo build made, as cargo reports it (whatever target directory a
# wrapper or config chose).
built() {
  cargo build --message-format=json-render-diagnostics "$@" |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}
commas() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
failed=0
# check NAME BYTES BUDGET ELF: one line per budget; on excess the largest code symbols.
check() {
  if [ "$2" -le "$3" ]; then
    echo "$1: $(commas "$2") B, budget $(commas "$3") B: ok ($(commas $(($3 - $2))) B to spare)"
  else
    echo "$1: $(commas "$2") B, budget $(commas "$3") B: OVER BUDGET by $(commas $(($2 - $3))) B"
    if [ -n "${4:-}" ]; then
      echo "  largest code symbols of $4:"
      nm --size-sort -S -C -t d "$4" | awk '$3 ~ /^[tTwW]$/' | tail -25 | sed 's/^/    /'
    fi
    failed=1
  fi
}

bin=$(built -q --profile size -p edgetune-examples --no-default-features --bin minimal \
  --target aarch64-unknown-linux-gnu)
aarch64-linux-gnu-strip -o "$bin.stripped" "$bin"
minimal=$(stat -c %s "$bin.stripped")
echo "minimal (aarch64, profile size): $(stat -c %s "$bin") B, stripped $minimal B"
check "minimal, stripped" "$minimal" "$MINIMAL_BUDGET" "$bin"
if [ "$mode" = "--tract" ]; then
  tb=$(built -q --profile size -p edgetune-peers --bin tract_run --target aarch64-unknown-linux-gnu)
  aarch64-linux-gnu-strip -o "$tb.stripped" "$tb"
  echo "tract_run (tract-onnx 0.23, aarch64, profile size): $(stat -c %s "$tb") bytes, stripped $(stat -c %s "$tb.stripped") bytes; edgetune/tract $(echo "scale=3; $minimal / $(stat -c %s "$tb.stripped")" | bc)"
fi

# Cortex-M4 firmware, two builds: with training (the default) and inference only
# (--no-default-features). Flash is the vector table, code and read-only data (the plan
# and the flash-resident episode besides the code's constants); RAM in use is the
# firmware's own report under qemu (its defmt log decoded by targets/cortex-m/run.sh).
plan=$(stat -c %s targets/cortex-m/assets/tiny_cnn.etm)
episode=$((4 + 125 * 785))
have_qemu=$(command -v qemu-system-arm >/dev/null && echo yes || true)
# firmware LABEL CARGO_ARGS...: sets text, flash, ram (empty when not run).
firmware() {
  local label=$1
  shift
  fw=$(cd targets/cortex-m && built -q --release "$@")
  read -r vt text rodata bss <<<"$(size -A "$fw" | awk '$1==".vector_table"{v=$2} $1==".text"{t=$2}
    $1==".rodata"{r=$2} $1==".bss"{b=$2} END{print v, t, r, b}')"
  flash=$((vt + text + rodata))
  echo "firmware $label (thumbv7em, opt-level z): flash $flash B = .vector_table $vt B + .text $text B + .rodata $rodata B (plan $plan B, episode $episode B, other constants $((rodata - plan - episode)) B); .bss $bss B"
  check "firmware $label .text" "$text" "$FW_TEXT_BUDGET" "$fw"
  ram=""
  if [ -n "$have_qemu" ]; then
    out=$(cd targets/cortex-m && cargo run --release -q "$@" 2>&1 |
      grep -E "memory:|accuracy|inference:|firmware:|defmt-print" || true)
    echo "$out" | sed 's/^/  /'
    ram=$(echo "$out" | sed -n 's/.*RAM in use \([0-9]*\) B.*/\1/p')
    if echo "$out" | grep -q "defmt-print not found"; then
      echo "SKIPPED: firmware $label RAM needs defmt-print to decode its log (./.ci/run installs it)"
      have_qemu=""
    elif [ -z "$ram" ] || ! echo "$out" | grep -qx "INFO  firmware: PASS"; then
      echo "firmware $label did not run to PASS under qemu-system-arm"
      failed=1
      ram=""
    else
      check "firmware $label RAM in use" "$ram" "$FW_RAM_BUDGET"
    fi
  fi
}
firmware "with training"
fw_text=$text fw_flash=$flash fw_ram=$ram
firmware "inference only" --no-default-features
inf_text=$text inf_flash=$flash inf_ram=$ram
command -v qemu-system-arm >/dev/null || echo "SKIPPED: firmware RAM needs qemu-system-arm (apt install qemu-system-arm)"
ram=$fw_ram
[ -n "$fw_ram" ] && [ -n "$inf_ram" ] || ram=""

# README.md's table, between its markers, from the numbers above.
table=$(mktemp)
trap 'rm -f "$table"' EXIT
{
  echo "| program | measure | bytes | budget |"
  echo "|---|---|---|---|"
  echo "| \`minimal\` (examples/src/bin/minimal.rs), aarch64, profile \`size\` | stripped file | $(commas "$minimal") | $(commas $MINIMAL_BUDGET) (1.5 MB) |"
  echo "| Cortex-M4 firmware (targets/cortex-m) with training, thumbv7em, opt-level z | \`.text\` | $(commas "$fw_text") | $(commas $FW_TEXT_BUDGET) (128 KB) |"
  echo "| the same firmware | flash (vector table, \`.text\`, \`.rodata\` with the plan and the episode) | $(commas "$fw_flash") | |"
  if [ -n "$ram" ]; then
    echo "| the same firmware under qemu-system-arm | RAM in use (arena, heap peak, stack peak, other statics) | $(commas "$fw_ram") | $(commas $FW_RAM_BUDGET) (256 KB) |"
  fi
  echo "| Cortex-M4 firmware inference only (\`--no-default-features\`) | \`.text\` | $(commas "$inf_text") | $(commas $FW_TEXT_BUDGET) (128 KB) |"
  echo "| the same firmware | flash (vector table, \`.text\`, \`.rodata\` with the plan and the episode) | $(commas "$inf_flash") | |"
  if [ -n "$ram" ]; then
    echo "| the same firmware under qemu-system-arm | RAM in use (arena, heap peak, stack peak, other statics) | $(commas "$inf_ram") | $(commas $FW_RAM_BUDGET) (256 KB) |"
  fi
} >"$table"
begin='<!-- size_report: begin -->'
end='<!-- size_report: end -->'
current=$(awk -v b="$begin" -v e="$end" '$0==e{p=0} p{print} $0==b{p=1}' README.md)
if [ -z "$ram" ]; then
  # Without qemu only the other rows were measured.
  current=$(echo "$current" | grep -v "^| the same firmware under qemu" || true)
fi
# The bytes column of a table, one number per row.
bytes_of() { awk -F'|' 'NR>2 {gsub(/[ ,]/, "", $4); print $4}'; }
# Builds from another checkout path or cache differ by a few bytes of layout: a row within
# 0.5 % of the measurement still matches; the budgets above are what gates the run.
close=$(paste <(echo "$current" | bytes_of) <(bytes_of <"$table") |
  awk '{ if ($1 == "" || $2 == "" || ($1 > $2 ? $1 - $2 : $2 - $1) * 200 > $2) bad=1 }
       END { print (NR > 0 && !bad) ? "yes" : "no" }')
if [ "$current" = "$(cat "$table")" ]; then
  echo "README.md size table: matches"
elif [ "$mode" != "--readme" ] && [ "$close" = yes ] &&
  [ "$(echo "$current" | wc -l)" = "$(wc -l <"$table")" ]; then
  echo "README.md size table: within 0.5 % of the measurement:"
  diff <(echo "$current") "$table" | sed 's/^/  /' || true
elif [ "$mode" = "--readme" ] && [ -n "$ram" ]; then
  new=$(mktemp -p .)
  chmod --reference=README.md "$new"
  awk -v b="$begin" -v e="$end" -v t="$table" '
    $0==b {print; while ((getline l < t) > 0) print l; skip=1; next}
    $0==e {skip=0}
    !skip {print}' README.md >"$new"
  mv "$new" README.md
  echo "README.md size table: rewritten"
else
  echo "README.md size table differs from the measurement (run tools/size_report.sh --readme):"
  diff <(echo "$current") "$table" | sed 's/^/  /' || true
  failed=1
fi
exit "$failed"
