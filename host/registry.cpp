#include "registry.hpp"

#include <aquin/sdk/plugin.hpp>

#include <boost/dll/runtime_symbol_info.hpp>

#include <boost/dll/shared_library.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>

namespace aquin::host {

namespace fs = std::filesystem;

namespace {

// Every loaded library, kept to process exit on purpose (see the header).
std::vector<boost::dll::shared_library>& keep_alive() {
  static auto* libs = new std::vector<boost::dll::shared_library>();
  return *libs;
}

bool is_elf(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
}

}  // namespace

PluginRegistry::~PluginRegistry() {
  // Objects are destroyed through their own plugin's destroy(); libraries stay loaded.
  for (auto& p : plugins_) p.destroy(p.analyzer ? static_cast<void*>(p.analyzer) : static_cast<void*>(p.adapter));
}

std::vector<fs::path> plugin_search_path(const std::vector<std::string>& cli_dirs) {
  std::vector<fs::path> dirs;
  for (const auto& d : cli_dirs) dirs.emplace_back(d);
  if (const char* env = std::getenv("AQUIN_PLUGIN_PATH")) {
    std::string s = env;
    std::size_t start = 0;
    while (start <= s.size()) {
      std::size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) dirs.emplace_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  std::error_code ec;
  fs::path exe = boost::dll::program_location(ec).string();
  if (!ec) {
    dirs.push_back(exe.parent_path().parent_path() / "lib" / "aquin");
#ifdef AQUIN_BUILD_PLUGIN_DIR
    // Only a binary still in its build tree looks at the build tree's plugins; an installed
    // one would otherwise see every plugin twice.
    const std::string build_dir = AQUIN_BUILD_DIR;
    if (exe.string().compare(0, build_dir.size() + 1, build_dir + "/") == 0) dirs.emplace_back(AQUIN_BUILD_PLUGIN_DIR);
#endif
  }
  std::vector<fs::path> unique;
  std::set<std::string> seen;
  for (auto& d : dirs) {
    std::error_code e;
    fs::path c = fs::weakly_canonical(fs::absolute(d, e), e);
    if (seen.insert(c.string()).second) unique.push_back(c);
  }
  return unique;
}

void PluginRegistry::discover(const std::vector<fs::path>& dirs) {
  for (const auto& dir : dirs) {
    searched_.push_back(dir);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".so") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) load(f);
  }
}

void PluginRegistry::load(const fs::path& file_in) {
  std::error_code ec;
  const fs::path file = fs::absolute(file_in, ec);
  auto refuse = [&](const std::string& why) {
    refused_.push_back({file, why});
    spdlog::warn("plugin {} refused: {}", file.string(), why);
  };
  if (!is_elf(file)) return refuse("not a shared library (no ELF header)");
  boost::dll::shared_library lib;
  std::error_code lec;
  lib.load(boost::dll::fs::path(file.string()), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, lec);
  if (lec) return refuse("cannot load: " + lec.message());
  if (!lib.has(AQUIN_PLUGIN_ENTRY_SYMBOL)) {
    keep_alive().push_back(std::move(lib));
    return refuse(std::string("no entry point '") + AQUIN_PLUGIN_ENTRY_SYMBOL + "' (not an aquin plugin)");
  }
  auto entry = lib.get<const aquin_plugin_descriptor*()>(AQUIN_PLUGIN_ENTRY_SYMBOL);
  keep_alive().push_back(lib);
  const aquin_plugin_descriptor* d = entry();
  if (d == nullptr) return refuse("entry point returned no descriptor");
  if (d->abi_version != AQUIN_PLUGIN_ABI_VERSION)
    return refuse("ABI " + std::to_string(d->abi_version) + ", host supports " + std::to_string(AQUIN_PLUGIN_ABI_VERSION));
  if (d->struct_size != sizeof(aquin_plugin_descriptor))
    return refuse("descriptor size " + std::to_string(d->struct_size) + ", host expects " +
                  std::to_string(sizeof(aquin_plugin_descriptor)));
  const std::string fp = d->fingerprint ? d->fingerprint : "";
  if (fp != AQUIN_BUILD_FINGERPRINT)
    return refuse("built with '" + fp + "', host is '" + std::string(AQUIN_BUILD_FINGERPRINT) + "'");
  if (d->name == nullptr || *d->name == '\0' || d->create == nullptr || d->destroy == nullptr)
    return refuse("descriptor lacks a name or create/destroy");
  if (d->kind != AQUIN_PLUGIN_ANALYZER && d->kind != AQUIN_PLUGIN_MODEL_ADAPTER)
    return refuse("unknown plugin kind " + std::to_string(d->kind));
  const std::string kind = d->kind == AQUIN_PLUGIN_ANALYZER ? "analyzer" : "model-adapter";
  for (const auto& p : plugins_)
    if (p.kind == kind && p.name == d->name)
      return refuse("duplicate " + kind + " name '" + std::string(d->name) + "': already provided by " + p.file.string());

  char err[512] = {};
  void* obj = d->create(err, sizeof err);
  if (obj == nullptr) return refuse(std::string("create failed: ") + (err[0] ? err : "no message"));
  PluginEntry e;
  e.kind = kind;
  e.name = d->name;
  e.version = d->version ? d->version : "";
  e.summary = d->summary ? d->summary : "";
  e.file = file;
  e.destroy = d->destroy;
  if (d->kind == AQUIN_PLUGIN_ANALYZER) {
    e.analyzer = static_cast<AnalyzerApi*>(obj);
    Status st = e.analyzer->spec(e.spec);
    if (!st.ok()) {
      d->destroy(obj);
      return refuse("spec() failed: " + st.message);
    }
    auto problems = validate_option_table(e.spec.options);
    if (!problems.empty()) {
      d->destroy(obj);
      return refuse("invalid option table: " + problems.front());
    }
    for (const auto& p : plugins_)
      if (p.kind == "analyzer" && p.spec.tool == e.spec.tool) {
        d->destroy(obj);
        return refuse("duplicate tool name '" + e.spec.tool + "': already provided by " + p.file.string());
      }
  } else {
    e.adapter = static_cast<ModelAdapterApi*>(obj);
  }
  plugins_.push_back(std::move(e));
}

const PluginEntry* PluginRegistry::analyzer(const std::string& name) const {
  for (const auto& p : plugins_)
    if (p.kind == "analyzer" && p.name == name) return &p;
  return nullptr;
}

const PluginEntry* PluginRegistry::analyzer_by_tool(const std::string& tool) const {
  for (const auto& p : plugins_)
    if (p.kind == "analyzer" && p.spec.tool == tool) return &p;
  return nullptr;
}

std::vector<const PluginEntry*> PluginRegistry::adapters() const {
  std::vector<const PluginEntry*> out;
  for (const auto& p : plugins_)
    if (p.kind == "model-adapter") out.push_back(&p);
  return out;
}

}  // namespace aquin::host
