// `aquin sae align`: match the features of two SAEs (e.g. one trained on the base model, one on the
// fine-tune) by the cosine similarity of their decoder directions, one to one, maximising the total
// (DESIGN.md §8). No model is run: the SAEs' weights are all it needs.
#include "sae_align_report.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/plugin.hpp>

#include <chrono>
#include <stdexcept>

namespace {

using namespace aquin;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class SaeAlign {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_sae_align";
    s.needs_base_model = false;
    s.description =
        "Match the features of two SAEs trained on the same hook (e.g. on the base model and on a fine-tune) by the "
        "cosine similarity of their decoder directions: an optimal one-to-one assignment maximising the total "
        "cosine (exact up to 8192 features a side, else on each feature's nearest candidates with a certified "
        "bound on what was missed), each feature's best match regardless of the others, the weakest and strongest "
        "matches, and the features of B least like any feature of A. With --null, a second SAE trained on A's "
        "activations with another seed gives the training-noise baseline each match is judged against.";
    s.options = {
        required_option("sae-a", OptionType::Path, "SAE_A", "the reference SAE (e.g. trained on the base model)"),
        required_option("sae-b", OptionType::Path, "SAE_B", "the SAE to align to it (e.g. trained on the fine-tune)"),
        make_option("null", OptionType::Path, "SAE_C",
                    "a second SAE trained on A's activations with another seed: the training-noise baseline"),
        make_option("layer", OptionType::Int, "L", "layer of the SAE to take from folders holding several"),
        make_option("top", OptionType::Int, "N", "rows in each list of matches and features (0: every one)", "20"),
        make_option("candidates", OptionType::Int, "K",
                    "above the exact limit: candidate partners kept per feature (each row's and each column's K "
                    "most similar)",
                    "32"),
        make_option("exact-limit", OptionType::Int, "N",
                    "largest d_sae solved exactly (the fp32 cosine matrix takes 4·N² bytes)", "8192"),
    };
    return s;
  }

  Result run(const RunContext&, const Args& args) {
    const auto t_all = std::chrono::steady_clock::now();
    Result r;
    const int64_t top = args.integer("top");
    if (top < 0) throw UsageError("option --top: expected 0 (every feature) or a positive integer");
    AlignOptions opt;
    opt.candidates = args.integer("candidates");
    if (opt.candidates < 1) throw UsageError("option --candidates: expected a positive integer");
    opt.dense_limit = args.integer("exact-limit");
    if (opt.dense_limit < 1) throw UsageError("option --exact-limit: expected a positive integer");
    std::optional<int64_t> layer;
    if (args.has("layer")) layer = args.integer("layer");

    auto t0 = std::chrono::steady_clock::now();
    Sae a = Sae::load(args.str("sae-a"), layer);
    Sae b = Sae::load(args.str("sae-b"), layer);
    std::optional<Sae> c;
    if (args.has("null")) c = Sae::load(args.str("null"), layer);
    const double t_load = seconds_since(t0);
    const SaeInfo& ia = a.info();
    auto check_pair = [&](const Sae& other, const char* label) {
      const SaeInfo& io = other.info();
      if (io.d_in != ia.d_in)
        throw InputError(io.weights_file.empty() ? io.path : io.weights_file,
                         "d_in is " + std::to_string(io.d_in) + " but SAE A's (" + ia.path + ") is " +
                             std::to_string(ia.d_in) + ": decoder directions of different spaces cannot be aligned");
      if (io.hook != ia.hook)
        r.warnings.push_back(std::string(label) + " reads " + (io.hook.empty() ? "an unknown hook" : io.hook) +
                             " but SAE A reads " + (ia.hook.empty() ? "an unknown hook" : ia.hook) +
                             ": features of different hooks need not correspond");
    };
    check_pair(b, "SAE B");
    if (c) check_pair(*c, "the null SAE");

    t0 = std::chrono::steady_clock::now();
    AlignResult ab;
    try {
      ab = align_decoders(a.weights().W_dec, b.weights().W_dec, opt);
    } catch (const std::invalid_argument& e) {
      throw InputError(ia.path, e.what());
    }
    const double t_ab = seconds_since(t0);
    std::optional<AlignResult> ac;
    double t_ac = 0;
    if (c) {
      t0 = std::chrono::steady_clock::now();
      try {
        ac = align_decoders(a.weights().W_dec, c->weights().W_dec, opt);
      } catch (const std::invalid_argument& e) {
        throw InputError(c->info().path, e.what());
      }
      t_ac = seconds_since(t0);
    }

    sae_align::Inputs in;
    in.a = &a;
    in.b = &b;
    in.null_sae = c ? &*c : nullptr;
    in.ab = &ab;
    in.ac = ac ? &*ac : nullptr;
    in.top = top;
    in.timings = {{"load", t_load},
                  {"similarity", ab.seconds_similarity},
                  {"assignment", ab.seconds_assignment},
                  {"align", t_ab}};
    if (c) in.timings.emplace_back("null", t_ac);
    in.timings.emplace_back("total", seconds_since(t_all));
    sae_align::build_report(in, r);
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(SaeAlign, "sae-align", "0.1.0",
                      "one-to-one matching of two SAEs' features by decoder cosine, with a training-noise baseline")
