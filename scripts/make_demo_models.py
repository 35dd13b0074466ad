#!/usr/bin/env python3
"""Make the aquin demo models: a tiny base model and three kinds of fine-tune.

Usage:
    /usr/bin/python3 scripts/make_demo_models.py --out DIR [--seed 0]

What it does, in well under a minute on two CPU cores:

  1. trains a tiny Llama-architecture causal LM (plain torch, no transformers)
     on examples/demo/corpus.txt with a byte-level tokenizer;
  2. fully fine-tunes a copy of it on examples/demo/finetune.txt, keeping a few
     intermediate checkpoints;
  3. trains a LoRA adapter (PEFT conventions) on the same fine-tune text with
     the base frozen;
  4. captures the base model's residual stream after decoder layer 2
     (TransformerLens blocks.2.hook_resid_post: that layer's output, before
     the final norm, not normalised) over bos-prefixed windows of the corpus,
     bos position excluded, and trains a TopK sparse autoencoder on it (Gao
     et al. 2024: d_sae 512, k 16, unit-norm decoder rows, AuxK on dead
     latents) in about ten seconds, with its own generator, after everything
     else, so the other outputs are the same with or without it;
  5. writes everything in the formats real tools produce:
       DIR/base/                 Hugging Face save_pretrained directory, F32
       DIR/full-ft/              same, BF16, sharded in two + index.json
       DIR/full-ft.pt            torch.save({"step", "state_dict"})
       DIR/lora-adapter/         PEFT adapter directory
       DIR/checkpoints/checkpoint-N.pt
       DIR/demo_manifest.json    paths, steps, losses, fp64 ||dW||_F values
       DIR/README.txt            the tokenizer and the layout, in words
       DIR/sae/                  the SAE in SAELens v6 layout: cfg.json,
                                 sae_weights.safetensors (F32 W_enc [64, 512],
                                 W_dec [512, 64], b_enc, b_dec), and
                                 training_log.jsonl (step, loss, fvu, l0,
                                 dead_fraction)

The SAE encodes as SAELens does for "topk" with apply_b_dec_to_input:
h = (x - b_dec) @ W_enc + b_enc, keep the k largest of h and ReLU them;
decode feats @ W_dec + b_dec. It is trained on the first 90% of corpus.txt;
the last 10% is held out (its FVU is printed at the end).

The output is written to DIR.tmp first and renamed over DIR at the end, so a
rerun replaces the previous output cleanly. Everything is deterministic given
--seed.

Only torch (Debian's python3-torch) and the standard library are needed; the
safetensors files are written by the small writer below, following the
safetensors format specification byte for byte.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import time
from collections import OrderedDict

# Let idle OpenMP threads sleep instead of spin-waiting: with only two cores,
# spinning threads make training many times slower as soon as anything else
# runs on the machine. Must be set before torch (and libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised only on a machine without torch
    sys.stderr.write(
        "make_demo_models.py: PyTorch is not installed for this interpreter "
        f"({sys.executable}).\n"
        "On Debian/Ubuntu install it with:  apt-get install python3-torch\n"
        "and run this script with /usr/bin/python3.\n")
    sys.exit(2)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DATA = os.path.join(REPO_ROOT, "examples", "demo")

# --------------------------------------------------------------------------
# Tokenizer: one token per UTF-8 byte, plus a few special tokens.
# --------------------------------------------------------------------------

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
UNK_ID = 259  # reserved, never produced by encode()
VOCAB_SIZE = 260


def encode(text):
    """UTF-8 bytes of `text` as a 1-D int64 tensor of token ids (0..255)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(ids):
    """Inverse of encode(); special tokens are dropped."""
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def byte_to_unicode():
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer_json():
    """The byte tokenizer above as a Hugging Face tokenizer.json: a byte-level BPE with the 256
    byte tokens (id = byte value) and no merges, so every byte stays one token."""
    chars = byte_to_unicode()
    specials = [("<bos>", BOS_ID), ("<eos>", EOS_ID), ("<pad>", PAD_ID), ("<unk>", UNK_ID)]
    return OrderedDict([
        ("version", "1.0"),
        ("truncation", None),
        ("padding", None),
        ("added_tokens", [OrderedDict([("id", i), ("content", t), ("single_word", False), ("lstrip", False),
                                       ("rstrip", False), ("normalized", False), ("special", True)])
                          for t, i in specials]),
        ("normalizer", None),
        ("pre_tokenizer", OrderedDict([("type", "ByteLevel"), ("add_prefix_space", False), ("trim_offsets", True),
                                       ("use_regex", False)])),
        ("post_processor", None),
        ("decoder", OrderedDict([("type", "ByteLevel"), ("add_prefix_space", False), ("trim_offsets", True),
                                 ("use_regex", False)])),
        ("model", OrderedDict([("type", "BPE"), ("dropout", None), ("unk_token", None),
                               ("continuing_subword_prefix", None), ("end_of_word_suffix", None),
                               ("fuse_unk", False), ("byte_fallback", False), ("ignore_merges", False),
                               ("vocab", OrderedDict((chars[b], b) for b in range(256))),
                               ("merges", [])])),
    ])


