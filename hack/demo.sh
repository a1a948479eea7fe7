#!/usr/bin/env bash
# make demo: the main job end to end, on local defaults.
#   1. installs/builds the test bed (hack/testbed.sh) and builds roomrec
#   2. starts the test bed: Kubernetes control plane + node agent, RTMP server, S3 store
#   3. installs the RecordingJob CRD and the chart's operator RBAC, and runs roomrec-operator
#      as the chart's ServiceAccount
#   4. publishes a synthetic 720p30 H.264+AAC camera over RTMP
#   5. applies examples/quickstart.yaml and shows the job's progress (kubectl get rj)
#   6. prints the resulting file URLs and an ffprobe summary of each, and fails (exit 1, saying
#      why) unless every file is in the store, decodes without an error and the files last the
#      job's maxDurationSeconds ± 2 s — so CI (.ci/run) runs it as a test
# Re-running works (each run starts a fresh bed); Ctrl-C stops and cleans up everything.
# DEMO_DIR (default /tmp/roomrec-demo) holds the bed and logs; DEMO_OPERATOR_LOG sets the
# operator's log filter (e.g. info,roomrec_operator=debug).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-/tmp/roomrec-demo}
NAMESPACE=demo

bin=$(bash hack/testbed.sh)
export ROOMREC_TESTBED_BIN=$bin
echo "==> building roomrec"
cargo build --quiet -p roomrec-worker -p roomrec-operator -p roomrec-testbed
target=${CARGO_TARGET_DIR:-target}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

echo "==> starting the test bed in $DIR"
rm -rf "$DIR"
mkdir -p "$DIR"
"$target/debug/roomrec-testbed" up --dir "$DIR/bed" > "$DIR/bed.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [[ -f "$DIR/bed/bed.json" ]] && break; sleep 0.5; done
[[ -f "$DIR/bed/bed.json" ]] || { echo "the test bed did not start; see $DIR/bed.log" >&2; exit 1; }
field() { python3 -c "import json; print(json.load(open('$DIR/bed/bed.json'))['$1'])"; }
export KUBECONFIG=$(field kubeconfig)
kubectl() { "$bin/kubectl" "$@"; }
rtmp_port=$(field rtmp_port); s3=$(field s3_endpoint); bucket=$(field s3_bucket)
buckets_dir=$(dirname "$(field s3_bucket_dir)")

echo "==> installing the RecordingJob CRD and the chart's operator RBAC"
kubectl apply --server-side -f crds/recordingjob.yaml > /dev/null
kubectl wait --for condition=Established crd/recordingjobs.roomrec.dev --timeout 60s > /dev/null
kubectl create namespace roomrec-system > /dev/null
kubectl create namespace "$NAMESPACE" > /dev/null
# The operator watches every namespace and may read Secrets only where the chart lists: here.
"$bin/helm" template demo charts/roomrec --namespace roomrec-system --kube-version 1.37.2 \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  --set "operator.secretNamespaces={$NAMESPACE}" \
  | kubectl apply --server-side -f - > /dev/null

echo "==> starting roomrec-operator as ServiceAccount roomrec-system/demo-roomrec-operator"
token=$(kubectl create token demo-roomrec-operator -n roomrec-system --duration 2h)
sed "s|^\(\s*token:\).*|\1 $token|" "$KUBECONFIG" > "$DIR/operator.kubeconfig"
# Progress every 5 s so that a short demo shows it grow (the chart's default is 60 s).
KUBECONFIG="$DIR/operator.kubeconfig" "$target/debug/roomrec-operator" \
  --worker-image ghcr.io/roomrec/roomrec-worker:demo --metrics-address 127.0.0.1:0 \
  --worker-report-interval-seconds 5 \
  --log-format text --log-level "${DEMO_OPERATOR_LOG:-info}" > "$DIR/operator.log" 2>&1 &
pids+=($!)

rtmp="rtmp://127.0.0.1:$rtmp_port/live/quickstart"
echo "==> publishing a synthetic camera (1280x720, 30 fps, H.264 + AAC, 2 Mbit/s) to $rtmp"
ffmpeg -nostdin -hide_banner -loglevel error -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 \
  -c:v libx264 -preset ultrafast -tune zerolatency -b:v 2000k -maxrate 2000k -bufsize 4000k -g 60 \
  -c:a aac -b:a 128k -f flv "$rtmp" > "$DIR/publisher.log" 2>&1 &
pids+=($!)

echo "==> kubectl apply -f examples/quickstart.yaml (in namespace $NAMESPACE, with the bed's ports)"
sed -e "s|rtmp://127.0.0.1:1935/live/quickstart|$rtmp|" -e "s|http://127.0.0.1:9000|$s3|" \
  examples/quickstart.yaml | kubectl apply -n "$NAMESPACE" -f -

