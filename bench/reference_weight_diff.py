#!/usr/bin/python3
"""The plain PyTorch way to do weight-diff, for bench_weight_diff to time against aquin.

Loads both models fully, then for each tensor: delta in fp32, Frobenius norms (reduced in fp64),
max |delta| and torch.linalg.svdvals for the spectral norm and stable rank. Prints one JSON object.
  /usr/bin/python3 bench/reference_weight_diff.py BASE_DIR FT_DIR [--threads N]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_model_fixtures import read_safetensors as load_safetensors  # noqa: E402  (one safetensors reader)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("ft")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    base = load_safetensors(os.path.join(a.base, "model.safetensors"))
    ft = load_safetensors(os.path.join(a.ft, "model.safetensors"))
    load_s = time.time() - t0
    result = {}
    for name, w in base.items():
        d = ft[name].float() - w.float()
        # Norms reduced in fp64: a plain fp32 norm of the 262M-element embedding is 4.2% low (measured
        # against an exact fp64 sum), which would make the reference, not aquin, the wrong one.
        e = {"delta_norm": torch.linalg.vector_norm(d, dtype=torch.float64).item(),
             "base_norm": torch.linalg.vector_norm(w, dtype=torch.float64).item(),
             "max_abs_delta": d.abs().max().item()}
        if d.dim() == 2:
            s = torch.linalg.svdvals(d)
            e["spectral_norm"] = s[0].item()
            e["stable_rank"] = (e["delta_norm"] ** 2) / (s[0].item() ** 2)
        result[name] = e
    print(json.dumps({"load_s": load_s, "total_s": time.time() - t0, "matrices": result}))


if __name__ == "__main__":
    main()
