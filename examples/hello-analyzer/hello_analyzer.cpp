// `aquin hello`: counts a checkpoint's tensors by canonical kind. A complete analyzer plugin in one
// file, using only the installed SDK.
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/names.hpp>
#include <aquin/sdk/plugin.hpp>

#include <map>

namespace {

using namespace aquin;

class Hello {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_hello";
    s.description = "Count a checkpoint's tensors by kind (an example third-party analyzer).";
    OptionSpec ck;
    ck.name = "checkpoint";
    ck.type = OptionType::Path;
    ck.required = true;
    ck.value_name = "PATH";
    ck.help = "checkpoint to inspect";
    s.options = {ck};
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    Checkpoint ck = open_checkpoint(args.str("checkpoint"));
    std::map<std::string, int> kinds;
    for (const auto& t : ck.tensors->tensors())
      if (auto c = canonicalize(ctx.base.family, t.name)) kinds[kind_name(c->kind)]++;
    Result r;
    r.card = "hello";
    auto& a = r.doc.GetAllocator();
    rapidjson::Value counts(rapidjson::kObjectType);
    Table t;
    t.title = "Tensors by kind in " + ck.path.string();
    t.columns = {"kind", "count"};
    for (const auto& [k, n] : kinds) {
      json::put(counts, k, rapidjson::Value(n), a);
      t.rows.push_back({k, std::to_string(n)});
    }
    json::put(r.doc, "kinds", std::move(counts), a);
    r.tables.push_back(t);
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(Hello, "hello", "1.0.0", "count a checkpoint's tensors by kind (example plugin)")
