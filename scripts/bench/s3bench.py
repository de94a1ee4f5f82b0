#!/usr/bin/env python3
"""S3 part of scripts/bench.sh: `lapse run` against an AWS CLI script (list-object-versions +
delete-objects) on identical versioned buckets of the local S3 server."""
import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid

import boto3
import urllib3
from botocore.config import Config

CUTOFF = dt.datetime(2026, 1, 1)
THRESHOLD = dt.date(2023, 1, 1)  # cutoff - 3 years
SPAN_DAYS = 6 * 365


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def objects(m, lapsed):
    """(key, versions): dates spread over six years, the first `lapsed` share at or before the
    threshold; every fifth object was overwritten once (two versions)."""
    start = THRESHOLD - dt.timedelta(days=int(SPAN_DAYS * lapsed))
    for i in range(1, m + 1):
        d = start + dt.timedelta(days=int((i - 1) * SPAN_DAYS / m))
        key = f"exports/{d:%Y/%m/%d}/customer-{i}.csv"
        yield key, 2 if i % 5 == 0 else 1


def held(i):
    return i % 100 == 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=50_000)
    ap.add_argument("--lapsed", type=float, default=0.30)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--lapse", required=True)
    ap.add_argument("--aws", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--concurrency", type=int, default=0, help="lapse connection concurrency (0: default)")
    ap.add_argument("--contenders", default="lapse,aws-cli")
    ap.add_argument("--lapse-batch", type=int, default=0, help="the policy's batch_size (0: lapse's default)")
    ap.add_argument("--load-threads", type=int, default=16, help="concurrent PUTs while loading")
    ap.add_argument("--server-pid", default="",
                    help="the S3 server's pids, comma-separated (radosgw, its OSD and monitor): their CPU "
                         "seconds during each contender are reported")
    ap.add_argument("--anonymous-load", action="store_true",
                    help="load with unsigned PUTs into a public-read-write bucket (a server that checks signatures)")
    ap.add_argument("--server-name", default="moto", help="the S3 server, for the results")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()
    s3 = boto3.client("s3", endpoint_url=args.endpoint, config=Config(max_pool_connections=32, retries={"max_attempts": 3}))
    os.makedirs(args.work, exist_ok=True)
    items = list(objects(args.objects, args.lapsed))
    due = sum(1 for i, (k, _) in enumerate(items, 1) if k.split("/")[1:4] <= list(f"{THRESHOLD:%Y/%m/%d}".split("/")) and not held(i))
    results = []
    sigs = {}
    contenders = args.contenders.split(",")
    for n, contender in enumerate(contenders, 1):
        bucket = f"bench-{contender}-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        if args.anonymous_load:
            s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
        t0 = time.perf_counter()
        load(args.endpoint, bucket, items, args.load_threads, {} if args.anonymous_load else AUTH)
        if args.anonymous_load:
            s3.put_bucket_acl(Bucket=bucket, ACL="private")
        versions = sum(nv for _, nv in items)
        log(f"[bench] s3 ({args.server_name}) {contender}: {len(items)} objects ({versions} versions) loaded in {time.perf_counter() - t0:.1f}s")
        d = os.path.join(args.work, f"s3-{contender}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        server0 = cpu_seconds(args.server_pid)
        if contender == "lapse":
            secs, rss, code, client_cpu = run_lapse(args, d, bucket)
        else:
            secs, rss, code, client_cpu = run_cli(args, d, bucket)
        server_cpu = cpu_seconds(args.server_pid) - server0 if args.server_pid else None
        sig = remaining(s3, bucket)
        r = {"backend": "s3", "server": args.server_name, "contender": contender, "verb": "delete", "rows": len(items), "versions": versions,
             "due": due, "seconds": round(secs, 3), "rows_per_s": round(due / secs, 1), "peak_rss_kib": rss,
             "exit": code, "signature": list(sig), "client_cpu_s": round(client_cpu, 2),
             "server_cpu_s": None if server_cpu is None else round(server_cpu, 2)}
        log(f"[bench] s3 ({args.server_name}) {contender}: {due} objects due, {secs:.2f}s, {due / secs:.0f} objects/s, exit {code}"
            + (f", peak RSS {rss / 1024:.1f} MiB" if contender == "lapse" else "") + f", left {sig}"
            + f", CPU: client {client_cpu:.1f}s" + ("" if server_cpu is None else f", server {server_cpu:.1f}s"))
        prev = sigs.setdefault("delete", sig)
        if sig != prev or code != 0:
            r["error"] = f"exit {code}; left {sig} (first contender: {prev})"
            log(f"[bench] ERROR {r['error']}")
        results.append(r)
        # The next contender finds the server nearly as this one did (scripts/bench.sh gives each
        # contender a server of its own: the emptied bucket still slows the next one down).
        if n < len(contenders):
            empty_bucket(s3, bucket)
    with open(args.json_out, "w") as f:
        json.dump(results, f, indent=1)


AUTH = {"Authorization": "AWS test:unchecked"}


def load(endpoint, bucket, items, threads, headers):
    """PUTs every version, `threads` at a time, as plain HTTP requests with a dummy
    `Authorization` header (the local server does not check signatures, but refuses an anonymous
    overwrite): boto3's per-request work (signing, parsing) took about as much CPU as the server
    itself, and loading ran at 100-170 PUTs/s. A server that checks signatures (radosgw) takes
    unsigned PUTs into a bucket made public-read-write for the load (`headers` empty)."""
    http = urllib3.PoolManager(maxsize=threads, retries=urllib3.Retry(total=3, backoff_factor=0.2))
    base = endpoint.rstrip("/")

    def put(kv):
        k, nv = kv
        for v in range(nv):
            r = http.request("PUT", f"{base}/{bucket}/{urllib.parse.quote(k)}",
                             body=f"customer export v{v}\n".encode() * 8, headers=headers)
            if r.status != 200:
                raise RuntimeError(f"PUT {k}: HTTP {r.status}")
    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(put, items, chunksize=64))


def remaining(s3, bucket):
    keys, versions = set(), 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            keys.add(v["Key"])
            versions += 1
    return len(keys), versions


def empty_bucket(s3, bucket):
    """The servers keep everything in memory: remove what the benchmark wrote (bench.sh stops
    the server after the last contender)."""
    for _ in range(5):
        ids = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            ids += [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not ids:
            break
        for i in range(0, len(ids), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": ids[i:i + 1000], "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


POLICY = """name: exports
dataset:
  connection: store
  bucket: {bucket}
  key_pattern: "exports/{{yyyy}}/{{mm}}/{{dd}}/customer-{{subject}}.csv"
  subject: key
personal:
  content: {{ category: free_text }}
purposes:
  - name: subject-access-request
    legal_basis: legal_obligation
    retain: 3 years
    after: key_date
on_lapse: delete
guardrail:
  max_share: 100%
"""


def run_lapse(args, d, bucket):
    os.makedirs(os.path.join(d, "policies"))
    conc = f"    concurrency: {args.concurrency}\n" if args.concurrency else ""
    with open(os.path.join(d, "lapse.yaml"), "w") as f:
        f.write(f"connections:\n  store:\n    kind: s3\n    endpoint: {args.endpoint}\n    path_style: true\n"
                f"    region: us-east-1\n    bucket: {bucket}\n{conc}policies: policies\nholds_file: holds.yaml\n"
                "evidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n")
    with open(os.path.join(d, "policies", "exports.yaml"), "w") as f:
        f.write(POLICY.format(bucket=bucket) + (f"batch_size: {args.lapse_batch}\n" if args.lapse_batch else ""))
    subjects = [i for i in range(1, args.objects + 1) if held(i)]
    with open(os.path.join(d, "holds.yaml"), "w") as f:
        f.write("holds:\n  - id: LH-BENCH\n    matter: benchmark hold\n    subjects: [" + ", ".join(map(str, subjects)) + "]\n")
    with open(os.path.join(d, "evidence.key"), "w") as f:
        f.write("bench-evidence-key-0123456789abcdef")
    cmd = [args.lapse, "run", "-c", os.path.join(d, "lapse.yaml"), "--cutoff", "2026-01-01T00:00:00Z", "--yes",
           "--log-format", "json"]
    return timed(cmd, d)


def run_cli(args, d, bucket):
    held_file = os.path.join(d, "held.json")
    with open(held_file, "w") as f:
        json.dump([str(i) for i in range(1, args.objects + 1) if held(i)], f)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aws-cli-delete.sh")
    cmd = ["bash", script, args.aws, args.endpoint, bucket, "exports/", f"{THRESHOLD:%Y-%m-%d}", held_file, d]
    return timed(cmd, d)


GNU_TIME = "/usr/bin/time"


def cpu_seconds(pids):
    """User + system CPU seconds of running processes (all their threads), from /proc."""
    total = 0.0
    for pid in filter(None, str(pids).split(",")):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def timed(cmd, d):
    """(seconds, peak RSS in KiB, exit code, CPU seconds of the command and everything it ran).
    The peak comes from GNU time when installed: the
    `ru_maxrss` of a child of this process counts this process's own memory too (the address
    space the child had before its exec), about 150 MiB here with 50,000 objects."""
    rss_file = os.path.join(d, "peak-rss")
    wrap = [GNU_TIME, "-f", "%M", "-o", rss_file] if os.access(GNU_TIME, os.X_OK) else []
    with open(os.path.join(d, "out.log"), "w") as lf:
        t0 = time.perf_counter()
        p = subprocess.Popen(wrap + cmd, stdout=lf, stderr=subprocess.STDOUT,
                             env={**os.environ, "LAPSE_LOG": "lapse=warn"})
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
    rss = ru.ru_maxrss
    if wrap:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1])
    return secs, rss, os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    main()
