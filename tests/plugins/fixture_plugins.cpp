// Fixture plugins for the registry tests. One source, compiled once per case with
// AQUIN_FIXTURE_CASE selecting what the plugin gets wrong.
#include <aquin/sdk/plugin.hpp>

#include <stdexcept>

namespace {

using namespace aquin;

constexpr int kCreateThrows = 3, kRunThrows = 4, kRunInputError = 5;

// An analyzer that needs no model: echoes its options into the result.
class Echo {
 public:
  Echo() {
    if (AQUIN_FIXTURE_CASE == kCreateThrows) throw std::runtime_error("fixture refuses to be created");
  }
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = TOOL_NAME;
    s.description = "fixture analyzer for tests";
    s.needs_base_model = false;
    OptionSpec text;
    text.name = "text";
    text.help = "text to echo";
    text.required = true;
    OptionSpec times;
    times.name = "times";
    times.type = OptionType::Int;
    times.default_value = "1";
    times.help = "how many times";
    s.options = {text, times};
    return s;
  }
  Result run(const RunContext&, const Args& args) {
    if (AQUIN_FIXTURE_CASE == kRunThrows) throw std::logic_error("fixture bug in run");
    if (AQUIN_FIXTURE_CASE == kRunInputError) throw InputError("fixture.txt", "bad fixture input");
    Result r;
    r.card = "echo";
    std::string out;
    for (int64_t i = 0; i < args.integer("times"); ++i) out += args.str("text");
    auto& a = r.doc.GetAllocator();
    r.doc.AddMember("echo", rapidjson::Value(out.c_str(), a), a);
    r.headline.push_back(out);
    return r;
  }
};

}  // namespace

#if AQUIN_FIXTURE_CASE == 1
extern "C" BOOST_SYMBOL_EXPORT const aquin_plugin_descriptor* aquin_plugin_entry() {
  static const aquin_plugin_descriptor d = {99, sizeof(aquin_plugin_descriptor), AQUIN_BUILD_FINGERPRINT,
                                            AQUIN_PLUGIN_ANALYZER, PLUGIN_NAME, "0", "bad abi",
                                            &detail::create_object<AnalyzerApi, detail::AnalyzerShim<Echo>>,
                                            &detail::destroy_object<AnalyzerApi>};
  return &d;
}
#elif AQUIN_FIXTURE_CASE == 2
extern "C" BOOST_SYMBOL_EXPORT int not_an_aquin_entry() { return 42; }
#else
AQUIN_ANALYZER_PLUGIN(Echo, PLUGIN_NAME, "0.0.1", "fixture analyzer")
#endif
