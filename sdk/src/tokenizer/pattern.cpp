#include "tokenizer/pattern.hpp"

namespace aquin::tok {

Pattern Pattern::from_json(const Section& section, const char* key) {
  const rapidjson::Value* v = section.get(key);
  if (v == nullptr || !v->IsObject()) section.fail(std::string("\"") + key + "\" must be {\"String\": ...} or {\"Regex\": ...}");
  Section p = section.nested(*v, std::string(".") + key);
  if (auto s = p.opt_str("String")) return literal(*s);
  if (auto r = p.opt_str("Regex")) return regex(*r, p.file() + ": " + p.where());
  p.fail("must be {\"String\": ...} or {\"Regex\": ...}");
}

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

Pattern Pattern::regex(const std::string& pattern, const std::string& what) {
  Pattern p;
  p.regex_ = std::make_shared<const Regex>(pattern, what);
  return p;
}

void Pattern::find_all(std::string_view text, std::vector<Span>& out) const {
  if (regex_) {
    regex_->find_all(text, out);
    return;
  }
  if (literal_.empty()) return;
  for (std::size_t pos = text.find(literal_); pos != std::string_view::npos; pos = text.find(literal_, pos)) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

std::string Pattern::replace_all(std::string_view text, std::string_view with) const {
  std::vector<Span> spans;
  find_all(text, spans);
  if (spans.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  std::size_t prev = 0;
  for (const Span& s : spans) {
    out.append(text.substr(prev, s.first - prev));
    out.append(with);
    prev = s.second;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace aquin::tok
