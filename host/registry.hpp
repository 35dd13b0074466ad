// Discovers, checks and keeps plugins (DESIGN.md §2). Libraries are never unloaded: a tensor or a
// deleter whose code lives in an unloaded plugin would crash the process.
#pragma once

#include <aquin/sdk/analyzer.hpp>
#include <aquin/sdk/model_adapter.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace aquin::host {

struct PluginEntry {
  std::string kind;  ///< "analyzer" or "model-adapter"
  std::string name;
  std::string version;
  std::string summary;
  std::filesystem::path file;
  AnalyzerApi* analyzer = nullptr;          ///< owned by the registry (kind analyzer)
  ModelAdapterApi* adapter = nullptr;       ///< owned by the registry (kind model-adapter)
  CommandSpec spec;                         ///< analyzers: the declaration, fetched once
  void (*destroy)(void*) = nullptr;         ///< the plugin's own destroy for the object
};

struct RefusedPlugin {
  std::filesystem::path file;
  std::string reason;
};

class PluginRegistry {
 public:
  PluginRegistry() = default;
  ~PluginRegistry();
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  /// Loads every *.so in `dirs` (in order; earlier directories win a name clash).
  void discover(const std::vector<std::filesystem::path>& dirs);
  /// Loads one file. A bad file is recorded in refused(), never fatal.
  void load(const std::filesystem::path& file);

  const std::vector<PluginEntry>& plugins() const { return plugins_; }
  const std::vector<RefusedPlugin>& refused() const { return refused_; }
  const std::vector<std::filesystem::path>& searched() const { return searched_; }
  const PluginEntry* analyzer(const std::string& name) const;
  const PluginEntry* analyzer_by_tool(const std::string& tool) const;
  std::vector<const PluginEntry*> adapters() const;

 private:
  std::vector<PluginEntry> plugins_;
  std::vector<RefusedPlugin> refused_;
  std::vector<std::filesystem::path> searched_;
};

/// The directories searched, in order: --plugin-dir values, AQUIN_PLUGIN_PATH (colon-separated),
/// <exe>/../lib/aquin, and the build tree's plugin folder.
std::vector<std::filesystem::path> plugin_search_path(const std::vector<std::string>& cli_dirs);

}  // namespace aquin::host
