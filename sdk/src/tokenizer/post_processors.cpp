#include "tokenizer/post_processors.hpp"

#include <algorithm>
#include <map>

namespace aquin::tok {

namespace {

class Template : public PostProcessor {
 public:
  Template(std::vector<int32_t> before, std::vector<int32_t> after) : before_(std::move(before)), after_(std::move(after)) {}
  std::size_t added_count() const override { return before_.size() + after_.size(); }
  void apply(std::vector<int32_t>& ids, std::vector<uint8_t>& special) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + added_count());
    out.insert(out.end(), before_.begin(), before_.end());
    out.insert(out.end(), ids.begin(), ids.end());
    out.insert(out.end(), after_.begin(), after_.end());
    special.assign(out.size(), 0);
    std::fill(special.begin(), special.begin() + static_cast<std::ptrdiff_t>(before_.size()), 1);
    std::fill(special.end() - static_cast<std::ptrdiff_t>(after_.size()), special.end(), 1);
    ids.swap(out);
  }
  std::vector<int32_t> leading_ids() const override { return before_; }
  std::vector<int32_t> trailing_ids() const override { return after_; }

 private:
  std::vector<int32_t> before_, after_;
};

class SequencePost : public PostProcessor {
 public:
  explicit SequencePost(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  std::size_t added_count() const override {
    std::size_t n = 0;
    for (const auto& p : parts_) n += p->added_count();
    return n;
  }
  void apply(std::vector<int32_t>& ids, std::vector<uint8_t>& special) const override {
    // Each stage sees the previous stage's ids; the marks of earlier stages move with them.
    std::vector<uint8_t> marks(ids.size(), 0);
    for (const auto& p : parts_) {
      std::vector<uint8_t> stage;
      std::size_t lead = p->leading_ids().size(), before = ids.size();
      p->apply(ids, stage);
      std::vector<uint8_t> merged = stage;
      for (std::size_t i = 0; i < before; ++i) merged[lead + i] = marks[i] | stage[lead + i];
      marks.swap(merged);
    }
    special = marks;
  }
  std::vector<int32_t> leading_ids() const override {
    std::vector<int32_t> out;
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) {
      auto ids = (*it)->leading_ids();
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }
  std::vector<int32_t> trailing_ids() const override {
    std::vector<int32_t> out;
    for (const auto& p : parts_) {
      auto ids = p->trailing_ids();
      out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// ["[SEP]", 102] as BertProcessing and RobertaProcessing store their tokens.
int32_t token_pair_id(const Section& s, const char* key) {
  const rapidjson::Value* v = s.get(key);
  if (v == nullptr || !v->IsArray() || v->Size() != 2 || !(*v)[1].IsInt())
    s.fail(std::string("\"") + key + "\" must be [token, id]");
  return (*v)[1].GetInt();
}

std::unique_ptr<PostProcessor> read_template(const Section& s) {
  // special_tokens: {"[CLS]": {"id": "[CLS]", "ids": [101], "tokens": ["[CLS]"]}, ...}
  std::map<std::string, std::vector<int32_t>> specials;
  if (const rapidjson::Value* sp = s.get("special_tokens")) {
    if (!sp->IsObject()) s.fail("\"special_tokens\" is not an object");
    for (auto it = sp->MemberBegin(); it != sp->MemberEnd(); ++it) {
      Section entry = s.nested(it->value, std::string(".special_tokens.") + it->name.GetString());
      const rapidjson::Value* ids = entry.get("ids");
      if (ids == nullptr || !ids->IsArray()) entry.fail("\"ids\" is not a list");
      std::vector<int32_t> v;
      for (const auto& id : ids->GetArray()) {
        if (!id.IsInt()) entry.fail("\"ids\" holds a non-integer");
        v.push_back(id.GetInt());
      }
      specials[it->name.GetString()] = std::move(v);
    }
  }
  std::vector<int32_t> before, after;
  bool seen_text = false;
  auto add_special = [&](const std::string& name) {
    auto it = specials.find(name);
    if (it == specials.end()) s.fail("template token \"" + name + "\" is not in \"special_tokens\"");
    auto& dst = seen_text ? after : before;
    dst.insert(dst.end(), it->second.begin(), it->second.end());
  };
  const rapidjson::Value* single = s.get("single");
  if (single == nullptr) s.fail("missing \"single\"");
  if (single->IsString()) {  // the "[CLS] $A [SEP]" shorthand (with optional ":type_id")
    std::string text = single->GetString();
    std::size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && text[i] == ' ') ++i;
      std::size_t j = text.find(' ', i);
      if (j == std::string::npos) j = text.size();
      std::string piece = text.substr(i, j - i);
      i = j;
      if (piece.empty()) continue;
      std::size_t colon = piece.rfind(':');
      if (colon != std::string::npos && colon > 0) piece = piece.substr(0, colon);
      if (piece == "$A" || piece == "$" || piece == "$0") {
        seen_text = true;
      } else if (piece[0] == '$') {
        s.fail("single-sequence template uses \"" + piece + "\"");
      } else {
        add_special(piece);
      }
    }
  } else if (single->IsArray()) {
    for (rapidjson::SizeType k = 0; k < single->Size(); ++k) {
      Section part = s.nested((*single)[k], ".single[" + std::to_string(k) + "]");
      if (const rapidjson::Value* st = part.get("SpecialToken")) {
        add_special(part.nested(*st, ".SpecialToken").str("id"));
      } else if (const rapidjson::Value* seq = part.get("Sequence")) {
        std::string id = part.nested(*seq, ".Sequence").str("id");
        if (id != "A") part.fail("single-sequence template uses sequence \"" + id + "\"");
        seen_text = true;
      } else {
        part.fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
  } else {
    s.fail("\"single\" is neither a list nor a string");
  }
  if (!seen_text) s.fail("single-sequence template has no $A");
  return make_template(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_template(std::vector<int32_t> before, std::vector<int32_t> after) {
  return std::make_unique<Template>(std::move(before), std::move(after));
}

std::unique_ptr<PostProcessor> make_post_processor(const Section& s) {
  std::string type = s.type();
  if (type == "TemplateProcessing") return read_template(s);
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return make_template({token_pair_id(s, "cls")}, {token_pair_id(s, "sep")});
  if (type == "ByteLevel") return make_template({}, {});
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const Section& child : s.children("processors")) parts.push_back(make_post_processor(child));
    return std::make_unique<SequencePost>(std::move(parts));
  }
  s.unsupported(type, "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence");
}

}  // namespace aquin::tok
