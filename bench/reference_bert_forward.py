#!/usr/bin/python3
"""PyTorch eager reference for bench_bert_forward: Hugging Face BertModel's forward (eager attention,
as modeling_bert.py runs it without SDPA) and sentence-transformers mean pooling, written with
plain torch ops since Debian has no transformers package.

  /usr/bin/python3 bench/reference_bert_forward.py MODEL_DIR INPUTS.safetensors POOLED_OUT.f32 \
      [--iters N] [--threads N] [--contiguous] [--serve]

INPUTS holds input_ids and attention_mask [B, T] (I64). Prints one JSON object with the times of
each timed forward (or, with --serve, times one forward per request on stdin so that a caller can
interleave them with its own); writes the last pooled vectors [B, d] as raw little-endian float32.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_model_fixtures import read_safetensors as load_safetensors  # noqa: E402  (one safetensors reader)


def forward(sd, cfg, ids, mask, contiguous=False):
    d, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    dh, eps = d // H, cfg["layer_norm_eps"]
    B, T = ids.shape
    x = (F.embedding(ids, sd["embeddings.word_embeddings.weight"])
         + F.embedding(torch.zeros_like(ids), sd["embeddings.token_type_embeddings.weight"])
         + F.embedding(torch.arange(T)[None], sd["embeddings.position_embeddings.weight"]))
    x = F.layer_norm(x, (d,), sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"], eps)
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    lin = lambda p, t: F.linear(t, sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    heads = lambda t: t.view(B, T, H, dh).permute(0, 2, 1, 3)  # noqa: E731
    for i in range(L):
        p = f"encoder.layer.{i}."
        q, k, v = (heads(lin(p + f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        k_t = k.transpose(-1, -2)
        if contiguous:  # not what transformers does, but much faster with this build's batched GEMM
            q, k_t, v = q.contiguous(), k_t.contiguous(), v.contiguous()
        scores = torch.matmul(q, k_t) / math.sqrt(dh) + ext
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous().view(B, T, d)
        a = F.layer_norm(lin(p + "attention.output.dense", ctx) + x, (d,),
                         sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"], eps)
        h = F.gelu(lin(p + "intermediate.dense", a))
        x = F.layer_norm(lin(p + "output.dense", h) + a, (d,),
                         sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)
    m = mask[..., None].float()
    return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("pooled_out")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--contiguous", action="store_true",
                    help="make q, kᵀ and v contiguous before the attention matmuls (a tuned eager variant)")
    ap.add_argument("--serve", action="store_true",
                    help="after a warm-up print 'ready', then time one forward per stdin line "
                         "('run' or 'run tuned'), answering {\"s\": seconds} per line, until EOF")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    sd = load_safetensors(os.path.join(a.model, "model.safetensors"))
    inputs = load_safetensors(a.inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]

    def timed(contiguous):
        t0 = time.perf_counter()
        out = forward(sd, cfg, ids, mask, contiguous)
        return out, time.perf_counter() - t0

    with torch.inference_mode():
        pooled, _ = timed(a.contiguous)  # warm-up: first-touch of weights and allocator
        if a.serve:
            print("ready", flush=True)
            for line in sys.stdin:
                pooled, s = timed(line.split()[1:] == ["tuned"])
                print(json.dumps({"s": s}), flush=True)
        else:
            times = []
            for _ in range(a.iters):
                pooled, s = timed(a.contiguous)
                times.append(s)
            print(json.dumps({"times_s": times, "threads": torch.get_num_threads(), "torch": torch.__version__}))
    with open(a.pooled_out, "wb") as f:
        f.write(pooled.contiguous().numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main()
