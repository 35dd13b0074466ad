#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/options.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

namespace aquin {

const char* option_type_name(OptionType t) {
  switch (t) {
    case OptionType::String: return "string";
    case OptionType::Path: return "path";
    case OptionType::Int: return "integer";
    case OptionType::Float: return "number";
    case OptionType::Bool: return "boolean";
    case OptionType::StringList: return "array";
  }
  return "?";
}

bool Args::has(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() && !std::holds_alternative<std::monostate>(it->second);
}

namespace {
template <class T>
const T& get(const std::map<std::string, OptionValue>& values, const std::string& name, const char* what) {
  auto it = values.find(name);
  if (it == values.end() || std::holds_alternative<std::monostate>(it->second))
    throw UsageError("missing required option --" + name);
  if (!std::holds_alternative<T>(it->second))
    throw UsageError("option --" + name + " is not " + what);
  return std::get<T>(it->second);
}
}  // namespace

std::string Args::str(const std::string& name) const { return get<std::string>(values_, name, "a string"); }

std::optional<std::string> Args::opt_str(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  return str(name);
}

int64_t Args::integer(const std::string& name) const { return get<int64_t>(values_, name, "an integer"); }

double Args::number(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end() && std::holds_alternative<int64_t>(it->second))
    return static_cast<double>(std::get<int64_t>(it->second));
  return get<double>(values_, name, "a number");
}

bool Args::flag(const std::string& name) const {
  if (!has(name)) return false;
  return get<bool>(values_, name, "a boolean");
}

std::vector<std::string> Args::list(const std::string& name) const {
  if (!has(name)) return {};
  return get<std::vector<std::string>>(values_, name, "a list");
}

OptionValue parse_option_text(const OptionSpec& spec, const std::string& text) {
  auto bad = [&](const std::string& expected) -> UsageError {
    return UsageError("option --" + spec.name + ": expected " + expected + ", got '" + text + "'");
  };
  switch (spec.type) {
    case OptionType::String:
    case OptionType::Path: {
      if (!spec.choices.empty()) {
        bool ok = false;
        std::string all;
        for (const auto& c : spec.choices) {
          ok = ok || c == text;
          all += (all.empty() ? "" : ", ") + c;
        }
        if (!ok) throw bad("one of " + all);
      }
      return text;
    }
    case OptionType::Int: {
      errno = 0;
      char* end = nullptr;
      long long v = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE) throw bad("an integer");
      return static_cast<int64_t>(v);
    }
    case OptionType::Float: {
      errno = 0;
      char* end = nullptr;
      double v = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) throw bad("a finite number");
      return v;
    }
    case OptionType::Bool: {
      if (text == "true" || text == "1" || text == "yes") return true;
      if (text == "false" || text == "0" || text == "no") return false;
      throw bad("true or false");
    }
    case OptionType::StringList:
      return std::vector<std::string>{text};
  }
  throw bad("a value");
}

std::vector<std::string> validate_option_table(const std::vector<OptionSpec>& specs) {
  std::vector<std::string> problems;
  std::set<std::string> names;
  for (const auto& s : specs) {
    if (s.name.empty()) problems.push_back("an option has no name");
    std::string tool_name = s.name;
    for (auto& c : tool_name) c = c == '-' ? '_' : c;
    if (!names.insert(tool_name).second) problems.push_back("duplicate option '" + s.name + "'");
    if (s.help.empty()) problems.push_back("option '" + s.name + "' has no help");
    if (s.required && s.default_value) problems.push_back("option '" + s.name + "' is required but has a default");
    if (!s.choices.empty() && s.type != OptionType::String)
      problems.push_back("option '" + s.name + "' has choices but is not a string");
    for (const auto* v : {&s.default_value, &s.implicit_value}) {
      if (!*v) continue;
      try {
        parse_option_text(s, **v);
      } catch (const UsageError& e) {
        problems.push_back(std::string("option '") + s.name + "' default invalid: " + e.what());
      }
    }
  }
  return problems;
}

}  // namespace aquin
