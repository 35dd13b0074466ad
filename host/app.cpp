#include "app.hpp"

#include "command_options.hpp"
#include "models.hpp"
#include "registry.hpp"
#include "render.hpp"
#include "runtime_info.hpp"
#include "sae_catalog.hpp"
#include "session.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/progress.hpp>
#include <aquin/sdk/sae.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <iterator>
#include <sstream>

namespace aquin::host {

namespace fs = std::filesystem;

namespace {

constexpr int kExitOk = 0, kExitInput = 1, kExitInternal = 3;

struct Globals {
  std::vector<std::string> plugin_dirs;
  std::string log_level = "warn";
  int threads = 0;
  std::vector<std::string> rest;  // argv without the global flags
};

// Global flags may stand anywhere; they are taken out before the command parses its own.
Globals split_globals(int argc, char** argv) {
  Globals g;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto take = [&](const std::string& flag, std::string& into) {
      if (a == flag) {
        if (i + 1 >= argc) throw UsageError(flag + " needs a value");
        into = argv[++i];
        return true;
      }
      if (a.rfind(flag + "=", 0) == 0) {
        into = a.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    std::string v;
    if (take("--plugin-dir", v)) g.plugin_dirs.push_back(v);
    else if (take("--log-level", g.log_level)) {
    } else if (take("--threads", v)) {
      try {
        g.threads = std::stoi(v);
      } catch (...) {
        throw UsageError("--threads: expected an integer, got '" + v + "'");
      }
    } else {
      g.rest.push_back(a);
    }
  }
  return g;
}

// "sae-diff" is typed "sae diff": a command of two words is one plugin with a dash.
std::string display_command(const std::string& name) {
  if (name.rfind("sae-", 0) == 0) return "sae " + name.substr(4);
  return name;
}

void usage(std::ostream& out, const PluginRegistry& reg) {
  out << "usage: aquin [--plugin-dir DIR] [--threads N] [--log-level LEVEL] <command> [options]\n\n"
         "commands:\n";
  for (const auto& p : reg.plugins())
    if (p.kind == "analyzer") {
      const std::string shown = display_command(p.name);
      out << "  " << shown << std::string(shown.size() < 29 ? 29 - shown.size() : 1, ' ') << p.summary << "\n";
    }
  out << "  session start|show|list|use  the base model of a session\n"
         "  load sae SLUG|PATH [--layer L]  attach an SAE to the session (catalog/saes.json slugs, or a folder)\n"
         "  plugins                      list plugins found and refused\n"
         "  tools                        every agent tool with its JSON Schema\n"
         "  tool NAME [--input JSON]     run an agent tool (JSON input from --input or stdin)\n"
         "  --version                    versions, BLAS and threads\n\n"
         "`aquin <command> --help` describes a command's options.\n";
}

int cmd_version(const Globals& g) {
  int threads = configure_threads(g.threads);
  std::cout << "aquin " << AQUIN_VERSION << "\n"
            << "libtorch " << torch_version() << "\n"
            << "BLAS " << blas_in_use() << "\n"
            << "threads " << threads << "\n"
            << "plugin ABI " << AQUIN_PLUGIN_ABI_VERSION << " (" << AQUIN_BUILD_FINGERPRINT << ")\n";
  return kExitOk;
}

int cmd_plugins(const PluginRegistry& reg) {
  std::cout << "searched:\n";
  for (const auto& d : reg.searched()) std::cout << "  " << d.string() << (fs::is_directory(d) ? "" : "  (absent)") << "\n";
  std::cout << "\nplugins (" << reg.plugins().size() << "):\n";
  Table t;
  t.columns = {"kind", "name", "version", "tool", "file"};
  for (const auto& p : reg.plugins()) t.rows.push_back({p.kind, p.name, p.version, p.spec.tool, p.file.string()});
  render_table(std::cout, t);
  if (!reg.refused().empty()) {
    std::cout << "\nrefused (" << reg.refused().size() << "):\n";
    for (const auto& r : reg.refused()) std::cout << "  " << r.file.string() << ": " << r.reason << "\n";
  }
  return kExitOk;
}

int cmd_tools(const PluginRegistry& reg) {
  rapidjson::Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  rapidjson::Value arr(rapidjson::kArrayType);
  for (const auto& p : reg.plugins())
    if (p.kind == "analyzer") arr.PushBack(tool_schema(p.spec, a), a);
  json::put(d, "tools", std::move(arr), a);
  std::cout << json::to_text(d) << "\n";
  return kExitOk;
}

int cmd_session(const std::vector<std::string>& args, const PluginRegistry& reg) {
  if (args.empty() || args[0] == "--help") {
    std::cout << "usage: aquin session start --id ID --model SLUG|PATH\n"
                 "       aquin session show [--id ID]\n"
                 "       aquin session list\n"
                 "       aquin session use ID\n";
    return args.empty() ? kExitInput : kExitOk;
  }
  const std::string verb = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  auto opt = [](const std::string& name, bool required) {
    OptionSpec s;
    s.name = name;
    s.required = required;
    s.help = name;
    return s;
  };
  if (verb == "start") {
    Args a = parse_cli({opt("id", true), opt("model", true)}, rest);
    Session s;
    s.id = a.str("id");
    s.model = a.str("model");
    auto catalog = load_catalog();
    fs::path path = resolve_model_path(s.model, catalog);
    ModelInfo info = describe_model(s.model, path, reg, catalog);
    s.path = path.string();
    s.family = info.family;
    s.kind = info.kind;
    s.model_type = info.model_type;
    s.created = utc_now();
    save_session(s);
    std::cout << "session " << s.id << " started: base model " << s.model << " (" << info.model_type << ", "
              << info.kind << ", " << info.n_layers << " layers, d_model " << info.d_model << ")\n  weights: " << s.path
              << "\n";
    return kExitOk;
  }
  if (verb == "show") {
    Args a = parse_cli({opt("id", false)}, rest);
    Session s = load_session(a.opt_str("id").value_or(""));
    auto cur = current_session_id();
    std::cout << "session " << s.id << (cur && *cur == s.id ? " (current)" : "") << "\n"
              << "  model   " << s.model << "\n"
              << "  weights " << s.path << "\n"
              << "  family  " << s.family << " (" << s.model_type << ", " << s.kind << ")\n"
              << "  created " << s.created << "\n"
              << "  folder  " << s.dir.string() << "\n";
    if (s.sae)
      std::cout << "  sae     " << s.sae->source << " (" << s.sae->format << ", " << s.sae->architecture
                << (s.sae->k > 0 ? " k=" + std::to_string(s.sae->k) : "") << ", d_in " << s.sae->d_in << ", d_sae "
                << s.sae->d_sae << ") at " << s.sae->hook << ", layer " << s.sae->layer << "\n"
                << "          " << s.sae->path << "\n";
    else
      std::cout << "  sae     none (aquin load sae SLUG|PATH)\n";
    return kExitOk;
  }
  if (verb == "list") {
    auto cur = current_session_id();
    for (const auto& s : list_sessions())
      std::cout << (cur && *cur == s.id ? "* " : "  ") << s.id << "  " << s.model << "  (" << s.kind << ")\n";
    return kExitOk;
  }
  if (verb == "use") {
    if (rest.size() != 1) throw UsageError("usage: aquin session use ID");
    Session s = load_session(rest[0]);
    set_current_session(s.id);
    std::cout << "current session: " << s.id << "\n";
    return kExitOk;
  }
  throw UsageError("unknown session command '" + verb + "' (start, show, list, use)");
}

// The hooks a model kind offers SAEs (the model adapters' hook points, by pattern).
bool hook_offered(const ModelInfo& base, const std::string& hook) {
  const int64_t layer = hook_layer(hook);
  if (layer < 0 || layer >= base.n_layers) return false;
  const std::string rest = hook.substr(hook.find('.', 7) + 1);
  if (base.kind == "embedding") return rest == "hook_resid_post";
  return rest == "hook_resid_pre" || rest == "hook_resid_mid" || rest == "hook_resid_post";
}

int cmd_load(const std::vector<std::string>& args, const PluginRegistry& reg) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] != "sae") {
    std::cout << "usage: aquin load sae SLUG|PATH [--layer L] [--session ID]\n"
                 "  SLUG: a catalog/saes.json slug such as llama-3.2-1b-l8 or gte-small-l11, found in\n"
                 "        $AQUIN_SAES/<slug>/ or the Hugging Face cache; PATH: an SAE folder (SAELens, sparsify, aquin)\n";
    if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) return kExitOk;
    if (!args.empty()) throw UsageError("unknown `load` target '" + args[0] + "' (sae)");
    return kExitInput;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  std::string what;
  if (!rest.empty() && rest[0].rfind("--", 0) != 0) {
    what = rest[0];
    rest.erase(rest.begin());
  }
  OptionSpec layer_opt = make_option("layer", OptionType::Int, "L", "layer");
  OptionSpec session_opt = make_option("session", OptionType::String, "ID", "session");
  Args a = parse_cli({layer_opt, session_opt}, rest);
  if (what.empty()) throw UsageError("usage: aquin load sae SLUG|PATH [--layer L]");
  Session s = load_session(a.opt_str("session").value_or(""));
  ModelInfo base = describe_model(s.model, s.path, reg, load_catalog());
  const auto catalog = load_sae_catalog();
  std::optional<int64_t> layer;
  if (a.has("layer")) layer = a.integer("layer");
  if (auto m = match_sae_slug(what, catalog); m && !std::filesystem::exists(what)) {
    if (layer && m->layer >= 0 && *layer != m->layer)
      throw UsageError("--layer " + std::to_string(*layer) + " disagrees with slug " + what);
    if (!m->entry.model.empty() && m->entry.model != s.model)
      spdlog::warn("SAE {} was trained on {}; the session's model is {}", what, m->entry.model, s.model);
  }
  fs::path path = resolve_sae(what, catalog);
  if (!layer && Sae::layers_in(path).size() > 1) {
    const int64_t def = base.kind == "embedding" ? base.n_layers - 1 : base.default_sae_layer;
    if (def >= 0) {
      layer = def;
      std::cout << "--layer not given: using layer " << def << ", the default for " << s.model << "\n";
    }
  }
  Sae sae = Sae::load(path, layer);
  const SaeInfo& si = sae.info();
  if (si.d_in != base.d_model)
    throw InputError(si.path, "the SAE's d_in is " + std::to_string(si.d_in) + " but the session's model (" + s.model +
                                  ") has d_model " + std::to_string(base.d_model));
  if (!hook_offered(base, si.hook))
    throw InputError(si.path, "the SAE reads hook '" + si.hook + "', which the model (" + base.model_type + ", " +
                                  std::to_string(base.n_layers) + " layers) does not offer; it offers " +
                                  (base.kind == "embedding" ? "blocks.{L}.hook_resid_post"
                                                            : "blocks.{L}.hook_resid_pre, _mid, _post") +
                                  " (L = 0.." + std::to_string(base.n_layers - 1) + ")");
  SessionSae rec;
  rec.source = what;
  rec.path = si.path;
  rec.format = si.format;
  rec.architecture = si.architecture;
  rec.hook = si.hook;
  rec.layer = si.layer;
  rec.d_in = si.d_in;
  rec.d_sae = si.d_sae;
  rec.k = si.k;
  s.sae = rec;
  save_session(s);
  std::cout << "session " << s.id << ": SAE " << what << " loaded\n"
            << "  " << si.format << ", " << si.architecture << (si.k > 0 ? " k=" + std::to_string(si.k) : "") << ", d_in "
            << si.d_in << ", d_sae " << si.d_sae << ", hook " << si.hook << "\n"
            << "  encode: " << sae.encode_rule() << "\n"
            << "  folder: " << si.path << "\n";
  for (const auto& n : si.notes) std::cout << "  note: " << n << "\n";
  return kExitOk;
}

