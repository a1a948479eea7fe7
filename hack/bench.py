#!/usr/bin/env python3
"""make bench: roomrec-worker against the same local 720p30 2 Mbit/s RTMP stream.

1. CPU seconds per recorded minute: bare `ffmpeg -c copy` to a local file vs `roomrec-worker`
   mode 02 into each store: the bed's S3 server, Tencent COS through the tests' COS stand-in,
   and a local directory (several recordings per store at once, all of the same stream at the
   same time, pooled); the worker's CPU includes its ffmpeg child. Goal: ratio <= 1.15.
2. The workers' own peak RSS over those recordings (VmHWM, read every second, with VmRSS for
   the first and last thirds), per store (goal <= 20 MiB, flat).
3. Concurrent recordings this machine sustains in real time with no loss (goal >= 200): every
   worker exits 0 with one part of the full length, and no file has a hole in its tracks (S3).

Results are printed and written to docs/benchmarks.md (the section between the markers).
Usage: hack/bench.py [--seconds 180] [--pairs 8] [--levels 25,50,100,200] [--level-seconds 60]
                     [--stores s3,cos,dir] [--worker PATH] [--out FILE]
--levels '' skips 3; --worker measures a prebuilt roomrec-worker instead of building it.
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def publisher_command(stream):
    """The stream every measurement records: 720p30 H.264 at 2 Mbit/s + AAC, published live."""
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "2000k",
            "-maxrate", "2000k", "-bufsize", "4000k", "-g", "60", "-c:a", "aac", "-b:a", "128k",
            "-f", "flv", stream]


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, **kw)


def bed_info(bed_dir):
    """What a test bed started with `roomrec-testbed up --dir bed_dir` says of itself (its
    bed.json), once it is up (within two minutes)."""
    for _ in range(240):
        if (bed_dir / "bed.json").exists():
            break
        time.sleep(0.5)
    return json.load(open(bed_dir / "bed.json"))


def stop_all(procs, timeout):
    """SIGTERM to each process, last started first; SIGKILL to any still running after timeout."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def write_block(out, name, heading, lines):
    """Puts `lines` between `<!-- {name}:start -->` and `<!-- {name}:end -->` in `out`, replacing
    what was there, or appends them under `heading` when the markers are missing."""
    out = Path(out)
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = start + "\n" + "\n".join(lines) + "\n" + end
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n## {heading}\n\n" + block + "\n"
    out.write_text(text)


def probe(path):
    out = sh("ffprobe", "-v", "error", "-count_packets", "-print_format", "json", "-show_streams",
             "-show_format", str(path), capture_output=True).stdout
    return json.loads(out)


