#!/usr/bin/env python3
"""Where a lapse run's time went, from its JSON log at `LAPSE_LOG=lapse=debug,sqlx=debug`
(`--log-format json`): the statements summed by kind (their first 45 characters), slowest
first, and, with `--from MS --to MS`, a timeline of what started in that window (each
statement's start, end and duration, and lapse's own debug messages), in milliseconds from the
log's first line.

    LAPSE_BENCH_LOG=lapse=debug,sqlx=debug scripts/bench/sqlite-ab.py --op anonymize --rounds 1 A=...
    scripts/bench/timeline.py .bench/sqlite-ab/ws-anonymize/lapse.log --from 0 --to 400

sqlx logs a statement when it ends, with its duration: its start is that minus the duration. The
log is the timeline of one run with debug logging on, which is slower than without: use it to
see the shape of a run, and `sqlite-ab.py` or `scripts/bench.sh` to time it."""
import argparse
import collections
import datetime as dt
import json


def events(path):
    t0 = None
    with open(path) as f:
        for line in f:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if not isinstance(j, dict) or "timestamp" not in j:
                continue
            ts = dt.datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")).timestamp()
            t0 = ts if t0 is None else t0
            fields = j.get("fields", j)
            stmt = fields.get("db.statement")
            secs = fields.get("elapsed_secs", 0) if stmt else 0
            name = " ".join(stmt.split()) if stmt else fields.get("message", "")
            yield (ts - t0 - secs) * 1000, (ts - t0) * 1000, bool(stmt), name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--from", dest="lo", type=float)
    ap.add_argument("--to", dest="hi", type=float)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    evs = list(events(a.log))
    by_kind = collections.defaultdict(lambda: [0, 0.0])
    for start, end, is_stmt, name in evs:
        if is_stmt:
            by_kind[name[:45]][0] += 1
            by_kind[name[:45]][1] += end - start
    span = max((e for _, e, _, _ in evs), default=0)
    print(f"log spans {span:.1f} ms; statements by kind, summed (they overlap on several connections):")
    for k, (n, ms) in sorted(by_kind.items(), key=lambda x: -x[1][1])[: a.top]:
        print(f"{n:6} {ms:9.1f} ms  {k}")
    if a.lo is not None or a.hi is not None:
        lo = a.lo if a.lo is not None else float("-inf")
        hi = a.hi if a.hi is not None else float("inf")
        print()
        for start, end, is_stmt, name in sorted(evs):
            if lo <= start <= hi and name:
                print(f"{start:9.1f} -> {end:9.1f} ({end - start:6.1f}) {name[:70]}")


if __name__ == "__main__":
    main()