std::string default_label(const std::string& command, const Args& args) {
  if (auto n = args.opt_str("name")) return *n;
  if (auto ck = args.opt_str("checkpoint")) {
    fs::path p(*ck);
    std::string stem = p.filename().empty() ? p.parent_path().filename().string() : p.stem().string();
    if (!stem.empty()) return stem;
  }
  return command;
}

// The export: the common fields first, then the analyzer's own.
rapidjson::Document assemble_export(const PluginEntry& plugin, const RunContext& ctx, const Args& args, Result& r) {
  rapidjson::Document d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  json::put(d, "schema_version", rapidjson::Value(1), a);
  json::put(d, "card", json::str(r.card, a), a);
  json::put(d, "command", json::str(plugin.name, a), a);
  json::put(d, "tool", json::str(plugin.spec.tool, a), a);
  json::put(d, "name", json::str(default_label(plugin.name, args), a), a);
  json::put(d, "aquin_version", json::str(AQUIN_VERSION, a), a);
  if (plugin.spec.needs_base_model) {
    rapidjson::Value base(rapidjson::kObjectType);
    json::put(base, "model", json::str(ctx.base.model, a), a);
    json::put(base, "family", json::str(ctx.base.family, a), a);
    json::put(base, "kind", json::str(ctx.base.kind, a), a);
    json::put(base, "model_type", json::str(ctx.base.model_type, a), a);
    json::put(base, "path", json::str(ctx.base.path, a), a);
    json::put(base, "n_layers", rapidjson::Value(ctx.base.n_layers), a);
    json::put(base, "d_model", rapidjson::Value(ctx.base.d_model), a);
    json::put(d, "base", std::move(base), a);
  }
  if (!ctx.session_id.empty()) json::put(d, "session", json::str(ctx.session_id, a), a);
  for (auto it = r.doc.MemberBegin(); it != r.doc.MemberEnd(); ++it) {
    rapidjson::Value v(it->value, a);
    json::put(d, it->name.GetString(), std::move(v), a);
  }
  json::put(d, "warnings", json::str_array(r.warnings, a), a);
  return d;
}

