#!/usr/bin/env python3
"""The cluster side of `make bench`: how long until media is safe, how long from a stop until
the file's URL is known, and what steady recording costs the API server.

On the test bed (real kube-apiserver, etcd, node agent, S3 store, nginx-rtmp), with release
builds of the operator and the worker, the operator running as the chart's ServiceAccount with
the chart's defaults, and one looped 720p stream published to nginx-rtmp:

1. start latency: RecordingJobs applied one at a time; for each, from `kubectl apply` (its
   return) to the worker pod Running and to the first media durable in the store (the first
   status.files entry with seconds in it: the worker reports once its first checkpoint is
   stored), split into the operator's reaction (apply -> pod created), the pod's start
   (created -> Running) and the worker's (Running -> first checkpoint reported);
2. stop-to-URL latency: `spec.stop: true` on each running job, one at a time; to every file
   final in status.files, to the phase terminal, and to the callback received; and the same
   from the source ending (each job records a stream of its own whose publisher then stops;
   the job's idle timeout, 5 s, is its reconnect grace);
3. steady state: N jobs recording at once; the API server's own apiserver_request_total read
   before and after a window, less the same window with no job (the control plane's own
   leases, discovery): requests per job per minute, by verb and resource, and the operator's
   CPU and RSS;
4. ending at once: `spec.stop` on every steady-state job together, each timed from its own
   patch to its callback received.

Times are taken when this script sees the change (a watch of jobs and pods through kubectl),
so each includes up to ~0.1 s of watch delivery.
"""

import argparse, concurrent.futures, datetime, http.server, json, os, re, socket, socketserver, statistics, subprocess, sys, tempfile
import threading, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
from bench import bed_info, publisher_command, stop_all, write_block  # noqa: E402  (the stream as in bench.py)


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, text=True, **kw)


class Watch:
    """`kubectl get KIND -w -o json`: the latest object by name and when each was first seen
    in a state (`seen[(name, state)] = time`), states decided by `classify(obj)`."""

    def __init__(self, kubectl, env, kind, namespace, classify, log):
        self.latest, self.seen, self.lock = {}, {}, threading.Lock()
        self.classify, self.stopped = classify, False
        self.command = [kubectl, "get", kind, "-n", namespace, "-w", "-o", "json"]
        self.env, self.log = env, log
        self.proc = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        # kubectl's watch ends when the API server closes it (it did during the burst of
        # 1,000): a new one lists every object again, and `seen` keeps the first times.
        while not self.stopped:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE,
                                         stderr=open(self.log, "a"), text=True)
            self._read()
            self.proc.wait()
            time.sleep(0.2)

    def _read(self):
        # Objects span many lines: only a line closing a top-level object is worth parsing.
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if line != "}\n":
                continue
            got = json.loads("".join(lines))
            lines = []
            now = time.monotonic()
            # A watch begins with what exists (and kubectl lists again when it renews its watch), printed as lists (PodList, pages of 500).
            with self.lock:
                for obj in got["items"] if "items" in got else [got]:
                    name = obj["metadata"]["name"]
                    self.latest[name] = obj
                    for state in self.classify(obj):
                        self.seen.setdefault((name, state), now)

    def when(self, name, state, timeout):
        return self.first([name], state, timeout)

    def first(self, names, state, timeout):
        """When the first of `names` reached `state`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                times = [self.seen[(n, state)] for n in names if (n, state) in self.seen]
            if times:
                return min(times)
            time.sleep(0.02)
        raise SystemExit(f"bench: none of {', '.join(names)} reached {state} within {timeout} s")

    def stop(self):
        self.stopped = True
        if self.proc:
            self.proc.kill()


# The jobs whose source ends wait this long for it to return (their idle timeout, its least).
ENDED_GRACE = 5


def job_states(job):
    status = job.get("status") or {}
    files = status.get("files") or []
    if any(f.get("durationSeconds", 0) > 0 for f in files):
        yield "media-durable"
    if files and all(f.get("status") != "recording" for f in files):
        yield "files-final"
    if status.get("phase") in ("Succeeded", "Failed", "Stopped"):
        yield "terminal"


def pod_states(pod):
    yield "created"
    if (pod.get("status") or {}).get("phase") == "Running":
        yield "running"


class Callbacks(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def callback_receiver():
    received = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            job = self.headers.get("X-Roomrec-Job", "").split("/")[-1]
            received.setdefault(job, time.monotonic())
            self.send_response(200)
            self.end_headers()
            del body

        def log_message(self, *args):
            pass

    server = Callbacks(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def job_yaml(name, stream, bucket, endpoint, callback, seconds, idle_timeout=300):
    return f"""apiVersion: roomrec.dev/v1alpha1
