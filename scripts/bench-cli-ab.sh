#!/usr/bin/env bash
# A/B of the whole commands users run, two builds alternating on the same data (BENCHMARKS.md,
# "2026-12-02 (evening)": the A/B table).
#
#   scripts/bench-cli-ab.sh OLD_BIN_DIR NEW_BIN_DIR [WORK_DIR]
#
# OLD_BIN_DIR and NEW_BIN_DIR each hold a `posledger` and a `replay` release binary (for the old build:
# `git worktree add ../old COMMIT && cargo build --release -p posledger -p posledger-replay
# --manifest-path ../old/Cargo.toml --target-dir ../old/target`, then ../old/target/release). WORK_DIR
# (default /tmp/posledger-ab) receives the fleets, made once with the new build: a standard fleet of
# about 10^6 and 10^7 events and an issue-heavy one of 10^6 and 10^7, as ledgers of many appends
# (`posledger simulate`) and as NDJSON (`replay export`). About 6 GB of disk; 10–15 minutes.
#
# Each line of the output is one process: `/usr/bin/time`'s wall seconds, user and system CPU seconds
# and peak RSS. Appends run three times each build, reads twice, alternating old and new.
set -euo pipefail
old=${1:?usage: bench-cli-ab.sh OLD_BIN_DIR NEW_BIN_DIR [WORK_DIR]}
new=${2:?usage: bench-cli-ab.sh OLD_BIN_DIR NEW_BIN_DIR [WORK_DIR]}
work=${3:-/tmp/posledger-ab}
for bin in "$old/posledger" "$old/replay" "$new/posledger" "$new/replay"; do
  [ -x "$bin" ] || { echo "no executable $bin" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 2; }
# The script removes and rewrites folders inside WORK_DIR: only in a folder it made (marked), or a new one.
if [ -e "$work" ] && [ ! -e "$work/.posledger-ab" ] && [ -n "$(ls -A "$work" 2>/dev/null)" ]; then
  echo "$work exists and was not made by this script (no .posledger-ab in it): give a new or empty folder" >&2
  exit 2
fi
mkdir -p "$work" && touch "$work/.posledger-ab"

t() { /usr/bin/time -f "$1 %e s wall %U user %S sys %M KB" "${@:2}" > /dev/null; }

# The fleets (made once; not timed).
make_fleet() { # NAME DEVICES SHAPE
  if [ ! -d "$work/$1" ]; then
    "$new/posledger" simulate --dir "$work/$1" --devices "$2" --seed 7 --shape "$3" > /dev/null
    "$new/replay" export "$work/$1" --format ndjson --out "$work/$1.ndjson" > /dev/null
  fi
}
make_fleet std6 53000 standard
make_fleet heavy6 160000 issue-heavy
make_fleet std7 510000 standard
make_fleet heavy7 1250000 issue-heavy

echo "== start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in 1 2 3; do
  for v in old new; do
    bin=$old; [ $v = new ] && bin=$new
    for f in std6 heavy6; do
      rm -rf "$work/append"; t "append $f $v" "$bin/posledger" append --dir "$work/append" "$work/$f.ndjson"
    done
  done
done
# One append of 10^7 lines, each build into its own folder, then what each folder costs a reader.
for v in old new; do
  bin=$old; [ $v = new ] && bin=$new
  rm -rf "$work/one-append-$v"
  t "append std7 $v" "$bin/posledger" append --dir "$work/one-append-$v" "$work/std7.ndjson"
  t "head one-append-made-by-$v" "$new/posledger" head --dir "$work/one-append-$v"
done
for _ in 1 2; do
  for d in std7 heavy7; do
    for v in old new; do
      bin=$old; [ $v = new ] && bin=$new
      for c in fleet verify audit; do t "$c $d $v" "$bin/replay" $c "$work/$d"; done
    done
  done
  for c in fleet audit; do
    t "$c one-append-made-by-old old" "$old/replay" $c "$work/one-append-old"
    t "$c one-append-made-by-new new" "$new/replay" $c "$work/one-append-new"
  done
done
rm -rf "$work/append"
echo "== end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
