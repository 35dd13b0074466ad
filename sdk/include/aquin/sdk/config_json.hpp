// Typed reads of a Hugging Face config.json, with errors that name the field.
#pragma once

#include <rapidjson/document.h>

#include <boost/config.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace aquin::config {

/// config[key] as an integer; throws InputError("config.json: ...") when absent and no fallback.
BOOST_SYMBOL_VISIBLE int64_t get_int(const rapidjson::Value& cfg, const char* key,
                                     std::optional<int64_t> fallback = std::nullopt);
BOOST_SYMBOL_VISIBLE double get_double(const rapidjson::Value& cfg, const char* key,
                                       std::optional<double> fallback = std::nullopt);
BOOST_SYMBOL_VISIBLE bool get_bool(const rapidjson::Value& cfg, const char* key, bool fallback);
BOOST_SYMBOL_VISIBLE std::string get_string(const rapidjson::Value& cfg, const char* key,
                                            const std::string& fallback = "");

}  // namespace aquin::config
