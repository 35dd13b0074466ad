// One declaration of a command's options drives the CLI parser, `--help`, the agent tool's JSON
// Schema and the typed Args the analyzer receives (DESIGN.md §3).
#pragma once

#include <boost/config.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace aquin {

enum class OptionType { String, Path, Int, Float, Bool, StringList };

/// "string", "path", "integer", "number", "boolean", "array"
BOOST_SYMBOL_VISIBLE const char* option_type_name(OptionType t);

/// One option of a command. `name` is both the CLI flag (--name, dashes allowed) and the tool
/// field (dashes become underscores in the JSON Schema).
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::String;
  std::string help;                           ///< one sentence, shown in --help and the schema
  bool required = false;
  std::optional<std::string> default_value;   ///< textual, parsed by `type`
  std::vector<std::string> choices;           ///< allowed values (String only); empty: any
  std::string value_name;                     ///< placeholder in --help, e.g. "PATH"
  std::optional<std::string> implicit_value;  ///< value when the flag is given without one
  bool cli_only = false;                      ///< not part of the agent tool (e.g. --output)
};

/// An option in one expression, e.g. make_option("top", OptionType::Int, "N", "matrices listed", "5").
inline OptionSpec make_option(std::string name, OptionType type, std::string value_name, std::string help,
                              std::optional<std::string> default_value = std::nullopt) {
  OptionSpec o;
  o.name = std::move(name);
  o.type = type;
  o.value_name = std::move(value_name);
  o.help = std::move(help);
  o.default_value = std::move(default_value);
  return o;
}

/// A required option (no default).
inline OptionSpec required_option(std::string name, OptionType type, std::string value_name, std::string help) {
  OptionSpec o = make_option(std::move(name), type, std::move(value_name), std::move(help));
  o.required = true;
  return o;
}

/// A boolean flag (false when absent).
inline OptionSpec flag_option(std::string name, std::string help) {
  return make_option(std::move(name), OptionType::Bool, "", std::move(help));
}

/// A string option restricted to `choices`.
inline OptionSpec choice_option(std::string name, std::vector<std::string> choices, std::string help,
                                std::optional<std::string> default_value = std::nullopt) {
  OptionSpec o = make_option(std::move(name), OptionType::String, "", std::move(help), std::move(default_value));
  o.choices = std::move(choices);
  return o;
}

using OptionValue = std::variant<std::monostate, std::string, int64_t, double, bool, std::vector<std::string>>;

/// Typed, validated option values. Accessors throw UsageError when a required value is absent.
class BOOST_SYMBOL_VISIBLE Args {
 public:
  void set(const std::string& name, OptionValue v) { values_[name] = std::move(v); }
  bool has(const std::string& name) const;
  std::string str(const std::string& name) const;
  std::optional<std::string> opt_str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;  ///< false when absent
  std::vector<std::string> list(const std::string& name) const;
  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  std::map<std::string, OptionValue> values_;
};

/// Checks one command's option table: unique names, help on every option, defaults and choices
/// valid for their type. Returns the problems found (empty when sound).
BOOST_SYMBOL_VISIBLE std::vector<std::string> validate_option_table(const std::vector<OptionSpec>& specs);

/// Parses `text` as a value of `spec`'s type. Throws UsageError naming the option.
BOOST_SYMBOL_VISIBLE OptionValue parse_option_text(const OptionSpec& spec, const std::string& text);

}  // namespace aquin
