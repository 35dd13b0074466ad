// The llm adapter's forward pass on a generated model with Llama-3.2-1B shapes (16 layers,
// d_model 2048, 32/8 heads, MLP 8192, vocab 128256, tied, llama3 RoPE, random bf16 weights):
//   - tokens/s of a batch of 8 prompts x 64 tokens (fp32 compute, logits) against the same forward
//     in PyTorch eager (bench/reference_llm_forward.py, fp32 copies of the weights), the two
//     interleaved forward by forward (the reference runs as a child serving "forward" requests):
//     on a shared machine only runs side by side in time compare fairly;
//   - achieved FLOP/s as a fraction of this machine's fp32 GEMM FLOP/s (at::mm at the forward's
//     own shapes and a large square one, measured before and after);
//   - the cost of capturing blocks.8.hook_resid_post against a full forward, and a bf16 forward;
//   - peak RSS of a forward with a LoRA adapter (r 16 on every linear) against the base alone,
//     each in a child process (wait4's ru_maxrss).
//
//   bench_llm_forward [--layers 16] [--dir DIR] [--repeats 4] [--no-reference]
//   bench_llm_forward --child MODEL_DIR [ADAPTER_DIR]     (one forward; used for the RSS figures)
#include "bench_util.hpp"
#include "random_llama.hpp"

#include "models.hpp"
#include "registry.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;
using aquin::bench::Measured;
using aquin::bench::measure;
using namespace aquin;

namespace {

using Shape = aquin::bench::LlamaShape;

constexpr int64_t kBatch = 8, kTokens = 64;

// A PEFT adapter: r 16, alpha 32 on every linear of every block (fp32 factors, ~40 MB).
void generate_lora(const fs::path& dir, const Shape& s) {
  if (fs::exists(dir / "adapter_model.safetensors")) return;
  at::manual_seed(1);
  const int64_t r = 16, kv = s.kv_heads * s.head_dim();
  std::vector<std::pair<std::string, at::Tensor>> t;
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".";
    const std::vector<std::tuple<std::string, int64_t, int64_t>> mods = {
        {"self_attn.q_proj", s.d, s.d}, {"self_attn.k_proj", kv, s.d},   {"self_attn.v_proj", kv, s.d},
        {"self_attn.o_proj", s.d, s.d}, {"mlp.gate_proj", s.mlp, s.d}, {"mlp.up_proj", s.mlp, s.d},
        {"mlp.down_proj", s.d, s.mlp}};
    for (const auto& [m, out, in] : mods) {
      t.emplace_back(p + m + ".lora_A.weight", at::randn({r, in}) / std::sqrt(static_cast<double>(in)));
      t.emplace_back(p + m + ".lora_B.weight", at::randn({out, r}) * 0.01);
    }
  }
  fs::create_directories(dir);
  write_file_atomic(dir / "adapter_config.json",
                    "{\"peft_type\": \"LORA\", \"r\": 16, \"lora_alpha\": 32, \"target_modules\": [\"q_proj\", \"k_proj\", "
                    "\"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"], \"bias\": \"none\"}\n");
  write_safetensors(dir / "adapter_model.safetensors", t);
}

// Loads `dir` (with an optional overlay) through the llm adapter plugin, as the host does. Only
// that plugin is loaded: the figures (RSS above all) are then the adapter's alone, and a plugin
// being rebuilt next to it cannot disturb the run.
std::unique_ptr<LoadedModel> load_model(const fs::path& dir, const Checkpoint* overlay) {
  static host::PluginRegistry* reg = [] {
    auto* r = new host::PluginRegistry();  // plugins are never unloaded
    for (const auto& d : host::plugin_search_path({}))
      if (fs::exists(d / "libaquin_adapter_llm.so")) {
        r->load(d / "libaquin_adapter_llm.so");
        break;
      }
    return r;
  }();
  const ModelInfo info = host::describe_model(dir.string(), dir, *reg, {});
  for (const host::PluginEntry* a : reg->adapters()) {
    if (a->name != info.adapter) continue;
    std::unique_ptr<LoadedModel> out;
    Status st = a->adapter->load(info, overlay, out);
    if (!st.ok()) throw InputError(st.message);
    return out;
  }
  throw InputError(dir.string(), "no adapter plugin claims it");
}

