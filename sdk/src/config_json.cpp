#include <aquin/sdk/config_json.hpp>
#include <aquin/sdk/errors.hpp>

namespace aquin::config {

int64_t get_int(const rapidjson::Value& cfg, const char* key, std::optional<int64_t> fallback) {
  auto it = cfg.FindMember(key);
  if (it == cfg.MemberEnd() || it->value.IsNull()) {
    if (fallback) return *fallback;
    throw InputError("config.json", std::string("missing \"") + key + "\"");
  }
  if (!it->value.IsInt64()) throw InputError("config.json", std::string("\"") + key + "\" is not an integer");
  return it->value.GetInt64();
}

double get_double(const rapidjson::Value& cfg, const char* key, std::optional<double> fallback) {
  auto it = cfg.FindMember(key);
  if (it == cfg.MemberEnd() || it->value.IsNull()) {
    if (fallback) return *fallback;
    throw InputError("config.json", std::string("missing \"") + key + "\"");
  }
  if (!it->value.IsNumber()) throw InputError("config.json", std::string("\"") + key + "\" is not a number");
  return it->value.GetDouble();
}

bool get_bool(const rapidjson::Value& cfg, const char* key, bool fallback) {
  auto it = cfg.FindMember(key);
  if (it == cfg.MemberEnd() || !it->value.IsBool()) return fallback;
  return it->value.GetBool();
}

std::string get_string(const rapidjson::Value& cfg, const char* key, const std::string& fallback) {
  auto it = cfg.FindMember(key);
  if (it == cfg.MemberEnd() || !it->value.IsString()) return fallback;
  return it->value.GetString();
}

}  // namespace aquin::config
