#!/usr/bin/env python3
"""The per-row cost in SQLite of the generalize_date guard and "still to do" test on text dates,
as src/sql/builder.rs writes them (lite_generalize_date_guard, lite_not_truncated), before and
after the changes of 2026-12-04: one million `YYYY-MM-DD` birth dates in a DATE column, three
rounds each. Python's own sqlite3 (not the SQLite lapse bundles): a comparison, not a figure of
lapse's.

    python3 scripts/bench/lite_generalize_cost.py
"""
import random
import sqlite3
import time

c = sqlite3.connect(":memory:")
print("sqlite", sqlite3.sqlite_version)
c.execute("CREATE TABLE t (b DATE)")
random.seed(1)
c.executemany(
    "INSERT INTO t VALUES (?)",
    [(f"{random.randint(1940, 2005)}-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}",) for _ in range(1_000_000)],
)
e = "b"
shape = f"({e} GLOB '[0-9][0-9][0-9][0-9]-01-01' OR {e} GLOB '[0-9][0-9][0-9][0-9]-01-01 00:00:00')"
tests = [
    ("guard, before", f"(typeof({e}) = 'text' AND date(SUBSTR({e}, 1, 10)) IS SUBSTR({e}, 1, 10))"),
    (
        "guard, after",
        f"(typeof({e}) = 'text' AND date(SUBSTR({e}, 1, 10)) IS SUBSTR({e}, 1, 10) AND (LENGTH({e}) = 10 "
        f"OR (SUBSTR({e}, 1, 4) BETWEEN '0001' AND '9998' AND LENGTH({e}) <= 64)))",
    ),
    ("to do, before", f"NOT {shape}"),
    ("to do, after", f"NOT ({shape} AND SUBSTR({e}, 6, 2) BETWEEN '01' AND '12' OR {e} GLOB '0000-00-00*')"),
]
for name, x in tests * 3:
    t = time.perf_counter()
    n = c.execute(f"SELECT count(*) FROM t WHERE {x}").fetchone()[0]
    print(f"{name:15} {n:8} rows  {(time.perf_counter() - t) * 1000:7.1f} ms")