kind: RecordingJob
metadata:
  name: {name}
spec:
  source:
    url: {stream}
  idleTimeoutSeconds: {idle_timeout}
  mode: AudioVideoMp4
  storage:
    s3:
      bucket: {bucket}
      path: bench/{name}
      region: us-east-1
      endpoint: {endpoint}
      credentialsSecret: s3-keys
  maxDurationSeconds: {seconds}
  callback:
    url: {callback}
---
"""


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OPERATOR_METRICS_PORT = free_port()


def reconcile_durations():
    """The operator's roomrec_reconcile_duration_seconds: (reconciles, of them over 1 s)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{OPERATOR_METRICS_PORT}/metrics").read().decode()
    buckets = dict(re.findall(r'roomrec_reconcile_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', text))
    total = float(buckets.get("+Inf", 0))
    return total, total - float(buckets.get("1", 0))


def request_counts(kubectl, env):
    """apiserver_request_total by (verb, resource, subresource), from the API server itself."""
    text = subprocess.run([kubectl, "get", "--raw", "/metrics"], env=env, check=True,
                          capture_output=True, text=True).stdout
    counts = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (labels.get("verb"), labels.get("resource"), labels.get("subresource", ""))
        counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def requests_by_client(audit_log, since, until, namespace):
    """Requests received between two wall-clock times, from the API server's audit log, by who
    made them (the operator's ServiceAccount, the workers' in the jobs' namespace, or anyone
    else: the control plane, this script's watches) and by kind (writes, reads; watches are
    long-running and not counted)."""
    counts = {}
    for line in open(audit_log):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        if not since <= received < until:
            continue
        user = event.get("user", {}).get("username", "")
        if user.endswith(":bench-roomrec-operator"):
            client = "operator"
        elif user.startswith(f"system:serviceaccount:{namespace}:"):
            client = "workers"
        else:
            client = "others"
        verb = event.get("verb")
        kind = ("writes" if verb in ("create", "update", "patch", "delete", "deletecollection")
                else "reads" if verb in ("get", "list") else None)
        if kind:
            counts[(client, kind)] = counts.get((client, kind), 0) + 1
    return counts


CLOSE_EVENTS = {"signal received": "signal", "part closing": "closing",
                "part assembled": "assembled", "recording finished": "finished"}