struct Timed {
  double best = 1e30;
  std::vector<double> all;
};

// One forward; returns seconds. Fails loudly on a bad status.
double timed_forward(LoadedModel& m, const ForwardRequest& req, at::Tensor* logits_out = nullptr,
                     std::map<std::string, at::Tensor>* hooks_out = nullptr) {
  at::Tensor logits;
  auto t0 = std::chrono::steady_clock::now();
  Status st = m.forward(req, [&](const std::string& h, const at::Tensor& t) {
    if (hooks_out) (*hooks_out)[h] = t;
  }, logits);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!st.ok()) throw std::runtime_error("forward failed: " + st.message);
  if (logits_out) *logits_out = logits;
  return s;
}

// Best fp32 GEMM rate of this machine: the forward's own products (x @ Wᵀ for 512 tokens against
// the fused gate/up, down and q/k/v shapes) and a large square one, best of two runs each.
double gemm_flops() {
  double best = 0;
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {{512, 2048, 16384}, {512, 8192, 2048}, {512, 2048, 3072}, {4096, 4096, 4096}};
  for (auto [m, k, n] : shapes) {
    at::Tensor a = at::randn({m, k}), w = at::randn({n, k});
    at::Tensor c = at::mm(a, w.t());
    for (int i = 0; i < 2; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      at::mm_out(c, a, w.t());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 2.0 * m * k * n / s);
    }
  }
  return best;
}

// FLOPs of one forward: every linear (2·tokens·in·out), the attention products at full T×T
// (what the kernels compute; the causal half is masked, not skipped), and the logits.
double forward_flops(const Shape& s, int64_t layers, bool logits) {
  const double tok = static_cast<double>(kBatch * kTokens);
  const double kv = static_cast<double>(s.kv_heads * s.head_dim());
  const double linear = s.d * s.d * 2.0 + 2.0 * kv * s.d + 3.0 * s.mlp * s.d;
  const double attn = 2.0 * 2.0 * kBatch * s.heads * kTokens * kTokens * s.head_dim();
  double f = layers * (2.0 * tok * linear + attn);
  if (logits) f += 2.0 * tok * s.d * s.vocab;
  return f;
}



// The PyTorch reference as a child we talk to line by line (reference_llm_forward.py --serve), so
// its forwards can be interleaved with ours: on a shared machine the load changes by the minute,
// and only runs side by side in time compare fairly.
class Reference {
 public:
  explicit Reference(const std::string& cmd) : child_(cmd) {}
  std::string line() { return child_.line(); }
  double forward() {
    child_.send("forward");
    return std::stod(child_.line());
  }
  /// Ends the session; returns the final JSON line and the child's peak RSS in MB.
  std::pair<std::string, double> finish() {
    child_.send("done");
    std::string summary = child_.line();
    return {summary, child_.finish()};
  }

 private:
  aquin::bench::LineChild child_;
};

ForwardRequest full_request(const at::Tensor& ids) {
  ForwardRequest req;
  req.input_ids = ids;
  req.attention_mask = at::ones_like(ids);
  req.logits = true;
  return req;
}

at::Tensor bench_ids(const Shape& s) {
  at::manual_seed(42);
  return at::randint(1, s.vocab, {kBatch, kTokens}, at::TensorOptions().dtype(at::kLong));
}

