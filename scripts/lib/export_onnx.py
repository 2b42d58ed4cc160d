#!/usr/bin/env python3
"""A Hugging Face BERT sentence encoder as the ONNX folder transformers.js loads from local files.

    export_onnx.py ENCODER_DIR OUT_DIR

ENCODER_DIR holds config.json, model.safetensors, tokenizer.json and tokenizer_config.json (the
default all-MiniLM-L6-v2 lives in the weights cache). OUT_DIR gets those files, onnx/model.onnx
(fp32, exported by torch.onnx) and onnx/model_quantized.onnx (q8: onnxruntime's dynamic
quantization with uint8 weights, what transformers.js's `dtype: 'q8'` loads), and export.json
with sizes, sha256s and the check below.

Check: onnxruntime (CPU) on both files against the torch model on two sentences, on the hidden
states and on the sentence embeddings (mean pooling + L2); the fp32 export must match torch to
1e-4 on the hidden states.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoTokenizer, BertModel

src, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "onnx").mkdir(parents=True, exist_ok=True)
for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
    if (src / f).exists():
        shutil.copy(src / f, out / f)

model = BertModel.from_pretrained(src, add_pooling_layer=False, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(src)
batch = tok(["A man is playing a guitar.", "The stock market fell sharply today, and nobody saw it coming."], padding=True, return_tensors="pt")
names = ["input_ids", "attention_mask", "token_type_ids"]
args = tuple(batch[n] for n in names)


class Encoder(torch.nn.Module):
    """The three inputs by name, last_hidden_state out (what transformers.js feeds and reads)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


encoder = Encoder(model).eval()
fp32 = out / "onnx" / "model.onnx"
torch.onnx.export(
    encoder,
    args,
    fp32,
    input_names=names,
    output_names=["last_hidden_state"],
    dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "last_hidden_state": {0: "batch", 1: "sequence"}},
    opset_version=17,
    dynamo=False,
)
q8 = out / "onnx" / "model_quantized.onnx"
quantize_dynamic(fp32, q8, weight_type=QuantType.QUInt8)

def sentence(states):
    """Mean pooling over the mask, then L2: the sentence embedding both libraries compute."""
    m = batch["attention_mask"].numpy()[..., None].astype(np.float64)
    e = (states * m).sum(1) / m.sum(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


with torch.no_grad():
    want = encoder(*args).numpy()
feed = {n: batch[n].numpy().astype(np.int64) for n in names}
check = {}
for name, path in [("fp32", fp32), ("q8", q8)]:
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    check[name] = {"hidden_states": float(np.abs(got - want).max()), "sentence_embedding": float(np.abs(sentence(got) - sentence(want)).max())}
print(json.dumps({"max_abs_diff_to_torch": check}))
assert check["fp32"]["hidden_states"] < 1e-4, check


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


json.dump(
    {
        "source": str(src),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha(p)} for p in [fp32, q8]},
        "max_abs_diff_to_torch": check,
    },
    open(out / "export.json", "w"),
    indent=1,
)
