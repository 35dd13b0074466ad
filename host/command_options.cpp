#include "command_options.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <boost/program_options.hpp>

#include <cmath>
#include <set>
#include <sstream>

namespace aquin::host {

namespace po = boost::program_options;

std::string field_name(const std::string& option) {
  std::string s = option;
  for (auto& c : s) c = c == '-' ? '_' : c;
  return s;
}

std::vector<OptionSpec> common_options() {
  OptionSpec name;
  name.name = "name";
  name.value_name = "LABEL";
  name.help = "label of this run, recorded in the export and used in the default export file name";
  OptionSpec save;
  save.name = "save";
  save.value_name = "PATH";
  save.implicit_value = "";
  save.help = "write the JSON export atomically to PATH (default: the session's exports folder)";
  OptionSpec output;
  output.name = "output";
  output.default_value = "text";
  output.value_name = "text|json|FILE.json";
  output.cli_only = true;
  output.help = "readable tables (text), the JSON export on stdout (json), or the export written atomically to FILE.json";
  OptionSpec session;
  session.name = "session";
  session.value_name = "ID";
  session.help = "session to use instead of the current one";
  return {name, save, output, session};
}

std::vector<OptionSpec> full_options(const CommandSpec& spec) {
  std::vector<OptionSpec> all = spec.options;
  for (auto& c : common_options()) all.push_back(c);
  return all;
}

Args parse_cli(const std::vector<OptionSpec>& specs, const std::vector<std::string>& argv) {
  po::options_description desc;
  for (const auto& s : specs) {
    if (s.type == OptionType::Bool) {
      desc.add_options()(s.name.c_str(), po::value<std::string>()->implicit_value("true")->zero_tokens(), s.help.c_str());
    } else if (s.type == OptionType::StringList) {
      desc.add_options()(s.name.c_str(), po::value<std::vector<std::string>>()->multitoken(), s.help.c_str());
    } else if (s.implicit_value) {
      desc.add_options()(s.name.c_str(), po::value<std::string>()->implicit_value(*s.implicit_value), s.help.c_str());
    } else {
      desc.add_options()(s.name.c_str(), po::value<std::string>(), s.help.c_str());
    }
  }
  po::variables_map vm;
  try {
    auto parsed = po::command_line_parser(argv).options(desc).style(po::command_line_style::unix_style ^
                                                                    po::command_line_style::allow_guessing).run();
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  Args args;
  for (const auto& s : specs) {
    if (!vm.count(s.name)) {
      if (s.required) throw UsageError("missing required option --" + s.name + " (" + s.help + ")");
      if (s.default_value) args.set(s.name, parse_option_text(s, *s.default_value));
      continue;
    }
    if (s.type == OptionType::StringList) {
      args.set(s.name, vm[s.name].as<std::vector<std::string>>());
    } else {
      args.set(s.name, parse_option_text(s, vm[s.name].as<std::string>()));
    }
  }
  return args;
}

std::string cli_help(const std::string& command, const CommandSpec& spec) {
  std::ostringstream out;
  out << "usage: aquin " << command;
  auto all = full_options(spec);
  for (const auto& s : spec.options)
    if (s.required) out << " --" << s.name << " " << (s.value_name.empty() ? "VALUE" : s.value_name);
  out << " [options]\n\n" << spec.description << "\n\noptions:\n";
  for (const auto& s : all) {
    std::string flag = "  --" + s.name;
    if (s.type != OptionType::Bool) {
      std::string v = s.value_name.empty() ? std::string(option_type_name(s.type)) : s.value_name;
      if (!s.choices.empty()) {
        v.clear();
        for (const auto& c : s.choices) v += (v.empty() ? "" : "|") + c;
      }
      flag += s.implicit_value ? " [" + v + "]" : " " + v;
    }
    out << flag;
    if (flag.size() < 30) out << std::string(30 - flag.size(), ' ');
    else out << "\n" << std::string(30, ' ');
    out << s.help;
    if (s.required) out << " (required)";
    if (s.default_value && !s.default_value->empty()) out << " (default: " << *s.default_value << ")";
    out << "\n";
  }
  out << "\nagent tool: " << spec.tool << " (see `aquin tools`)\n";
  return out.str();
}

rapidjson::Value tool_schema(const CommandSpec& spec, rapidjson::Document::AllocatorType& a) {
  using json::put;
  using json::str;
  rapidjson::Value props(rapidjson::kObjectType);
  rapidjson::Value required(rapidjson::kArrayType);
  for (const auto& s : full_options(spec)) {
    if (s.cli_only) continue;
    rapidjson::Value p(rapidjson::kObjectType);
    switch (s.type) {
      case OptionType::String:
      case OptionType::Path: put(p, "type", str("string", a), a); break;
      case OptionType::Int: put(p, "type", str("integer", a), a); break;
      case OptionType::Float: put(p, "type", str("number", a), a); break;
      case OptionType::Bool: put(p, "type", str("boolean", a), a); break;
      case OptionType::StringList: {
        put(p, "type", str("array", a), a);
        rapidjson::Value items(rapidjson::kObjectType);
        put(items, "type", str("string", a), a);
        put(p, "items", std::move(items), a);
        break;
      }
    }
    std::string desc = s.help;
    if (s.type == OptionType::Path) desc += " (a file-system path)";
    if (s.implicit_value) desc += " (empty string: the default location)";
    put(p, "description", str(desc, a), a);
    if (!s.choices.empty()) put(p, "enum", json::str_array(s.choices, a), a);
    if (s.default_value) {
      OptionValue v = parse_option_text(s, *s.default_value);
      if (auto* d = std::get_if<double>(&v)) put(p, "default", rapidjson::Value(*d), a);
      else if (auto* i = std::get_if<int64_t>(&v)) put(p, "default", rapidjson::Value(*i), a);
      else if (auto* b = std::get_if<bool>(&v)) put(p, "default", rapidjson::Value(*b), a);
      else if (auto* t = std::get_if<std::string>(&v)) put(p, "default", str(*t, a), a);
    }
    put(props, field_name(s.name), std::move(p), a);
    if (s.required) required.PushBack(str(field_name(s.name), a), a);
  }
  rapidjson::Value schema(rapidjson::kObjectType);
  put(schema, "type", str("object", a), a);
  put(schema, "properties", std::move(props), a);
  put(schema, "required", std::move(required), a);
  put(schema, "additionalProperties", rapidjson::Value(false), a);
  rapidjson::Value tool(rapidjson::kObjectType);
  put(tool, "name", str(spec.tool, a), a);
  put(tool, "description", str(spec.description, a), a);
  put(tool, "input_schema", std::move(schema), a);
  return tool;
}

namespace {
const char* json_type(const rapidjson::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "boolean";
  if (v.IsInt64()) return "integer";
  if (v.IsNumber()) return "number";
  if (v.IsString()) return "string";
  if (v.IsArray()) return "array";
  return "object";
}
}  // namespace

Args parse_tool_input(const std::vector<OptionSpec>& specs, const rapidjson::Value& input) {
  if (!input.IsObject()) throw UsageError(std::string("tool input: expected a JSON object, got ") + json_type(input));
  std::set<std::string> known;
  for (const auto& s : specs)
    if (!s.cli_only) known.insert(field_name(s.name));
  for (auto it = input.MemberBegin(); it != input.MemberEnd(); ++it) {
    std::string f = it->name.GetString();
    if (!known.count(f)) {
      std::string all;
      for (const auto& k : known) all += (all.empty() ? "" : ", ") + k;
      throw UsageError("field '" + f + "': unknown field (expected one of: " + all + ")");
    }
  }
  Args args;
  for (const auto& s : specs) {
    if (s.cli_only) {
      if (s.default_value) args.set(s.name, parse_option_text(s, *s.default_value));
      continue;
    }
    const std::string f = field_name(s.name);
    auto it = input.FindMember(f.c_str());
    if (it == input.MemberEnd() || it->value.IsNull()) {
      if (s.required) throw UsageError("field '" + f + "': required (" + option_type_name(s.type) + ": " + s.help + ")");
      if (s.default_value) args.set(s.name, parse_option_text(s, *s.default_value));
      continue;
    }
    const auto& v = it->value;
    auto expect = [&](const char* what) -> UsageError {
      return UsageError("field '" + f + "': expected " + what + ", got " + json_type(v));
    };
    switch (s.type) {
      case OptionType::String:
      case OptionType::Path:
        if (!v.IsString()) throw expect("a string");
        if (std::string(v.GetString()).empty() && !s.implicit_value && s.type == OptionType::Path)
          throw UsageError("field '" + f + "': expected a non-empty path");
        if (std::string(v.GetString()).empty() && s.implicit_value) args.set(s.name, *s.implicit_value);
        else args.set(s.name, parse_option_text(s, v.GetString()));
        break;
      case OptionType::Int:
        if (!v.IsInt64()) throw expect("an integer");
        args.set(s.name, v.GetInt64());
        break;
      case OptionType::Float:
        if (!v.IsNumber()) throw expect("a number");
        args.set(s.name, v.GetDouble());
        break;
      case OptionType::Bool:
        if (!v.IsBool()) throw expect("a boolean");
        args.set(s.name, v.GetBool());
        break;
      case OptionType::StringList: {
        if (!v.IsArray()) throw expect("an array of strings");
        std::vector<std::string> items;
        for (const auto& x : v.GetArray()) {
          if (!x.IsString()) throw UsageError("field '" + f + "': expected an array of strings, found " + json_type(x));
          items.emplace_back(x.GetString());
        }
        args.set(s.name, items);
        break;
      }
    }
  }
  return args;
}

}  // namespace aquin::host
