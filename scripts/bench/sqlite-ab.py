#!/usr/bin/env python3
"""A/B runs on SQLite (or, with `--backend`, PostgreSQL or MariaDB of the test servers): lapse builds (or one build under different environments) alternating with
the anchor-column `LIMIT` loop (or, with `--baseline single`, the single statement; with
`--baseline batched`, the key windows), on fresh
copies of one template, to tell a change's effect from
the machine's run-to-run spread (up to a third here). Prints each contender's median and spread,
and the loop's, measured in the same rounds. Used for the experiments of BENCHMARKS.md that moved
nothing measurable; `scripts/bench.sh` remains the benchmark.

    scripts/bench/sqlite-ab.py --op delete --rounds 5 A=target/release/lapse B=/tmp/old-lapse
    scripts/bench/sqlite-ab.py --op anonymize --rounds 5 'ck0=env:LAPSE_X=0:target/release/lapse' ...
    source .testbed/env; .bench/venv/bin/python scripts/bench/sqlite-ab.py --backend postgres A=... B=...
      (PostgreSQL and MariaDB: the servers of `scripts/testbed.sh`, their URLs from the
      environment `.testbed/env` sets; the template is loaded once per invocation)

lapse logs at `lapse=warn` unless `LAPSE_BENCH_LOG` says otherwise (`lapse=debug,sqlx=debug`
for a timeline of the statements, in `<work>/ws-<op>/lapse.log`).

Contenders run in the order given in odd rounds and in the opposite order in even ones, and each
after the first is compared with it round by round (the mean and median of the relative
differences, and in how many rounds it was faster).

A contender is NAME=BINARY or NAME=env:VAR=VALUE[,VAR=VALUE]:BINARY. Every run's result must have
the same signature as the loop's (rows left and their key sum), or the script stops."""
import argparse
import datetime as dt
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sqlbench as sb  # noqa: E402


def contender(spec):
    name, rest = spec.split("=", 1)
    env = {}
    if rest.startswith("env:"):
        assigns, rest = rest[4:].rsplit(":", 1)
        env = dict(a.split("=", 1) for a in assigns.split(","))
    return name, os.path.abspath(rest), env


def backend(a, args):
    """The backend's driver and the URL lapse gets."""
    if a.backend == "sqlite":
        b = sb.Sqlite(args, os.path.join(os.path.abspath(a.work), "bench.db"))
        return b, f"sqlite://{b.path}"
    if a.backend == "postgres":
        url = os.environ["LAPSE_TEST_PG_URL"]
        return sb.Postgres(args, url), url
    url = os.environ["LAPSE_TEST_MYSQL_URL"]
    return sb.MySql(args, url), url


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", choices=["delete", "anonymize"], default="delete")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", choices=["limited", "single", "batched"], default="limited",
                    help="the loop on the anchor column (default), the single unbatched statement, or the key windows (batched)")
    ap.add_argument("--backend", choices=["sqlite", "postgres", "mariadb"], default="sqlite")
    ap.add_argument("--work", default=".bench/sqlite-ab")
    ap.add_argument("contenders", nargs="+", help="NAME=BINARY or NAME=env:VAR=VALUE:BINARY")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    args = argparse.Namespace(rows=a.rows, lapsed=0.30, batch=5000, lapse_batch=0, lapse=None)
    b, url = backend(a, args)
    b.now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if a.backend != "sqlite" or not os.path.exists(b.tpl):
        b.load_template()
    times = {"loop": []}
    names = [contender(spec)[0] for spec in a.contenders]
    expected = None
    for r in range(a.rounds):
        b.restore()
        t0 = time.perf_counter()
        getattr(b, f"baseline_{a.baseline}")(a.op)
        times["loop"].append(time.perf_counter() - t0)
        b.connect()
        expected = b.signature(a.op)
        # Every other round in the opposite order: a contender is not always the one that
        # runs right after the loop, or after another.
        for spec in (a.contenders if r % 2 == 0 else a.contenders[::-1]):
            name, binary, env = contender(spec)
            b.restore()
            args.lapse = binary
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                secs, _, code = sb.run_lapse(args, os.path.abspath(a.work), url, a.op)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            b.connect()
            got = b.signature(a.op)
            if code != 0 or got != expected:
                sys.exit(f"{name}: exit {code}, result {got} where the loop left {expected}")
            times.setdefault(name, []).append(secs)
        print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in ["loop", *names]), flush=True)
    loop = statistics.median(times["loop"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:>10}: median {m:.3f} s (min {min(t):.3f}, max {max(t):.3f}); loop / this {loop / m:.2f}")
    # Each later contender against the first, round by round: the rounds share the machine's
    # state, so the paired differences spread less than the times do.
    first = names[0]
    for name in names[1:]:
        d = [(b - a) / a for a, b in zip(times[first], times[name])]
        spread = f", sd {statistics.stdev(d):.1%}" if len(d) > 1 else ""
        print(f"{name:>10}: against {first}, round by round: mean {statistics.mean(d):+.1%}, "
              f"median {statistics.median(d):+.1%}{spread}; faster in {sum(x < 0 for x in d)} of {len(d)}")


if __name__ == "__main__":
    main()
