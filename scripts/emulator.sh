#!/usr/bin/env bash
# Starts the local AWS emulator (moto_server) on 127.0.0.1 and creates the test buckets.
# Source it: `source scripts/emulator.sh` exports AWS_ENDPOINT_URL and the rest, and stops the
# emulator when the sourcing shell exits. Needs Python 3 and PyPI (first run only).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-emulator"
if [ ! -x "$venv/bin/moto_server" ] || ! cmp -s "$root/scripts/emulator-requirements.txt" "$venv/requirements.txt"; then
    echo "== installing the AWS emulator (moto) into .venv-emulator/"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/emulator-requirements.txt"
    cp "$root/scripts/emulator-requirements.txt" "$venv/requirements.txt"
fi
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t moto.XXXXXX.log)"
# The emulator's request recorder (a test reads back the Lambda invocations it caused) writes
# here rather than into the working directory.
recording="$(mktemp -t moto-recording.XXXXXX.jsonl)"
MOTO_RECORDER_FILEPATH="$recording" "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -f "$recording"' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export STREAMCUBE_TEST_BRONZE_BUCKET=streamcube-test-bronze STREAMCUBE_TEST_LAKE_BUCKET=streamcube-test-lake
for _ in $(seq 1 100); do
    if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/')" 2>/dev/null; then
        break
    fi
    kill -0 "$moto_pid" 2>/dev/null || { cat "$log"; echo "moto_server did not start" >&2; exit 1; }
    sleep 0.2
done
"$venv/bin/python" - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for b in (os.environ["STREAMCUBE_TEST_BRONZE_BUCKET"], os.environ["STREAMCUBE_TEST_LAKE_BUCKET"]):
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
PY
echo "== AWS emulator on $AWS_ENDPOINT_URL (log: $log)"
