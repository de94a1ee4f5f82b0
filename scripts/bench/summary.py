#!/usr/bin/env python3
"""Merges the drivers' JSON results and prints the Markdown tables of BENCHMARKS.md."""
import argparse
import json


def s3_median(rs):
    """One S3 contender over its rounds: the round of median time (its CPU figures with it)."""
    return sorted(rs, key=lambda x: x["seconds"])[(len(rs) - 1) // 2]


def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib else "–"


def rate(r):
    return f"{r['rows_per_s']:,.0f}" if r and r.get("rows_per_s") else "–"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("parts", nargs="*")
    args = ap.parse_args()
    results = []
    for p in args.parts:
        with open(p) as f:
            results += json.load(f)
    sql = [r for r in results if r["backend"] != "s3" and r.get("tag") != "rss"]
    by = {}
    for r in results:
        by.setdefault((r["backend"], r["rows"]), {})[(r["contender"], r["verb"])] = r
    errors = [r for r in results if r.get("error")]
    for (backend, rows), m in by.items():
        if backend == "s3":
            continue
        if ("batched", "delete") not in m and ("batched", "anonymize") not in m:
            continue
        rounds = max(len(r.get("rounds", [])) for r in m.values())
        each = f", median of {rounds} rounds" if rounds > 1 else ""
        print(f"\n### {backend}, {rows:,} rows{each}\n")
        print("| operation | due | lapse rows/s | batched rows/s | limited rows/s | single rows/s | lapse / batched "
              "| lapse / limited | lapse / single | machine CPU core-s: lapse / batched / limited / single "
              "| lapse peak RSS |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for verb in ("delete", "anonymize"):
            l = m.get(("lapse", verb))
            b, lim, s = (m.get((c, verb)) for c in ("batched", "limited", "single"))
            if not l:
                continue
            ratio = lambda x: f"{l['rows_per_s'] / x['rows_per_s']:.2f}" if x else "–"
            cpu = " / ".join("–" if (x or {}).get("machine_cpu_s") is None else f"{x['machine_cpu_s']:.2f}"
                             for x in (l, b, lim, s))
            print(f"| {verb} | {l['due']:,} | {rate(l)} | {rate(b)} | {rate(lim)} | {rate(s)} | {ratio(b)} "
                  f"| {ratio(lim)} | {ratio(s)} | {cpu} | {mib(l['peak_rss_kib'])} |")
        p = m.get(("lapse", "plan"))
        if p:
            print(f"\n`lapse plan`: {p['seconds']:.2f} s, peak RSS {mib(p['peak_rss_kib'])}, exit {p['exit']}")
    rounds = {}
    for r in results:
        if r["backend"] == "s3":
            rounds.setdefault(r.get("server", "moto"), {}).setdefault(r["contender"], []).append(r)
    for server, by in rounds.items():
        # Every run starts from the same objects, each contender on a server of its own: all
        # must leave the same keys and versions.
        runs = [r for rs in by.values() for r in rs]
        sigs = [tuple(r["signature"]) for r in runs]
        common = max(set(sigs), key=sigs.count)
        for r, sig in zip(runs, sigs):
            if sig != common and not r.get("error"):
                r["error"] = f"left {sig}, most runs left {common}"
                errors.append(r)
        m = {c: s3_median(rs) for c, rs in by.items()}
        s3 = list(m.values())
        n = max(len(rs) for rs in by.values())
        if n > 1:
            print(f"\n### S3 ({server}), median of {n} rounds (a fresh server for each contender)\n")
            for c, rs in by.items():
                print(f"- {c}: " + ", ".join(f"{x['seconds']:.1f} s" for x in rs))
        print(f"\n### S3 ({server}), {s3[0]['rows']:,} objects, {s3[0]['versions']:,} versions\n")
        print("| contender | objects due | seconds | objects/s | peak RSS | client CPU s | S3 server CPU s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        cpu = lambda v: "–" if v is None else f"{v:.1f}"
        for r in s3:
            print(f"| {r['contender']} | {r['due']:,} | {r['seconds']:.1f} | {rate(r)} | {mib(r['peak_rss_kib'])} "
                  f"| {cpu(r.get('client_cpu_s'))} | {cpu(r.get('server_cpu_s'))} |")
        if "lapse" in m and "aws-cli" in m:
            print(f"\nlapse / AWS CLI ({server}): {m['lapse']['rows_per_s'] / m['aws-cli']['rows_per_s']:.2f}")
    rss = {}
    for r in results:
        if r["backend"] == "postgres" and r["contender"] == "lapse":
            rss.setdefault(r["rows"], {})[r["verb"]] = r
    if len(rss) > 1:
        sizes = sorted(rss)
        print("\n### Peak RSS of lapse (PostgreSQL) by table size\n")
        print("| | " + " | ".join(f"{n:,} rows" for n in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        for verb in ("delete", "anonymize", "plan"):
            if any(verb in rss[n] for n in sizes):
                print(f"| {verb} | " + " | ".join(mib(rss[n].get(verb, {}).get("peak_rss_kib")) for n in sizes) + " |")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if errors:
        print("\n**Errors:**")
        for r in errors:
            print(f"- {r['backend']} {r['contender']} {r['verb']}: {r['error']}")


if __name__ == "__main__":
    main()
