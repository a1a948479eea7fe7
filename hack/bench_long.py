#!/usr/bin/env python3
"""The long recording of `make bench`: one roomrec-worker for an hour of media.

The stream is the media benchmark's (hack/bench.py: 720p30 H.264 at 2 Mbit/s + AAC), encoded
once into a short FLV clip with the same settings and published looped and copied
(`ffmpeg -stream_loop -1 -readrate N -i clip.flv -c copy`) into the test bed's nginx-rtmp, N
times faster than real time: ffmpeg's loop carries the timestamps on, so the worker reads one
continuous stream. One release worker records it in mode 02 into the test bed's S3 store until
--minutes of media are recorded (`--max-duration`), while this script samples every second
the worker process's own RSS (VmRSS, not its ffmpeg's) and the CPU time of the worker and of
its ffmpeg, apart (each thread's `/proc/PID/task/TID/schedstat`, nanoseconds). The worker's
JSON progress events (every 10 s of wall time) give its recorded media against the clock, so
each sample has a media time and CPU is counted per recorded minute.

Goals (issue 17): RSS flat within 10 % after the first minute; CPU per recorded minute the
same in the last ten minutes as in the first ten (taken here as within 10 %, media 1:00-11:00
against the last ten; the least-squares trend over the whole recording is printed beside it,
since ten-minute windows move with whatever else the machine runs).

The file is then checked: one part, its length (ffprobe) and no hole in its tracks
(`media_gaps` of hack/bench.py). Results are printed and written to docs/benchmarks.md
between the bench-long markers.
Usage: hack/bench_long.py [--minutes 60] [--speed 10] [--clip-seconds 60] [--checkpoint-seconds 2]
                          [--bed DIR] [--no-build] [--keep] [--out docs/benchmarks.md]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
# The same stream and the same checks as the media benchmark.
from bench import exited, machine_busy, machine_ticks, media_gaps, own_and_children_cpu, probe  # noqa: E402
from bench import bed_info, publisher_command, sh, stop_all, wait_rusage, write_block  # noqa: E402


def clip_command(path, seconds):
    """publisher_command's encode, into a file as fast as it goes instead of live."""
    cmd = publisher_command(str(path))
    cmd.remove("-re")
    out = len(cmd) - 3  # ... -f flv PATH
    return cmd[:out] + ["-t", str(seconds), "-y"] + cmd[out:]


