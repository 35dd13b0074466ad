// The analyzer interface: one plugin per command.
//
// A plugin author writes a class with
//     CommandSpec spec() const;                                   // options, tool name, help
//     Result run(const RunContext& ctx, const Args& args);        // may throw
// and registers it with AQUIN_ANALYZER_PLUGIN (plugin.hpp), which wraps it in AnalyzerApi: the
// only thing the host calls, and nothing in it throws.
#pragma once

#include <aquin/sdk/model_info.hpp>
#include <aquin/sdk/options.hpp>
#include <aquin/sdk/result.hpp>
#include <aquin/sdk/status.hpp>

#include <boost/config.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace aquin {

/// What a command declares about itself.
struct CommandSpec {
  std::string tool;         ///< agent tool name, e.g. "run_weight_diff"
  std::string description;  ///< one paragraph for --help and the tool listing
  std::vector<OptionSpec> options;
  bool needs_base_model = true;  ///< the host resolves the session's base model before run()
};

struct Checkpoint;
class LoadedModel;

/// How an analyzer runs models: the host routes the request to the model-adapter plugin that
/// claimed the session's base model. Analyzers never see which plugin or file format is behind it.
class BOOST_SYMBOL_VISIBLE ModelLoader {
 public:
  virtual ~ModelLoader() = default;
  /// The base model with `overlay` (a merged checkpoint or LoRA adapter; null for the base alone)
  /// laid over it. Throws InputError when the adapter cannot load it.
  virtual std::unique_ptr<LoadedModel> load(const Checkpoint* overlay) const = 0;
};

/// Everything the host resolved for a run.
struct RunContext {
  std::string command;                 ///< e.g. "weight-diff"
  ModelInfo base;                      ///< the session's base model (empty when not needed)
  std::string session_id;              ///< "" when no session is in use
  std::filesystem::path session_dir;   ///< $AQUIN_HOME/sessions/<id> ("" without a session)
  int threads = 1;                     ///< compute threads the host configured
  const ModelLoader* models = nullptr; ///< set when the command needs the base model
  std::string sae_path;                ///< the session's SAE folder (`aquin load sae`), "" when none
  int64_t sae_layer = -1;              ///< its layer, -1 when none
};

/// The boundary object. Implemented by the AQUIN_ANALYZER_PLUGIN shim, called by the host.
class BOOST_SYMBOL_VISIBLE AnalyzerApi {
 public:
  virtual ~AnalyzerApi() = default;
  /// Fills `out` with the command's declaration.
  virtual Status spec(CommandSpec& out) noexcept = 0;
  /// Runs the command. On failure `out` is left for the host to discard.
  virtual Status run(const RunContext& ctx, const Args& args, Result& out) noexcept = 0;
};

}  // namespace aquin
