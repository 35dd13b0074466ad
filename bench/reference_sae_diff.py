#!/usr/bin/python3
"""The work of `aquin sae diff` done the way a PyTorch user would, for bench_sae_diff to time against aquin.

Both models are loaded in plain torch eager fp32 (the bf16 weights converted once at load, as
`model.float()` / from_pretrained's default dtype would): the base, and the fine-tune as the base with
the PEFT LoRA adapter merged into its weights (W + (alpha / r) B A, as peft's merge_and_unload does).
Each model runs the prompts in batches and returns ALL hidden states, as a Hugging Face LlamaModel
called with output_hidden_states=True does (the embeddings, the output of every block, the last one
after the final norm; no lm_head), using the forward code of reference_llm_forward.py. The SAE (aquin
hub layout: meta.json + sae.pt, read with torch.load) encodes hidden_states[L + 1], the output of block
L, densely: ReLU(TopK(k, (x - b_dec) @ W_enc + b_enc)) scattered into [tokens, d_sae]. Each feature is
averaged over each prompt's tokens, then over prompts; the delta is fine-tune minus base.

The prompts are a JSON array of ASCII strings and the model's tokenizer is bench_sae_diff's byte-level
one (one token per byte, no BOS): a prompt's token ids are its bytes. All prompts of a batch must have
the same length (no padding; bench_sae_diff writes 64-byte prompts).

  /usr/bin/python3 bench/reference_sae_diff.py BASE_DIR ADAPTER_DIR SAE_DIR PROMPTS OUT [--threads N] [--batch-size 8]
      writes OUT (safetensors, float64 [d_sae]: base_mean, ft_mean, delta) and prints one JSON object:
      import_s, load_s, base_s, finetune_s, diff_s, total_s (total from the interpreter's start)
  /usr/bin/python3 bench/reference_sae_diff.py --make-sae SAE_DIR --d-model 2048 --d-sae 32768 --k 32 --layer 8
      writes a random TopK SAE in the aquin hub layout: meta.json and sae.pt (torch.save of
      {"W_enc": [d_model, d_sae], "W_dec": [d_sae, d_model], "b_enc": [d_sae], "b_dec": [d_model]}, fp32)
"""
import time

T_START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from make_model_fixtures import read_safetensors, write_safetensors  # noqa: E402
from reference_llm_forward import Llama  # noqa: E402

T_IMPORTED = time.time()


def make_sae(path, d_model, d_sae, k, layer, slug):
    """A TopK SAE with random unit decoder rows and the encoder tied to the decoder at init (W_enc =
    W_dec^T, as sparsify and OpenAI's TopK autoencoders initialise), small random biases."""
    g = torch.Generator().manual_seed(7)
    w_dec = torch.randn(d_sae, d_model, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    sae = {"W_enc": w_dec.t().contiguous(), "W_dec": w_dec, "b_enc": 0.01 * torch.randn(d_sae, generator=g),
           "b_dec": 0.01 * torch.randn(d_model, generator=g)}
    os.makedirs(path, exist_ok=True)
    torch.save(sae, os.path.join(path, "sae.pt.tmp"))
    os.replace(os.path.join(path, "sae.pt.tmp"), os.path.join(path, "sae.pt"))
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({"model_slug": slug, "layer": layer, "d_model": d_model, "d_sae": d_sae, "k": k, "arch": "topk"}, f)
        f.write("\n")


def merge_lora(model, adapter_dir):
    """peft's merge_and_unload: W += (alpha / r) * B @ A for every adapted linear, in fp32."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    r, alpha = cfg["r"], cfg.get("lora_alpha", cfg["r"])
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    ad = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    prefix = "base_model.model."
    for name, a in ad.items():
        if not name.endswith(".lora_A.weight"):
            continue
        b = ad[name.replace(".lora_A.", ".lora_B.")]
        target = name[len(prefix):].replace(".lora_A.weight", ".weight")
        model.w[target] += scale * (b.float() @ a.float())


@torch.inference_mode()
def prompt_means(model, sae, k, layer, batches):
    """[n_prompts, d_sae] float64: each feature's mean activation over each prompt's tokens."""
    per_prompt = []
    for ids in batches:
        hs = model.forward(ids, hidden_states=True)
        x = hs[layer + 1].reshape(-1, hs[layer + 1].shape[-1])  # output of block `layer`
        pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
        vals, idx = pre.topk(k, dim=-1)
        dense = torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))
        per_prompt.append(dense.view(ids.shape[0], ids.shape[1], -1).double().mean(1))
    return torch.cat(per_prompt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--make-sae")
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--d-sae", type=int, default=32768)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--model-slug", default="bench/llama-3.2-1b-shaped")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.make_sae:
        make_sae(a.make_sae, a.d_model, a.d_sae, a.k, a.layer, a.model_slug)
        return
    if len(a.paths) != 5:
        ap.error("expected BASE_DIR ADAPTER_DIR SAE_DIR PROMPTS OUT")
    base_dir, adapter_dir, sae_dir, prompts_file, out = a.paths

    t0 = time.time()
    with open(os.path.join(sae_dir, "meta.json")) as f:
        meta = json.load(f)
    sae = torch.load(os.path.join(sae_dir, "sae.pt"), map_location="cpu")
    sae = {n: sae[n].float() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    base = Llama(base_dir)
    ft = Llama(base_dir)
    merge_lora(ft, adapter_dir)
    load_s = time.time() - t0

    with open(prompts_file) as f:
        prompts = json.load(f)
    ids = [list(p.encode("utf-8")) for p in prompts]  # the byte-level tokenizer: one id per byte, no BOS
    batches = [torch.tensor(ids[i:i + a.batch_size], dtype=torch.long) for i in range(0, len(ids), a.batch_size)]

    t0 = time.time()
    base_pp = prompt_means(base, sae, meta["k"], meta["layer"], batches)
    base_s = time.time() - t0
    t0 = time.time()
    ft_pp = prompt_means(ft, sae, meta["k"], meta["layer"], batches)
    finetune_s = time.time() - t0
    t0 = time.time()
    base_mean, ft_mean = base_pp.mean(0), ft_pp.mean(0)
    delta = ft_mean - base_mean
    diff_s = time.time() - t0
    write_safetensors(out, {"base_mean": base_mean.contiguous(), "ft_mean": ft_mean.contiguous(),
                            "delta": delta.contiguous()})
    print(json.dumps({"import_s": T_IMPORTED - T_START, "load_s": load_s, "base_s": base_s, "finetune_s": finetune_s,
                      "diff_s": diff_s, "total_s": time.time() - T_START}), flush=True)


if __name__ == "__main__":
    main()
