#!/usr/bin/env bash
# Cargo's runner for the firmware: runs the ELF under qemu-system-arm (MPS2 AN386,
# Cortex-M4, semihosting) and decodes the defmt frames it writes to semihosting stdout
# with defmt-print, one line per log point: `LEVEL message` (the level padded to five characters). Exits with qemu's status
# (the firmware's semihosting exit). defmt-print is $DEFMT_PRINT, else on PATH, else in
# the tools cache where .ci/run installs it.
set -euo pipefail
elf=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../.ci/pins"
dp=${DEFMT_PRINT:-$(command -v defmt-print || echo "$EDGETUNE_TOOLS/bin/defmt-print")}
if [ ! -x "$dp" ]; then
  echo "defmt-print not found (./.ci/run installs defmt-print $EDGETUNE_DEFMT_PRINT into $EDGETUNE_TOOLS)" >&2
  exit 2
fi
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
  -semihosting-config enable=on,target=native -kernel "$elf" "$@" |
  "$dp" -e "$elf" --log-format "{L} {s}"
