// tokenizer.json: the Hugging Face `tokenizers` serialisation of a whole pipeline.
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>

#include <cstring>

#include "tokenizer/bpe.hpp"
#include "tokenizer/decoders.hpp"
#include "tokenizer/json_section.hpp"
#include "tokenizer/loaders.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/post_processors.hpp"
#include "tokenizer/pre_tokenizers.hpp"
#include "tokenizer/vocab.hpp"
#include "tokenizer/wordpiece.hpp"

namespace aquin::tok {

namespace {

// True when `v` or anything nested in it is an object with "type": `type`.
bool mentions_type(const rapidjson::Value* v, const char* type) {
  if (v == nullptr) return false;
  if (v->IsObject()) {
    auto t = v->FindMember("type");
    if (t != v->MemberEnd() && t->value.IsString() && std::strcmp(t->value.GetString(), type) == 0) return true;
    for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it)
      if (mentions_type(&it->value, type)) return true;
  } else if (v->IsArray()) {
    for (const auto& e : v->GetArray())
      if (mentions_type(&e, type)) return true;
  }
  return false;
}

std::vector<std::pair<std::string, int32_t>> read_vocab_object(const Section& model) {
  const rapidjson::Value* v = model.get("vocab");
  if (v == nullptr || !v->IsObject()) model.fail("\"vocab\" is not an object of token: id");
  std::vector<std::pair<std::string, int32_t>> out;
  out.reserve(v->MemberCount());
  for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it) {
    if (!it->value.IsInt() || it->value.GetInt() < 0 || it->value.GetInt() >= kMaxTokenId)
      model.fail(std::string("vocab entry \"") + it->name.GetString() + "\" has no id in [0, 2^24)");
    out.emplace_back(std::string(it->name.GetString(), it->name.GetStringLength()), it->value.GetInt());
  }
  return out;
}

// Merges are "a b" strings (the older layout) or ["a", "b"] pairs (which allow spaces in tokens).
std::vector<std::pair<std::string, std::string>> read_merges(const Section& model) {
  const rapidjson::Value* v = model.get("merges");
  std::vector<std::pair<std::string, std::string>> out;
  if (v == nullptr) return out;
  if (!v->IsArray()) model.fail("\"merges\" is not a list");
  out.reserve(v->Size());
  for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
    const rapidjson::Value& m = (*v)[i];
    if (m.IsString()) {
      std::string s(m.GetString(), m.GetStringLength());
      std::size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        model.fail("merge " + std::to_string(i) + " \"" + s + "\" is not two tokens separated by one space");
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.IsArray() && m.Size() == 2 && m[0].IsString() && m[1].IsString()) {
      out.emplace_back(std::string(m[0].GetString(), m[0].GetStringLength()),
                       std::string(m[1].GetString(), m[1].GetStringLength()));
    } else {
      model.fail("merge " + std::to_string(i) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return out;
}

// serde writes the model without "type" in some versions; the fields tell which it is.
std::string model_type(const Section& model) {
  if (auto t = model.opt_str("type")) return *t;
  if (model.get("merges") != nullptr) return "BPE";
  if (model.get("max_input_chars_per_word") != nullptr) return "WordPiece";
  if (const rapidjson::Value* v = model.get("vocab"); v != nullptr && v->IsArray()) return "Unigram";
  return "WordLevel";
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& path, const SpecialNames& names) {
  const std::string file = path.string();
  rapidjson::Document doc = json::parse(read_text_file(path), file);
  Section root(doc, file, "");
  Section model = root.child("model");

  PipelineParts parts;
  parts.names = names;
  std::string type = model_type(model);
  if (type == "BPE") {
    BpeOptions o;
    o.unk_token = model.opt_str("unk_token");
    o.continuing_subword_prefix = model.opt_str("continuing_subword_prefix").value_or("");
    o.end_of_word_suffix = model.opt_str("end_of_word_suffix").value_or("");
    o.fuse_unk = model.flag("fuse_unk", false);
    o.byte_fallback = model.flag("byte_fallback", false);
    o.ignore_merges = model.flag("ignore_merges", false);
    // Dropout makes encoding random; a tool that compares models needs the same ids every time.
    if (const rapidjson::Value* d = model.get("dropout"); d != nullptr && d->IsNumber() && d->GetDouble() > 0)
      model.fail("BPE dropout " + std::to_string(d->GetDouble()) + " is not supported (set \"dropout\" to null)");
    parts.model = make_bpe(read_vocab_object(model), read_merges(model), o, file + ": model");
    const rapidjson::Value* doc_value = &doc;
    if (mentions_type(root.get("pre_tokenizer"), "ByteLevel") || mentions_type(root.get("decoder"), "ByteLevel") ||
        mentions_type(root.get("normalizer"), "ByteLevel")) {
      parts.kind = "bpe-byte-level";
    } else if (o.byte_fallback || mentions_type(doc_value, "Metaspace") || mentions_type(root.get("normalizer"), "Prepend")) {
      parts.kind = "bpe-sentencepiece";
    } else {
      parts.kind = "bpe";
    }
  } else if (type == "WordPiece") {
    WordPieceOptions o;
    o.unk_token = model.opt_str("unk_token").value_or("[UNK]");
    o.continuing_subword_prefix = model.opt_str("continuing_subword_prefix").value_or("##");
    o.max_input_chars_per_word = static_cast<std::size_t>(model.integer("max_input_chars_per_word", 100));
    parts.model = make_wordpiece(read_vocab_object(model), o, file + ": model");
    parts.kind = "wordpiece";
  } else {
    model.unsupported(type, "BPE, WordPiece");
  }

  if (const rapidjson::Value* v = root.get("normalizer")) parts.normalizer = make_normalizer(root.nested(*v, "normalizer"));
  if (const rapidjson::Value* v = root.get("pre_tokenizer"))
    parts.pre_tokenizer = make_pre_tokenizer(root.nested(*v, "pre_tokenizer"));
  if (const rapidjson::Value* v = root.get("post_processor"))
    parts.post_processor = make_post_processor(root.nested(*v, "post_processor"));
  if (const rapidjson::Value* v = root.get("decoder")) parts.decoder = make_decoder(root.nested(*v, "decoder"));

  if (const rapidjson::Value* v = root.get("added_tokens")) {
    if (!v->IsArray()) root.fail("\"added_tokens\" is not a list");
    for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
      Section t = root.nested((*v)[i], "added_tokens[" + std::to_string(i) + "]");
      parts.added.add(read_added_token(t, static_cast<int32_t>(t.integer("id"))));
    }
  }
  return make_pipeline_tokenizer(std::move(parts));
}

}  // namespace aquin::tok