def worker_close_steps(pods_dir, asked, callbacks):
    """Where each job's time from its stop to its callback went, from its worker's log (the
    node agent keeps it): the stop reaching the worker (patch → operator deletes the pod → the
    signal), ffmpeg's last fragment, the store completing the part's object, the journal
    deleted and the final report, then the pod's end and the operator's callback."""
    steps = {"patch → worker signalled": [], "signal → part closing (last fragment)": [],
             "closing → object complete in the store": [],
             "object complete → worker done (journal deleted, final report)": [],
             "worker done → callback received": []}
    wall_minus_mono = time.time() - time.monotonic()
    for log in Path(pods_dir).glob("bench_steady-*/worker.log"):
        name = re.search(r"bench_(steady-\d+)-0-", str(log)).group(1)
        if name not in asked or name not in callbacks:
            continue
        seen = {}
        for line in open(log, errors="replace"):
            try:
                event = json.loads(line)
                message = event["fields"]["message"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            for prefix, key in CLOSE_EVENTS.items():
                if message.startswith(prefix):
                    at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                    seen[key] = at.timestamp() - wall_minus_mono
        if len(seen) < len(CLOSE_EVENTS):
            continue
        values = [seen["signal"] - asked[name], seen["closing"] - seen["signal"],
                  seen["assembled"] - seen["closing"], seen["finished"] - seen["assembled"],
                  callbacks[name] - seen["finished"]]
        for step, value in zip(steps, values):
            steps[step].append(value)
    return steps


def proc_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-jobs", type=int, default=20)
    ap.add_argument("--steady-jobs", type=int, default=100)
    ap.add_argument("--steady-seconds", type=int, default=180)
    ap.add_argument("--burst-jobs", type=int, default=1000,
                    help="jobs applied at once with stand-in workers (0: skip)")
    ap.add_argument("--burst-seconds", type=int, default=600,
                    help="steady state measured after the burst")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    args = ap.parse_args()

    bin_dir = sh("bash", ROOT / "hack/testbed.sh", capture_output=True).stdout.strip()
    env = dict(os.environ, ROOMREC_TESTBED_BIN=bin_dir)
    sh("cargo", "build", "--release", "--quiet", "-p", "roomrec-worker", "-p", "roomrec-operator",
       cwd=ROOT)
    sh("cargo", "build", "--quiet", "-p", "roomrec-testbed", cwd=ROOT)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    kubectl, helm = Path(bin_dir) / "kubectl", Path(bin_dir) / "helm"
    work = Path(tempfile.mkdtemp(prefix="roomrec-bench-cluster-"))
    # Workers run from the release build (the node agent searches ROOMREC_NODE_PATH first); the
    # burst's stand-in, `held-worker`, is a shell that holds its pod Running and does nothing.
    held = work / "held"
    held.mkdir()
    (held / "held-worker").write_text("#!/bin/sh\nexec sleep 86400\n")
    (held / "held-worker").chmod(0o755)
    env["ROOMREC_NODE_PATH"] = f"{held}:{target_dir / 'release'}"
    # A bed's pod network holds 253 pods; the burst needs 1,000 (see docs/testing.md).
    env["ROOMREC_NODE_SHARED_NETWORK"] = "1"
    # The API server's audit log says which client made each request (operator or worker).
    audit_log = work / "audit.log"
    bed = subprocess.Popen([target_dir / "debug" / "roomrec-testbed", "up", "--dir", work / "bed"],
                           env=dict(env, ROOMREC_TESTBED_AUDIT_LOG=str(audit_log)), stdout=open(work / "bed.log", "w"), stderr=subprocess.STDOUT)
    procs = [bed]
    try:
        info = bed_info(work / "bed")
        kenv = dict(env, KUBECONFIG=info["kubeconfig"])
        k = lambda *a, **kw: sh(kubectl, *a, env=kenv, **kw)  # noqa: E731
        k("apply", "--server-side", "-f", ROOT / "crds/recordingjob.yaml", capture_output=True)
        k("wait", "--for", "condition=Established", "crd/recordingjobs.roomrec.dev", "--timeout",
          "60s", capture_output=True)
        k("create", "namespace", "roomrec-system", capture_output=True)
        rbac = sh(helm, "template", "bench", ROOT / "charts/roomrec", "--namespace", "roomrec-system",
                  "--kube-version", "1.37.2",
                  "--set", "operator.secretNamespaces={bench}",
                  "--show-only", "templates/serviceaccount.yaml", "--show-only",
                  "templates/rbac.yaml", capture_output=True, env=kenv).stdout
        k("create", "namespace", "bench", capture_output=True)
        k("apply", "--server-side", "-f", "-", input=rbac, capture_output=True)
        token = k("create", "token", "bench-roomrec-operator", "-n", "roomrec-system",
                  "--duration", "4h", capture_output=True).stdout.strip()
        kubeconfig = re.sub(r"(?m)^(\s*token:).*$", rf"\1 {token}", open(info["kubeconfig"]).read())
        (work / "operator.kubeconfig").write_text(kubeconfig)
        def start_operator(image, log):
            return subprocess.Popen(
                [target_dir / "release/roomrec-operator", "--worker-image", image,
                 "--metrics-address", f"127.0.0.1:{OPERATOR_METRICS_PORT}", "--worker-metrics-port", "0",
                 "--log-format", "json", "--log-level", "warn"],
                env=dict(env, KUBECONFIG=str(work / "operator.kubeconfig")),
                stdout=open(work / log, "w"), stderr=subprocess.STDOUT)

        operator = start_operator("ghcr.io/roomrec/roomrec-worker:bench", "operator.log")
        procs.append(operator)
        stream = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/bench"
        publisher = subprocess.Popen(publisher_command(stream), stdout=subprocess.DEVNULL,
                                     stderr=open(work / "publisher.log", "w"))
        procs.append(publisher)
        server, callbacks = callback_receiver()
        callback_url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
        ns = "bench"
        k("create", "secret", "generic", "s3-keys", "-n", ns,
          f"--from-literal=accessKeyId={info['s3_access_key']}",
          f"--from-literal=secretAccessKey={info['s3_secret_key']}", capture_output=True)
        jobs = Watch(kubectl, kenv, "recordingjobs", ns, job_states, work / "watch-jobs.log")
        pods = Watch(kubectl, kenv, "pods", ns, pod_states, work / "watch-pods.log")
        time.sleep(3)

        def apply(names, seconds, source=stream, idle_timeout=300):
            text = "".join(job_yaml(n, source, info["s3_bucket"], info["s3_endpoint"],
                                    callback_url, seconds, idle_timeout) for n in names)
            k("apply", "-n", ns, "-f", "-", input=text, capture_output=True)
            return time.monotonic()

        def ended(name, since):
            """(files final, phase terminal, callback received) of job `name`, each after
            `since`, printed."""
            final = jobs.when(name, "files-final", 120)
            terminal = jobs.when(name, "terminal", 120)
            deadline = time.monotonic() + 60
            while name not in callbacks and time.monotonic() < deadline:
                time.sleep(0.02)
            called = callbacks.get(name, float("nan"))
            print(f"  {name}: files final {final - since:.2f} s, phase terminal {terminal - since:.2f} s, "
                  f"callback {called - since:.2f} s")
            return final - since, terminal - since, called - since

        # 1. Start latency, one job at a time.
        print(f"== start latency: {args.latency_jobs} jobs applied one at a time")
        starts = []
        for i in range(args.latency_jobs):
            name = f"start-{i}"
            applied = apply([name], 3600)
            pod = f"{name}-0-1"
            created = pods.when(pod, "created", 60)
            running = pods.when(pod, "running", 120)
            durable = jobs.when(name, "media-durable", 120)
            starts.append((created - applied, running - created, durable - running,
                           running - applied, durable - applied))
            print(f"  {name}: pod created {created - applied:.2f} s, Running +{running - created:.2f} s, "
                  f"media durable +{durable - running:.2f} s (total {durable - applied:.2f} s)")

        # 2. Stop-to-URL latency, one job at a time.
        print(f"== stop latency: spec.stop on each of the {args.latency_jobs} jobs, one at a time")
        stops = []
        for i in range(args.latency_jobs):
            name = f"start-{i}"
            k("patch", "recordingjob", name, "-n", ns, "--type", "merge", "-p",
              '{"spec":{"stop":true}}', capture_output=True)
            stops.append(ended(name, time.monotonic()))
        # 2b. The same from the source ending: each job records a stream of its own whose
        # publisher then stops; nginx-rtmp's `live` application drops its players at once. The
        # part is final when it is stored; the recording ends after the reconnect grace (the
        # job's idle timeout, its least, 5 s, here), in case the stream returns.
        print(f"== source ending: the publisher of each of {args.latency_jobs} jobs stops, one at a time")
        ends = []
        for i in range(args.latency_jobs):
            name = f"end-{i}"
            own = f"rtmp://127.0.0.1:{info['rtmp_port']}/live/{name}"
            own_publisher = subprocess.Popen(publisher_command(own), stdout=subprocess.DEVNULL,
                                             stderr=open(work / f"publisher-{name}.log", "w"))
            procs.append(own_publisher)
            time.sleep(1)
            apply([name], 3600, source=own, idle_timeout=ENDED_GRACE)
            jobs.when(name, "media-durable", 120)
            time.sleep(3)
            own_publisher.terminate()
            gone = time.monotonic()
            own_publisher.wait(timeout=30)
            ends.append(ended(name, gone))
        k("delete", "recordingjobs", "--all", "-n", ns, "--wait=true", "--timeout", "300s",
          capture_output=True)

        # 3. Steady state: N jobs at once. First the same window with no job, to take out what
        # the control plane itself asks (its leases, kubectl's discovery) and these watches.
        print(f"== idle baseline: {args.steady_seconds} s with no job")
        idle_before, t0 = request_counts(kubectl, kenv), time.monotonic()
        time.sleep(args.steady_seconds)
        idle_after, idle_minutes = request_counts(kubectl, kenv), (time.monotonic() - t0) / 60
        idle = {key: (idle_after.get(key, 0) - idle_before.get(key, 0)) / idle_minutes
                for key in idle_after}
        print(f"== steady state: {args.steady_jobs} jobs at once, {args.steady_seconds} s measured")
        names = [f"steady-{i}" for i in range(args.steady_jobs)]
        apply(names, 3600)
        for name in names:
            jobs.when(name, "media-durable", 300)
        time.sleep(30)
        before, cpu_before, t0 = request_counts(kubectl, kenv), proc_cpu_seconds(operator.pid), time.monotonic()
        wall0 = time.time()
        rss = []
        while time.monotonic() - t0 < args.steady_seconds:
            rss.append(proc_rss_mib(operator.pid))
            time.sleep(5)
        after, cpu_after = request_counts(kubectl, kenv), proc_cpu_seconds(operator.pid)
        minutes = (time.monotonic() - t0) / 60
        wall1 = time.time()
        time.sleep(2)
        clients = requests_by_client(audit_log, wall0, wall1, ns)
        by_client = {key: n / minutes / args.steady_jobs for key, n in clients.items()}
        for (client, kind), v in sorted(by_client.items()):
            print(f"  {client} {kind}: {v:.2f} per job per minute")
        per_job = {}
        for key in after:
            extra = (after.get(key, 0) - before.get(key, 0)) / minutes - idle.get(key, 0)
            if extra / args.steady_jobs >= 0.005:
                per_job[key] = extra / args.steady_jobs
        writes = sum(v for (verb, *_), v in per_job.items()
                     if verb in ("CREATE", "UPDATE", "PATCH", "APPLY", "DELETE"))
        reads = sum(v for (verb, *_), v in per_job.items() if verb in ("GET", "LIST"))
        for key, v in sorted(per_job.items(), key=lambda kv: -kv[1]):
            print(f"  {' '.join(p for p in key if p)}: {v:.2f} per job per minute")
        print(f"  writes {writes:.2f}, reads {reads:.2f} per job per minute; operator CPU "
              f"{(cpu_after - cpu_before) / (minutes * 60) * 100:.2f} %, RSS max {max(rss):.1f} MiB")

        # 4. Every steady job stopped at once: `spec.stop` patched on all of them together (8
        # kubectl at a time), each timed from its own patch to its callback received.
        print(f"== ending at once: spec.stop on all {args.steady_jobs} jobs together")
        callbacks.clear()
        asked = {}

        def stop(name):
            for attempt in range(3):
                done = subprocess.run([str(kubectl), "patch", "recordingjob", name, "-n", ns,
                                       "--type", "merge", "-p", '{"spec":{"stop":true}}'],
                                      env=kenv, capture_output=True, text=True)
                if done.returncode == 0:
                    asked[name] = time.monotonic()
                    return
                print(f"  {name}: kubectl patch failed ({done.stderr.strip()}), attempt {attempt + 1}")

        first_ask = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(stop, names))
        last_ask = max(asked.values())
        deadline = time.monotonic() + 120
        while len(callbacks) < len(asked) and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = [callbacks[n] - asked[n] for n in asked if n in callbacks]
        missing = [n for n in asked if n not in callbacks]
        if len(asked) < len(names):
            print(f"  {len(names) - len(asked)} jobs could not be stopped: see above")
        all_sent = (max(callbacks.values()) - first_ask) if callbacks else float("nan")
        print(f"  asked within {last_ask - first_ask:.2f} s; callbacks p50 {pct(ended, 50):.2f} s, "
              f"p99 {pct(ended, 99):.2f} s, the slowest {max(ended, default=float('nan')):.2f} s; "
              f"the last {all_sent:.2f} s after the first stop; "
              f"{len(missing)} missing")
        steps = worker_close_steps(work / "bed/node/pods", asked, callbacks)
        for step, values in steps.items():
            print(f"  {step}: p50 {pct(values, 50):.2f} s, p99 {pct(values, 99):.2f} s")
        together = (last_ask - first_ask, ended, all_sent, len(missing), steps)
        k("delete", "recordingjobs", "--all", "-n", ns, "--wait=true", "--timeout", "600s",
          capture_output=True)
        burst = run_burst(args, k, kubectl, kenv, ns, stream, info, callback_url, audit_log,
                          start_operator, operator, procs, jobs, pods) if args.burst_jobs else None
        write_results(args, starts, stops, ends, per_job, writes, reads,
                      (cpu_after - cpu_before) / (minutes * 60), max(rss), together, by_client,
                      burst)
        jobs.stop()
        pods.stop()
    finally:
        stop_all(procs, 30)


