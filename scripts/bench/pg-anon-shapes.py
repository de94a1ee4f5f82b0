#!/usr/bin/env python3
"""PostgreSQL anonymize: the batch statements' shapes, timed alone (no lapse process), on a fresh
copy of the benchmark's template for every run (`customers_tpl` and `legal_holds`, loaded by
`scripts/bench/sqlite-ab.py --backend postgres` or `scripts/bench.sh --only pg`), 1,000,000 rows,
batches of 5,000, lapse's own SQL text (filter, guards, `SET` forms) as its debug log shows it.
Modes, run alternately (`ROUNDS`, default 3):

  A  lapse's in-place batch: a locking read of the next 5,000 due keys with the guard, then an
     `UPDATE` joined with those keys (`unnest`) that tests the destroy filter again
  K  A without the filter in the `UPDATE` (the rows are locked; a hold would need the probe)
  B  one statement: the locking read as a CTE, the `UPDATE` joined with it
  C  one statement: the `UPDATE` of the due rows up to the last of the next 5,000 (a scalar
     subquery), guard in its `WHERE`, `RETURNING` the keys as an array (the delete's shape)
  J  C with the read as a `MATERIALIZED` CTE that also counts the rows the guards refuse
     (the form built into lapse and measured end to end in BENCHMARKS.md, 2026-12-07 11:00)
  I  C in two statements (the upper key read first)
  H  key windows with lapse's `SET`, filter and guard, `RETURNING` the keys
  D  key windows with lapse's `SET` and filter
  E  the benchmark's key windows (its `SET` and `WHERE`)
  F  lapse's `SET`, the key windows' `WHERE`
  G  the key windows' `SET`, lapse's `WHERE`

    source .testbed/env; ROUNDS=5 .bench/venv/bin/python scripts/bench/pg-anon-shapes.py A J
"""
import os, sys, time, statistics
sys.path.insert(0, '/work/main/scripts/bench')
import psycopg
url = os.environ["LAPSE_TEST_PG_URL"]
c = psycopg.connect(url, autocommit=True)
def ex(sql, params=None):
    with c.cursor() as cur:
        cur.execute(sql, params); 
        try: return cur.fetchall()
        except Exception: return cur.rowcount
def restore():
    for s in ["DROP TABLE IF EXISTS customers", "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255), full_name VARCHAR(255), phone VARCHAR(32), postal_address VARCHAR(255), birth_date DATE, signup_ip VARCHAR(45), status VARCHAR(16) NOT NULL, created_at TIMESTAMP NOT NULL)",
              "INSERT INTO customers SELECT * FROM customers_tpl", "CREATE INDEX ON customers(created_at)",
              "VACUUM ANALYZE customers", "CHECKPOINT"]:
        ex(s)

OCT = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPRE = f"^{OCT}(\\.{OCT}){{3}}$"
def filt(t, thr, now):
    return f"""((({t}."created_at" IS NOT NULL AND {t}."created_at" <> '-infinity' AND {t}."created_at" <= {thr}))
 AND (NOT EXISTS (SELECT 1 FROM "legal_holds" lh WHERE lh."subject" = {t}."id" AND (lh."policy" IS NULL OR lh."policy" IN ('customers')) AND (lh."expires_at" IS NULL OR COALESCE(lh."expires_at" > {now}, 1=1)))
 AND NOT EXISTS (SELECT 1 FROM "legal_holds" lh WHERE lh."subject" IS NULL AND (lh."policy" IS NULL OR lh."policy" IN ('customers')) AND (lh."expires_at" IS NULL OR COALESCE(lh."expires_at" > {now}, 1=1))))
 AND ({t}."phone" IS NOT NULL OR {t}."postal_address" IS NOT NULL OR ({t}."full_name" IS NOT NULL AND {t}."full_name" <> CAST('(anonymized)' AS character varying(255)))
 OR ({t}."email" IS NOT NULL AND NOT (LENGTH({t}."email") = 37 AND CAST({t}."email" AS TEXT) ~ '^anon_[0-9a-fA-F]{{32}}$'))
 OR ({t}."signup_ip" IS NOT NULL AND NOT (((({t}."signup_ip" LIKE '%.0' OR {t}."signup_ip" LIKE '%.0/%') AND ({t}."signup_ip" NOT LIKE '%:%' OR {t}."signup_ip" LIKE '::ffff:%')) OR (({t}."signup_ip" LIKE '%::' OR {t}."signup_ip" LIKE '%::/%') AND (LENGTH({t}."signup_ip") - LENGTH(REPLACE({t}."signup_ip", ':', ''))) <= 4 AND {t}."signup_ip" NOT LIKE '2002:%')) AND {t}."signup_ip" ~ '{IPRE}'))
 OR ({t}."birth_date" IS NOT NULL AND date_part('doy', {t}."birth_date") <> 1)))"""
