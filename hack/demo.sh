#!/usr/bin/env bash
# make demo: record a synthetic camera end to end on local defaults.
#   1. installs/builds the test bed (hack/testbed.sh) and builds roomrec
#   2. starts the test bed (RTMP server, S3 object store, Kubernetes control plane …)
#   3. publishes a 720p30 H.264+AAC test stream as room member "alice"
#   4. records it with roomrec-worker (mode 02, MP4 audio+video) into the S3 bucket
#   5. prints the file URLs and an ffprobe summary of each file
# Re-running works; Ctrl-C stops and cleans up everything.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RECORD=${DEMO_SECONDS:-15}
DIR=${DEMO_DIR:-/tmp/roomrec-demo}

bin=$(bash hack/testbed.sh)
export ROOMREC_TESTBED_BIN=$bin
echo "==> building roomrec"
cargo build --quiet -p roomrec-worker -p roomrec-testbed
target=${CARGO_TARGET_DIR:-target}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

echo "==> starting the test bed in $DIR"
rm -f "$DIR/bed.json"
"$target/debug/roomrec-testbed" up --dir "$DIR" > "$DIR.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [[ -f "$DIR/bed.json" ]] && break; sleep 0.5; done
[[ -f "$DIR/bed.json" ]] || { echo "the test bed did not start; see $DIR.log" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open('$DIR/bed.json'))['$1'])"; }
rtmp="rtmp://127.0.0.1:$(field rtmp_port)/live/1400000000_43474_alice_main"
s3=$(field s3_endpoint); bucket=$(field s3_bucket); bucket_dir=$(field s3_bucket_dir)

echo "==> publishing a synthetic camera (1280x720, 30 fps, H.264 + AAC, 2 Mbit/s) to $rtmp"
ffmpeg -hide_banner -loglevel error -re \
  -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 \
  -c:v libx264 -preset ultrafast -tune zerolatency -b:v 2000k -maxrate 2000k -bufsize 4000k -g 60 \
  -c:a aac -b:a 128k -f flv "$rtmp" &
pids+=($!)
sleep 1

echo "==> recording $SECONDS_TO_RECORD s with roomrec-worker (mode 02 → s3://$bucket/demo)"
AWS_ACCESS_KEY_ID=$(field s3_access_key) AWS_SECRET_ACCESS_KEY=$(field s3_secret_key) \
  "$target/debug/roomrec-worker" record --source "$rtmp" --mode 02 \
  --storage "s3://$bucket/demo" --endpoint "$s3" --max-duration "$SECONDS_TO_RECORD" \
  --log-format text --manifest "$DIR/manifest.json"

echo "==> files"
python3 - "$DIR/manifest.json" "$bucket_dir" <<'PY'
import json, subprocess, sys
manifest = json.load(open(sys.argv[1]))
for part in manifest["parts"]:
    path = f"{sys.argv[2]}/{part['key']}"
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", path],
        check=True, capture_output=True, text=True).stdout)
    streams = ", ".join(
        f"{s['codec_type']} {s['codec_name']}" + (f" {s['width']}x{s['height']}" if s["codec_type"] == "video" else f" {s.get('sample_rate', '')} Hz")
        for s in probe["streams"])
    print(f"  {part['url']}")
    print(f"    {part['status']}, {float(probe['format']['duration']):.2f} s, {int(probe['format']['size']) / 1048576:.1f} MiB: {streams}")
print(f"manifest: {sys.argv[1]}")
PY
