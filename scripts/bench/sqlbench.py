#!/usr/bin/env python3
"""SQL part of scripts/bench.sh: lapse against hand-written DELETE/UPDATE on the same data.

For each backend: load a template table of N customers (a share lapsed, a share under a legal
hold in a holds table), then for every contender restore the table from the template, run the
contender, time it, and record a signature of the result (row counts, key sums) so contenders
that did different work are caught.
"""
import argparse
import statistics
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

CUTOFF = dt.datetime(2026, 1, 1)
THRESHOLD = dt.datetime(2023, 1, 1)  # cutoff - "3 years", as lapse computes it
SPAN = dt.timedelta(days=6 * 365)

COLS = "id, email, full_name, phone, postal_address, birth_date, signup_ip, status, created_at"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ backends --

class Backend:
    name = ""
    ts = "TIMESTAMP"

    def __init__(self, args):
        self.args = args

    def connect(self):
        """Opens the driver's connection again after lapse ran (SQLite's file); a server's
        connection stays open."""

    def created_start(self):
        # created_at grows with id; the first `lapsed` share of ids is at or before THRESHOLD.
        n = self.args.rows
        step = SPAN.total_seconds() / n
        return THRESHOLD - dt.timedelta(seconds=step * n * self.args.lapsed), step

    def ddl(self):
        ts = self.ts
        return [
            f"CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255), full_name VARCHAR(255), "
            f"phone VARCHAR(32), postal_address VARCHAR(255), birth_date DATE, signup_ip VARCHAR(45), "
            f"status VARCHAR(16) NOT NULL, created_at {ts} NOT NULL)",
            "CREATE INDEX customers_created_at ON customers (created_at)",
        ]

    def holds_ddl(self):
        return [
            f"CREATE TABLE legal_holds (id VARCHAR(64) PRIMARY KEY, subject BIGINT, policy VARCHAR(128), "
            f"expires_at {self.ts})",
            "CREATE INDEX legal_holds_subject ON legal_holds (subject)",
        ]

    def not_held(self, qual="c"):
        # Exactly the hold semantics lapse applies: a hold row for the subject (or for every
        # subject), for this policy (or every policy), not expired at the start of the run.
        return (
            f"NOT EXISTS (SELECT 1 FROM legal_holds lh WHERE (lh.subject = {qual}.id OR lh.subject IS NULL) "
            f"AND (lh.policy IS NULL OR lh.policy = 'customers') "
            f"AND (lh.expires_at IS NULL OR lh.expires_at > {self.lit(self.now)}))"
        )

    def lit(self, t):
        return "TIMESTAMP '" + t.strftime("%Y-%m-%d %H:%M:%S") + "'"

    def lapsed(self, qual="c"):
        return f"{qual}.created_at <= {self.lit(THRESHOLD)}"

    def baseline_batched(self, verb):
        """Key windows of `batch` ids over the lapsed range, each its own transaction."""
        lo, hi = self.scalar2(f"SELECT MIN(id), MAX(id) FROM customers c WHERE {self.lapsed()}")
        b = self.args.batch
        n = 0
        if lo is None:
            return 0
        a = lo
        while a <= hi:
            where = f"c.id >= {a} AND c.id < {a + b} AND {self.lapsed()} AND {self.not_held()}"
            n += self.execute_commit(self.statement(verb, where))
            a += b
        return n

    def baseline_limited(self, verb):
        """The loop most often hand-written, and the one issue 7 names: on the anchor column, the
        oldest `batch` due rows (an `UPDATE` also skips rows it already changed), one statement and
        one transaction at a time, until a statement changes nothing. Unlike the key windows it
        needs no correlation between the key and the anchor."""
        n = 0
        while True:
            k = self.execute_commit(self.limited_statement(verb))
            if k == 0:
                return n
            n += k

    def limited_where(self, verb):
        w = f"{self.lapsed()} AND {self.not_held()}"
        return w if verb == "delete" else w + " AND (c.full_name IS NULL OR c.full_name <> '(anonymized)')"

    def limited_statement(self, verb):
        # PostgreSQL and SQLite: no LIMIT on DELETE/UPDATE, so the batch's keys by a subquery.
        pick = (f"SELECT c.id FROM customers c WHERE {self.limited_where(verb)} "
                f"ORDER BY c.created_at LIMIT {self.args.batch}")
        if verb == "delete":
            return f"DELETE FROM customers WHERE id IN ({pick})"
        return f"UPDATE customers SET {self.anon_set()} WHERE id IN ({pick})"

    def baseline_single(self, verb):
        return self.execute_commit(self.statement(verb, f"{self.lapsed()} AND {self.not_held()}"))

    def statement(self, verb, where):
        if verb == "delete":
            return f"DELETE FROM customers{self.alias()} WHERE {where}"
        return f"UPDATE customers{self.alias()} SET {self.anon_set()} WHERE {where}"

    def alias(self):
        return " AS c"

    def signature(self, verb):
        if verb == "delete":
            return self.scalar2("SELECT COUNT(*), COALESCE(SUM(id), 0) FROM customers") + (None,)
        q = ("SELECT COUNT(*), COALESCE(SUM(id), 0), SUM(CASE WHEN phone IS NULL AND email LIKE 'anon!_%' ESCAPE '!' "
             "AND signup_ip LIKE '%.0' THEN 1 ELSE 0 END) FROM customers WHERE full_name = '(anonymized)'")
        return tuple(self.scalar2(q, 3))