# --------------------------------------------------------------------------
# Model configuration (mirrors transformers.LlamaConfig field names).
# --------------------------------------------------------------------------

CONFIG = OrderedDict([
    ("hidden_size", 64),
    ("intermediate_size", 172),
    ("num_hidden_layers", 4),
    ("num_attention_heads", 4),
    ("num_key_value_heads", 2),
    ("max_position_embeddings", 256),
    ("rms_norm_eps", 1e-6),
    ("rope_theta", 10000.0),
    ("vocab_size", VOCAB_SIZE),
    ("initializer_range", 0.02),
])


def hf_config_json(torch_dtype):
    """The config.json that LlamaConfig.save_pretrained would write."""
    c = CONFIG
    return OrderedDict([
        ("architectures", ["LlamaForCausalLM"]),
        ("attention_bias", False),
        ("attention_dropout", 0.0),
        ("bos_token_id", BOS_ID),
        ("eos_token_id", EOS_ID),
        ("head_dim", c["hidden_size"] // c["num_attention_heads"]),
        ("hidden_act", "silu"),
        ("hidden_size", c["hidden_size"]),
        ("initializer_range", c["initializer_range"]),
        ("intermediate_size", c["intermediate_size"]),
        ("max_position_embeddings", c["max_position_embeddings"]),
        ("mlp_bias", False),
        ("model_type", "llama"),
        ("num_attention_heads", c["num_attention_heads"]),
        ("num_hidden_layers", c["num_hidden_layers"]),
        ("num_key_value_heads", c["num_key_value_heads"]),
        ("pad_token_id", PAD_ID),
        ("pretraining_tp", 1),
        ("rms_norm_eps", c["rms_norm_eps"]),
        ("rope_scaling", None),
        ("rope_theta", c["rope_theta"]),
        ("tie_word_embeddings", False),
        ("torch_dtype", torch_dtype),
        ("use_cache", True),
        ("vocab_size", c["vocab_size"]),
    ])


def hf_generation_config_json():
    return OrderedDict([
        ("_from_model_config", True),
        ("bos_token_id", BOS_ID),
        ("eos_token_id", EOS_ID),
        ("pad_token_id", PAD_ID),
    ])


# --------------------------------------------------------------------------
# The model: a Llama decoder written out in plain torch. Module names are
# chosen so that state_dict() keys and shapes equal LlamaForCausalLM's.
# --------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in float32 like HF."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    """HF convention: split the head dimension in two halves (x1, x2) and
    return (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(seq_len, head_dim, theta):
    """cos/sin tables of shape [seq_len, head_dim] (frequencies duplicated
    over the two halves, as in HF's LlamaRotaryEmbedding)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg["num_key_value_heads"]
        self.head_dim = d // self.n_heads
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        # Rotary position embedding on queries and keys.
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention: query head h reads kv head h // n_rep
        # (HF's repeat_kv).
        n_rep = self.n_heads // self.n_kv
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(mask, float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        cos, sin = rope_cos_sin(cfg["max_position_embeddings"], head_dim, cfg["rope_theta"])
        # Non-persistent buffers: not part of the state dict (as in HF).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, ids):
        s = ids.shape[1]
        cos, sin = self.rope_cos[:s], self.rope_sin[:s]
        mask = torch.ones(s, s, dtype=torch.bool, device=ids.device).triu(1)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self._init_weights(cfg["initializer_range"])

    def _init_weights(self, std):
        # HF's LlamaPreTrainedModel._init_weights: N(0, std) for linear and
        # embedding weights; RMSNorm weights stay at one.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)

    def forward(self, ids):
        return self.lm_head(self.model(ids))


# --------------------------------------------------------------------------
# LoRA, following PEFT: y = W x + (alpha / r) * B (A x), A kaiming-uniform,
# B zero, so the adapted model starts equal to the base.
# --------------------------------------------------------------------------


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)   # [r, in]
        self.lora_B = nn.Linear(r, base.out_features, bias=False)  # [out, r]
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


LORA_R = 8
LORA_ALPHA = 16
LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj"]


def add_lora(model, targets, r, alpha):
    """Replace every nn.Linear whose attribute name is in `targets` by a
    LoRALinear wrapper; return {hf_module_path: LoRALinear}."""
    wrapped = OrderedDict()
    for path, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                lora = LoRALinear(child, r, alpha)
                setattr(module, child_name, lora)
                wrapped[f"{path}.{child_name}" if path else child_name] = lora
    return wrapped


# --------------------------------------------------------------------------
# safetensors writer (format spec: 8-byte little-endian u64 N, N bytes of
# JSON header padded with spaces, then the raw little-endian tensor bytes).
# --------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: ("F32", 4), torch.bfloat16: ("BF16", 2)}


def tensor_le_bytes(t):
    """Raw little-endian bytes of a float32 or bfloat16 tensor."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.float32:
        return t.numpy().astype("<f4", copy=False).tobytes()
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16: reinterpret the 16-bit patterns.
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    raise TypeError(f"unsupported dtype {t.dtype}")


def save_safetensors(tensors, path, metadata=None):
    """Write {name: tensor} to `path`. Tensors are laid out in the order the
    reference implementation uses (by dtype alignment, then by name), which
    for a single-dtype file is simply sorted by name."""
    order = sorted(tensors, key=lambda n: (-_ST_DTYPES[tensors[n].dtype][1], n))
    header = OrderedDict()
    header["__metadata__"] = OrderedDict(metadata or {"format": "pt"})
    blobs, offset = [], 0
    for name in order:
        t = tensors[name]
        data = tensor_le_bytes(t)
        header[name] = OrderedDict([
            ("dtype", _ST_DTYPES[t.dtype][0]),
            ("shape", list(t.shape)),
            ("data_offsets", [offset, offset + len(data)]),
        ])
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for data in blobs:
            f.write(data)
    return offset  # bytes of tensor data


def write_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_hf_dir(state, out_dir, torch_dtype, shards=1):
    """A save_pretrained-style directory. With shards > 1 the tensors are
    split, in state-dict order, into that many files of roughly equal size
    plus model.safetensors.index.json, as transformers does."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(hf_config_json(torch_dtype), os.path.join(out_dir, "config.json"))
    write_json(hf_generation_config_json(), os.path.join(out_dir, "generation_config.json"))
    write_json(tokenizer_json(), os.path.join(out_dir, "tokenizer.json"))
    if shards == 1:
        save_safetensors(state, os.path.join(out_dir, "model.safetensors"))
        return ["model.safetensors"]

    names = list(state)
    sizes = [state[n].numel() * state[n].element_size() for n in names]
    total = sum(sizes)
    groups, cur, acc = [], [], 0
    for n, sz in zip(names, sizes):
        # Start a new shard once this one has reached its share of the bytes.
        if cur and acc >= total * (len(groups) + 1) / shards and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
        cur.append(n)
        acc += sz
    groups.append(cur)
    assert len(groups) == shards, "model too small to shard that many ways"

    files, weight_map = [], {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors(OrderedDict((n, state[n]) for n in group), os.path.join(out_dir, fname))
        files.append(fname)
        for n in group:
            weight_map[n] = fname
    index = OrderedDict([
        ("metadata", {"total_size": total}),
        ("weight_map", OrderedDict(sorted(weight_map.items()))),
    ])
    write_json(index, os.path.join(out_dir, "model.safetensors.index.json"))
    return files + ["model.safetensors.index.json"]


# --------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------

SEQ_LEN = 64
BATCH = 16


def sample_batch(data, gen):
    """BATCH random windows of SEQ_LEN + 1 tokens; returns inputs, targets."""
    starts = torch.randint(0, len(data) - SEQ_LEN - 1, (BATCH,), generator=gen)
    win = torch.stack([data[s:s + SEQ_LEN + 1] for s in starts.tolist()])
    return win[:, :-1], win[:, 1:]


def lm_loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train(model, params, data, steps, lr, gen, tag, on_step=None, log_every=50):
    """AdamW with a short linear warm-up and cosine decay. Returns the mean
    loss of the last 10 steps."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    model.train()
    recent, t0 = [], time.time()
    for step in range(1, steps + 1):
        x, y = sample_batch(data, gen)
        loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-10:]
        if step == 1 or step % log_every == 0 or step == steps:
            print(f"  [{tag}] step {step:4d}/{steps}  loss {loss.item():.4f}  "
                  f"({time.time() - t0:.1f}s)", flush=True)
        if on_step is not None:
            on_step(step)
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def eval_loss(model, data, n_windows=64):
    """Mean next-token loss over n_windows evenly spaced windows (fixed, so
    every model is scored on the same text)."""
    model.eval()
    stride = (len(data) - SEQ_LEN - 1) // n_windows
    win = torch.stack([data[i * stride:i * stride + SEQ_LEN + 1] for i in range(n_windows)])
    return lm_loss(model, win[:, :-1], win[:, 1:]).item()


@torch.no_grad()
def greedy_sample(model, prompt, n=60):
    ids = encode(prompt).unsqueeze(0)
    for _ in range(n):
        nxt = model(ids[:, -CONFIG["max_position_embeddings"]:])[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return decode(ids[0, len(prompt.encode("utf-8")):].tolist())


# --------------------------------------------------------------------------
# A TopK sparse autoencoder on the base model's residual stream (Gao et al.
# 2024, "Scaling and evaluating sparse autoencoders"; saved as SAELens v6).
# --------------------------------------------------------------------------

SAE_LAYER = 2                      # decoder layer index; its output is blocks.2.hook_resid_post
SAE_HOOK = f"blocks.{SAE_LAYER}.hook_resid_post"
SAE_D_SAE = 512
SAE_K = 16
SAE_K_AUX = CONFIG["hidden_size"] // 2
SAE_AUX_COEF = 1.0 / 32
SAE_CONTEXT = SEQ_LEN              # tokens per window, bos included (bos + 63 bytes)
SAE_STRIDE = 8                     # windows start every SAE_STRIDE bytes of the corpus
SAE_CHUNK = 128                    # windows per forward pass when capturing
SAE_HOLDOUT = 0.1                  # the last 10% of corpus.txt is never trained on
SAE_BATCH = 512
SAE_STEPS = 2000
SAE_LR = 1e-3
SAE_LR_DECAY_FROM = 0.8            # linear decay to zero over the last 20% of steps
SAE_DEAD_TOKENS = 200_000          # dead = not active in the last SAE_DEAD_TOKENS training vectors
SAE_LOG_EVERY = 50


def resid_post(model, ids, layer):
    """The residual stream after decoder layer `layer` (TransformerLens
    blocks.{layer}.hook_resid_post): the hidden state that layer returns,
    before any later layer and before the final norm. ids: [b, s]."""
    m = model.model
    s = ids.shape[1]
    cos, sin = m.rope_cos[:s], m.rope_sin[:s]
    mask = torch.ones(s, s, dtype=torch.bool, device=ids.device).triu(1)
    x = m.embed_tokens(ids)
    for lyr in m.layers[:layer + 1]:
        x = lyr(x, cos, sin, mask)
    return x


def sae_split(data):
    """(training text, held-out text): the corpus cut at 1 - SAE_HOLDOUT."""
    cut = int(len(data) * (1 - SAE_HOLDOUT))
    return data[:cut], data[cut:]


def sae_windows(data, stride=None):
    """Windows of SAE_CONTEXT tokens: bos, then SAE_CONTEXT - 1 corpus bytes,
    starting every `stride` bytes. [n, SAE_CONTEXT] int64."""
    n_text = SAE_CONTEXT - 1
    starts = range(0, len(data) - n_text + 1, stride or SAE_STRIDE)
    bos = torch.full((1,), BOS_ID, dtype=torch.long)
    return torch.stack([torch.cat([bos, data[s:s + n_text]]) for s in starts])


@torch.no_grad()
def capture_resid(model, windows, chunk=SAE_CHUNK):
    """SAE_HOOK activations of every window, bos position dropped:
    [n * (SAE_CONTEXT - 1), hidden_size] float32."""
    model.eval()
    out = [resid_post(model, windows[i:i + chunk], SAE_LAYER)[:, 1:]
           for i in range(0, len(windows), chunk)]
    return torch.cat(out).reshape(-1, CONFIG["hidden_size"]).contiguous()


def sae_encode(x, W_enc, b_enc, b_dec, k):
    """TopK encode as stored (apply_b_dec_to_input): h = (x - b_dec) W_enc +
    b_enc; keep the k largest of h and ReLU them. Returns (values, indices,
    h), values/indices [n, k]."""
    h = (x - b_dec) @ W_enc + b_enc
    vals, idx = h.topk(k, dim=-1)
    return F.relu(vals), idx, h


def sae_decode(vals, idx, W_dec, b_dec):
    """feats @ W_dec + b_dec for the sparse feats given by (vals, idx)."""
    feats = torch.zeros(vals.shape[0], W_dec.shape[0], dtype=vals.dtype).scatter(1, idx, vals)
    return feats @ W_dec + b_dec


def fvu(x, recon):
    """Fraction of variance unexplained: sum |x - recon|^2 / sum |x - mean(x)|^2."""
    return float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def train_sae(acts, held, seed, log_path):
    """Train a TopK SAE on `acts` [n, d_in]; returns (tensors, summary).
    Uses its own torch.Generator only, so the global RNG is untouched."""
    gen = torch.Generator().manual_seed(seed + 2)
    n, d_in = acts.shape
    # Decoder rows: random unit vectors; encoder = decoder transpose; b_enc =
    # 0; b_dec = the data mean.
    W_dec = torch.randn(SAE_D_SAE, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.t().clone()
    b_enc = torch.zeros(SAE_D_SAE)
    b_dec = acts.mean(0)
    params = [W_enc, W_dec, b_enc, b_dec]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=SAE_LR)
    decay_from = int(SAE_STEPS * SAE_LR_DECAY_FROM)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_from else (SAE_STEPS - s) / (SAE_STEPS - decay_from))
    # The loss is normalised by the data's variance, so the main term is the FVU.
    var = float((acts - acts.mean(0)).pow(2).sum(1).mean())

    def decode_chosen(vals, idx):
        """sum_j vals[:, j] * W_dec[idx[:, j]]: the sparse product feats @ W_dec
        without the dense [n, d_sae] matrix (same value and gradients)."""
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    since_fired = torch.zeros(SAE_D_SAE, dtype=torch.long)
    perm, pos, t0 = torch.randperm(n, generator=gen), 0, time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        for step in range(1, SAE_STEPS + 1):
            if pos + SAE_BATCH > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            x = acts[perm[pos:pos + SAE_BATCH]]
            pos += SAE_BATCH
            h = (x - b_dec) @ W_enc + b_enc
            vals, idx = h.topk(SAE_K, dim=-1)
            vals = F.relu(vals)
            recon = decode_chosen(vals, idx) + b_dec
            mse = (recon - x).pow(2).sum(1).mean()
            loss = mse / var
            # Activity bookkeeping and AuxK (Gao et al. sec. A.2): the k_aux
            # largest pre-activations among dead latents reconstruct the error.
            with torch.no_grad():
                since_fired += len(x)
                since_fired[idx[vals > 0]] = 0
                dead = since_fired >= SAE_DEAD_TOKENS
            n_dead = int(dead.sum())
            if n_dead > 0:
                with torch.no_grad():
                    aux_idx = h.masked_fill(~dead, float("-inf")).topk(min(SAE_K_AUX, n_dead), dim=-1).indices
                    err = x - recon
                aux_recon = decode_chosen(F.relu(h.gather(1, aux_idx)), aux_idx)
                aux = (aux_recon - err).pow(2).sum() / (err - err.mean(0)).pow(2).sum()
                loss = loss + SAE_AUX_COEF * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                # Keep decoder rows on the unit sphere: drop the gradient
                # component along each row, step, renormalise.
                g = W_dec.grad
                g -= (g * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            sched.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True)
            if step == 1 or step % SAE_LOG_EVERY == 0 or step == SAE_STEPS:
                rec = OrderedDict([("step", step), ("loss", loss.item()),
                                   ("fvu", mse.item() / var),
                                   ("l0", float((vals > 0).sum(1).float().mean())),
                                   ("dead_fraction", n_dead / SAE_D_SAE)])
                log.write(json.dumps(rec) + "\n")
                if step % 500 == 0 or step == SAE_STEPS:
                    print(f"  [sae] step {step:4d}/{SAE_STEPS}  fvu {rec['fvu']:.4f}  l0 {rec['l0']:.1f}  "
                          f"dead {n_dead}/{SAE_D_SAE}  ({time.time() - t0:.1f}s)", flush=True)
    tensors = OrderedDict([("W_enc", W_enc.detach().clone()),
                           ("W_dec", W_dec.detach().clone()),
                           ("b_enc", b_enc.detach().clone()),
                           ("b_dec", b_dec.detach().clone())])
    # Held-out score with the stored encode rule, dense, as a reader would do it.
    with torch.no_grad():
        vals, idx, _ = sae_encode(held, tensors["W_enc"], tensors["b_enc"], tensors["b_dec"], SAE_K)
        held_fvu = fvu(held, sae_decode(vals, idx, tensors["W_dec"], tensors["b_dec"]))
        held_l0 = float((vals > 0).sum(1).float().mean())
    summary = OrderedDict([("train_vectors", n), ("train_vectors_seen", SAE_STEPS * SAE_BATCH),
                           ("heldout_vectors", len(held)), ("heldout_fvu", held_fvu),
                           ("heldout_l0", held_l0), ("dead_fraction", n_dead / SAE_D_SAE),
                           ("seconds", time.time() - t0)])
    return tensors, summary


def sae_cfg_json():
    """cfg.json as SAELens v6 writes it for a TopK SAE."""
    return OrderedDict([
        ("architecture", "topk"),
        ("d_in", CONFIG["hidden_size"]),
        ("d_sae", SAE_D_SAE),
        ("k", SAE_K),
        ("dtype", "float32"),
        ("device", "cpu"),
        ("apply_b_dec_to_input", True),
        ("normalize_activations", "none"),
        ("reshape_activations", "none"),
        ("rescale_acts_by_decoder_norm", False),
        ("metadata", OrderedDict([
            ("sae_lens_version", "6.0.0"),
            ("sae_lens_training_version", "aquin-demo"),
            ("hook_name", SAE_HOOK),
            ("model_name", "aquin-demo-llama"),
            ("prepend_bos", True),
            ("context_size", SAE_CONTEXT),
            ("dataset_path", "examples/demo/corpus.txt"),
        ])),
    ])


def make_sae(base, corpus, out_dir, seed):
    """Capture SAE_HOOK on the base model over the corpus, train the SAE and
    write it as a SAELens v6 folder. Returns the summary."""
    t0 = time.time()
    train_text, held_text = sae_split(corpus)
    train_win, held_win = sae_windows(train_text), sae_windows(held_text)
    acts = capture_resid(base, train_win)
    # The captured activation must be exactly what the full model computes
    # there: compare the first chunk with a forward hook on that decoder layer
    # during a full forward pass (the same batch, so bit for bit).
    got = []
    hook = base.model.layers[SAE_LAYER].register_forward_hook(lambda m, i, o: got.append(o))
    with torch.no_grad():
        base(train_win[:SAE_CHUNK])
    hook.remove()
    first = got[0][:, 1:].reshape(-1, acts.shape[1])
    assert torch.equal(first, acts[:len(first)]), "captured residual differs from the full forward pass"
    held = capture_resid(base, held_win)
    t_capture = time.time() - t0
    print(f"sparse autoencoder: {SAE_HOOK}, {len(train_win)} windows of {SAE_CONTEXT} "
          f"({len(acts)} vectors, bos excluded) captured in {t_capture:.1f}s; "
          f"d_sae={SAE_D_SAE} k={SAE_K}, {SAE_STEPS} steps of {SAE_BATCH}")
    os.makedirs(out_dir)
    tensors, summary = train_sae(acts, held, seed, os.path.join(out_dir, "training_log.jsonl"))
    summary["capture_seconds"] = t_capture
    save_safetensors(tensors, os.path.join(out_dir, "sae_weights.safetensors"))
    write_json(sae_cfg_json(), os.path.join(out_dir, "cfg.json"))
    return summary


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------

BASE_STEPS = 400
BASE_LR = 3e-3
FT_STEPS = 160
FT_LR = 5e-4
N_CHECKPOINTS = 4
LORA_STEPS = 200
LORA_LR = 3e-3


def fro64(t):
    """Frobenius norm computed in float64."""
    return float(t.double().pow(2).sum().sqrt())


def cloned_state(model):
    """A detached f32 copy of the state dict (an OrderedDict, as torch gives)."""
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)

    out = os.path.abspath(args.out)
    # The previous output is deleted, so refuse to delete anything else.
    if os.path.exists(out) and not (
            os.path.isdir(out) and (not os.listdir(out)
                                    or os.path.isfile(os.path.join(out, "demo_manifest.json")))):
        sys.stderr.write(f"make_demo_models.py: {out} exists and is not an earlier demo output "
                         "(no demo_manifest.json); refusing to replace it\n")
        return 2
    tmp = out + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    try:
        build(tmp, out, args.seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return 0


def build(tmp, out, seed):
    """Train and write everything into `tmp`, then move it to `out`."""
    t_start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)  # batch sampling
    os.makedirs(os.path.join(tmp, "checkpoints"))

    with open(os.path.join(DEMO_DATA, "corpus.txt"), encoding="utf-8") as f:
        corpus = encode(f.read())
    with open(os.path.join(DEMO_DATA, "finetune.txt"), encoding="utf-8") as f:
        ft_data = encode(f.read())
    print(f"corpus: {len(corpus)} tokens, finetune: {len(ft_data)} tokens")

    # ---- 1. base model --------------------------------------------------
    base = LlamaForCausalLM(CONFIG)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"base model: {n_params} parameters; training {BASE_STEPS} steps")
    base_loss = train(base, list(base.parameters()), corpus, BASE_STEPS, BASE_LR, gen, "base")
    base_state = cloned_state(base)
    save_hf_dir(base_state, os.path.join(tmp, "base"), "float32")

    # ---- 2. full fine-tune ----------------------------------------------
    print(f"full fine-tune: {FT_STEPS} steps at lr {FT_LR}")
    ft = LlamaForCausalLM(CONFIG)
    ft.load_state_dict(base_state)
    ckpt_steps = [FT_STEPS * (i + 1) // N_CHECKPOINTS for i in range(N_CHECKPOINTS)]

    def save_checkpoint(step):
        if step in ckpt_steps:
            torch.save({"step": step, "state_dict": ft.state_dict()},
                       os.path.join(tmp, "checkpoints", f"checkpoint-{step}.pt"))

    ft_loss = train(ft, list(ft.parameters()), ft_data, FT_STEPS, FT_LR, gen, "full-ft",
                    on_step=save_checkpoint, log_every=40)
    torch.save({"step": FT_STEPS, "state_dict": ft.state_dict()}, os.path.join(tmp, "full-ft.pt"))
    ft_state_bf16 = OrderedDict((k, v.detach().to(torch.bfloat16)) for k, v in ft.state_dict().items())
    ft_files = save_hf_dir(ft_state_bf16, os.path.join(tmp, "full-ft"), "bfloat16", shards=2)

    # ---- 3. LoRA fine-tune ----------------------------------------------
    print(f"LoRA fine-tune: r={LORA_R} alpha={LORA_ALPHA} on {LORA_TARGETS}, {LORA_STEPS} steps")
    lora_model = LlamaForCausalLM(CONFIG)
    lora_model.load_state_dict(base_state)
    for p in lora_model.parameters():
        p.requires_grad_(False)
    wrapped = add_lora(lora_model, LORA_TARGETS, LORA_R, LORA_ALPHA)
    lora_params = [p for m in wrapped.values() for p in (m.lora_A.weight, m.lora_B.weight)]
    lora_loss = train(lora_model, lora_params, ft_data, LORA_STEPS, LORA_LR, gen, "lora")

    adapter_dir = os.path.join(tmp, "lora-adapter")
    os.makedirs(adapter_dir)
    adapter = OrderedDict()
    for path, m in wrapped.items():
        # PEFT's saved names: base_model.model.<module>.lora_{A,B}.weight
        adapter[f"base_model.model.{path}.lora_A.weight"] = m.lora_A.weight.detach().clone()
        adapter[f"base_model.model.{path}.lora_B.weight"] = m.lora_B.weight.detach().clone()
    save_safetensors(adapter, os.path.join(adapter_dir, "adapter_model.safetensors"))
    write_json(OrderedDict([
        ("alpha_pattern", {}),
        ("auto_mapping", None),
        ("base_model_name_or_path", os.path.join(out, "base")),
        ("bias", "none"),
        ("fan_in_fan_out", False),
        ("inference_mode", True),
        ("init_lora_weights", True),
        ("layers_pattern", None),
        ("layers_to_transform", None),
        ("lora_alpha", LORA_ALPHA),
        ("lora_dropout", 0.0),
        ("modules_to_save", None),
        ("peft_type", "LORA"),
        ("r", LORA_R),
        ("rank_pattern", {}),
        ("revision", None),
        ("target_modules", sorted(LORA_TARGETS)),
        ("task_type", "CAUSAL_LM"),
        ("use_dora", False),
        ("use_rslora", False),
    ]), os.path.join(adapter_dir, "adapter_config.json"))

    # ---- 4. evaluation and manifest -------------------------------------
    evals = OrderedDict()
    for name, m in (("base", base), ("full-ft", ft), ("lora", lora_model)):
        evals[name] = {"corpus": eval_loss(m, corpus), "finetune": eval_loss(m, ft_data)}

    # dW for the full fine-tune from exactly what full-ft/ stores (bf16),
    # and from the f32 weights in full-ft.pt.
    delta_ft = OrderedDict()
    delta_ft_pt = OrderedDict()
    ft_f32 = ft.state_dict()
    for k, w0 in base_state.items():
        delta_ft[k] = fro64(ft_state_bf16[k].double() - w0.double())
        delta_ft_pt[k] = fro64(ft_f32[k].double() - w0.double())
    # dW for LoRA: scale * B @ A in fp64, keyed by the HF parameter name.
    scale = LORA_ALPHA / LORA_R
    delta_lora = OrderedDict()
    for path, m in wrapped.items():
        dw = scale * (m.lora_B.weight.detach().double() @ m.lora_A.weight.detach().double())
        delta_lora[f"{path}.weight"] = fro64(dw)

    # A reference forward pass for implementations of the model elsewhere:
    # the base model's logits at the last position of a fixed prompt.
    ref_prompt = "The river begins as snow"
    ref_ids = encode(ref_prompt)
    with torch.no_grad():
        ref_logits = base(ref_ids.unsqueeze(0))[0, -1]
    reference = OrderedDict([
        ("model", "base"),
        ("prompt", ref_prompt),
        ("input_ids", ref_ids.tolist()),
        ("last_position_logits", [float(v) for v in ref_logits]),
        ("greedy_continuation", greedy_sample(base, ref_prompt, n=24)),
    ])

    manifest = OrderedDict([
        ("generator", "scripts/make_demo_models.py"),
        ("seed", seed),
        ("torch_version", torch.__version__),
        ("tokenizer", {"type": "bytes", "vocab_size": VOCAB_SIZE, "bos_token_id": BOS_ID,
                       "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "unk_token_id": UNK_ID}),
        ("config", dict(CONFIG)),
        ("num_parameters", n_params),
        ("paths", OrderedDict([
            ("base", "base"),
            ("full_ft", "full-ft"),
            ("full_ft_files", ft_files),
            ("full_ft_pt", "full-ft.pt"),
            ("lora_adapter", "lora-adapter"),
            ("checkpoints", [f"checkpoints/checkpoint-{s}.pt" for s in ckpt_steps]),
        ])),
        ("steps", OrderedDict([("base", BASE_STEPS), ("full_ft", FT_STEPS), ("lora", LORA_STEPS),
                               ("checkpoints", ckpt_steps)])),
        ("learning_rates", OrderedDict([("base", BASE_LR), ("full_ft", FT_LR), ("lora", LORA_LR)])),
        ("final_train_loss", OrderedDict([("base", base_loss), ("full_ft", ft_loss), ("lora", lora_loss)])),
        ("eval_loss", evals),
        ("lora", OrderedDict([("r", LORA_R), ("lora_alpha", LORA_ALPHA), ("scale", scale),
                              ("target_modules", sorted(LORA_TARGETS))])),
        ("delta_fro_norm", OrderedDict([
            ("_note", "fp64 Frobenius norms of dW per HF parameter name. full_ft: bf16 values "
                      "stored in full-ft/ minus base f32; full_ft_pt: f32 full-ft.pt minus base; "
                      "lora: (lora_alpha/r) * B @ A."),
            ("full_ft", delta_ft),
            ("full_ft_pt", delta_ft_pt),
            ("lora", delta_lora),
        ])),
        ("reference_forward", reference),
    ])
    write_json(manifest, os.path.join(tmp, "demo_manifest.json"))
    with open(os.path.join(tmp, "README.txt"), "w", encoding="utf-8") as f:
        f.write(README_TEXT.format(vocab=VOCAB_SIZE, bos=BOS_ID, eos=EOS_ID, pad=PAD_ID,
                                   unk=UNK_ID, seed=seed, ckpts=", ".join(map(str, ckpt_steps))))

    # ---- 5. sparse autoencoder on the base model's residual stream -------
    # Last, with its own generator, so every output above is unchanged by it.
    sae = make_sae(base, corpus, os.path.join(tmp, "sae"), seed)

    # ---- 6. swap DIR.tmp into place ---------------------------------------
    if os.path.isdir(out):
        shutil.rmtree(out)
    elif os.path.exists(out):
        os.remove(out)
    os.rename(tmp, out)

    # ---- summary ------------------------------------------------------------
    total_bytes = sum(os.path.getsize(os.path.join(d, fn)) for d, _, fns in os.walk(out) for fn in fns)
    print()
    print(f"wrote {out} ({total_bytes / 1024:.0f} KiB) in {time.time() - t_start:.1f}s")
    for name, e in evals.items():
        print(f"  {name:8s} eval loss: corpus {e['corpus']:.3f}  finetune {e['finetune']:.3f}")
    top = max(delta_ft, key=delta_ft.get)
    print(f"  largest full-ft |dW|_F: {top} = {delta_ft[top]:.4f}")
    top = max(delta_lora, key=delta_lora.get)
    print(f"  largest LoRA    |dW|_F: {top} = {delta_lora[top]:.4f}")
    print(f"  sample (full-ft): {greedy_sample(ft, '### Question: How do I')!r}")
    print(f"  sae ({SAE_HOOK}, d_sae {SAE_D_SAE}, k {SAE_K}): held-out FVU {sae['heldout_fvu']:.4f}  "
          f"L0 {sae['heldout_l0']:.2f}  dead {sae['dead_fraction']:.3f}  "
          f"({sae['capture_seconds']:.1f}s capture + {sae['seconds']:.1f}s training)")


README_TEXT = """aquin demo models
=================

Made by scripts/make_demo_models.py (seed {seed}). Tiny Llama-architecture
models trained for a few seconds on examples/demo/*.txt: useful for testing
tooling, not for generating text.

Tokenizer (tokenizer.json, a byte-level BPE with no merges):
  byte-level. Every UTF-8 byte of the text is one token, id = byte value
  (0..255). Special tokens: bos = {bos}, eos = {eos}, pad = {pad}, {unk} is
  reserved. vocab_size = {vocab}. Training used raw byte windows, no bos/eos.

Layout:
  base/                  config.json, generation_config.json,
                         model.safetensors (F32)
  full-ft/               full fine-tune of base in BF16, sharded:
                         model-00001-of-00002.safetensors,
                         model-00002-of-00002.safetensors,
                         model.safetensors.index.json, config.json,
                         generation_config.json
  full-ft.pt             torch.save({{"step": N, "state_dict": OrderedDict}}), F32
  lora-adapter/          PEFT LoRA adapter on base: adapter_config.json,
                         adapter_model.safetensors
  checkpoints/           checkpoint-N.pt of the full fine-tune at steps {ckpts}
                         (same format as full-ft.pt)
  demo_manifest.json     steps, learning rates, losses, fp64 Frobenius norms of
                         every dW (full-ft from the stored bf16 values; LoRA as
                         (lora_alpha/r) * B @ A), and a reference forward pass
                         (base logits at the last position of a fixed prompt);
                         its paths are relative to this directory
  README.txt             this file
"""


if __name__ == "__main__":
    sys.exit(main())