fs::path export_path(const std::string& requested, const std::string& command, const std::string& label,
                     const RunContext& ctx) {
  std::string safe = label;
  for (auto& c : safe)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  const std::string file = command + "-" + safe + ".json";
  if (requested.empty()) {
    if (ctx.session_dir.empty()) throw UsageError("--save without a path needs a session (or give --save PATH)");
    return ctx.session_dir / "exports" / file;
  }
  std::error_code ec;
  if (fs::is_directory(requested, ec)) return fs::path(requested) / file;
  return requested;
}

// Routes an analyzer's model requests to the adapter plugin that claimed the base model.
class AdapterModelLoader final : public ModelLoader {
 public:
  AdapterModelLoader(const PluginRegistry& reg, const ModelInfo& base) : reg_(reg), base_(base) {}
  std::unique_ptr<LoadedModel> load(const Checkpoint* overlay) const override {
    for (const PluginEntry* a : reg_.adapters()) {
      if (a->name != base_.adapter) continue;
      std::unique_ptr<LoadedModel> out;
      Status st = a->adapter->load(base_, overlay, out);
      if (!st.ok()) {
        if (st.code == StatusCode::Internal) throw std::runtime_error("model adapter " + a->name + ": " + st.message);
        throw InputError(st.message);
      }
      return out;
    }
    throw InputError(base_.path, "no model-adapter plugin '" + base_.adapter + "' is loaded");
  }

