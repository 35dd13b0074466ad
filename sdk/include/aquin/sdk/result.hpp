// What an analyzer returns: the export document's command-specific fields and a terminal view.
// The host adds the common fields (schema_version, command, tool, name, base, warnings) and
// renders, prints, saves: an analyzer never prints.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <vector>

namespace aquin {

/// A table for the terminal. Cells are preformatted text; numeric columns are right-aligned.
struct Table {
  std::string title;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> notes;  ///< printed under the table
};

struct Result {
  std::string card;  ///< the web view card, e.g. "weightDiff"
  /// Command-specific export fields (an object), e.g. checkpoint, summary, matrices.
  rapidjson::Document doc{rapidjson::kObjectType};
  std::vector<std::string> warnings;
  std::vector<std::string> headline;  ///< a few lines printed above the tables
  std::vector<Table> tables;
  int exit_code = 0;  ///< 0, or 2 for a failed merge verdict
};

}  // namespace aquin