SET = """UPDATE "customers" SET "birth_date" = CAST(date_trunc('year', "customers"."birth_date") AS date), "email" = CASE WHEN "customers"."email" IS NULL OR (LENGTH("customers"."email") = 37 AND "customers"."email" ~ '^anon_[0-9a-fA-F]{32}$') THEN "customers"."email" ELSE 'anon_' || replace(CAST(gen_random_uuid() AS text), '-', '') END, "full_name" = CASE WHEN "customers"."full_name" IS NULL THEN NULL ELSE CAST('(anonymized)' AS character varying(255)) END, "phone" = NULL, "postal_address" = NULL, "signup_ip" = rtrim("customers"."signup_ip", '0123456789') || '0'"""
GUARD = lambda t: f"""CASE WHEN ({t}."signup_ip" IS NULL OR (LENGTH({t}."signup_ip") <= 15 AND {t}."signup_ip" ~ '{IPRE}')) THEN 1 ELSE 0 END"""

T = {}
def run(mode, thr, now, lo, hi):
    after = None
    n = 0; tt = 0.0
    t0 = time.perf_counter()
    while True:
        lower = f'"customers"."id" >= {lo}' if after is None else f'"customers"."id" > {after}'
        with c.transaction():
            with c.cursor() as cur:
                if mode in ('A', 'K'):
                    cur.execute(f'SELECT "customers"."id", "customers"."id", {GUARD(chr(34)+"customers"+chr(34))} FROM "customers" WHERE {lower} AND "customers"."id" <= {hi} AND {filt(chr(34)+"customers"+chr(34), thr, now)} ORDER BY "customers"."id" LIMIT 5000 FOR UPDATE')
                    rows = cur.fetchall()
                    if not rows: break
                    keys = [r[0] for r in rows]
                    arr = "'{" + ",".join(map(str, keys)) + "}'"
                    t1 = time.perf_counter()
                    cur.execute(f'{SET} FROM unnest(CAST({arr} AS bigint[])) AS v(k0) WHERE "customers"."id" = v.k0 AND "customers"."id" >= {keys[0]} AND "customers"."id" <= {keys[-1]}' + ('' if mode == 'K' else f' AND {filt(chr(34)+"customers"+chr(34), thr, now)}'))
                    T[mode] = T.get(mode, 0) + (time.perf_counter() - t1)
                    assert cur.rowcount == len(keys), (cur.rowcount, len(keys))
                    after = keys[-1]; n += len(keys)
                elif mode == 'B':
                    cur.execute(f'''WITH b AS MATERIALIZED (SELECT "customers"."id" AS k, {GUARD(chr(34)+"customers"+chr(34))} AS g FROM "customers" WHERE {lower} AND "customers"."id" <= {hi} AND {filt(chr(34)+"customers"+chr(34), thr, now)} ORDER BY "customers"."id" LIMIT 5000 FOR UPDATE),
u AS ({SET} FROM b WHERE "customers"."id" = b.k AND NOT EXISTS (SELECT 1 FROM b WHERE b.g = 0) RETURNING 1)
SELECT COUNT(*), array_agg(b.k ORDER BY b.k), (SELECT COUNT(*) FROM u), COALESCE(SUM(1 - b.g), 0) FROM b''')
                    cnt, keys, upd, bad = cur.fetchone()
                    if cnt == 0: break
                    assert upd == cnt and bad == 0, (cnt, upd, bad)
                    after = keys[-1]; n += cnt
                elif mode == 'J':
                    f = filt(chr(34)+"customers"+chr(34), thr, now)
                    lower = f'"customers"."id" >= {lo}' if after is None else f'"customers"."id" > {after}'
                    cur.execute(f'''WITH b AS MATERIALIZED (SELECT MAX(x.k) AS hi, COUNT(*) AS n, SUM(1 - x.g) AS bad FROM (SELECT n."id" AS k, {GUARD('n')} AS g FROM "customers" n WHERE {lower.replace('"customers"', 'n')} AND n."id" <= {hi} AND {filt('n', thr, now)} ORDER BY n."id" LIMIT 5000) x),
u AS ({SET} WHERE {lower} AND "customers"."id" <= (SELECT b.hi FROM b) AND (SELECT b.bad FROM b) = 0 AND {f} RETURNING "customers"."id" AS k)
SELECT (SELECT b.n FROM b), (SELECT b.bad FROM b), (SELECT b.hi FROM b), COUNT(*), array_agg(u.k) FROM u''')
                    bn, bad, up, cnt, keys = cur.fetchone()
                    if bn == 0: break
                    assert bad == 0 and cnt == bn, (bn, bad, cnt)
                    n += cnt; after = up
                elif mode == 'H':
                    a = lo if after is None else after
                    if a > hi: break
                    f = filt(chr(34)+"customers"+chr(34), thr, now)
                    cur.execute(f'''WITH u AS ({SET} WHERE "customers"."id" >= {a} AND "customers"."id" < {a+5000} AND {f} AND {GUARD(chr(34)+"customers"+chr(34))} = 1 RETURNING "customers"."id" AS k) SELECT COUNT(*), array_agg(u.k) FROM u''')
                    cnt, keys = cur.fetchone()
                    n += cnt; after = a + 5000
                elif mode == 'I':
                    f = filt(chr(34)+"customers"+chr(34), thr, now)
                    lower = f'"customers"."id" >= {lo}' if after is None else f'"customers"."id" > {after}'
                    cur.execute(f'SELECT MAX(bb.k) FROM (SELECT "customers"."id" AS k FROM "customers" WHERE {lower} AND "customers"."id" <= {hi} AND {f} ORDER BY "customers"."id" LIMIT 5000) bb')
                    up = cur.fetchone()[0]
                    if up is None: break
                    cur.execute(f'''WITH u AS ({SET} WHERE {lower} AND "customers"."id" <= {up} AND {f} AND {GUARD(chr(34)+"customers"+chr(34))} = 1 RETURNING "customers"."id" AS k) SELECT COUNT(*), array_agg(u.k) FROM u''')
                    cnt, keys = cur.fetchone()
                    n += cnt; after = up
                elif mode in ('D', 'E', 'F', 'G'):
                    a = lo if after is None else after
                    if a > hi: break
                    f = filt(chr(34)+"customers"+chr(34), thr, now)
                    if mode == 'D':
                        st = f'{SET} WHERE "customers"."id" >= {a} AND "customers"."id" < {a+5000} AND {f}'
                    elif mode == 'E':
                        st = f"UPDATE customers SET email = 'anon_' || md5(random()::text), full_name = '(anonymized)', phone = NULL, postal_address = NULL, birth_date = date_trunc('year', birth_date)::date, signup_ip = rtrim(signup_ip, '0123456789') || '0' WHERE id >= {a} AND id < {a+5000} AND created_at <= {thr} AND NOT EXISTS (SELECT 1 FROM legal_holds lh WHERE (lh.subject = customers.id OR lh.subject IS NULL) AND (lh.policy IS NULL OR lh.policy = 'customers') AND (lh.expires_at IS NULL OR lh.expires_at > {now}))"
                    elif mode == 'F':
                        # lapse's SET, the baseline's WHERE
                        st = f"{SET} WHERE id >= {a} AND id < {a+5000} AND created_at <= {thr} AND NOT EXISTS (SELECT 1 FROM legal_holds lh WHERE (lh.subject = customers.id OR lh.subject IS NULL) AND (lh.policy IS NULL OR lh.policy = 'customers') AND (lh.expires_at IS NULL OR lh.expires_at > {now}))"
                    else:
                        # the baseline's SET, lapse's WHERE
                        st = f"UPDATE customers SET email = 'anon_' || md5(random()::text), full_name = '(anonymized)', phone = NULL, postal_address = NULL, birth_date = date_trunc('year', birth_date)::date, signup_ip = rtrim(signup_ip, '0123456789') || '0' WHERE id >= {a} AND id < {a+5000} AND {f}"
                    cur.execute(st)
                    n += cur.rowcount; after = a + 5000
                elif mode == 'C':
                    cur.execute(f'''WITH u AS ({SET} WHERE {lower} AND "customers"."id" <= (SELECT MAX(bb.k) FROM (SELECT n."id" AS k FROM "customers" n WHERE {lower.replace('"customers"', 'n')} AND n."id" <= {hi} AND {filt('n', thr, now)} ORDER BY n."id" LIMIT 5000) bb) AND {filt(chr(34)+"customers"+chr(34), thr, now)} AND {GUARD(chr(34)+"customers"+chr(34))} = 1 RETURNING "customers"."id" AS k)
SELECT COUNT(*), array_agg(u.k) FROM u''')
                    cnt, keys = cur.fetchone()
                    if cnt == 0: break
                    after = max(keys); n += cnt
    return n, time.perf_counter() - t0

import datetime as dt
now = "TIMESTAMP '" + dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S') + "'"
thr = "TIMESTAMP '2023-01-01 00:00:00'"
modes = sys.argv[1:] or ['A','B','C']
res = {m: [] for m in modes}
for r in range(int(os.environ.get('ROUNDS', '3'))):
    order = modes if r % 2 == 0 else modes[::-1]
    for m in order:
        restore()
        lo, hi = ex(f'SELECT MIN(id), MAX(id) FROM customers c WHERE c.created_at <= {thr}')[0]
        n, t = run(m, thr, now, lo, hi)
        res[m].append(t)
        print(m, n, round(t, 3), flush=True)
for m in modes: print(m, 'median', round(statistics.median(res[m]), 3))
print('update time total', T)