class Postgres(Backend):
    name = "postgres"

    def __init__(self, args, url):
        super().__init__(args)
        import psycopg
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def exec(self, sql):
        with self.conn.cursor() as c:
            c.execute(sql)

    def scalar2(self, sql, n=2):
        with self.conn.cursor() as c:
            c.execute(sql)
            r = c.fetchone()
            return tuple(None if v is None else int(v) for v in r[:n])

    def execute_commit(self, sql):
        with self.conn.transaction():
            with self.conn.cursor() as c:
                c.execute(sql)
                return c.rowcount

    def anon_set(self):
        return ("email = 'anon_' || md5(random()::text), full_name = '(anonymized)', phone = NULL, "
                "postal_address = NULL, birth_date = date_trunc('year', birth_date)::date, "
                "signup_ip = rtrim(signup_ip, '0123456789') || '0'")

    def load_template(self):
        n = self.args.rows
        start, step = self.created_start()
        for s in ["DROP TABLE IF EXISTS customers_tpl", "DROP TABLE IF EXISTS legal_holds", "DROP TABLE IF EXISTS lapse_journal"]:
            self.exec(s)
        self.exec(self.ddl()[0].replace("customers", "customers_tpl", 1))
        self.exec(
            f"INSERT INTO customers_tpl SELECT g, 'user' || g || '@' || substr(md5(g::text), 1, 8) || '.example.com', "
            f"'Name ' || substr(md5(g::text), 9, 10), '+44 20 ' || (7000000 + g % 999999), "
            f"g || ' ' || substr(md5(g::text), 20, 12) || ' Street, London', "
            f"DATE '1950-01-01' + (g % 18000), '10.' || (g % 250) || '.' || (g / 250 % 250) || '.' || (g % 199 + 1), "
            f"CASE WHEN g % 10 = 0 THEN 'closed' ELSE 'active' END, "
            f"{self.lit(start)} + (g * {step}) * INTERVAL '1 second' FROM generate_series(1, {n}) g")
        for s in self.holds_ddl():
            self.exec(s)
        self.exec(holds_insert_sql(self, "generate_series(1, {n}) g".format(n=n), "g"))

    def restore(self):
        self.exec("DROP TABLE IF EXISTS customers")
        self.exec("DROP TABLE IF EXISTS lapse_journal")
        for s in self.ddl():
            self.exec(s)
        self.exec(f"INSERT INTO customers SELECT * FROM customers_tpl")
        self.exec("VACUUM ANALYZE customers")
        self.exec("VACUUM ANALYZE legal_holds")
        self.exec("CHECKPOINT")


