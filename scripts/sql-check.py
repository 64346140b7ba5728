#!/usr/bin/env python3
"""Runs every docs/sql/*.sql query on a `replay export --format parquet` folder, in DuckDB or Spark.

    python3 scripts/sql-check.py duckdb EXPORT_DIR [SQL_DIR] [--json] [--time]
    python3 scripts/sql-check.py spark  EXPORT_DIR [SQL_DIR] [--json] [--time]

The queries are the same files for both engines. Each engine first names the four tables as views
(`events`, `directives`, `directive_models`, `terminals`) over the export's Parquet files, with the
session time zone set to UTC. --json prints one JSON object {query: {"columns": [...], "rows": [...]}}
(timestamps as ISO 8601 text) for the tests; otherwise a table per query. --time adds each query's
wall time in seconds.
"""
import json
import os
import sys
import time

TABLES = ["events", "directives", "directive_models", "terminals"]


def duckdb_engine(export):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # The files carry provider and month as columns too, so the Hive folders need not be parsed; a
    # many-source export (`replay export A B ...`) adds a first level source=<ledger id>, read as the
    # column `source` (text: a ledger id of digits only must not become a number).
    many = any(name.startswith("source=") for name in os.listdir(os.path.join(export, "terminals")))
    hive = "hive_partitioning = true, hive_types_autocast = false" if many else "hive_partitioning = false"
    for table in TABLES:
        glob = os.path.join(export, table, "**", "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', {hive})")

    def run(sql):
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description]
        return columns, cursor.fetchall()

    return run


def spark_engine(export):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("posledger-sql-check")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for table in TABLES:
        spark.read.parquet(os.path.join(export, table)).createOrReplaceTempView(table)

    def run(sql):
        frame = spark.sql(sql)
        rows = [tuple(r) for r in frame.collect()]
        return frame.columns, rows

    return run


def plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def main(argv):
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    if len(args) < 2 or args[0] not in ("duckdb", "spark"):
        print(__doc__, file=sys.stderr)
        return 2
    engine, export = args[0], args[1]
    sql_dir = args[2] if len(args) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "sql")
    run = duckdb_engine(export) if engine == "duckdb" else spark_engine(export)
    results = {}
    for name in sorted(f for f in os.listdir(sql_dir) if f.endswith(".sql")):
        with open(os.path.join(sql_dir, name), encoding="utf-8") as f:
            sql = f.read()
        started = time.monotonic()
        columns, rows = run(sql)
        seconds = time.monotonic() - started
        query = name[: -len(".sql")]
        results[query] = {"columns": columns, "rows": [[plain(v) for v in row] for row in rows]}
        if "--time" in flags:
            results[query]["seconds"] = round(seconds, 3)
    if "--json" in flags:
        json.dump(results, sys.stdout)
        print()
        return 0
    for query, result in results.items():
        timing = f" ({result['seconds']} s)" if "seconds" in result else ""
        print(f"== {query}: {len(result['rows'])} rows{timing}")
        print("\t".join(result["columns"]))
        for row in result["rows"][:20]:
            print("\t".join("" if v is None else str(v) for v in row))
        if len(result["rows"]) > 20:
            print(f"... {len(result['rows']) - 20} more rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
