#!/usr/bin/env python3
"""The report bucket's upload of a large evidence file (`reports.s3`): `lapse run` storing a run's
evidence file of SIZE MiB against `aws s3 cp` of the same file, on the same S3 server, in the same
rounds; wall time, MiB/s, peak RSS.

lapse stores every report file of its directory that the bucket lacks after each run: the file
is put in the report directory under an evidence file's name, and a run of a policy with nothing
due (one empty SQLite table) stores it, with its own report, on a fresh bucket each round. A file
over 64 MiB goes up in parts of 64 MiB, four at a time, each with its CRC32 (read from the file
before it is sent); `aws s3 cp` uses its defaults (parts of 8 MiB, ten at a time).

    source .testbed/env   # (scripts/testbed.sh start: the Ceph RGW of the test bed)
    .bench/venv/bin/python scripts/bench/report-upload.py --lapse target/release/lapse \\
        --aws .bench/venv/bin/aws --endpoint "$LAPSE_TEST_RGW_ENDPOINT" --size-mib 1024 --rounds 3
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
from botocore.config import Config

GNU_TIME = "/usr/bin/time"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd, cwd, env):
    """(seconds, peak RSS in KiB, exit code, output). GNU time gives the peak of the command
    alone (a child's `ru_maxrss` would count this process's memory too)."""
    rss_file = os.path.join(cwd, "peak-rss")
    t0 = time.perf_counter()
    p = subprocess.run([GNU_TIME, "-f", "%M", "-o", rss_file] + cmd, cwd=cwd, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    secs = time.perf_counter() - t0
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    return secs, rss, p.returncode, p.stdout


def evidence_like(path, size):
    """`size` bytes of evidence-shaped lines whose hashes are random (incompressible, as keyed
    hashes are)."""
    line_len = 200
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = []
            for _ in range(4096):
                h = os.urandom(32).hex()
                line = ('{"record":"%s","policy":"customers","action":"deleted","stage":"record","batch":1,'
                        '"at":"2026-12-02T00:00:00Z","sub":"%s"}' % (h, h[:line_len - 150]))
                chunk.append(line[:line_len - 1] + "\n")
            data = "".join(chunk).encode()[: size - written]
            f.write(data)
            written += len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lapse", required=True)
    ap.add_argument("--aws", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--access-key", default="test")
    ap.add_argument("--secret-key", default="test")
    a = ap.parse_args()
    a.lapse = os.path.abspath(a.lapse)
    a.aws = os.path.abspath(a.aws) if os.sep in a.aws else (shutil.which(a.aws) or a.aws)

    env = {**os.environ, "AWS_ACCESS_KEY_ID": a.access_key, "AWS_SECRET_ACCESS_KEY": a.secret_key,
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "LAPSE_LOG": "lapse=warn"}
    env.pop("LAPSE_CONFIG", None)
    s3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.access_key,
                      aws_secret_access_key=a.secret_key, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    work = tempfile.mkdtemp(prefix="lapse-upload-")
    size = a.size_mib * 1024 * 1024
    src = os.path.join(work, "evidence.jsonl")
    log(f"writing a {a.size_mib} MiB evidence-like file")
    evidence_like(src, size)
    name = "lapse-run-20000101T000000Z-00000000.evidence.jsonl"

    # The workspace: one empty table, a policy with nothing due, reports stored on the bucket.
    ws = os.path.join(work, "ws")
    os.makedirs(os.path.join(ws, "policies"))
    sqlite3.connect(os.path.join(ws, "db.sqlite")).executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, created_at TEXT);")
    with open(os.path.join(ws, "evidence.key"), "w") as f:
        f.write(os.urandom(32).hex())
    with open(os.path.join(ws, "policies", "t.yaml"), "w") as f:
        f.write("name: t\ndataset: { connection: db, table: t, key: id }\npersonal: { email: { category: email } }\n"
                "purposes:\n  - { name: service, legal_basis: contract, retain: 1y, after: created_at }\non_lapse: delete\n")

    rows = []
    for r in range(1, a.rounds + 1):
        for who in (["lapse", "aws"] if r % 2 else ["aws", "lapse"]):
            bucket = f"upload-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            if who == "lapse":
                reports = os.path.join(ws, "reports")
                shutil.rmtree(reports, ignore_errors=True)
                os.makedirs(reports)
                os.link(src, os.path.join(reports, name))
                with open(os.path.join(ws, "lapse.yaml"), "w") as f:
                    f.write(f"connections:\n  db:\n    url: sqlite://db.sqlite\n  archive:\n    kind: s3\n"
                            f"    endpoint: {a.endpoint}\n    path_style: true\n    region: us-east-1\n"
                            f"policies: policies\nevidence:\n  key_file: evidence.key\n"
                            f"reports:\n  dir: reports\n  s3:\n    connection: archive\n    bucket: {bucket}\n")
                secs, rss, code, out = timed([a.lapse, "run", "--yes", "-c", "lapse.yaml"], ws, env)
                key = name
            else:
                key = "evidence.jsonl"
                secs, rss, code, out = timed([a.aws, "--endpoint-url", a.endpoint, "s3", "cp", "--only-show-errors",
                                              src, f"s3://{bucket}/{key}"], work, env)
            if code != 0:
                sys.exit(f"{who} failed (exit {code}):\n{out}")
            stored = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if stored != size:
                sys.exit(f"{who}: stored {stored} bytes, not {size}")
            rows.append((r, who, secs, rss))
            log(f"round {r} {who:5}: {secs:7.2f} s, {a.size_mib / secs:7.1f} MiB/s, peak RSS {rss / 1024:.1f} MiB")
            # The server keeps objects in memory (memstore): emptied before the next contender.
            s3.delete_object(Bucket=bucket, Key=key)
            for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=o["Key"])
            s3.delete_bucket(Bucket=bucket)

    def med(who, i):
        return statistics.median(x[i] for x in rows if x[1] == who)

    lt, at = med("lapse", 2), med("aws", 2)
    print(f"{a.size_mib} MiB evidence file, median of {a.rounds} rounds: lapse {lt:.2f} s "
          f"({a.size_mib / lt:.1f} MiB/s, peak RSS {med('lapse', 3) / 1024:.1f} MiB), "
          f"aws s3 cp {at:.2f} s ({a.size_mib / at:.1f} MiB/s, peak RSS {med('aws', 3) / 1024:.1f} MiB); "
          f"lapse / aws s3 cp: {at / lt:.2f} x the speed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
