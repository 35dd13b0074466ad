// Plugin entry points (DESIGN.md §2). Each plugin exports one C function, `aquin_plugin_entry`,
// returning a descriptor the host checks (ABI version, struct size, build fingerprint) before it
// creates anything. The macros at the bottom generate that function for an analyzer or a model
// adapter class and wrap the class so that no exception ever crosses the boundary.
#pragma once

#include <aquin/sdk/analyzer.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/model_adapter.hpp>

#include <boost/config.hpp>
#include <rapidjson/document.h>
#include <torch/csrc/api/include/torch/version.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <type_traits>
#include <utility>

/// Bumped whenever a boundary struct or interface changes layout or meaning.
#define AQUIN_PLUGIN_ABI_VERSION 3u
#define AQUIN_PLUGIN_ENTRY_SYMBOL "aquin_plugin_entry"

#define AQUIN_STR_IMPL(x) #x
#define AQUIN_STR(x) AQUIN_STR_IMPL(x)
/// What must match between host and plugin besides the ABI number: the compiler, the C++
/// library ABI and the libtorch version (tensors and std::string cross as C++ objects).
#define AQUIN_BUILD_FINGERPRINT                                                         \
  "gcc-" AQUIN_STR(__GNUC__) "." AQUIN_STR(__GNUC_MINOR__) " cxx11abi=" AQUIN_STR(      \
      _GLIBCXX_USE_CXX11_ABI) " torch-" AQUIN_STR(TORCH_VERSION_MAJOR) "." AQUIN_STR(   \
      TORCH_VERSION_MINOR)

extern "C" {

enum aquin_plugin_kind : uint32_t { AQUIN_PLUGIN_ANALYZER = 1, AQUIN_PLUGIN_MODEL_ADAPTER = 2 };

struct aquin_plugin_descriptor {
  uint32_t abi_version;     ///< AQUIN_PLUGIN_ABI_VERSION the plugin was built with
  uint32_t struct_size;     ///< sizeof(aquin_plugin_descriptor) the plugin was built with
  const char* fingerprint;  ///< AQUIN_BUILD_FINGERPRINT the plugin was built with
  uint32_t kind;            ///< aquin_plugin_kind
  const char* name;         ///< command name ("weight-diff") or adapter name ("llm")
  const char* version;      ///< the plugin's own version
  const char* summary;      ///< one line
  /// Creates the plugin object: an aquin::AnalyzerApi* or aquin::ModelAdapterApi* by kind.
  /// On failure returns nullptr and writes a message into `error` (NUL-terminated).
  void* (*create)(char* error, std::size_t error_size);
  /// Destroys what create returned.
  void (*destroy)(void* object);
};

typedef const aquin_plugin_descriptor* (*aquin_plugin_entry_fn)();
}

namespace aquin::detail {

/// Runs `f`, turning any exception into a Status.
template <class F>
Status guarded(F&& f) noexcept {
  try {
    std::forward<F>(f)();
    return {};
  } catch (const InputError& e) {
    return {StatusCode::Input, e.what()};
  } catch (const UsageError& e) {
    return {StatusCode::Usage, e.what()};
  } catch (const std::exception& e) {
    return {StatusCode::Internal, e.what()};
  } catch (...) {
    return {StatusCode::Internal, "unknown exception"};
  }
}

template <class Impl>
class AnalyzerShim final : public AnalyzerApi {
 public:
  Status spec(CommandSpec& out) noexcept override {
    return guarded([&] { out = impl_.spec(); });
  }
  Status run(const RunContext& ctx, const Args& args, Result& out) noexcept override {
    return guarded([&] { out = impl_.run(ctx, args); });
  }

 private:
  Impl impl_;
};

template <class Impl>
class ModelAdapterShim final : public ModelAdapterApi {
 public:
  Status claims(const std::string& config_json, bool& out) noexcept override {
    return guarded([&] { out = impl_.claims(parse(config_json)); });
  }
  Status describe(const std::string& config_json, ModelInfo& out) noexcept override {
    return guarded([&] { out = impl_.describe(parse(config_json)); });
  }
  Status supported(std::vector<std::string>& out) noexcept override {
    return guarded([&] { out = impl_.supported(); });
  }
  Status load(const ModelInfo& base, const Checkpoint* overlay, std::unique_ptr<LoadedModel>& out) noexcept override {
    return guarded([&] { out = impl_.load(base, overlay); });
  }

