// Times the embedding adapter's BERT forward pass (loaded through the plugin registry, as the
// host loads it) on a generated gte-small-shaped model (12 layers, d 384, 12 heads, MLP 1536,
// vocab 30522, fp32 random weights) against the same forward in PyTorch eager
// (bench/reference_bert_forward.py: transformers' eager attention, and with --tuned also a variant
// with contiguous attention operands) in the same run, and checks all pool to the same vectors.
// On a shared machine the load drifts, so the reference runs as a child serving one forward per
// request and the two alternate forward by forward; the ratio is the median of per-round ratios.
//
//   bench_bert_forward [--batch 32] [--tokens 128] [--rounds 5] [--dir DIR] [--no-reference] [--tuned]
#include "bench_util.hpp"

#include "models.hpp"
#include "registry.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr int kLayers = 12;
constexpr int64_t kD = 384, kHeads = 12, kMlp = 1536, kVocab = 30522, kMaxPos = 512;

// BERT's initialisation (normal, std 0.02; LayerNorm 1 and 0), which is also the scale of a
// trained gte-small's weights; values do not affect the timing.
void generate(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return;
  std::cout << "generating a gte-small-shaped BERT in " << dir << " ..." << std::endl;
  fs::create_directories(dir);
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> t;
  auto normal = [&](const std::string& n, std::vector<int64_t> shape) { t.emplace_back(n, at::randn(shape) * 0.02); };
  auto ln = [&](const std::string& n) {
    t.emplace_back(n + ".weight", at::ones({kD}));
    t.emplace_back(n + ".bias", at::zeros({kD}));
  };
  normal("embeddings.word_embeddings.weight", {kVocab, kD});
  normal("embeddings.position_embeddings.weight", {kMaxPos, kD});
  normal("embeddings.token_type_embeddings.weight", {2, kD});
  ln("embeddings.LayerNorm");
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
      normal(p + n + ".weight", {kD, kD});
      normal(p + n + ".bias", {kD});
    }
    ln(p + "attention.output.LayerNorm");
    normal(p + "intermediate.dense.weight", {kMlp, kD});
    normal(p + "intermediate.dense.bias", {kMlp});
    normal(p + "output.dense.weight", {kD, kMlp});
    normal(p + "output.dense.bias", {kD});
    ln(p + "output.LayerNorm");
  }
  normal("pooler.dense.weight", {kD, kD});
  normal("pooler.dense.bias", {kD});
  aquin::write_safetensors(dir / "model.safetensors", t, {{"format", "pt"}});
  aquin::write_file_atomic(dir / "config.json",
                           "{\"architectures\": [\"BertModel\"], \"model_type\": \"bert\", \"hidden_size\": 384, "
                           "\"intermediate_size\": 1536, \"num_attention_heads\": 12, \"num_hidden_layers\": 12, "
                           "\"vocab_size\": 30522, \"max_position_embeddings\": 512, \"type_vocab_size\": 2, "
                           "\"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\", \"position_embedding_type\": \"absolute\", "
                           "\"torch_dtype\": \"float32\"}\n");
}

// The Python reference as a child process serving timed forwards on request (its --serve mode), so
// that its forwards interleave with ours and both see the same machine load.
class Reference {
 public:
  explicit Reference(const std::string& cmd) : child_(cmd) {
    if (child_.line() != "ready") throw std::runtime_error("reference did not start: " + cmd);
  }

  /// Seconds for one forward ("run", or "run tuned" for the contiguous-operand variant).
  double time_forward(const std::string& request) {
    child_.send(request);
    const std::string reply = child_.line();
    auto doc = aquin::json::parse(reply, "reference reply");
    if (!doc.IsObject() || !doc.HasMember("s")) throw std::runtime_error("reference: unexpected reply '" + reply + "'");
    return doc["s"].GetDouble();
  }

  /// Ends the child (it writes its pooled vectors on the way out); returns its peak RSS in MB.
  double finish() { return child_.finish(); }

