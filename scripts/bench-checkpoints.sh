#!/usr/bin/env bash
# Whole-process cost of signed checkpoints, as users run them (docs/CHECKPOINTS.md, BENCHMARKS.md):
#  1. `posledger append` of one event, without and with --sign-with, on a copy of the demo's ledger;
#  2. `replay verify` of the demo's bundle, without and with --checkpoint.
# Usage: scripts/bench-checkpoints.sh [RUNS]   (needs `cargo build --release --workspace` and a demo run)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-20}"
BIN=target/release
DEMO=posledger-demo
[ -f "$DEMO/bundle.plb" ] || "$BIN/posledger" demo --dir "$DEMO" >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN/replay" export "$DEMO/bundle.plb" --format ndjson --out "$WORK/all.ndjson" >/dev/null
# New terminals, one per run: issued events with fresh serial numbers.
head -n 1 "$WORK/all.ndjson" > "$WORK/one.ndjson"
python3 - "$WORK" "$RUNS" <<'PY'
import json, sys
work, runs = sys.argv[1], int(sys.argv[2])
line = json.loads(open(f"{work}/one.ndjson").read())
for mode in ("plain", "signed"):
    for i in range(runs):
        line["device"] = f"BENCH{mode[0].upper()}{i:09d}"
        line.pop("event_id", None)
        open(f"{work}/{mode}-{i}.ndjson", "w").write(json.dumps(line) + "\n")
PY
"$BIN/posledger" append --dir "$WORK/ledger" "$WORK/all.ndjson" >/dev/null
"$BIN/posledger" key generate --name bench.example/posledger --out "$WORK/log.key" >/dev/null
"$BIN/posledger" checkpoint --dir "$WORK/ledger" --key "$WORK/log.key" >/dev/null
size=$("$BIN/posledger" head --dir "$WORK/ledger" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
echo "ledger of $size records; $RUNS runs each"
for mode in plain signed; do
  extra=()
  [ "$mode" = signed ] && extra=(--sign-with "$WORK/log.key")
  start=$(date +%s.%N)
  for i in $(seq 0 $((RUNS - 1))); do
    "$BIN/posledger" append --dir "$WORK/ledger" "$WORK/$mode-$i.ndjson" "${extra[@]}" >/dev/null
  done
  end=$(date +%s.%N)
  python3 -c "print(f'posledger append, 1 event, $mode: {($end - $start) / $RUNS * 1000:.1f} ms per run')"
done
"$BIN/posledger" demo --dir "$DEMO" >/dev/null
cp=$(ls "$DEMO"/checkpoints/*.checkpoint | tail -1)
for mode in plain checkpoint; do
  extra=()
  [ "$mode" = checkpoint ] && extra=(--checkpoint "$cp" --key "$DEMO/demo-log.key.vkey")
  best=""
  for i in 1 2 3; do
    start=$(date +%s.%N)
    "$BIN/replay" verify "$DEMO/bundle.plb" "${extra[@]}" >/dev/null
    end=$(date +%s.%N)
    t=$(python3 -c "print(f'{$end - $start:.2f}')")
    best=$(python3 -c "print(min([x for x in [$t, ${best:-1e9}]]))")
  done
  echo "replay verify bundle.plb, $mode: best of 3 ${best} s"
done
