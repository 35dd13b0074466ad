// Turns a command's option table into a CLI parser, --help text, a tool JSON Schema and a
// validator for tool input: one declaration, four uses.
#pragma once

#include <aquin/sdk/analyzer.hpp>

#include <rapidjson/document.h>

#include <string>
#include <vector>

namespace aquin::host {

/// Options every command has, added by the host: name, save, output, session.
std::vector<OptionSpec> common_options();

/// The full table of a command: its own options followed by the common ones.
std::vector<OptionSpec> full_options(const CommandSpec& spec);

/// Parses argv (after the command word) into Args. Throws UsageError with the flag's name.
Args parse_cli(const std::vector<OptionSpec>& specs, const std::vector<std::string>& argv);

/// `aquin <command> --help`.
std::string cli_help(const std::string& command, const CommandSpec& spec);

/// {"name", "description", "input_schema": JSON Schema} for the agent tool.
rapidjson::Value tool_schema(const CommandSpec& spec, rapidjson::Document::AllocatorType& a);

/// Validates a tool's JSON input and converts it to Args. Errors name the field and what was expected.
Args parse_tool_input(const std::vector<OptionSpec>& specs, const rapidjson::Value& input);

/// "spectral-tol" -> "spectral_tol"
std::string field_name(const std::string& option);

}  // namespace aquin::host