class MySql(Backend):
    name = "mariadb"
    ts = "DATETIME"

    def __init__(self, args, url):
        super().__init__(args)
        import pymysql
        from urllib.parse import urlparse
        u = urlparse(url)
        self.conn = pymysql.connect(host=u.hostname, port=u.port, user=u.username, password=u.password,
                                    database=u.path.lstrip("/"), autocommit=True)
        self.exec("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def exec(self, sql):
        with self.conn.cursor() as c:
            c.execute(sql)

    def scalar2(self, sql, n=2):
        with self.conn.cursor() as c:
            c.execute(sql)
            r = c.fetchone()
            return tuple(None if v is None else int(v) for v in r[:n])

    def execute_commit(self, sql):
        self.conn.begin()
        with self.conn.cursor() as c:
            n = c.execute(sql)
        self.conn.commit()
        return n

    def statement(self, verb, where):
        if verb == "delete":
            # MariaDB's single-table DELETE takes no alias before 11.6: qualify by table name.
            return f"DELETE FROM customers WHERE {where.replace('c.', 'customers.')}"
        return f"UPDATE customers c SET {self.anon_set()} WHERE {where}"

    def limited_statement(self, verb):
        # MariaDB: DELETE and UPDATE take ORDER BY and LIMIT themselves.
        return f"{self.statement(verb, self.limited_where(verb))} ORDER BY created_at LIMIT {self.args.batch}"

    def anon_set(self):
        return ("c.email = CONCAT('anon_', MD5(RAND())), c.full_name = '(anonymized)', c.phone = NULL, "
                "c.postal_address = NULL, c.birth_date = MAKEDATE(YEAR(c.birth_date), 1), "
                "c.signup_ip = CONCAT(SUBSTRING_INDEX(c.signup_ip, '.', 3), '.0')")

    def load_template(self):
        n = self.args.rows
        start, step = self.created_start()
        for s in ["DROP TABLE IF EXISTS customers_tpl", "DROP TABLE IF EXISTS legal_holds", "DROP TABLE IF EXISTS lapse_journal"]:
            self.exec(s)
        self.exec(self.ddl()[0].replace("customers", "customers_tpl", 1))
        self.exec(
            f"INSERT INTO customers_tpl SELECT seq, CONCAT('user', seq, '@', SUBSTR(MD5(seq), 1, 8), '.example.com'), "
            f"CONCAT('Name ', SUBSTR(MD5(seq), 9, 10)), CONCAT('+44 20 ', 7000000 + seq % 999999), "
            f"CONCAT(seq, ' ', SUBSTR(MD5(seq), 20, 12), ' Street, London'), "
            f"DATE '1950-01-01' + INTERVAL (seq % 18000) DAY, CONCAT('10.', seq % 250, '.', FLOOR(seq / 250) % 250, '.', seq % 199 + 1), "
            f"IF(seq % 10 = 0, 'closed', 'active'), "
            f"{self.lit(start)} + INTERVAL FLOOR(seq * {step}) SECOND FROM seq_1_to_{n}")
        for s in self.holds_ddl():
            self.exec(s)
        self.exec(holds_insert_sql(self, f"seq_1_to_{n} s", "seq"))

    def restore(self):
        self.exec("DROP TABLE IF EXISTS customers")
        self.exec("DROP TABLE IF EXISTS lapse_journal")
        for s in self.ddl():
            self.exec(s)
        self.exec("INSERT INTO customers SELECT * FROM customers_tpl")
        self.exec("ANALYZE TABLE customers, legal_holds")


class Sqlite(Backend):
    name = "sqlite"
    ts = "DATETIME"

    def __init__(self, args, path):
        super().__init__(args)
        self.path = path
        self.tpl = path + ".tpl"
        self.conn = None

    def connect(self):
        if self.conn:
            self.conn.close()
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")

    def exec(self, sql):
        self.conn.execute(sql)

    def scalar2(self, sql, n=2):
        r = self.conn.execute(sql).fetchone()
        return tuple(None if v is None else int(v) for v in r[:n])

    def execute_commit(self, sql):
        self.conn.execute("BEGIN IMMEDIATE")
        n = self.conn.execute(sql).rowcount
        self.conn.execute("COMMIT")
        return n

    def anon_set(self):
        return ("email = 'anon_' || lower(hex(randomblob(16))), full_name = '(anonymized)', phone = NULL, "
                "postal_address = NULL, birth_date = strftime('%Y-01-01', birth_date), "
                "signup_ip = rtrim(signup_ip, '0123456789') || '0'")

    def lit(self, t):
        return "'" + t.strftime("%Y-%m-%d %H:%M:%S") + "'"

    def signature(self, verb):
        if verb == "delete":
            return super().signature(verb)
        q = ("SELECT COUNT(*), COALESCE(SUM(id), 0), SUM(CASE WHEN phone IS NULL AND email LIKE 'anon!_%' ESCAPE '!' "
             "AND signup_ip LIKE '%.0' THEN 1 ELSE 0 END) FROM customers WHERE full_name = '(anonymized)'")
        return tuple(self.scalar2(q, 3))

    def load_template(self):
        import hashlib
        n = self.args.rows
        start, step = self.created_start()
        for p in (self.tpl, self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(p):
                os.remove(p)
        c = sqlite3.connect(self.tpl, isolation_level=None)
        c.execute("PRAGMA journal_mode=OFF")
        c.execute("PRAGMA synchronous=OFF")
        for s in self.ddl()[:1] + self.holds_ddl():
            c.execute(s)
        base = dt.date(1950, 1, 1)

        def rows():
            for g in range(1, n + 1):
                h = hashlib.md5(str(g).encode()).hexdigest()
                yield (g, f"user{g}@{h[:8]}.example.com", f"Name {h[8:18]}", f"+44 20 {7000000 + g % 999999}",
                       f"{g} {h[19:31]} Street, London", (base + dt.timedelta(days=g % 18000)).isoformat(),
                       f"10.{g % 250}.{g // 250 % 250}.{g % 199 + 1}", "closed" if g % 10 == 0 else "active",
                       (start + dt.timedelta(seconds=int(g * step))).strftime("%Y-%m-%d %H:%M:%S"))
        c.execute("BEGIN")
        c.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?,?,?,?)", rows())
        c.execute("COMMIT")
        c.execute(self.ddl()[1])
        c.execute(holds_insert_sql(self, f"(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) SELECT g FROM s)", "g"))
        c.execute("ANALYZE")
        c.close()

    def restore(self):
        if self.conn:
            self.conn.close()
            self.conn = None
        for p in (self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(p):
                os.remove(p)
        shutil.copyfile(self.tpl, self.path)
        # The copy on disk before anyone times anything: otherwise the first fsync (lapse's
        # switch to WAL, inside its timing; the baseline's, in `connect` below, outside it)
        # also writes back the whole copied file.
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.connect()


def holds_insert_sql(b, source, g):
    """Holds: 1% of subjects held (id % 100 = 7); 1% with an expired hold (id % 100 = 53, not
    held); 0.5% held for another policy only (id % 200 = 31, not held)."""
    past = b.lit(dt.datetime(2025, 6, 1))
    future = b.lit(dt.datetime(2030, 1, 1))
    return (
        f"INSERT INTO legal_holds (id, subject, policy, expires_at) "
        f"SELECT CONCAT_ID, {g}, CASE WHEN {g} % 200 = 31 THEN 'other-policy' ELSE NULL END, "
        f"CASE WHEN {g} % 100 = 53 THEN {past} WHEN {g} % 100 = 7 THEN {future} ELSE NULL END "
        f"FROM {source} WHERE {g} % 100 IN (7, 53) OR {g} % 200 = 31"
    ).replace("CONCAT_ID", "CONCAT('LH-', %s)" % g if isinstance(b, MySql) else "'LH-' || %s" % g)


# -------------------------------------------------------------------------------------- lapse --

POLICY = """name: customers
description: benchmark customers
dataset:
  connection: db
  table: customers
  key: id
  subject: id
personal:
  email:          {{ category: email,          anonymize: random_token }}
  full_name:      {{ category: name,           anonymize: {{ constant: "(anonymized)" }} }}
  phone:          {{ category: phone,          anonymize: nullify }}
  postal_address: {{ category: postal_address, anonymize: nullify }}
  birth_date:     {{ category: date_of_birth,  anonymize: {{ generalize_date: year }} }}
  signup_ip:      {{ category: ip_address,     anonymize: generalize_ip }}
purposes:
  - name: customer-account
    legal_basis: contract
    retain: 3 years
    after: created_at
on_lapse: {action}
guardrail:
  max_share: 100%
"""

CONFIG = """connections:
  db:
    url_file: db.url
    holds_table:
      table: legal_holds
      id: id
      subject: subject
      policy: policy
      expires: expires_at
policies: policies
evidence:
  key_file: evidence.key
reports:
  dir: reports
"""


def run_lapse(args, work, url, action, extra=("run",)):
    d = os.path.join(work, f"ws-{action}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "policies"))
    with open(os.path.join(d, "db.url"), "w") as f:
        f.write(url)
    with open(os.path.join(d, "evidence.key"), "w") as f:
        f.write("bench-evidence-key-0123456789abcdef")
    with open(os.path.join(d, "lapse.yaml"), "w") as f:
        f.write(CONFIG)
    with open(os.path.join(d, "policies", "customers.yaml"), "w") as f:
        f.write(POLICY.format(action=action))
    cmd = [args.lapse, *extra, "-c", os.path.join(d, "lapse.yaml"), "--cutoff", CUTOFF.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "--log-format", "json"]
    if extra[0] == "run":
        cmd.append("--yes")
        if args.lapse_batch:
            cmd += ["--batch-size", str(args.lapse_batch)]
    return timed_child(cmd, os.path.join(d, "lapse.log"))


GNU_TIME = "/usr/bin/time"


def timed_child(cmd, logfile):
    """Runs cmd; returns (seconds, peak RSS in KiB, exit code). The peak comes from GNU time
    when installed (scripts/bench.sh installs it): the `ru_maxrss` of a child of this process
    counts this process's own memory too (the address space the child had before its exec),
    which made lapse's figures look larger than they are."""
    rss_file = logfile + ".peak-rss"
    wrap = [GNU_TIME, "-f", "%M", "-o", rss_file] if os.access(GNU_TIME, os.X_OK) else []
    with open(logfile, "w") as lf:
        t0 = time.perf_counter()
        p = subprocess.Popen(wrap + cmd, stdout=lf, stderr=subprocess.STDOUT,
                             env={**os.environ, "LAPSE_LOG": os.environ.get("LAPSE_BENCH_LOG", "lapse=warn")})
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    rss = ru.ru_maxrss
    if wrap:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1])
    return secs, rss, code


def evidence_records(work, action):
    d = os.path.join(work, f"ws-{action}", "reports")
    n = 0
    for f in os.listdir(d):
        if f.endswith(".evidence.jsonl"):
            with open(os.path.join(d, f), "rb") as fh:
                n += sum(1 for _ in fh)
    return n


def machine_busy():
    """Busy core-seconds of the whole machine so far (Linux `/proc/stat`; None elsewhere): every
    process's, the database server's included, so that a contender's work in the server counts
    as much as its own. (Background work of the server, such as a checkpoint, counts for
    whoever it falls on.)"""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------- main --

def median_of(rs):
    """One contender's result over its rounds: the median time (and the rate from it), the
    largest peak RSS, every round's seconds, the median machine CPU, and any round's error."""
    secs = sorted(r["seconds"] for r in rs)
    r = dict(rs[0])
    r["seconds"] = statistics.median(secs)
    r["rows_per_s"] = round(r["due"] / r["seconds"], 1) if r["seconds"] > 0 else None
    rss = [x["peak_rss_kib"] for x in rs if x.get("peak_rss_kib")]
    r["peak_rss_kib"] = max(rss) if rss else None
    r["rounds"] = [x["seconds"] for x in rs]
    cpu = [x["machine_cpu_s"] for x in rs if x.get("machine_cpu_s") is not None]
    r["machine_cpu_s"] = round(statistics.median(cpu), 2) if cpu else None
    errors = [x["error"] for x in rs if x.get("error")]
    if errors:
        r["error"] = errors[0]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--lapsed", type=float, default=0.30)
    ap.add_argument("--batch", type=int, default=5000, help="batch of the hand-written loop")
    ap.add_argument("--lapse-batch", type=int, default=0, help="lapse --batch-size (0: its default)")
    ap.add_argument("--only", default="postgres,mariadb,sqlite")
    ap.add_argument("--contenders", default="lapse-delete,batched-delete,limited-delete,single-delete,"
                    "lapse-anonymize,batched-anonymize,limited-anonymize,single-anonymize")
    ap.add_argument("--lapse", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--pg-url")
    ap.add_argument("--mysql-url")
    ap.add_argument("--plan", action="store_true", help="also time `lapse plan`")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every contender, one after another; the median is reported")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    results = []
    for name in args.only.split(","):
        if name == "postgres":
            b = Postgres(args, args.pg_url)
            url = args.pg_url
        elif name in ("mariadb", "mysql"):
            b = MySql(args, args.mysql_url)
            url = args.mysql_url
        elif name == "sqlite":
            path = os.path.join(args.work, "bench.db")
            b = Sqlite(args, path)
            url = f"sqlite://{path}"
        else:
            continue
        b.now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        t0 = time.perf_counter()
        if isinstance(b, Sqlite):
            b.load_template()
        else:
            b.load_template()
        log(f"[bench] {name}: template of {args.rows} rows loaded in {time.perf_counter() - t0:.1f}s")
        sigs = {}
        runs = {}
        for rnd in range(args.repeat):
            for c in args.contenders.split(","):
                who, verb = c.split("-")
                b.restore()
                due = b.scalar2(f"SELECT COUNT(*), 0 FROM customers c WHERE {b.lapsed()} AND {b.not_held()}")[0]
                held = b.scalar2(f"SELECT COUNT(*), 0 FROM customers c WHERE {b.lapsed()} AND NOT {b.not_held()}")[0]
                rss = None
                code = 0
                c0 = machine_busy()
                t0 = time.perf_counter()
                if who == "lapse":
                    secs, rss, code = run_lapse(args, args.work, url, "delete" if verb == "delete" else "anonymize")
                    ev = evidence_records(args.work, verb)
                else:
                    getattr(b, f"baseline_{who}")(verb)  # batched, limited, single
                    secs = time.perf_counter() - t0
                    ev = None
                cpu = None if c0 is None else round(machine_busy() - c0, 2)
                if who == "lapse":
                    b.connect()
                sig = b.signature(verb)
                r = {"backend": name, "contender": who, "verb": verb, "rows": args.rows, "due": due, "held": held,
                     "seconds": round(secs, 3), "rows_per_s": round(due / secs, 1) if secs > 0 else None,
                     "peak_rss_kib": rss, "exit": code, "evidence": ev, "signature": list(sig),
                     "machine_cpu_s": cpu}
                if who == "lapse" and (code != 0 or ev != due):
                    r["error"] = f"lapse exited {code}, evidence records {ev}, due {due}"
                log(f"[bench] {name} {c}" + (f" (round {rnd + 1})" if args.repeat > 1 else "") + f": {due} due, {held} held, {secs:.2f}s, {r['rows_per_s']} rows/s"
                    + (f", machine CPU {cpu:.2f} core-s" if cpu is not None else "")
                    + (f", peak RSS {rss / 1024:.1f} MiB, exit {code}" if rss else ""))
                prev = sigs.setdefault(verb, sig)
                if prev != sig:
                    r["error"] = f"result differs from the first {verb} contender: {sig} != {prev}"
                    log(f"[bench] ERROR {r['error']}")
                runs.setdefault(c, []).append(r)
        for c, rs in runs.items():
            results.append(median_of(rs))
        if args.plan:
            b.restore()
            secs, rss, code = run_lapse(args, args.work, url, "delete", extra=("plan",))
            results.append({"backend": name, "contender": "lapse", "verb": "plan", "rows": args.rows,
                            "seconds": round(secs, 3), "peak_rss_kib": rss, "exit": code})
            log(f"[bench] {name} plan: {secs:.2f}s, peak RSS {rss / 1024:.1f} MiB, exit {code}")
        if not isinstance(b, Sqlite):
            b.exec("DROP TABLE IF EXISTS customers_tpl")
            b.exec("DROP TABLE IF EXISTS customers")
            b.exec("DROP TABLE IF EXISTS lapse_journal")
        else:
            for p in (b.tpl, b.path, b.path + "-wal", b.path + "-shm"):
                if os.path.exists(p):
                    os.remove(p)
    with open(args.json_out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