// Child mode: load (with an optional adapter), run one full forward, exit.
int child(const fs::path& model, const std::optional<fs::path>& adapter) {
  Shape s;
  std::optional<Checkpoint> ck;
  if (adapter) ck.emplace(open_checkpoint(*adapter));
  auto m = load_model(model, ck ? &*ck : nullptr);
  timed_forward(*m, full_request(bench_ids(s)));
  // This process's own high-water mark. Not the parent's wait4 figure: a forked child's maxrss
  // starts at the RSS it shared with the parent before exec (measured: 1103 MB reported for a child
  // whose own peak was 662 MB, after the parent had run its forwards).
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  fs::path dir = fs::temp_directory_path() / "aquin-bench-llm-forward";
  bool reference = true, custom_dir = false;
  int repeats = 4;
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up line by line when redirected
  try {
    if (argc >= 3 && std::string(argv[1]) == "--child")
      return child(argv[2], argc >= 4 ? std::optional<fs::path>(argv[3]) : std::nullopt);
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--layers" && i + 1 < argc) s.layers = std::atoi(argv[++i]);
      else if (a == "--dir" && i + 1 < argc) dir = argv[++i], custom_dir = true;
      else if (a == "--repeats" && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
      else if (a == "--no-reference") reference = false;
      else {
        std::cerr << "usage: bench_llm_forward [--layers N] [--dir DIR] [--repeats N] [--no-reference]\n";
        return 1;
      }
    }
    const int threads = at::get_num_threads();
    dir /= "L" + std::to_string(s.layers);
    // bench_weight_diff's base has the same shapes (random bf16, tied); reuse it rather than
    // writing another 2.5 GB when it is there.
    fs::path base = fs::temp_directory_path() / "aquin-bench-weight-diff" / ("L" + std::to_string(s.layers)) / "base";
    if (custom_dir || !fs::exists(base / "model.safetensors")) {
      base = dir / "base";
      aquin::bench::write_random_llama(base, s);
    }
    const fs::path lora = dir / "lora";
    generate_lora(lora, s);
    std::system(("cat '" + (base / "model.safetensors").string() + "' > /dev/null").c_str());  // warm page cache
    std::printf("model: %s (%d layers, bf16 weights), batch %lld x %lld tokens, %d threads\n", base.c_str(), s.layers,
                static_cast<long long>(kBatch), static_cast<long long>(kTokens), threads);

    double peak = 0;

    auto model = load_model(base, nullptr);
    const at::Tensor ids = bench_ids(s);
    const ForwardRequest full = full_request(ids);
    ForwardRequest layer8;
    layer8.input_ids = ids;
    layer8.attention_mask = full.attention_mask;
    layer8.hooks = {"blocks." + std::to_string(s.layers / 2) + ".hook_resid_post"};

    at::Tensor logits;
    std::map<std::string, at::Tensor> last_hook;
    ForwardRequest with_last = full;
    with_last.hooks = {"blocks." + std::to_string(s.layers - 1) + ".hook_resid_post"};
    timed_forward(*model, with_last, &logits, &last_hook);  // warm-up, and the outputs to compare

    std::optional<Reference> ref;
    const fs::path ids_file = dir / "ids.safetensors", ref_out = dir / "reference_out.safetensors";
    if (reference) {
      write_safetensors(ids_file, {{"input_ids", ids}});
      ref.emplace("/usr/bin/python3 '" + std::string(AQUIN_BENCH_LLM_REFERENCE) + "' '" + base.string() + "' '" +
                  ids_file.string() + "' '" + ref_out.string() + "' --threads " + std::to_string(threads) + " --serve");
      if (ref->line() != "ready") throw std::runtime_error("the reference did not start");
    }
    ForwardRequest full_bf16 = full;
    full_bf16.dtype = at::kBFloat16;
    timed_forward(*model, full_bf16);  // warm-up
    // Rounds, side by side in time: a GEMM-rate sample, our full forward, the reference's, our
    // layer-8 capture, our bf16 forward. The load on a shared machine changes by the minute, so
    // besides best-of figures the ratios are also taken within each round (median over rounds).
    Timed fwd, l8, py, bf16;
    std::vector<double> vs_ref, l8_share;
    for (int round = 0; round < repeats; ++round) {
      peak = std::max(peak, gemm_flops());
      fwd.all.push_back(timed_forward(*model, full));
      if (ref) {
        py.all.push_back(ref->forward());
        vs_ref.push_back(py.all.back() / fwd.all.back());
      }
      l8.all.push_back(timed_forward(*model, layer8));
      l8_share.push_back(l8.all.back() / fwd.all.back());
      bf16.all.push_back(timed_forward(*model, full_bf16));
    }
    peak = std::max(peak, gemm_flops());
    for (Timed* t : {&fwd, &l8, &py, &bf16})
      for (double x : t->all) t->best = std::min(t->best, x);
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };

    const double tokens = static_cast<double>(kBatch * kTokens);
    const double flops = forward_flops(s, s.layers, true);
    std::printf("fp32 GEMM peak (at::mm, x @ Wt at the forward's shapes and 4096^3, best of every round): %.1f GFLOP/s\n",
                peak / 1e9);
    std::printf("aquin forward (fp32, logits):    best of %d %.2f s  %.0f tokens/s  %.1f GFLOP/s = %.0f%% of GEMM peak (target >= 50%%)\n",
                repeats, fwd.best, tokens / fwd.best, flops / fwd.best / 1e9, 100.0 * flops / fwd.best / peak);
    std::printf("capture blocks.%d.hook_resid_post: best of %d %.2f s = %.0f%% of the best full forward; median per round %.0f%% (target <= 60%%)\n",
                s.layers / 2, repeats, l8.best, 100.0 * l8.best / fwd.best, 100.0 * median(l8_share));
    std::printf("aquin forward (bf16 compute):    best of %d %.2f s  %.0f tokens/s  (%.2fx the fp32 forward)\n", repeats, bf16.best,
                tokens / bf16.best, fwd.best / bf16.best);
    if (ref) {
      auto [summary, rss] = ref->finish();
      auto r = json::parse(summary, "reference summary");
      std::printf("PyTorch eager (fp32 weights):    best of %d %.2f s  %.0f tokens/s  (load %.1f s, peak RSS %.0f MB)\n", repeats,
                  py.best, tokens / py.best, r["load_s"].GetDouble(), rss);
      std::printf("aquin / PyTorch tokens/s:        %.2fx best vs best, %.2fx median per round (target >= 1.0x; %d interleaved rounds)\n",
                  py.best / fwd.best, median(vs_ref), repeats);
      auto out = open_safetensors(ref_out);
      at::Tensor ref_logits = out->load("last_logits"), ref_post = out->load("last_resid_post");
      at::Tensor our_logits = logits.select(1, kTokens - 1);
      at::Tensor our_post = last_hook.begin()->second.select(1, kTokens - 1);
      auto rel = [](const at::Tensor& a, const at::Tensor& b) {
        return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max()).item<double>();
      };
      std::printf("agreement at the last token:     logits %.1e, last resid_post %.1e (max |diff| / max |ref|)\n",
                  rel(our_logits, ref_logits), rel(our_post, ref_post));
    }
    model.reset();

    // Peak RSS of one load + forward, base alone vs with the LoRA adapter, each in a fresh process.
    const std::string self = fs::canonical("/proc/self/exe").string();
    const fs::path rss_file = dir / "child_rss.txt";
    auto child_peak_mb = [&](const std::string& args) {
      Measured m = measure("'" + self + "' --child " + args + " > '" + rss_file.string() + "'");
      if (m.code != 0) throw std::runtime_error("child forward failed");
      const std::string text = read_text_file(rss_file);
      long long kb = 0;
      if (std::sscanf(text.c_str(), "VmHWM: %lld kB", &kb) != 1) throw std::runtime_error("child printed no VmHWM");
      return static_cast<double>(kb) / 1024.0;
    };
    const double rb = child_peak_mb("'" + base.string() + "'");
    const double rl = child_peak_mb("'" + base.string() + "' '" + lora.string() + "'");
    std::printf("peak RSS, load + one forward:    base %.0f MB, with LoRA r16 on every linear %.0f MB = %.2fx (target <= 1.2x)\n",
                rb, rl, rl / rb);
  } catch (const std::exception& e) {
    std::cerr << "bench_llm_forward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