echo "==> kubectl get rj -n $NAMESPACE (until the job ends)"
last="" phase=""
for _ in $(seq 1 180); do
  # A line each time the phase, the file count or the media recorded changes.
  state=$(kubectl get rj quickstart -n "$NAMESPACE" \
    -o jsonpath='{.status.phase} {.status.fileCount} {.status.recorded}' 2>/dev/null || true)
  if [[ "$state" != "$last" ]]; then
    # sed reads to the end: `head -1` could exit first and kubectl's SIGPIPE fail the pipeline.
    [[ -z "$last" ]] && kubectl get rj quickstart -n "$NAMESPACE" | sed -n 1p
    kubectl get rj quickstart -n "$NAMESPACE" --no-headers
    last=$state
  fi
  phase=$(kubectl get rj quickstart -n "$NAMESPACE" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ "$phase" == Succeeded || "$phase" == Failed || "$phase" == Stopped ]] && break
  sleep 1
done
if [[ "$phase" != Succeeded ]]; then
  kubectl get pods -n "$NAMESPACE" -o yaml > "$DIR/pods.yaml" 2>/dev/null || true
  echo "the job did not succeed (phase ${phase:-none}); its pods: $DIR/pods.yaml" >&2
  kubectl describe rj quickstart -n "$NAMESPACE" >&2 || true
  echo "operator log: $DIR/operator.log" >&2
  exit 1
fi

echo "==> files (each fetched from the store with a presigned URL and decoded in full)"
kubectl get rj quickstart -n "$NAMESPACE" -o json > "$DIR/quickstart.json"
# Exits non-zero, saying why, unless every file is in the store, decodes without an error and
# together they last the job's maxDurationSeconds (± 2 s).
python3 - "$DIR/quickstart.json" "$DIR/bed/bed.json" <<'PY'
import datetime, hashlib, hmac, json, subprocess, sys, urllib.parse
job, bed = (json.load(open(p)) for p in sys.argv[1:3])
expected, tolerance = job["spec"]["maxDurationSeconds"], 2.0
endpoint = bed["s3_endpoint"].rstrip("/")

def presigned(url):
    """A SigV4 query-signed GET of the object behind a status URL (the store refuses anonymous
    reads), built from the object's key as S3 canonicalises it."""
    if not url.startswith(endpoint + "/"):
        sys.exit(f"demo FAILED: {url} is not in the bed's store {endpoint}")
    path = "/" + urllib.parse.quote(urllib.parse.unquote(url[len(endpoint) + 1:]), safe="/~")
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{bed['s3_region']}/s3/aws4_request"
    query = urllib.parse.urlencode(sorted({
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{bed['s3_access_key']}/{scope}",
        "X-Amz-Date": stamp, "X-Amz-Expires": "3600", "X-Amz-SignedHeaders": "host"}.items()),
        quote_via=urllib.parse.quote, safe="~")
    host = urllib.parse.urlsplit(endpoint).netloc
    request = f"GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
    key = ("AWS4" + bed["s3_secret_key"]).encode()
    for part in (day, bed["s3_region"], "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{endpoint}{path}?{query}&X-Amz-Signature={signature}"

files = job["status"].get("files", [])
if not files:
    sys.exit("demo FAILED: the job succeeded but lists no files")
total = 0.0
for f in files:
    print(f"  {f['url']}")
    source = presigned(f["url"])
    if f["status"] != "succeeded":
        sys.exit(f"demo FAILED: {f['url']} is {f['status']}, not succeeded")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", source],
        capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"demo FAILED: {f['url']} cannot be read from the store: {probe.stderr.replace(source, f['url']).strip()}")
    probe = json.loads(probe.stdout)
    decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", source, "-f", "null", "-"],
                            capture_output=True, text=True)
    if decode.returncode != 0 or decode.stderr.strip():
        sys.exit(f"demo FAILED: {f['url']} does not decode cleanly (ffmpeg exit {decode.returncode}): {decode.stderr.replace(source, f['url']).strip()}")
    duration = float(probe["format"]["duration"])
    total += duration
    streams = ", ".join(
        f"{s['codec_type']} {s['codec_name']}" + (f" {s['width']}x{s['height']}" if s["codec_type"] == "video" else f" {s.get('sample_rate', '')} Hz")
        for s in probe["streams"])
    print(f"    {f['status']}, {duration:.2f} s, {int(probe['format']['size']) / 1048576:.1f} MiB: {streams}")
if abs(total - expected) > tolerance:
    sys.exit(f"demo FAILED: the files last {total:.2f} s together, not the job's {expected} s (± {tolerance:g})")
count = f"{len(files)} file" + ("s" if len(files) > 1 else "")
print(f"demo OK: {count}, {total:.2f} s of the job's {expected} s, stored and decoding without errors")
print(f"the RecordingJob as JSON: {sys.argv[1]}")
PY