 private:
  const PluginRegistry& reg_;
  ModelInfo base_;
};

// Runs an analyzer with parsed Args; prints text or JSON; saves. Returns the exit code.
int execute(const PluginEntry& plugin, const Args& args, bool json_out, const Globals& g, const PluginRegistry& reg) {
  // --output json prints the export; --output FILE.json writes it; progress never mixes with JSON.
  std::optional<fs::path> output_file;
  if (args.has("output")) {
    const std::string o = args.str("output");
    if (o != "text" && o != "json") {
      if (o.size() < 6 || o.compare(o.size() - 5, 5, ".json") != 0)
        throw UsageError("option --output: expected text, json, or a file name ending in .json, got '" + o + "'");
      output_file = o;
    }
  }
  set_progress_enabled(!json_out);
  RunContext ctx;
  ctx.command = plugin.name;
  ctx.threads = configure_threads(g.threads);
  std::optional<Session> session;
  std::unique_ptr<AdapterModelLoader> loader;
  // A command that declares --model may run without a session: the model named replaces the session's.
  const bool model_flag = args.has("model") && std::any_of(plugin.spec.options.begin(), plugin.spec.options.end(),
                                                           [](const OptionSpec& o) { return o.name == "model"; });
  // An optional session: the one named, else the current one if there is one.
  auto optional_session = [&] {
    auto id = args.opt_str("session");
    if (!id && !current_session_id()) return;
    try {
      session = load_session(id.value_or(""));
      ctx.session_id = session->id;
      ctx.session_dir = session->dir;
    } catch (const InputError&) {
      if (id) throw;
    }
  };
  if (plugin.spec.needs_base_model && model_flag) {
    const auto catalog = load_catalog();
    const std::string model = args.str("model");
    ctx.base = describe_model(model, resolve_model_path(model, catalog), reg, catalog);
    optional_session();
  } else if (plugin.spec.needs_base_model) {
    session = load_session(args.opt_str("session").value_or(""));
    ctx.session_id = session->id;
    ctx.session_dir = session->dir;
    ctx.base = describe_model(session->model, session->path, reg, load_catalog());
  } else {
    optional_session();
  }
  if (plugin.spec.needs_base_model) {
    loader = std::make_unique<AdapterModelLoader>(reg, ctx.base);
    ctx.models = loader.get();
  }
  // The session's SAE goes with it only when the session's own model is the base.
  if (session && session->sae && !(model_flag && args.str("model") != session->model)) {
    ctx.sae_path = session->sae->path;
    ctx.sae_layer = session->sae->layer;
  }
  // Resolve the export path before running, so a bad --save fails fast and nothing is half-written.
  std::optional<fs::path> save_to;
  if (args.has("save")) save_to = export_path(args.str("save"), plugin.name, default_label(plugin.name, args), ctx);

  Result result;
  Status st = plugin.analyzer->run(ctx, args, result);
  if (!st.ok()) {
    if (st.code == StatusCode::Input) throw InputError(st.message);
    if (st.code == StatusCode::Usage) throw UsageError(st.message);
    throw std::runtime_error(plugin.name + " failed: " + st.message);
  }
  rapidjson::Document doc = assemble_export(plugin, ctx, args, result);
  const std::string text = json::to_text(doc);
  if (save_to) write_file_atomic(*save_to, text + "\n");
  if (output_file) write_file_atomic(*output_file, text + "\n");
  if (json_out) {
    std::cout << text << "\n";
  } else {
    render_result(std::cout, display_command(plugin.name), result);
    if (save_to) std::cout << "\nexport saved: " << save_to->string() << "\n";
    if (output_file) std::cout << "\nexport written: " << output_file->string() << "\n";
  }
  if (session) {
    rapidjson::Document ev(rapidjson::kObjectType);
    auto& a = ev.GetAllocator();
    json::put(ev, "time", json::str(utc_now(), a), a);
    json::put(ev, "command", json::str(plugin.name, a), a);
    json::put(ev, "name", json::str(default_label(plugin.name, args), a), a);
    json::put(ev, "export", save_to ? json::str(save_to->string(), a) : rapidjson::Value(rapidjson::kNullType), a);
    json::put(ev, "exit_code", rapidjson::Value(result.exit_code), a);
    log_event(*session, json::to_text(ev, false));
  }
  return result.exit_code;
}