def wait_rusage(proc):
    """Waits for proc; returns (exit code, CPU seconds of it and its waited-for children)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def exited(pid):
    """True once pid is a zombie (or gone): it ended, and it is not reaped, so wait4 still
    gives its CPU."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def own_and_children_cpu(pid):
    """(CPU s of the process itself, of its reaped children) from /proc/PID/stat, read while it
    is a zombie: the worker's own threads and its ffmpeg, apart. Clock ticks (10 ms), so this
    only splits the wait4 figure; it is not the figure."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def memory_kib(pid):
    """(VmRSS, VmHWM) of a live process in KiB, or None."""
    try:
        fields = {}
        for line in open(f"/proc/{pid}/status"):
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        return None


STORE_NAMES = {"s3": "S3", "cos": "COS (stand-in)", "dir": "directory"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--pairs", type=int, default=8, help="bare ffmpeg + worker pairs measured at once")
    ap.add_argument("--levels", default="25,50,100,200")
    ap.add_argument("--level-seconds", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    ap.add_argument("--stores", default="s3,cos,dir", help="stores recorded into for CPU and RSS")
    ap.add_argument("--worker", help="a prebuilt roomrec-worker to measure (default: build it)")
    args = ap.parse_args()
    stores = [x for x in args.stores.split(",") if x]
    if not stores or any(x not in STORE_NAMES for x in stores):
        ap.error(f"--stores: some of {','.join(STORE_NAMES)}")

    bin_dir = sh("bash", str(ROOT / "hack/testbed.sh"), capture_output=True).stdout.strip()
    env = dict(os.environ, ROOMREC_TESTBED_BIN=bin_dir)
    # The worker is measured optimised; the test bed only hosts the stream and the store.
    if not args.worker:
        sh("cargo", "build", "--release", "--quiet", "-p", "roomrec-worker", cwd=ROOT)
    sh("cargo", "build", "--quiet", "-p", "roomrec-testbed", cwd=ROOT)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    worker_bin = Path(args.worker) if args.worker else target_dir / "release" / "roomrec-worker"
    work = Path(tempfile.mkdtemp(prefix="roomrec-bench-"))
    bed = subprocess.Popen([target_dir / "debug" / "roomrec-testbed", "up", "--dir", work / "bed"], env=env,
                           stdout=open(work / "bed.log", "w"), stderr=subprocess.STDOUT)
    procs = [bed]
    try:
        info = bed_info(work / "bed")
        stream = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/bench"
        publisher = subprocess.Popen(publisher_command(stream), stdout=subprocess.DEVNULL,
                                     stderr=open(work / "publisher.log", "w"))
        procs.append(publisher)
        time.sleep(2)
        wenv = dict(os.environ, AWS_ACCESS_KEY_ID=info["s3_access_key"],
                    AWS_SECRET_ACCESS_KEY=info["s3_secret_key"], ROOMREC_LOG="warn")
        cos = None
        if "cos" in stores:
            # The tests' COS stand-in (COS's API and signatures) in front of the bed's S3 server.
            cos_proc = subprocess.Popen([target_dir / "debug" / "roomrec-testbed", "cos", "--bed",
                                         work / "bed/bed.json"], env=env, stdout=subprocess.PIPE,
                                        stderr=open(work / "cos.log", "w"), text=True)
            procs.append(cos_proc)
            cos = json.loads(cos_proc.stdout.readline())
        dir_root = work / "dir-store"

        def storage_args(store, prefix):
            if store == "s3":
                return ["--storage", f"s3://{info['s3_bucket']}/{prefix}", "--endpoint", info["s3_endpoint"]], wenv
            if store == "cos":
                return (["--storage", f"cos://{cos['bucket']}/{prefix}", "--region", cos["region"],
                         "--endpoint", cos["endpoint"],
                         "--resolve", f"{cos['bucket']}.localhost=127.0.0.1:{cos['port']}"],
                        dict(wenv, COS_SECRET_ID=cos["secretId"], COS_SECRET_KEY=cos["secretKey"]))
            return ["--storage", f"file://{dir_root / prefix}"], wenv

        def worker(prefix, seconds, manifest, store="s3"):
            flags, store_env = storage_args(store, prefix)
            return subprocess.Popen(
                [worker_bin, "record", "--source", stream, "--mode", "02", *flags,
                 "--max-duration", str(seconds), "--log-format", "json", "--manifest", manifest],
                env=store_env, stdout=subprocess.DEVNULL, stderr=open(f"{manifest}.log", "w"))

        # 1 + 2: CPU and RSS, bare ffmpeg and the worker side by side, the worker into each
        # store, all at once. Several of each: one process's CPU varies by 3-5 % from the next
        # one's (its TCP reads, what shares its core), so one pair's ratio ranges over ±8 %;
        # pooled over eight pairs the ratio is known to about ±3 % (two standard errors,
        # printed with it).
        print(f"== CPU and memory: {args.pairs} recordings per store, {args.seconds} s each, bare ffmpeg -c copy "
              f"vs roomrec-worker 02 -> {', '.join(STORE_NAMES[x] for x in stores)}")
        bares, recs = [], {x: [] for x in stores}
        for i in range(args.pairs):
            bares.append(subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", stream, "-c", "copy",
                 "-t", str(args.seconds), "-y", work / f"bare{i}.mp4"],
                stdout=subprocess.DEVNULL, stderr=open(work / f"bare{i}.log", "w")))
            for x in stores:
                recs[x].append(worker(f"bench-cpu-{x}-{i}", args.seconds, str(work / f"cpu-{x}{i}.json"), x))
        everyone = [(x, i, r) for x in stores for i, r in enumerate(recs[x])]
        samples = {(x, i): [] for x, i, _ in everyone}
        hwm = {(x, i): 0 for x, i, _ in everyone}
        split = {}
        while len(split) < len(everyone):
            for x, i, r in everyone:
                if (x, i) in split:
                    continue
                if exited(r.pid):
                    split[x, i] = own_and_children_cpu(r.pid)
                elif kib := memory_kib(r.pid):
                    samples[x, i].append(kib[0])
                    hwm[x, i] = max(hwm[x, i], kib[1])
            time.sleep(1)
        # wait4 gives each process's CPU with its waited-for children (the worker's ffmpeg).
        bare_cpu = [wait_rusage(b)[1] for b in bares]
        bare_media = [float(probe(work / f"bare{i}.mp4")["format"]["duration"]) for i in range(args.pairs)]
        bare_per_min = sum(bare_cpu) / (sum(bare_media) / 60)
        results = []
        for x in stores:
            rec_cpu = [wait_rusage(r)[1] for r in recs[x]]
            rec_media = [json.load(open(work / f"cpu-{x}{i}.json"))["durationSeconds"] for i in range(args.pairs)]
            rec_per_min = sum(rec_cpu) / (sum(rec_media) / 60)
            ratio = rec_per_min / bare_per_min
            pair_ratios = [(rc / rm) / (bc / bm) for rc, rm, bc, bm in zip(rec_cpu, rec_media, bare_cpu, bare_media)]
            # Two standard errors of the pairs' mean ratio: how far the pooled ratio may be from
            # the machine's true one because of which processes happened to be measured.
            spread = 2 * statistics.stdev(pair_ratios) / len(pair_ratios) ** 0.5 if len(pair_ratios) > 1 else float("nan")
            own_per_min = sum(split[x, i][0] for i in range(args.pairs)) / (sum(rec_media) / 60)
            child_per_min = sum(split[x, i][1] for i in range(args.pairs)) / (sum(rec_media) / 60)
            for i in range(args.pairs):
                print(f"{STORE_NAMES[x]} {i + 1}: bare ffmpeg {bare_cpu[i]:.2f} CPU s for {bare_media[i]:.1f} s, "
                      f"roomrec-worker {rec_cpu[i]:.2f} CPU s for {rec_media[i]:.1f} s (itself {split[x, i][0]:.2f}, "
                      f"its ffmpeg {split[x, i][1]:.2f}), ratio {pair_ratios[i]:.2f}, peak RSS {hwm[x, i] / 1024:.1f} MiB")
            runs = [samples[x, i] for i in range(args.pairs)]
            minute = max(1, min(len(v) for v in runs) // 3)
            peak = max(hwm[x, i] for i in range(args.pairs)) / 1024
            first = max(sum(v[:minute]) / minute for v in runs) / 1024
            last = max(sum(v[-minute:]) / minute for v in runs) / 1024
            print(f"{STORE_NAMES[x]} pooled: bare {bare_per_min:.3f} CPU s/min, worker {rec_per_min:.3f} CPU s/min, "
                  f"ratio {ratio:.2f} ± {spread:.2f} (pairs {min(pair_ratios):.2f}-{max(pair_ratios):.2f}); of the "
                  f"worker's, {own_per_min:.3f} its own process, {child_per_min:.3f} its ffmpeg; worker peak RSS "
                  f"(VmHWM) {peak:.1f} MiB, first third avg {first:.1f} MiB, last third avg {last:.1f} MiB (the "
                  f"highest worker's)")
            results.append(dict(store=x, ratio=ratio, spread=spread, pair_ratios=pair_ratios, rec_pm=rec_per_min,
                                own_pm=own_per_min, child_pm=child_per_min, media=sum(rec_media), peak=peak,
                                first=first, last=last))

        # 3: concurrency levels.
        levels = []
        for n in [int(x) for x in args.levels.split(",") if x]:
            print(f"== {n} concurrent recordings of {args.level_seconds} s")
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            machine_before = machine_ticks()
            started = time.time()
            runs = []
            for i in range(n):
                runs.append((i, worker(f"bench-{n}/{i}", args.level_seconds, str(work / f"c{n}-{i}.json"))))
                time.sleep(5.0 / n)  # stagger the starts over 5 s
            codes = [p.wait() for _, p in runs]
            wall = time.time() - started
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
            durations, parts_n = [], []
            for i, _ in runs:
                try:
                    m = json.load(open(work / f"c{n}-{i}.json"))
                    durations.append(m["durationSeconds"])
                    parts_n.append(len(m["parts"]))
                except (OSError, ValueError):
                    durations.append(0.0)
                    parts_n.append(0)
            gapped = 0
            for i, _ in runs:
                m = {}
                try:
                    m = json.load(open(work / f"c{n}-{i}.json"))
                    if media_gaps(Path(info["s3_bucket_dir"]) / m["parts"][0]["key"]):
                        gapped += 1
                except (OSError, ValueError, KeyError, IndexError, subprocess.CalledProcessError) as e:
                    # A file that is missing or unreadable counts as a gap, with what the worker said.
                    gapped += 1
                    part = (m.get("parts") or [{}])[0]
                    print(f"   worker {i}: {type(e).__name__}; status {m.get('status')}, stop "
                          f"{m.get('stopReason')}, part {part.get('status')}: {part.get('message') or m.get('message')}")
            failed = sum(1 for c in codes if c != 0)
            short = sum(1 for d in durations if d < args.level_seconds - 0.5)
            split = sum(1 for k in parts_n if k != 1)
            ok = failed == 0 and short == 0 and split == 0 and gapped == 0
            load = cpu / wall / os.cpu_count()
            busy = machine_busy(machine_before)
            print(f"   exit!=0: {failed}, short: {short}, split by drops: {split}, files with a gap: "
                  f"{gapped}/{n}, wall {wall:.0f} s, workers' CPU {cpu:.0f} s "
                  f"({load * 100:.0f}% of {os.cpu_count()} cores), whole machine {busy * 100:.0f}% busy "
                  f"-> {'OK' if ok else 'NOT SUSTAINED'}")
            levels.append((n, ok, failed, short, split, gapped, wall, cpu, load, busy))
            if not ok:
                break

        write_results(args, bare_per_min, sum(bare_media), results, levels)
    finally:
        stop_all(procs, 20)
        shutil.rmtree(work, ignore_errors=True)


def media_gaps(path):
    """Holes in a recorded file's media: consecutive packets of a track further apart than
    2.5 frames (video, 30 fps) or 2 frames (AAC at 44.1 kHz). The first video packet is
    skipped: a player joins a live stream between keyframes, the frames before the first one
    cannot be decoded (every recorder drops them), and the fragmented-MP4 muxer, which has no
    edit list, starts that keyframe at the file's zero instead of leaving the video track
    empty until it comes."""
    out = sh("ffprobe", "-v", "error", "-show_entries", "packet=stream_index,dts_time",
             "-show_entries", "stream=index,codec_type", "-of", "json", str(path),
             capture_output=True).stdout
    info = json.loads(out)
    kinds = {s["index"]: s["codec_type"] for s in info["streams"]}
    limits = {"video": 2.5 / 30, "audio": 2 * 1024 / 44100}
    times = {}
    for p in info["packets"]:
        times.setdefault(p["stream_index"], []).append(float(p["dts_time"]))
    gaps = []
    for index, ts in times.items():
        kind = kinds[index]
        if kind == "video":
            ts = ts[1:]
        gaps += [(kind, a, b) for a, b in zip(ts, ts[1:]) if b - a > limits.get(kind, 1.0)]
    return gaps


def machine_ticks():
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def machine_busy(before):
    busy, total = machine_ticks()
    return (busy - before[0]) / max(1, total - before[1])


def write_results(args, bare_pm, bare_media, results, levels):
    sustained = max([n for n, ok, *_ in levels if ok], default=0)
    lines = [
        "<!-- bench:start -->",
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine ({os.cpu_count()} cores), with "
        f"`make bench` (`hack/bench.py --seconds {args.seconds} --pairs {args.pairs} --levels {args.levels} "
        f"--level-seconds {args.level_seconds} --stores {args.stores}`). The publisher (x264 720p30), the object "
        "store and the COS stand-in run on the same machine; the recordings into every store run at the same time.",
        "",
        "| measure | goal | result |",
        "|---|---|---|",
        f"| CPU s per recorded minute, bare `ffmpeg -c copy` → local MP4 | — | {bare_pm:.3f} ({bare_media:.0f} s recorded) |",
    ]
    for r in results:
        name = STORE_NAMES[r["store"]]
        lines += [
            f"| CPU s per recorded minute, `roomrec-worker` 02 → {name} (incl. its ffmpeg) | — | {r['rec_pm']:.3f} "
            f"({r['media']:.0f} s recorded): the worker process {r['own_pm']:.3f} ({r['own_pm'] / bare_pm * 100:.0f} % "
            f"of bare), its ffmpeg {r['child_pm']:.3f} ({r['child_pm'] / bare_pm:.2f} × bare) |",
            f"| ratio worker / bare → {name} ({args.pairs} pairs pooled) | ≤ 1.15 | **{r['ratio']:.2f}** ± "
            f"{r['spread']:.2f} (two standard errors; pairs: {', '.join(f'{x:.2f}' for x in r['pair_ratios'])}) |",
            f"| worker peak RSS → {name} over {args.seconds} s (VmHWM, highest of {args.pairs}) | ≤ 20 MiB, flat | "
            f"**{r['peak']:.1f} MiB** (first third avg {r['first']:.1f}, last third avg {r['last']:.1f}) |",
        ]
    lines += [
        f"| concurrent real-time recordings sustained (S3) | ≥ 200 | "
        f"{f'**{sustained}**' if levels else 'not measured (`--levels` empty)'} |",
        "",
        "| concurrent | result | failed | short | split by drops | files with a gap | wall s | workers' CPU s | workers' CPU load | whole machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, ok, failed, short, split, gapped, wall, cpu, load, busy in levels:
        lines.append(f"| {n} | {'sustained' if ok else 'not sustained'} | {failed} | {short} | {split} | {gapped} | {wall:.0f} | {cpu:.0f} | {load * 100:.0f}% | {busy * 100:.0f}% |")
    lines.append("<!-- bench:end -->")
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Benchmarks\n\n<!-- bench:start -->\n<!-- bench:end -->\n"
    start, end = text.index("<!-- bench:start -->"), text.index("<!-- bench:end -->") + len("<!-- bench:end -->")
    out.write_text(text[:start] + "\n".join(lines) + text[end:])
    print(f"results written to {out}")


if __name__ == "__main__":
    sys.exit(main())