 private:
  aquin::bench::LineChild child_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

at::Tensor read_f32(const fs::path& path, at::IntArrayRef shape) {
  at::Tensor t = at::empty(shape, at::kFloat);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), static_cast<std::streamsize>(t.numel() * sizeof(float)));
  if (!in) throw std::runtime_error(path.string() + ": short read");
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 32, tokens = 128;
  int rounds = 5;
  fs::path dir = fs::temp_directory_path() / "aquin-bench-bert-forward";
  bool reference = true, tuned = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atoll(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-reference") reference = false;
    else if (a == "--tuned") tuned = true;
    else {
      std::cerr << "usage: bench_bert_forward [--batch 32] [--tokens 128] [--rounds 5] [--dir DIR] [--no-reference] [--tuned]\n";
      return 1;
    }
  }
  if (tokens < 1 || tokens > kMaxPos || batch < 1) {
    std::cerr << "bench_bert_forward: need 1 <= tokens <= " << kMaxPos << " and batch >= 1\n";
    return 1;
  }
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  const fs::path model_dir = dir / "gte-small-shaped";
  generate(model_dir);

  // Prompts of mixed lengths (tokens/2 .. tokens), right-padded: the padding path is timed too.
  at::manual_seed(1);
  at::Tensor ids = at::randint(1000, kVocab, {batch, tokens}, at::kLong);
  at::Tensor mask = at::zeros({batch, tokens}, at::kLong);
  int64_t real = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = b == 0 ? tokens : tokens / 2 + (b * 7919) % (tokens - tokens / 2 + 1);
    mask[b].narrow(0, 0, n).fill_(1);
    if (n < tokens) ids[b].narrow(0, n, tokens - n).fill_(0);
    real += n;
  }
  const fs::path inputs = dir / "inputs.safetensors", ref_pooled = dir / "reference_pooled.f32";
  aquin::write_safetensors(inputs, {{"input_ids", ids}, {"attention_mask", mask}});

  try {
    aquin::host::PluginRegistry reg;
    reg.discover(aquin::host::plugin_search_path({}));
    const aquin::ModelInfo info = aquin::host::describe_model(model_dir.string(), model_dir, reg, {});
    std::unique_ptr<aquin::LoadedModel> model;
    for (const auto* p : reg.adapters()) {
      if (p->name != info.adapter) continue;
      aquin::Status st = p->adapter->load(info, nullptr, model);
      if (!st.ok()) throw std::runtime_error(st.message);
    }
    if (!model) throw std::runtime_error("no adapter loaded " + model_dir.string());

    aquin::ForwardRequest req;
    req.input_ids = ids;
    req.attention_mask = mask;
    req.hooks = {"pooled"};
    at::Tensor pooled, logits;
    auto sink = [&](const std::string&, const at::Tensor& t) { pooled = t; };
    auto forward = [&]() {
      auto t0 = std::chrono::steady_clock::now();
      aquin::Status st = model->forward(req, sink, logits);
      if (!st.ok()) throw std::runtime_error(st.message);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };

    std::printf("batch %lld x %lld tokens (%lld real, right-padded), %d threads, gte-small shape (12 x d384, fp32)\n",
                static_cast<long long>(batch), static_cast<long long>(tokens), static_cast<long long>(real), threads);
    std::unique_ptr<Reference> ref;
    if (reference)
      ref = std::make_unique<Reference>("/usr/bin/python3 " + std::string(AQUIN_BENCH_REFERENCE) + " '" +
                                        model_dir.string() + "' '" + inputs.string() + "' '" + ref_pooled.string() +
                                        "' --serve --threads " + std::to_string(threads));
    forward();  // warm-up: the weights' pages fault in
    std::vector<double> aq, py, py_tuned, ratio, ratio_tuned;
    for (int r = 0; r < rounds; ++r) {
      aq.push_back(forward());
      std::printf("round %d  aquin %6.2f sentences/s", r + 1, batch / aq.back());
      if (ref) {
        py.push_back(ref->time_forward("run"));
        ratio.push_back(py.back() / aq.back());
        std::printf("  PyTorch eager %6.2f sentences/s (%.2fx)", batch / py.back(), ratio.back());
        if (tuned) {
          py_tuned.push_back(ref->time_forward("run tuned"));
          ratio_tuned.push_back(py_tuned.back() / aq.back());
          std::printf("  tuned eager %6.2f sentences/s (%.2fx)", batch / py_tuned.back(), ratio_tuned.back());
        }
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    struct rusage self {};
    getrusage(RUSAGE_SELF, &self);
    std::printf("aquin BERT forward   %7.2f sentences/s median, %7.2f best  (peak RSS %.0f MB)\n", batch / median(aq),
                batch / best(aq), self.ru_maxrss / 1024.0);
    if (!ref) return 0;
    const double py_rss = ref->finish();
    std::printf("PyTorch eager        %7.2f sentences/s median, %7.2f best  (peak RSS %.0f MB)\n", batch / median(py),
                batch / best(py), py_rss);
    if (tuned)
      std::printf("tuned PyTorch eager  %7.2f sentences/s median, %7.2f best\n", batch / median(py_tuned), batch / best(py_tuned));
    std::printf("ratio aquin/PyTorch  %.2fx (median of %d interleaved rounds; best-of ratio %.2fx)\n", median(ratio), rounds,
                best(py) / best(aq));
    if (tuned)
      std::printf("ratio aquin/tuned    %.2fx (best-of ratio %.2fx)\n", median(ratio_tuned), best(py_tuned) / best(aq));
    const at::Tensor want = read_f32(ref_pooled, pooled.sizes());
    const double err = (pooled - want).abs().max().item<double>() / want.abs().max().item<double>();
    std::printf("agreement            pooled max rel. error %.2e\n", err);
    return err < 1e-4 ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "bench_bert_forward: " << e.what() << "\n";
    return 1;
  }
}
