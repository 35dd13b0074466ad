#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstdio>

namespace aquin::json {

rapidjson::Value str(const std::string& s, Alloc& a) {
  return rapidjson::Value(s.c_str(), static_cast<rapidjson::SizeType>(s.size()), a);
}

rapidjson::Value num(double v) {
  if (!std::isfinite(v)) return rapidjson::Value(rapidjson::kNullType);
  return rapidjson::Value(v);
}

rapidjson::Value opt_int(const std::optional<int64_t>& v) {
  if (!v) return rapidjson::Value(rapidjson::kNullType);
  return rapidjson::Value(static_cast<int64_t>(*v));
}

rapidjson::Value int_array(const std::vector<int64_t>& v, Alloc& a) {
  rapidjson::Value arr(rapidjson::kArrayType);
  for (int64_t x : v) arr.PushBack(rapidjson::Value(x), a);
  return arr;
}

rapidjson::Value str_array(const std::vector<std::string>& v, Alloc& a) {
  rapidjson::Value arr(rapidjson::kArrayType);
  for (const auto& x : v) arr.PushBack(str(x, a), a);
  return arr;
}

void put(rapidjson::Value& obj, const std::string& key, rapidjson::Value v, Alloc& a) {
  auto it = obj.FindMember(key.c_str());
  if (it != obj.MemberEnd()) {
    it->value = std::move(v);
    return;
  }
  obj.AddMember(str(key, a), v, a);
}

std::string to_text(const rapidjson::Value& v, bool pretty) {
  rapidjson::StringBuffer sb;
  if (pretty) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
    w.SetIndent(' ', 2);
    v.Accept(w);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    v.Accept(w);
  }
  return std::string(sb.GetString(), sb.GetSize());
}

rapidjson::Document parse(const std::string& text, const std::string& what) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError())
    throw InputError(what, std::string("invalid JSON at offset ") + std::to_string(d.GetErrorOffset()) + ": " +
                               rapidjson::GetParseError_En(d.GetParseError()));
  return d;
}

}  // namespace aquin::json

namespace aquin {
std::string fmt_num(double v, int digits) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}
}  // namespace aquin
