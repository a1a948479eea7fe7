#!/usr/bin/env python3
"""make bench: roomrec-worker against the same local 720p30 2 Mbit/s RTMP stream.

1. CPU seconds per recorded minute: bare `ffmpeg -c copy` to a local file vs `roomrec-worker`
   mode 02 streaming into the S3 object store (several pairs at once, same stream, pooled); the
   worker's CPU includes its ffmpeg child. Goal: ratio <= 1.15.
2. The workers' own peak RSS over those recordings, sampled every second (goal <= 20 MiB, flat).
3. Concurrent recordings this machine sustains in real time with no loss (goal >= 200): every
   worker exits 0 with one part of the full length, and no file has a hole in its tracks.

Results are printed and written to docs/benchmarks.md (the section between the markers).
Usage: hack/bench.py [--seconds 180] [--pairs 8] [--levels 25,50,100,200] [--level-seconds 60]
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


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--pairs", type=int, default=8, help="bare ffmpeg + worker pairs measured at once")
    ap.add_argument("--levels", default="25,50,100,200")
    ap.add_argument("--level-seconds", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    args = ap.parse_args()

    bin_dir = sh("bash", str(ROOT / "hack/testbed.sh"), capture_output=True).stdout.strip()
    env = dict(os.environ, ROOMREC_TESTBED_BIN=bin_dir)
    # The worker is measured optimised; the test bed only hosts the stream and the store.
    sh("cargo", "build", "--release", "--quiet", "-p", "roomrec-worker", cwd=ROOT)
    sh("cargo", "build", "--quiet", "-p", "roomrec-testbed", cwd=ROOT)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    target = target_dir / "release"
    work = Path(tempfile.mkdtemp(prefix="roomrec-bench-"))
    bed = subprocess.Popen([target_dir / "debug" / "roomrec-testbed", "up", "--dir", work / "bed"], env=env,
                           stdout=open(work / "bed.log", "w"), stderr=subprocess.STDOUT)
    procs = [bed]
    try:
        for _ in range(240):
            if (work / "bed/bed.json").exists():
                break
            time.sleep(0.5)
        info = json.load(open(work / "bed/bed.json"))
        stream = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/bench"
        publisher = subprocess.Popen(publisher_command(stream), stdout=subprocess.DEVNULL,
                                     stderr=open(work / "publisher.log", "w"))
        procs.append(publisher)
        time.sleep(2)
        wenv = dict(os.environ, AWS_ACCESS_KEY_ID=info["s3_access_key"],
                    AWS_SECRET_ACCESS_KEY=info["s3_secret_key"], ROOMREC_LOG="warn")

        def worker(prefix, seconds, manifest):
            return subprocess.Popen(
                [target / "roomrec-worker", "record", "--source", stream, "--mode", "02",
                 "--storage", f"s3://{info['s3_bucket']}/{prefix}", "--endpoint", info["s3_endpoint"],
                 "--max-duration", str(seconds), "--log-format", "json", "--manifest", manifest],
                env=wenv, stdout=subprocess.DEVNULL, stderr=open(f"{manifest}.log", "w"))

        # 1 + 2: CPU and RSS, bare ffmpeg and the worker side by side. Several pairs at once:
        # one process's CPU varies by 3-5 % from the next one's (its TCP reads, what shares its
        # core), so one pair's ratio ranges over ±8 %; pooled over eight pairs the ratio is
        # known to about ±3 % (two standard errors, printed with it).
        print(f"== CPU and memory: {args.pairs} pairs, {args.seconds} s each, bare ffmpeg -c copy vs roomrec-worker 02 -> S3")
        bares, recs = [], []
        for i in range(args.pairs):
            bares.append(subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", stream, "-c", "copy",
                 "-t", str(args.seconds), "-y", work / f"bare{i}.mp4"],
                stdout=subprocess.DEVNULL, stderr=open(work / f"bare{i}.log", "w")))
            recs.append(worker(f"bench-cpu-{i}", args.seconds, str(work / f"cpu{i}.json")))
        samples = [[] for _ in recs]
        split = [None] * len(recs)
        while not all(s is not None for s in split):
            for i, r in enumerate(recs):
                if split[i] is not None:
                    continue
                if exited(r.pid):
                    split[i] = own_and_children_cpu(r.pid)
                elif kib := rss_kib(r.pid):
                    samples[i].append(kib)
            time.sleep(1)
        # wait4 gives each process's CPU with its waited-for children (the worker's ffmpeg).
        bare_cpu = [wait_rusage(b)[1] for b in bares]
        rec_cpu = [wait_rusage(r)[1] for r in recs]
        bare_media = [float(probe(work / f"bare{i}.mp4")["format"]["duration"]) for i in range(args.pairs)]
        rec_media = [json.load(open(work / f"cpu{i}.json"))["durationSeconds"] for i in range(args.pairs)]
        bare_per_min = sum(bare_cpu) / (sum(bare_media) / 60)
        rec_per_min = sum(rec_cpu) / (sum(rec_media) / 60)
        ratio = rec_per_min / bare_per_min
        pair_ratios = [(rc / rm) / (bc / bm) for rc, rm, bc, bm in zip(rec_cpu, rec_media, bare_cpu, bare_media)]
        # Two standard errors of the pairs' mean ratio: how far the pooled ratio may be from the
        # machine's true one because of which processes happened to be measured.
        spread = 2 * statistics.stdev(pair_ratios) / len(pair_ratios) ** 0.5 if len(pair_ratios) > 1 else float("nan")
        own_per_min = sum(own for own, _ in split) / (sum(rec_media) / 60)
        child_per_min = sum(child for _, child in split) / (sum(rec_media) / 60)
        for i in range(args.pairs):
            print(f"pair {i + 1}: bare ffmpeg {bare_cpu[i]:.2f} CPU s for {bare_media[i]:.1f} s, "
                  f"roomrec-worker {rec_cpu[i]:.2f} CPU s for {rec_media[i]:.1f} s (itself {split[i][0]:.2f}, "
                  f"its ffmpeg {split[i][1]:.2f}), ratio {pair_ratios[i]:.2f}")
        minute = max(1, min(len(v) for v in samples) // 3)
        peak = max(max(v) for v in samples) / 1024
        first = max(sum(v[:minute]) / minute for v in samples) / 1024
        last = max(sum(v[-minute:]) / minute for v in samples) / 1024
        print(f"pooled: bare {bare_per_min:.3f} CPU s/min, worker {rec_per_min:.3f} CPU s/min, ratio {ratio:.2f} "
              f"± {spread:.2f} (pairs {min(pair_ratios):.2f}-{max(pair_ratios):.2f}); of the worker's, "
              f"{own_per_min:.3f} its own process, {child_per_min:.3f} its ffmpeg; worker RSS peak {peak:.1f} MiB, "
              f"first third avg {first:.1f} MiB, last third avg {last:.1f} MiB (the highest worker's)")

        # 3: concurrency levels.
        levels = []
        for n in [int(x) for x in args.levels.split(",")]:
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

        write_results(args, ratio, spread, pair_ratios, bare_per_min, rec_per_min, own_per_min, child_per_min,
                      sum(bare_media), sum(rec_media), peak, first, last, levels)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
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


def write_results(args, ratio, spread, pair_ratios, bare_pm, rec_pm, own_pm, child_pm, bare_media, rec_media,
                  peak, first, last, levels):
    sustained = max([n for n, ok, *_ in levels if ok], default=0)
    lines = [
        "<!-- bench:start -->",
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine ({os.cpu_count()} cores), with "
        f"`make bench` (`hack/bench.py --seconds {args.seconds} --pairs {args.pairs} --levels {args.levels} --level-seconds {args.level_seconds}`). "
        "The publisher (x264 720p30) and the object store run on the same machine.",
        "",
        "| measure | goal | result |",
        "|---|---|---|",
        f"| CPU s per recorded minute, bare `ffmpeg -c copy` → local MP4 | — | {bare_pm:.3f} ({bare_media:.0f} s recorded) |",
        f"| CPU s per recorded minute, `roomrec-worker` 02 → S3 (incl. its ffmpeg) | — | {rec_pm:.3f} ({rec_media:.0f} s recorded): "
        f"the worker process {own_pm:.3f} ({own_pm / bare_pm * 100:.0f} % of bare), its ffmpeg {child_pm:.3f} ({child_pm / bare_pm:.2f} × bare) |",
        f"| ratio worker / bare ({args.pairs} pairs pooled) | ≤ 1.15 | **{ratio:.2f}** ± {spread:.2f} (two standard errors; pairs: {', '.join(f'{r:.2f}' for r in pair_ratios)}) |",
        f"| worker peak RSS over {args.seconds} s (highest of {args.pairs}) | ≤ 20 MiB, flat | **{peak:.1f} MiB** (first third avg {first:.1f}, last third avg {last:.1f}) |",
        f"| concurrent real-time recordings sustained | ≥ 200 | **{sustained}** |",
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