int cmd_tool(const std::vector<std::string>& args, const Globals& g, const PluginRegistry& reg) {
  if (args.empty()) throw UsageError("usage: aquin tool NAME [--input JSON]  (JSON on stdin when --input is absent)");
  const PluginEntry* p = reg.analyzer_by_tool(args[0]);
  if (p == nullptr) {
    std::string names;
    for (const auto& e : reg.plugins())
      if (e.kind == "analyzer") names += (names.empty() ? "" : ", ") + e.spec.tool;
    throw UsageError("unknown tool '" + args[0] + "' (available: " + names + ")");
  }
  std::string input;
  if (args.size() >= 3 && args[1] == "--input") input = args[2];
  else if (args.size() >= 2 && args[1].rfind("--input=", 0) == 0) input = args[1].substr(8);
  else if (args.size() == 1) input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  else throw UsageError("usage: aquin tool NAME [--input JSON]");
  auto doc = json::parse(input, "tool input");
  Args a = parse_tool_input(full_options(p->spec), doc);
  return execute(*p, a, /*json_out=*/true, g, reg);
}

}  // namespace

int run_app(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("aquin");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("aquin: %l: %v");
  try {
    Globals g = split_globals(argc, argv);
    spdlog::set_level(spdlog::level::from_str(g.log_level));
    if (!g.rest.empty() && (g.rest[0] == "--version" || g.rest[0] == "version")) return cmd_version(g);

    PluginRegistry reg;
    reg.discover(plugin_search_path(g.plugin_dirs));
    if (g.rest.empty() || g.rest[0] == "--help" || g.rest[0] == "-h" || g.rest[0] == "help") {
      usage(g.rest.empty() ? std::cerr : std::cout, reg);
      return g.rest.empty() ? kExitInput : kExitOk;
    }
    const std::string command = g.rest[0];
    std::vector<std::string> rest(g.rest.begin() + 1, g.rest.end());
    if (command == "plugins") return cmd_plugins(reg);
    if (command == "tools") return cmd_tools(reg);
    if (command == "tool") return cmd_tool(rest, g, reg);
    if (command == "session") return cmd_session(rest, reg);
    if (command == "load") return cmd_load(rest, reg);
    std::string name = command;
    // `aquin sae diff ...` runs the plugin "sae-diff".
    if (command == "sae") {
      if (rest.empty() || rest[0] == "--help" || rest[0] == "-h") {
        std::cout << "usage: aquin sae VERB [options]; verbs:";
        for (const auto& pl : reg.plugins())
          if (pl.kind == "analyzer" && pl.name.rfind("sae-", 0) == 0) std::cout << " " << pl.name.substr(4);
        std::cout << "\n";
        return rest.empty() ? kExitInput : kExitOk;
      }
      name = "sae-" + rest[0];
      rest.erase(rest.begin());
      if (reg.analyzer(name) == nullptr) throw UsageError("unknown command 'sae " + name.substr(4) + "'; `aquin sae --help` lists the verbs");
    }
    const PluginEntry* p = reg.analyzer(name);
    if (p == nullptr) {
      std::ostringstream msg;
      msg << "unknown command '" << command << "'";
      if (!reg.refused().empty()) msg << " (some plugins were refused: see `aquin plugins`)";
      throw UsageError(msg.str() + "; `aquin --help` lists the commands");
    }
    for (const auto& a : rest)
      if (a == "--help" || a == "-h") {
        std::cout << cli_help(display_command(name), p->spec);
        return kExitOk;
      }
    Args args = parse_cli(full_options(p->spec), rest);
    return execute(*p, args, args.str("output") == "json", g, reg);
  } catch (const InputError& e) {
    std::cerr << "aquin: error: " << e.what() << "\n";
    return kExitInput;
  } catch (const UsageError& e) {
    std::cerr << "aquin: error: " << e.what() << "\n";
    return kExitInput;
  } catch (const std::exception& e) {
    std::cerr << "aquin: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
}

}  // namespace aquin::host
