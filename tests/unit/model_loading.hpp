// Loading models in tests the way the host does: one plugin registry for the whole binary (plugins
// are never unloaded), the adapter that claims the model.
#pragma once

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include "models.hpp"
#include "registry.hpp"

#include <filesystem>
#include <memory>
#include <stdexcept>

namespace aquin::test {

inline const host::PluginRegistry& plugin_registry() {
  static host::PluginRegistry* reg = [] {
    auto* r = new host::PluginRegistry();
    r->discover(host::plugin_search_path({}));
    return r;
  }();
  return *reg;
}

/// The model in `dir` with `overlay` laid over it. Throws InputError with the adapter's message.
inline std::unique_ptr<LoadedModel> load_model(const std::filesystem::path& dir, const Checkpoint* overlay = nullptr) {
  const ModelInfo info = host::describe_model(dir.string(), dir, plugin_registry(), {});
  for (const host::PluginEntry* a : plugin_registry().adapters()) {
    if (a->name != info.adapter) continue;
    std::unique_ptr<LoadedModel> out;
    Status st = a->adapter->load(info, overlay, out);
    if (!st.ok()) throw InputError(st.message);
    return out;
  }
  throw std::runtime_error("no adapter " + info.adapter);
}

}  // namespace aquin::test