def run_burst(args, k, kubectl, kenv, ns, stream, info, callback_url, audit_log,
              start_operator, operator, procs, jobs, pods):
    """5. A burst: --burst-jobs RecordingJobs applied at once to a fresh operator whose worker
    image is `held-worker`, a stand-in that holds its pod Running and never reports (so the
    steady state that follows is the operator's own load; the workers' reports were measured
    with real workers above). Returns what write_results prints."""
    print(f"== burst: {args.burst_jobs} jobs applied at once, workers held by a stand-in")
    operator.terminate()
    operator.wait(timeout=30)
    held = start_operator("bench.local/held-worker:1", "operator-burst.log")
    procs.append(held)
    # Once a job gets its pod, the new operator leads.
    k("apply", "-n", ns, "-f", "-", capture_output=True,
      input=job_yaml("burst-warmup", stream, info["s3_bucket"], info["s3_endpoint"], callback_url, 3600))
    pods.when("burst-warmup-0-1", "running", 120)
    k("delete", "recordingjob", "burst-warmup", "-n", ns, "--wait=true", capture_output=True)
    names = [f"burst-{i}" for i in range(args.burst_jobs)]

    # Ten server-side applies of 100 at a time: one client-side `kubectl apply` of 100 took
    # 12 s (a GET and a create per object), and 1,000 took two minutes to arrive.
    def apply(i):
        text = "".join(job_yaml(n, stream, info["s3_bucket"], info["s3_endpoint"], callback_url, 3600)
                       for n in names[i:i + 100])
        k("apply", "--server-side", "-n", ns, "-f", "-", input=text, capture_output=True)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(apply, range(0, len(names), 100)))
    applied = time.monotonic() - t0
    created = [pods.when(f"{n}-0-1", "created", 600) - t0 for n in names]
    # A pod the node agent cannot start is replaced by the operator: the job's first Running one.
    running = [pods.first([f"{n}-0-{a}" for a in range(1, 6)], "running", 600) - t0 for n in names]
    print(f"  applied in {applied:.1f} s; every pod created {max(created):.1f} s, Running "
          f"{max(running):.1f} s after the first apply")
    time.sleep(30)
    apiserver = next(pid for pid in os.listdir("/proc") if pid.isdigit() and
                     b"kube-apiserver" in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0])
    before, t1 = request_counts(kubectl, kenv), time.monotonic()
    cpu_op, cpu_api, wall0 = proc_cpu_seconds(held.pid), proc_cpu_seconds(apiserver), time.time()
    reconciles = reconcile_durations()
    rss = []
    while time.monotonic() - t1 < args.burst_seconds:
        rss.append(proc_rss_mib(held.pid))
        time.sleep(5)
    after, minutes = request_counts(kubectl, kenv), (time.monotonic() - t1) / 60
    reconciles = tuple(b - a for a, b in zip(reconciles, reconcile_durations()))
    cpu_op = (proc_cpu_seconds(held.pid) - cpu_op) / (minutes * 60)
    cpu_api = (proc_cpu_seconds(apiserver) - cpu_api) / (minutes * 60)
    wall1 = time.time()
    time.sleep(2)
    clients = {key: n / minutes / args.burst_jobs
               for key, n in requests_by_client(audit_log, wall0, wall1, ns).items()}
    total = {key: (after.get(key, 0) - before.get(key, 0)) / minutes / args.burst_jobs
             for key in after}
    for key, v in sorted(total.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {' '.join(p for p in key if p)}: {v:.3f} per job per minute (all clients)")
    print(f"  operator writes {clients.get(('operator', 'writes'), 0):.3f}, reads "
          f"{clients.get(('operator', 'reads'), 0):.3f} per job per minute; operator CPU "
          f"{cpu_op * 100:.2f} %, RSS max {max(rss):.1f} MiB; kube-apiserver CPU {cpu_api * 100:.1f} %")
    t2 = time.monotonic()
    k("delete", "recordingjobs", "--all", "-n", ns, "--wait=true", "--timeout", "1200s",
      capture_output=True)
    print(f"  all {args.burst_jobs} deleted in {time.monotonic() - t2:.1f} s")
    print(f"  reconciles in the window: {reconciles[0]:.0f}, of them over 1 s: {reconciles[1]:.0f}")
    return dict(applied=applied, created=created, running=running, clients=clients,
                reconciles=reconciles,
                cpu_op=cpu_op, rss=max(rss), cpu_api=cpu_api, minutes=minutes)


def write_results(args, starts, stops, ends, per_job, writes, reads, operator_cpu, operator_rss,
                  together, by_client, burst):
    col = lambda rows, i: [r[i] for r in rows]  # noqa: E731
    p = lambda rows, i: f"p50 {pct(col(rows, i), 50):.2f} s, p99 {pct(col(rows, i), 99):.2f} s"  # noqa: E731
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine ({os.cpu_count()} cores), with "
        f"`hack/bench_cluster.py --latency-jobs {args.latency_jobs} --steady-jobs {args.steady_jobs} "
        f"--steady-seconds {args.steady_seconds} --burst-jobs {args.burst_jobs} --burst-seconds "
        f"{args.burst_seconds}` (in `make bench`). Release builds; the publisher "
        f"(x264 720p30), nginx-rtmp, the S3 store and the control plane share the machine.",
        "",
        "| measure | goal | result |",
        "|---|---|---|",
        f"| apply → worker pod Running ({len(starts)} jobs, one at a time) | — | {p(starts, 3)} |",
        f"| apply → first media durable in the store | p50 ≤ 3 s | {p(starts, 4)} |",
        f"| … of which: operator reaction (apply → pod created) | — | {p(starts, 0)} |",
        f"| … pod start (created → Running) | — | {p(starts, 1)} |",
        f"| … ffmpeg connect, first fragment and checkpoint (Running → reported durable) | — | {p(starts, 2)} |",
        f"| `spec.stop` → every file final in status.files | p50 ≤ 1 s, p99 ≤ 3 s | {p(stops, 0)} |",
        f"| `spec.stop` → phase terminal | — | {p(stops, 1)} |",
        f"| `spec.stop` → callback received | — | {p(stops, 2)} |",
        f"| source ended (publisher stopped) → every file final in status.files | p50 ≤ 1 s, p99 ≤ 3 s | {p(ends, 0)} |",
        f"| source ended → phase terminal (after the reconnect grace, {ENDED_GRACE} s) | — | {p(ends, 1)} |",
        f"| source ended → callback received | — | {p(ends, 2)} |",
        f"| API writes per job per minute, {args.steady_jobs} jobs recording | ≤ 2 | **{writes:.2f}** |",
        f"| API reads per job per minute (GET, LIST) | — | {reads:.2f} |",
        f"| … writes by client (audit log): operator, workers | — | "
        f"{by_client.get(('operator', 'writes'), 0):.2f}, {by_client.get(('workers', 'writes'), 0):.2f} |",
        f"| … reads by client (audit log): operator, workers | — | "
        f"{by_client.get(('operator', 'reads'), 0):.2f}, {by_client.get(('workers', 'reads'), 0):.2f} |",
        f"| operator CPU, RSS at that steady state | RSS ≤ 150 MiB | {operator_cpu * 100:.2f} % of a core, {operator_rss:.1f} MiB |",
        f"| all {args.steady_jobs} stopped at once (asked within {together[0]:.1f} s) → each callback received | every one ≤ 30 s | "
        f"p50 {pct(together[1], 50):.2f} s, p99 {pct(together[1], 99):.2f} s, the slowest "
        f"{max(together[1], default=float('nan')):.2f} s; the last {together[2]:.2f} s after the first stop"
        + (f"; **{together[3]} never arrived**" if together[3] else "") + " |",
    ] + [f"| … {step} (each worker's log) | — | p50 {pct(v, 50):.2f} s, p99 {pct(v, 99):.2f} s |"
         for step, v in together[4].items()] + ([] if not burst else [
        f"| burst: {args.burst_jobs} jobs applied at once (server-side, 100 a call, ten calls at once: "
        f"{burst['applied']:.1f} s) → every worker pod created | every one ≤ 60 s | "
        f"the last {max(burst['created']):.1f} s; per job p50 {pct(burst['created'], 50):.1f} s, "
        f"p99 {pct(burst['created'], 99):.1f} s |",
        f"| … every worker pod Running | — | the last {max(burst['running']):.1f} s |",
        f"| … then {burst['minutes']:.0f} min steady: the operator's writes, reads per job per "
        f"minute (audit log; stand-in workers do not report) | writes ≤ 2 with the workers' | "
        f"{burst['clients'].get(('operator', 'writes'), 0):.3f}, "
        f"{burst['clients'].get(('operator', 'reads'), 0):.3f} |",
        f"| … operator CPU, RSS with {args.burst_jobs} jobs | RSS ≤ 150 MiB | "
        f"{burst['cpu_op'] * 100:.2f} % of a core, {burst['rss']:.1f} MiB |",
        f"| … kube-apiserver CPU | — | {burst['cpu_api'] * 100:.1f} % of a core |",
        f"| … reconciles that took over 1 s (`roomrec_reconcile_duration_seconds`) | none | "
        f"{burst['reconciles'][1]:.0f} of {burst['reconciles'][0]:.0f} |",
    ]) + [
        "",
        "| request (verb resource subresource) | per job per minute |",
        "|---|---|",
    ] + [f"| {' '.join(x for x in key if x)} | {v:.2f} |"
         for key, v in sorted(per_job.items(), key=lambda kv: -kv[1])]
    write_block(args.out, "bench-cluster", "Cluster: start, stop and steady state", lines)


if __name__ == "__main__":
    main()
