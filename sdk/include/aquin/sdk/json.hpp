// Small helpers over RapidJSON for building export documents. NaN and Inf have no JSON
// spelling: they are written as null (the export's warnings say why a figure is missing).
#pragma once

#include <rapidjson/document.h>

#include <boost/config.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace aquin::json {

using Alloc = rapidjson::Document::AllocatorType;

BOOST_SYMBOL_VISIBLE rapidjson::Value str(const std::string& s, Alloc& a);
BOOST_SYMBOL_VISIBLE rapidjson::Value num(double v);  ///< null for NaN/Inf
BOOST_SYMBOL_VISIBLE rapidjson::Value opt_int(const std::optional<int64_t>& v);
BOOST_SYMBOL_VISIBLE rapidjson::Value int_array(const std::vector<int64_t>& v, Alloc& a);
BOOST_SYMBOL_VISIBLE rapidjson::Value str_array(const std::vector<std::string>& v, Alloc& a);

/// obj[key] = v (key copied).
BOOST_SYMBOL_VISIBLE void put(rapidjson::Value& obj, const std::string& key, rapidjson::Value v, Alloc& a);

/// Serialises with 2-space indentation (pretty) or compactly.
BOOST_SYMBOL_VISIBLE std::string to_text(const rapidjson::Value& v, bool pretty = true);

/// Parses `text`; throws InputError("<what>: ...") with the offset on a syntax error.
BOOST_SYMBOL_VISIBLE rapidjson::Document parse(const std::string& text, const std::string& what);

}  // namespace aquin::json

namespace aquin {
/// A number for a terminal table: `digits` significant digits, "-" for NaN.
BOOST_SYMBOL_VISIBLE std::string fmt_num(double v, int digits = 4);
}  // namespace aquin