 private:
  static rapidjson::Document parse(const std::string& text) {
    rapidjson::Document d;
    d.Parse(text.c_str(), text.size());
    if (d.HasParseError() || !d.IsObject()) throw InputError("config.json", "not a JSON object");
    return d;
  }
  Impl impl_;
};

template <class Api, class Shim>
void* create_object(char* error, std::size_t error_size) noexcept {
  auto report = [&](const char* msg) {
    if (error != nullptr && error_size > 0) {
      std::strncpy(error, msg, error_size - 1);
      error[error_size - 1] = '\0';
    }
  };
  try {
    return static_cast<Api*>(new Shim());
  } catch (const std::exception& e) {
    report(e.what());
  } catch (...) {
    report("unknown exception");
  }
  return nullptr;
}

template <class Api>
void destroy_object(void* p) noexcept {
  delete static_cast<Api*>(p);
}

template <class T, class = void>
struct is_analyzer : std::false_type {};
template <class T>
struct is_analyzer<T, std::void_t<decltype(std::declval<const T&>().spec()),
                                  decltype(std::declval<T&>().run(std::declval<const RunContext&>(),
                                                                  std::declval<const Args&>()))>>
    : std::bool_constant<std::is_same_v<decltype(std::declval<const T&>().spec()), CommandSpec> &&
                         std::is_same_v<decltype(std::declval<T&>().run(std::declval<const RunContext&>(),
                                                                        std::declval<const Args&>())),
                                        Result>> {};

template <class T, class = void>
struct is_model_adapter : std::false_type {};
template <class T>
struct is_model_adapter<T, std::void_t<decltype(std::declval<const T&>().claims(std::declval<const rapidjson::Document&>())),
                                       decltype(std::declval<const T&>().describe(std::declval<const rapidjson::Document&>())),
                                       decltype(std::declval<const T&>().supported()),
                                       decltype(std::declval<const T&>().load(std::declval<const ModelInfo&>(), std::declval<const Checkpoint*>()))>>
    : std::bool_constant<
          std::is_same_v<decltype(std::declval<const T&>().claims(std::declval<const rapidjson::Document&>())), bool> &&
          std::is_same_v<decltype(std::declval<const T&>().describe(std::declval<const rapidjson::Document&>())), ModelInfo> &&
          std::is_same_v<decltype(std::declval<const T&>().supported()), std::vector<std::string>> &&
          std::is_same_v<decltype(std::declval<const T&>().load(std::declval<const ModelInfo&>(), std::declval<const Checkpoint*>())),
                         std::unique_ptr<LoadedModel>>> {};

}  // namespace aquin::detail

#define AQUIN_DEFINE_PLUGIN_ENTRY_(KIND, API, SHIM, NAME, VERSION, SUMMARY)                     \
  extern "C" BOOST_SYMBOL_EXPORT const aquin_plugin_descriptor* aquin_plugin_entry() {           \
    static const aquin_plugin_descriptor descriptor = {                                         \
        AQUIN_PLUGIN_ABI_VERSION, static_cast<uint32_t>(sizeof(aquin_plugin_descriptor)),        \
        AQUIN_BUILD_FINGERPRINT,  KIND,                                                         \
        NAME,                     VERSION,                                                      \
        SUMMARY,                  &::aquin::detail::create_object<API, SHIM>,                   \
        &::aquin::detail::destroy_object<API>};                                                 \
    return &descriptor;                                                                         \
  }

/// Registers `Impl` (see analyzer.hpp) as the analyzer plugin for command NAME.
#define AQUIN_ANALYZER_PLUGIN(Impl, NAME, VERSION, SUMMARY)                                      \
  static_assert(::aquin::detail::is_analyzer<Impl>::value,                                      \
                #Impl " must have `CommandSpec spec() const` and "                              \
                      "`Result run(const RunContext&, const Args&)`");                          \
  AQUIN_DEFINE_PLUGIN_ENTRY_(AQUIN_PLUGIN_ANALYZER, ::aquin::AnalyzerApi,                        \
                             ::aquin::detail::AnalyzerShim<Impl>, NAME, VERSION, SUMMARY)

/// Registers `Impl` (see model_adapter.hpp) as the model-adapter plugin NAME.
#define AQUIN_MODEL_ADAPTER_PLUGIN(Impl, NAME, VERSION, SUMMARY)                                 \
  static_assert(::aquin::detail::is_model_adapter<Impl>::value,                                 \
                #Impl " must have `bool claims(const rapidjson::Document&) const`, "            \
                      "`ModelInfo describe(const rapidjson::Document&) const`, "                \
                      "`std::vector<std::string> supported() const` and "                       \
                      "`std::unique_ptr<LoadedModel> load(const ModelInfo&, const Checkpoint*) const`"); \
  AQUIN_DEFINE_PLUGIN_ENTRY_(AQUIN_PLUGIN_MODEL_ADAPTER, ::aquin::ModelAdapterApi,               \
                             ::aquin::detail::ModelAdapterShim<Impl>, NAME, VERSION, SUMMARY)
