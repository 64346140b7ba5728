#!/usr/bin/env bash
# Runs docs/sql/*.sql in Spark local mode on a `replay export --format parquet` folder: the same SQL
# files the DuckDB test runs. Installs pyspark from PyPI where missing; needs Java 17 (or later).
#   scripts/spark-check.sh EXPORT_DIR [--json] [--time]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 EXPORT_DIR [--json] [--time]" >&2
  exit 2
fi
if ! python3 -c 'import pyspark' >/dev/null 2>&1; then
  python3 -m pip install --user pyspark >/dev/null 2>&1 \
    || python3 -m pip install --user --break-system-packages pyspark >/dev/null
fi
command -v java >/dev/null 2>&1 || { echo "spark-check: Java is missing (Spark needs Java 17)" >&2; exit 2; }
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-python3}"
exec python3 "$here/sql-check.py" spark "$1" "$here/../docs/sql" "${@:2}"
