#!/usr/bin/env python3
"""Worker builds side by side with bare ffmpeg on one stream: CPU and RSS per process.

    target/debug/roomrec-testbed up --dir /tmp/bed &        # a kept bed (docs/testing.md)
    hack/side-by-side.py --bed /tmp/bed/bed.json --seconds 180 \\
        new=target/release/roomrec-worker old=/tmp/old-worker

Each LABEL=BINARY records the same stream as bare `ffmpeg -c copy` does, at the same time.
Over the middle SECONDS (after 10 s, before the end) it prints, per worker, its own CPU, its
ffmpeg's CPU, their ratio to bare ffmpeg's, context switches per second and the worker's RSS.
Steady state only: `make bench` measures whole runs.
"""
import argparse
import json
import os
import random
import shlex
import subprocess
import time

from bench import publisher_command, rss_kib


def ticks_and_switches(pid):
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in open(f"/proc/{pid}/task/{tid}/status"):
            if "ctxt_switches" in line:
                switches += int(line.split()[1])
    return int(stat[11]) + int(stat[12]), switches


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bed", required=True, help="bed.json of a kept test bed")
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("workers", nargs="+", metavar="LABEL=BINARY")
    args = ap.parse_args()
    bed = json.load(open(args.bed))
    key = f"sbs{random.randint(0, 99999)}"
    src = f"rtmp://127.0.0.1:{bed['rtmp_port']}/live/{key}"
    publisher = subprocess.Popen(publisher_command(src))
    time.sleep(2)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=bed["s3_access_key"],
               AWS_SECRET_ACCESS_KEY=bed["s3_secret_key"], ROOMREC_LOG="warn")
    length = args.seconds + 20
    procs = {"bare": subprocess.Popen(shlex.split(
        f"ffmpeg -v error -i {src} -c copy -t {length} -y /tmp/side-by-side-bare.mp4"))}
    for spec in args.workers:
        label, binary = spec.split("=", 1)
        procs[label] = subprocess.Popen(shlex.split(
            f"{binary} record --mode 02 --storage s3://{bed['s3_bucket']}/{label}-{key} "
            f"--endpoint {bed['s3_endpoint']} --source {src} --max-duration {length} "
            "--log-format json --manifest /dev/null"), env=env, stderr=subprocess.DEVNULL)

    def snapshot():
        out = {}
        for label, p in procs.items():
            children = subprocess.run(["pgrep", "-P", str(p.pid), "ffmpeg"], capture_output=True,
                                      text=True).stdout.split()
            out[label] = [ticks_and_switches(p.pid)] + [ticks_and_switches(int(c)) for c in children[:1]]
        return out

    time.sleep(10)
    before = snapshot()
    rss = {label: [] for label in procs if label != "bare"}
    end = time.time() + args.seconds
    while time.time() < end:
        for label in rss:
            kib = rss_kib(procs[label].pid)
            if kib:
                rss[label].append(kib / 1024)
        time.sleep(1)
    after = snapshot()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = lambda label, i: (after[label][i][0] - before[label][i][0]) / tck
    switches = lambda label, i: (after[label][i][1] - before[label][i][1]) / args.seconds
    bare = cpu("bare", 0)
    print(f"bare ffmpeg: {bare:.2f} CPU s, {switches('bare', 0):.1f} switches/s")
    for label, samples in rss.items():
        own, child = cpu(label, 0), cpu(label, 1)
        third = max(1, len(samples) // 3)
        print(f"{label}: worker {own:.2f} CPU s ({switches(label, 0):.1f} switches/s), its ffmpeg "
              f"{child:.2f} ({switches(label, 1):.1f}/s), ratio {(own + child) / bare:.3f}; RSS peak "
              f"{max(samples):.1f} MiB, last third {sum(samples[-third:]) / third:.1f}")
    for p in procs.values():
        p.terminate()
    publisher.kill()


if __name__ == "__main__":
    main()
