#!/usr/bin/python3
"""The same Llama forward in plain PyTorch eager, for bench_llm_forward to time against aquin.

Written the way Hugging Face's LlamaForCausalLM runs it in eager mode (repeat_kv, additive causal
mask, softmax in float32, rotate_half RoPE with llama3 scaling), with the weights converted to
float32 once at load time, as `model.float()` would. Runs forwards of the token ids in IDS (a
safetensors file holding "input_ids" [B, T] int64; all prompts full length) after one warm-up,
then writes the logits and the last block's residual at each prompt's last token to OUT for the
agreement check.
  /usr/bin/python3 bench/reference_llm_forward.py MODEL_DIR IDS OUT [--threads N] [--repeats N]
      times --repeats forwards, prints one JSON object: load_s, best_s, times_s
  ... --serve
      prints "ready" once loaded, then runs one forward per "forward" line on stdin and answers
      with its seconds, so the caller can interleave its own runs with these on a busy machine;
      "done" (or end of input) writes OUT and prints the JSON object
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
from make_model_fixtures import read_safetensors as load_safetensors, write_safetensors  # noqa: E402


def inv_freq(cfg, dim):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


class Llama:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        raw = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: v.float() for k, v in raw.items()}  # model.float(): fp32 copies, made once
        del raw
        c = self.cfg
        self.nh, self.nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        self.hd = c.get("head_dim") or c["hidden_size"] // self.nh
        self.inv_freq = inv_freq(c, self.hd)
        self.lm_head = self.w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else self.w["lm_head.weight"]

    @torch.inference_mode()
    def forward(self, ids, hidden_states=False):
        """(last block's output, logits); with hidden_states, instead the tuple
        LlamaModel(ids, output_hidden_states=True).hidden_states returns: the embeddings, then each
        block's output, the last one after the final norm."""
        c, w = self.cfg, self.w
        b, t = ids.shape
        eps = c.get("rms_norm_eps", 1e-6)
        freqs = torch.arange(t).float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)[None, None]
        h = F.embedding(ids, w["model.embed_tokens.weight"])
        rep = self.nh // self.nkv
        hidden = []
        for l in range(c["num_hidden_layers"]):
            if hidden_states:
                hidden.append(h)
            p = f"model.layers.{l}."
            x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
            q = F.linear(x, w[p + "self_attn.q_proj.weight"]).view(b, t, self.nh, self.hd).transpose(1, 2)
            k = F.linear(x, w[p + "self_attn.k_proj.weight"]).view(b, t, self.nkv, self.hd).transpose(1, 2)
            v = F.linear(x, w[p + "self_attn.v_proj.weight"]).view(b, t, self.nkv, self.hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            v = v[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            s = torch.matmul(q, k.transpose(2, 3)) * self.hd ** -0.5 + mask
            a = torch.matmul(F.softmax(s, dim=-1, dtype=torch.float32), v)
            a = a.transpose(1, 2).contiguous().reshape(b, t, -1)
            h = h + F.linear(a, w[p + "self_attn.o_proj.weight"])
            x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
            g = F.linear(x, w[p + "mlp.gate_proj.weight"])
            u = F.linear(x, w[p + "mlp.up_proj.weight"])
            h = h + F.linear(F.silu(g) * u, w[p + "mlp.down_proj.weight"])
        if hidden_states:
            hidden.append(rms_norm(h, w["model.norm.weight"], eps))
            return tuple(hidden)
        logits = F.linear(rms_norm(h, w["model.norm.weight"], eps), self.lm_head)
        return h, logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    model = Llama(a.model)
    load_s = time.time() - t0
    ids = load_safetensors(a.ids)["input_ids"].clone()
    post, logits = model.forward(ids)  # warm-up: allocator, page cache
    times = []

    def timed():
        nonlocal post, logits
        t0 = time.time()
        post, logits = model.forward(ids)
        times.append(time.time() - t0)
        return times[-1]

    if a.serve:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() != "forward":
                break
            print(f"{timed():.6f}", flush=True)
    else:
        for _ in range(a.repeats):
            timed()
    write_safetensors(a.out, {"last_resid_post": post[:, -1].contiguous(), "last_logits": logits[:, -1].contiguous()})
    print(json.dumps({"load_s": load_s, "best_s": min(times) if times else None, "times_s": times}), flush=True)


if __name__ == "__main__":
    main()
