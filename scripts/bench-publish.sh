#!/usr/bin/env bash
# Whole-process cost of publishing as tiles and restoring from them (docs/TILES.md, BENCHMARKS.md):
#  1. a simulated ledger of about RECORDS records, signed;
#  2. `posledger publish` of all of it: wall time, peak RSS, files and bytes per record;
#  3. 1% more records (new terminals through `posledger append`), signed, and the incremental publish;
#  4. `replay verify-tiles` of the folder, and `posledger restore --from` the folder.
# Usage: scripts/bench-publish.sh [RECORDS]   (default 1000000; needs `cargo build --release --bins`)
# The work folder is in TMPDIR (about 150 bytes per record, three times) and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-1000000}"
BIN="${BIN:-target/release}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The simulator makes about 20 records per terminal over 24 months.
DEVICES=$(( RECORDS / 20 ))
timed() { # label, command...: prints "label: wall s, peak RSS MiB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
  read -r wall rss <"$WORK/time"
  printf '%-34s %8.2f s  %7.1f MiB peak RSS\n' "$label:" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
size_of() { "$BIN/posledger" head --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])'; }
"$BIN/posledger" simulate --dir "$WORK/ledger" --devices "$DEVICES" --seed 1 --months 24 >/dev/null
"$BIN/posledger" key generate --name bench.example/posledger --out "$WORK/log.key" >/dev/null
"$BIN/posledger" checkpoint --dir "$WORK/ledger" --key "$WORK/log.key" >/dev/null
n=$(size_of "$WORK/ledger")
ledger_bytes=$(du -sb "$WORK/ledger/segments" | cut -f1)
echo "ledger: $n records, segments $ledger_bytes bytes ($(nproc) CPUs, $(date -u +%F))"
timed "publish (all)" "$BIN/posledger" publish --dir "$WORK/ledger" --out "$WORK/pub"
bytes=$(du -sb "$WORK/pub" | cut -f1)
files=$(find "$WORK/pub" -type f | wc -l)
python3 -c "print(f'  {$files} files, {$bytes} bytes, {$bytes / $n:.1f} bytes per record (segments: {$ledger_bytes / $n:.1f})')"
# 1% more: new terminals.
more=$(( n / 100 ))
python3 - "$WORK/more.ndjson" "$more" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write('{"device":"PUB%09d","type":"issued","at":"2031-01-01T00:00:00Z","model":"LKL-A8","merchant":"M1",'
                '"provider":"lakala","region":"310000","contract":{"id":"C%d","start":"2031-01-01T00:00:00Z",'
                '"end":"2032-01-01T00:00:00Z"}}\n' % (i, i))
PY
"$BIN/posledger" append --dir "$WORK/ledger" "$WORK/more.ndjson" --sign-with "$WORK/log.key" >/dev/null
timed "posledger head (opening the ledger)" "$BIN/posledger" head --dir "$WORK/ledger"
timed "publish (1% more, incremental)" "$BIN/posledger" publish --dir "$WORK/ledger" --out "$WORK/pub"
after=$(du -sb "$WORK/pub" | cut -f1)
python3 -c "print(f'  {$after - $bytes} bytes added for {$more} records')"
vkey=$(cat "$WORK/log.key.vkey")
timed "replay verify-tiles (folder)" "$BIN/replay" verify-tiles "$WORK/pub" --key "$vkey"
timed "posledger restore --from (folder)" "$BIN/posledger" restore --from "$WORK/pub" --key "$vkey" --dir "$WORK/restored"
[ "$(size_of "$WORK/restored")" = "$(size_of "$WORK/ledger")" ] || { echo "restored size differs"; exit 1; }
"$BIN/posledger" export --dir "$WORK/ledger" --out "$WORK/b.plb" >/dev/null
timed "posledger restore --from (bundle)" "$BIN/posledger" restore --from "$WORK/b.plb" --dir "$WORK/restored2"