def looped_publisher(clip, speed, stream):
    return ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-stream_loop", "-1",
            "-readrate", str(speed), "-i", str(clip), "-c", "copy", "-f", "flv", stream]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spool_bytes(address):
    """The worker's recorded bytes waiting for the store (`roomrec_worker_spool_bytes`), or None.
    Read only when RSS reaches a new high: a scrape every second would be CPU of its own."""
    try:
        text = urllib.request.urlopen(f"http://{address}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("roomrec_worker_spool_bytes "):
            return float(line.split()[1])
    return None


def task_cpu(pid, seen):
    """CPU seconds of every thread of pid, from schedstat (ns): a thread that ended keeps the
    last figure read (`seen`, by thread id), so only its final second may be missed."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            seen[tid] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return sum(seen.values()) / 1e9


def memory_kib(pid):
    """(VmRSS, RssAnon, RssFile) of pid in KiB: the resident set, its heap and stacks, and its
    pages of files (the binary's code); None when it is gone."""
    fields = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    except OSError:
        return None
    if "VmRSS" not in fields:
        return None
    return fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0)


def trend(values):
    """The least-squares slope of values against their index, and two standard errors of it."""
    x = list(range(len(values)))
    fit = statistics.linear_regression(x, values)
    residuals = [v - (fit.slope * i + fit.intercept) for i, v in zip(x, values)]
    sxx = sum((i - statistics.mean(x)) ** 2 for i in x)
    se = (sum(e * e for e in residuals) / (len(x) - 2) / sxx) ** 0.5
    return fit.slope, 2 * se


def ffmpeg_child(pid):
    """The worker's ffmpeg (the child named ffmpeg), or None."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            kids = open(f"/proc/{pid}/task/{tid}/children").read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                if open(f"/proc/{kid}/comm").read().strip() == "ffmpeg":
                    return int(kid)
            except OSError:
                pass
    return None


def interp(xs, ys, x):
    """Linear interpolation of the points (xs ascending), held flat beyond the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lo, hi = 0, len(xs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    if xs[hi] == xs[lo]:
        return ys[hi]
    return ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / (xs[hi] - xs[lo])


class Log:
    """The worker's JSON log, read as it grows: (wall time, recorded media seconds) points from
    its progress events, the part's start (media 0) and its close (its final media)."""

    def __init__(self, path):
        self.file = open(path)
        self.buffer = ""
        self.points = []
        self.parts_started = 0
        self.closed = False
        self.restarts = []

    def read(self):
        self.buffer += self.file.read()
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            fields = event.get("fields", {})
            message = fields.get("message", "")
            try:
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
            except (KeyError, ValueError):
                at = time.time()
            if message == "part started":
                self.parts_started += 1
                if self.parts_started == 1:
                    self.points.append((at, 0.0))
            elif message == "progress" and self.parts_started and not self.closed and fields.get("media_seconds", 0) > 0:
                self.points.append((at, float(fields["media_seconds"])))
            elif message == "part closing" and self.parts_started == 1:
                # The recording's end: what comes after (the part's assembly) is "the end" below.
                self.closed = True
                self.points.append((at, float(fields["seconds"])))
            elif "timeline restarted" in message:
                self.restarts.append(at)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=60, help="media to record")
    ap.add_argument("--speed", type=float, default=10, help="the source's speed, times real time")
    ap.add_argument("--clip-seconds", type=int, default=60, help="the looped clip's length")
    ap.add_argument("--checkpoint-seconds", type=int, default=2,
                    help="the worker's (wall time): 1 at --speed 2 checkpoints every 2 s of media, as at real time")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, samples, the file)")
    ap.add_argument("--bed", help="a test bed already up: the directory of its bed.json (none is started)")
    ap.add_argument("--no-build", action="store_true", help="use the release worker as built")
    args = ap.parse_args()

    if not args.no_build:
        sh("cargo", "build", "--release", "--quiet", "-p", "roomrec-worker", cwd=ROOT)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    work = Path(tempfile.mkdtemp(prefix="roomrec-bench-long-"))
    bed_dir = Path(args.bed) if args.bed else work / "bed"
    procs = []
    if not args.bed:
        bin_dir = sh("bash", str(ROOT / "hack/testbed.sh"), capture_output=True).stdout.strip()
        env = dict(os.environ, ROOMREC_TESTBED_BIN=bin_dir)
        sh("cargo", "build", "--quiet", "-p", "roomrec-testbed", cwd=ROOT)
        procs.append(subprocess.Popen([target_dir / "debug" / "roomrec-testbed", "up", "--dir", bed_dir], env=env,
                                      stdout=open(work / "bed.log", "w"), stderr=subprocess.STDOUT))
    try:
        clip = work / "clip.flv"
        print(f"== encoding a {args.clip_seconds} s clip of the benchmark's stream")
        sh(*clip_command(clip, args.clip_seconds), stdout=subprocess.DEVNULL)
        info = bed_info(bed_dir)
        stream = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/long"
        publisher = subprocess.Popen(looped_publisher(clip, args.speed, stream), stdout=subprocess.DEVNULL,
                                     stderr=open(work / "publisher.log", "w"))
        procs.append(publisher)
        time.sleep(2)
        seconds = args.minutes * 60
        print(f"== one worker, {seconds} s of media from a source at {args.speed:g}x real time")
        wenv = dict(os.environ, AWS_ACCESS_KEY_ID=info["s3_access_key"],
                    AWS_SECRET_ACCESS_KEY=info["s3_secret_key"], ROOMREC_LOG="info")
        manifest = work / "long.json"
        metrics_address = f"127.0.0.1:{free_port()}"
        machine_before = machine_ticks()
        started = time.time()
        worker = subprocess.Popen(
            [target_dir / "release" / "roomrec-worker", "record", "--source", stream, "--mode", "02",
             "--storage", f"s3://{info['s3_bucket']}/bench-long", "--endpoint", info["s3_endpoint"],
             "--max-duration", str(seconds), "--checkpoint-seconds", str(args.checkpoint_seconds),
             "--log-format", "json", "--manifest", manifest, "--metrics-address", metrics_address],
            env=wenv, stdout=subprocess.DEVNULL, stderr=open(work / "worker.log", "w"))
        log = Log(work / "worker.log")
        own_seen, child_seen = {}, {}
        child_cpu = {}  # ffmpeg pid -> its CPU s so far (a reconnect would start another)
        samples = []  # (wall time, RSS KiB, worker's own CPU s, its ffmpeg's CPU s, RssAnon, RssFile)
        # Each new RSS high after the first minute, with what was then waiting for the store:
        # (wall time, RSS KiB, spool bytes).
        highs, high = [], 0
        last_print = started
        while not exited(worker.pid):
            now = time.time()
            memory = memory_kib(worker.pid)
            kib = memory[0] if memory else None
            own = task_cpu(worker.pid, own_seen)
            child = ffmpeg_child(worker.pid)
            if child is not None:
                child_cpu[child] = task_cpu(child, child_seen.setdefault(child, {}))
            if kib:
                samples.append((now, kib, own, sum(child_cpu.values()), memory[1], memory[2]))
                past_first_minute = log.points and log.points[-1][1] >= 60
                if past_first_minute and kib >= high + 256:
                    if high:
                        highs.append((now, kib, spool_bytes(metrics_address)))
                    high = kib
            log.read()
            if now - last_print >= 30 and log.points:
                last_print = now
                print(f"   {now - started:5.0f} s: media {log.points[-1][1]:7.1f} s, worker RSS {kib / 1024 if kib else 0:.1f} MiB, "
                      f"CPU s: worker {own:.2f}, its ffmpeg {sum(child_cpu.values()):.2f}")
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        own_ticks, child_ticks = own_and_children_cpu(worker.pid)
        code, total_cpu = wait_rusage(worker)
        wall = time.time() - started
        busy = machine_busy(machine_before)
        log.read()
        m = json.load(open(manifest))
        parts = m.get("parts", [])
        path = Path(info["s3_bucket_dir"]) / parts[0]["key"] if parts else None
        probed = float(probe(path)["format"]["duration"]) if path else 0.0
        gaps = media_gaps(path) if path else []
        print(f"worker exit {code}, status {m.get('status')}, stop {m.get('stopReason')}, {len(parts)} part(s), "
              f"{m.get('durationSeconds')} s recorded (ffprobe {probed:.2f} s), {len(gaps)} holes {gaps[:5]}, "
              f"timeline restarts seen: {len(log.restarts)}; wall {wall:.0f} s, whole machine {busy * 100:.0f}% busy")
        print(f"CPU s: wait4 {total_cpu:.2f} (worker {own_ticks:.2f} + its ffmpeg {child_ticks:.2f} in clock ticks); "
              f"schedstat: worker {samples[-1][2]:.2f}, its ffmpeg {samples[-1][3]:.2f}")

        result = analyse(args, log.points, samples, float(m.get("durationSeconds", 0.0)))
        result["highs"] = [(interp(sorted(p[0] for p in log.points), sorted(p[1] for p in log.points), t), k / 1024,
                            None if b is None else b / 2**20) for t, k, b in highs]
        result.update(code=code, status=m.get("status"), stop=m.get("stopReason"), parts=len(parts),
                      probed=probed, gaps=len(gaps), restarts=len(log.restarts), wall=wall, busy=busy,
                      total_cpu=total_cpu, own_ticks=own_ticks, child_ticks=child_ticks)
        print(json.dumps(result, indent=1))
        json.dump(dict(result, samples=samples, points=log.points), open(work / "result.json", "w"))
        if result["minutes"] >= 21:
            write_results(args, result)
        else:
            print("too few minutes recorded for the first and last ten; docs not written")
    finally:
        stop_all(procs, 20)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def analyse(args, points, samples, recorded):
    """RSS after the first minute, and CPU per recorded minute (media minutes from the
    worker's progress events, CPU interpolated between samples at each minute's edges)."""
    points = sorted(points)
    wall_p, media_p = [p[0] for p in points], [p[1] for p in points]
    times = [s[0] for s in samples]
    own = [s[2] for s in samples]
    child = [s[3] for s in samples]
    media_at = [interp(wall_p, media_p, t) for t in times]
    # The source's speed as the worker saw it: media per wall second between the progress
    # events of the first and the last tenth.
    n = len(points)
    speed = (media_p[-1] - media_p[n // 10]) / max(1e-9, wall_p[-1] - wall_p[n // 10])

    def wall_at(media):
        """When the worker had recorded `media` seconds (progress is monotonic)."""
        return interp(media_p, wall_p, media)

    minutes = int(min(recorded, media_p[-1]) // 60)
    per_minute = []
    for k in range(minutes):
        a, b = wall_at(k * 60), wall_at((k + 1) * 60)
        per_minute.append((interp(times, own, b) - interp(times, own, a),
                           interp(times, child, b) - interp(times, child, a)))
    ending_own = own[-1] - interp(times, own, wall_at(media_p[-1]))

    def mean(rows, i):
        return statistics.mean(r[i] for r in rows) if rows else float("nan")

    first, last = per_minute[1:11], per_minute[-10:]
    # Growth over the whole recording after its first minute, less sensitive to one busy
    # stretch of the machine than two ten-minute windows: per minute, as a share of the mean.
    own_trend = trend([r[0] for r in per_minute[1:]])
    ffmpeg_trend = trend([r[1] for r in per_minute[1:]])
    after = [(m, s) for m, s in zip(media_at, samples) if m >= 60]
    rss_trend = trend([s[1] for _, s in after])  # KiB per sample (about a second)
    anon_trend, file_trend = trend([s[4] for _, s in after]), trend([s[5] for _, s in after])
    per_hour = 3600 / max(1e-9, (after[-1][0] - after[0][0]) / max(1, len(after) - 1))  # samples per media hour
    rss_after = [(m, s[1] / 1024) for m, s in zip(media_at, samples) if m >= 60]
    rss_values = [r for _, r in rss_after]
    decades = []
    for d in range(0, minutes, 10):
        rows = per_minute[d:d + 10]
        rss = [s[1] / 1024 for m, s in zip(media_at, samples) if d * 60 <= m < (d + len(rows)) * 60]
        decades.append((d, d + len(rows), mean(rows, 0), mean(rows, 1), statistics.mean(rss) if rss else 0,
                        max(rss) if rss else 0))
    return dict(
        speed=speed, recorded=recorded, minutes=minutes,
        rss_first_minute_peak=max((s[1] / 1024 for m, s in zip(media_at, samples) if m < 60), default=0),
        rss_min=min(rss_values), rss_max=max(rss_values), rss_at_1min=rss_values[0], rss_last=rss_values[-1],
        rss_first_ten=statistics.mean(r for m, r in rss_after if m < 660),
        rss_last_ten=statistics.mean(r for m, r in rss_after if m >= (minutes - 10) * 60),
        minute0=per_minute[0], first_own=mean(first, 0), first_ffmpeg=mean(first, 1),
        last_own=mean(last, 0), last_ffmpeg=mean(last, 1),
        first_own_sd=statistics.stdev(r[0] for r in first), last_own_sd=statistics.stdev(r[0] for r in last),
        first_ffmpeg_sd=statistics.stdev(r[1] for r in first), last_ffmpeg_sd=statistics.stdev(r[1] for r in last),
        ending_own=ending_own, decades=decades, per_minute=per_minute,
        own_trend=[v / statistics.mean(r[0] for r in per_minute[1:]) for v in own_trend],
        ffmpeg_trend=[v / statistics.mean(r[1] for r in per_minute[1:]) for v in ffmpeg_trend],
        rss_per_hour=[v * per_hour / 1024 for v in rss_trend], anon_per_hour=[v * per_hour / 1024 for v in anon_trend],
        file_per_hour=[v * per_hour / 1024 for v in file_trend],
        anon_first=statistics.mean(s[4] for _, s in after[:60]) / 1024, anon_last=statistics.mean(s[4] for _, s in after[-60:]) / 1024,
        file_first=statistics.mean(s[5] for _, s in after[:60]) / 1024, file_last=statistics.mean(s[5] for _, s in after[-60:]) / 1024,
        checkpoints_per_minute=60 / (args.checkpoint_seconds * args.speed),
    )


def write_results(args, r):
    rss_spread = r["rss_max"] / r["rss_min"] - 1
    own_ratio = r["last_own"] / r["first_own"]
    ff_ratio = r["last_ffmpeg"] / r["first_ffmpeg"]
    whole = r["parts"] == 1 and r["gaps"] == 0 and r["recorded"] >= args.minutes * 60 and r["code"] == 0
    yes = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine ({os.cpu_count()} cores), with "
        f"`hack/bench_long.py --minutes {args.minutes} --speed {args.speed:g} --clip-seconds {args.clip_seconds} "
        f"--checkpoint-seconds {args.checkpoint_seconds}` "
        f"(in `make bench`). A {args.clip_seconds} s clip of the benchmark's stream published looped at "
        f"{args.speed:g}× real time (the worker saw {r['speed']:.2f}×); {r['wall']:.0f} s of wall time, the whole "
        f"machine {r['busy'] * 100:.0f} % busy (other work shared it). The worker checkpoints every "
        f"{args.checkpoint_seconds} s of wall time, so here every {args.checkpoint_seconds * args.speed:g} s of media "
        f"({r['checkpoints_per_minute']:.1f} checkpoints per recorded minute; 30 at real time with the default 2 s).",
        "",
        "| measure | goal | result |",
        "|---|---|---|",
        f"| media recorded | ≥ {args.minutes * 60} s, one part, no holes | {yes(whole)}: {r['recorded']:.1f} s "
        f"(ffprobe {r['probed']:.1f} s), {r['parts']} part, {r['gaps']} holes, {r['restarts']} timeline restarts, "
        f"exit {r['code']}, {r['status']} ({r['stop']}) |",
        f"| worker RSS after the first minute (sampled every second) | flat within 10 % | {yes(rss_spread <= 0.10)}: "
        f"**{r['rss_min']:.1f}–{r['rss_max']:.1f} MiB** (+{rss_spread * 100:.0f} %); {r['rss_at_1min']:.1f} at 1:00, "
        f"{r['rss_last']:.1f} at the end; 1:00–11:00 avg {r['rss_first_ten']:.1f}, last ten avg "
        f"{r['rss_last_ten']:.1f} (first minute's peak {r['rss_first_minute_peak']:.1f}) |",
        f"| CPU s per recorded minute, the worker process, media 1:00–11:00 → the last ten minutes | the same (±10 %) | "
        f"{yes(abs(own_ratio - 1) <= 0.10)}: **{r['first_own']:.4f} → {r['last_own']:.4f}** (×{own_ratio:.2f}; "
        f"one minute's sd {r['first_own_sd']:.4f}, {r['last_own_sd']:.4f}) |",
        f"| CPU s per recorded minute, its ffmpeg, media 1:00–11:00 → the last ten minutes | the same (±10 %) | "
        f"{yes(abs(ff_ratio - 1) <= 0.10)}: **{r['first_ffmpeg']:.3f} → {r['last_ffmpeg']:.3f}** (×{ff_ratio:.2f}; "
        f"one minute's sd {r['first_ffmpeg_sd']:.3f}, {r['last_ffmpeg_sd']:.3f}) |",
        f"| trend after the first minute (least squares, ± two standard errors) | — | CPU per recorded minute: worker "
        f"{r['own_trend'][0] * 1000:+.1f} ± {r['own_trend'][1] * 1000:.1f} %, its ffmpeg {r['ffmpeg_trend'][0] * 1000:+.1f} ± "
        f"{r['ffmpeg_trend'][1] * 1000:.1f} % per ten minutes; RSS {r['rss_per_hour'][0] * 1024:+.0f} ± "
        f"{r['rss_per_hour'][1] * 1024:.0f} KiB per media hour (heap and stacks {r['anon_per_hour'][0] * 1024:+.0f}, "
        f"{r['anon_first']:.2f} → {r['anon_last']:.2f} MiB over the first and last 60 samples; file pages "
        f"{r['file_per_hour'][0] * 1024:+.0f}, {r['file_first']:.2f} → {r['file_last']:.2f} MiB) |",
        f"| CPU s of the first minute (connect, first checkpoint); of the end (stop, assembly, journal deleted) | — | "
        f"worker {r['minute0'][0]:.3f} + ffmpeg {r['minute0'][1]:.3f}; worker {r['ending_own']:.3f} |",
        f"| CPU s in all (wait4: the worker with its ffmpeg) | — | {r['total_cpu']:.2f} (worker {r['own_ticks']:.2f}, "
        f"its ffmpeg {r['child_ticks']:.2f}, clock ticks) |",
        f"| RSS rising after the first minute (each new high by ≥ 256 KiB: media time, RSS, bytes then waiting for "
        f"the store) | — | " + ("; ".join(f"{m:.0f} s: {k:.1f} MiB, spool {'?' if b is None else f'{b:.1f} MiB'}"
                                        for m, k, b in r["highs"]) or "none") + " |",
        "",
        "| media minutes | worker CPU s per minute | its ffmpeg's | worker RSS avg MiB | max |",
        "|---|---|---|---|---|",
    ] + [f"| {a}–{b} | {o:.4f} | {f:.3f} | {ra:.1f} | {rm:.1f} |" for a, b, o, f, ra, rm in r["decades"]]
    write_block(args.out, "bench-long", "A long recording", lines)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
