// Tokenizers: the published GPT-2 and bert-base-uncased vectors (tests/data/tokenizers,
// produced with Hugging Face tokenizers), the synthetic Llama-3-style and SentencePiece-style
// fixtures of tests/data/tokenizers (expected ids from the independent Python reference in
// tests/fixtures/make_tokenizer_fixtures.py), and hard cases whose expectations follow from the
// vocabulary and the rules (accents, symbols, CJK, control chars, special tokens, byte fallback).
#include "test_helpers.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

using namespace aquin;
using aquin::test::TempDir;
namespace fs = std::filesystem;

namespace {

fs::path shared_tokenizers() { return fs::path(AQUIN_TEST_DATA_DIR) / "tokenizers"; }
fs::path fixtures() { return aquin::test::data_dir() / "tokenizers"; }

struct Vector {
  std::string text;
  std::vector<int64_t> ids;
};

std::vector<int64_t> int_list(const rapidjson::Value& v) {
  std::vector<int64_t> out;
  for (const auto& x : v.GetArray()) out.push_back(x.GetInt64());
  return out;
}

std::vector<Vector> read_vectors(const fs::path& jsonl) {
  std::vector<Vector> out;
  std::istringstream in(read_text_file(jsonl));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    rapidjson::Document d = json::parse(line, jsonl.string());
    out.push_back({d["text"].GetString(), int_list(d["ids"])});
  }
  return out;
}

const rapidjson::Document& expected() {
  static const rapidjson::Document doc = json::parse(read_text_file(fixtures() / "expected.json"), "expected.json");
  return doc;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// A copy of a fixture's tokenizer.json with one literal edit (to flip a flag) in a temp dir.
fs::path edited_fixture(const TempDir& dir, const std::string& name, const std::string& from, const std::string& to) {
  std::string text = read_text_file(fixtures() / name / "tokenizer.json");
  std::size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  fs::path out = dir / (name + ".json");
  aquin::test::write_bytes(out, text);
  return out;
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out.push_back(static_cast<char>(c));
  }
  return out;
}

// A minimal tokenizer.json around the given sections (vocab {a, b, ab, [UNK]}-style models).
std::string tokenizer_json(const std::string& model, const std::string& extra = "") {
  return R"({"version": "1.0", "added_tokens": [], )" + extra + R"("model": )" + model + "}";
}

const char* kTinyBpe =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "unk_token": null})";

}  // namespace

// ---------------------------------------------------------------------------------------------
// GPT-2 (byte-level BPE), published vectors

TEST(TokenizerGpt2, PublishedVectorsFromSlowFiles) {
  auto tok = Tokenizer::from_folder(shared_tokenizers() / "gpt2");
  EXPECT_EQ(tok->kind(), "bpe-byte-level");
  EXPECT_EQ(tok->vocab_size(), 50257);
  auto vectors = read_vectors(shared_tokenizers() / "gpt2" / "vectors.jsonl");
  ASSERT_EQ(vectors.size(), 40u);
  int passed = 0;
  for (const auto& v : vectors) {
    Encoding enc = tok->encode(v.text);  // GPT-2 has no template: the same with or without specials
    EXPECT_EQ(enc.ids, v.ids) << "text: \"" << printable(v.text) << "\"";
    EXPECT_EQ(enc.tokens.size(), enc.ids.size());
    EXPECT_EQ(tok->decode(enc.ids), v.text) << "round trip of \"" << printable(v.text) << "\"";
    passed += enc.ids == v.ids;
  }
  EXPECT_EQ(passed, 40);
}

TEST(TokenizerGpt2, PublishedVectorsFromTokenizerJson) {
  // The tokenizer.json Hugging Face writes for GPT-2: the same vocab and merges (as [a, b] pairs),
  // ByteLevel pre-tokenizer and decoder, <|endoftext|> as an added special token.
  rapidjson::Document vocab = json::parse(read_text_file(shared_tokenizers() / "gpt2" / "vocab.json"), "vocab.json");
  std::istringstream merges_in(read_text_file(shared_tokenizers() / "gpt2" / "merges.txt"));
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  rapidjson::Value merges(rapidjson::kArrayType);
  std::string line;
  while (std::getline(merges_in, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    std::size_t sp = line.find(' ');
    rapidjson::Value pair(rapidjson::kArrayType);
    pair.PushBack(json::str(line.substr(0, sp), a), a).PushBack(json::str(line.substr(sp + 1), a), a);
    merges.PushBack(pair, a);
  }
  rapidjson::Value model(rapidjson::kObjectType);
  model.AddMember("type", "BPE", a).AddMember("dropout", rapidjson::Value(), a).AddMember("unk_token", rapidjson::Value(), a);
  model.AddMember("vocab", rapidjson::Value(vocab, a), a).AddMember("merges", merges, a);
  rapidjson::Document parts = json::parse(
      R"({"added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
          "rstrip": false, "normalized": true, "special": true}],
          "normalizer": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
          "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
          "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}})",
      "parts");
  for (auto it = parts.MemberBegin(); it != parts.MemberEnd(); ++it)
    doc.AddMember(rapidjson::Value(it->name, a), rapidjson::Value(it->value, a), a);
  doc.AddMember("model", model, a);
  TempDir dir;
  aquin::test::write_bytes(dir / "tokenizer.json", json::to_text(doc, false));

  auto tok = Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  EXPECT_EQ(tok->kind(), "bpe-byte-level");
  int passed = 0;
  for (const auto& v : read_vectors(shared_tokenizers() / "gpt2" / "vectors.jsonl")) {
    Encoding enc = tok->encode(v.text);
    EXPECT_EQ(enc.ids, v.ids) << "text: \"" << printable(v.text) << "\"";
    EXPECT_EQ(tok->decode(enc.ids), v.text);
    passed += enc.ids == v.ids;
  }
  EXPECT_EQ(passed, 40);
}

TEST(TokenizerGpt2, SpecialTokenInTextAndIds) {
  auto tok = Tokenizer::from_folder(shared_tokenizers() / "gpt2");
  // <|endoftext|> is split out before the regex runs, so its neighbours tokenize as if alone.
  auto left = tok->encode("Hello").ids, right = tok->encode(" world").ids;
  std::vector<int64_t> want = left;
  want.push_back(50256);
  want.insert(want.end(), right.begin(), right.end());
  EXPECT_EQ(tok->encode("Hello<|endoftext|> world").ids, want);
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 50256);
  EXPECT_TRUE(tok->is_special(50256));
  EXPECT_FALSE(tok->is_special(15496));
  EXPECT_EQ(tok->bos_id(), 50256);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
  EXPECT_EQ(tok->unk_id(), std::nullopt);
  EXPECT_EQ(tok->decode(want), "Hello world");
  EXPECT_EQ(tok->decode(want, false), "Hello<|endoftext|> world");
  EXPECT_EQ(tok->id_to_token(18435), "ĠHello");
  EXPECT_EQ(tok->encode(" Hello").tokens, (std::vector<std::string>{"ĠHello"}));
  // Unknown ids are skipped, as Hugging Face does.
  EXPECT_EQ(tok->decode({15496, 999999, -3}), "Hello");
}

TEST(TokenizerGpt2, AddPrefixSpace) {
  auto plain = Tokenizer::from_gpt2_files(shared_tokenizers() / "gpt2" / "vocab.json",
                                          shared_tokenizers() / "gpt2" / "merges.txt");
  auto prefixed = Tokenizer::from_gpt2_files(shared_tokenizers() / "gpt2" / "vocab.json",
                                             shared_tokenizers() / "gpt2" / "merges.txt", true);
  EXPECT_EQ(prefixed->encode("Hello world").ids, plain->encode(" Hello world").ids);
  EXPECT_EQ(prefixed->encode(" Hello").ids, plain->encode(" Hello").ids);  // no second space
}

// ---------------------------------------------------------------------------------------------
// BERT (WordPiece), published vectors

namespace {

int check_bert_vectors(const Tokenizer& tok) {
  auto vectors = read_vectors(shared_tokenizers() / "bert-base-uncased" / "vectors.jsonl");
  EXPECT_EQ(vectors.size(), 40u);
  int passed = 0;
  for (const auto& v : vectors) {
    Encoding plain = tok.encode(v.text, false);
    EXPECT_EQ(plain.ids, v.ids) << "text: \"" << printable(v.text) << "\"";
    Encoding full = tok.encode(v.text);
    std::vector<int64_t> want = {101};
    want.insert(want.end(), v.ids.begin(), v.ids.end());
    want.push_back(102);
    EXPECT_EQ(full.ids, want);
    std::vector<uint8_t> mask(want.size(), 0);
    mask.front() = mask.back() = 1;
    EXPECT_EQ(full.special_tokens_mask, mask);
    passed += plain.ids == v.ids && full.ids == want;
  }
  return passed;
}

}  // namespace

TEST(TokenizerBert, PublishedVectorsFromTokenizerJson) {
  auto tok = Tokenizer::from_tokenizer_json(shared_tokenizers() / "bert-base-uncased" / "tokenizer.json");
  EXPECT_EQ(tok->kind(), "wordpiece");
  EXPECT_EQ(check_bert_vectors(*tok), 40);
}

TEST(TokenizerBert, PublishedVectorsFromVocabTxt) {
  EXPECT_EQ(check_bert_vectors(*Tokenizer::from_vocab_txt(shared_tokenizers() / "bert-base-uncased" / "vocab.txt")), 40);
  // A folder with only vocab.txt goes the same way.
  TempDir dir;
  fs::copy_file(shared_tokenizers() / "bert-base-uncased" / "vocab.txt", dir / "vocab.txt");
  auto tok = Tokenizer::from_folder(dir.path());
  EXPECT_EQ(tok->kind(), "wordpiece");
  EXPECT_EQ(check_bert_vectors(*tok), 40);
}

TEST(TokenizerBert, FromFolderPrefersTokenizerJson) {
  auto tok = Tokenizer::from_folder(shared_tokenizers() / "bert-base-uncased");
  EXPECT_EQ(check_bert_vectors(*tok), 40);
  EXPECT_EQ(tok->vocab_size(), 30522);
  EXPECT_EQ(tok->bos_id(), 101);  // the template's leading [CLS]
  EXPECT_EQ(tok->eos_id(), 102);  // its trailing [SEP]
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->unk_id(), 100);
}

TEST(TokenizerBert, HardCases) {
  std::vector<std::shared_ptr<Tokenizer>> both = {
      Tokenizer::from_tokenizer_json(shared_tokenizers() / "bert-base-uncased" / "tokenizer.json"),
      Tokenizer::from_vocab_txt(shared_tokenizers() / "bert-base-uncased" / "vocab.txt")};
  for (const auto& tok : both) {
    using V = std::vector<std::string>;
    // Accents go (NFD, drop Mn) and case goes.
    EXPECT_EQ(tok->encode("Héllo WÖRLD", false).tokens, (V{"hello", "world"}));
    // ASCII symbols are punctuation to BERT even where Unicode says Sm/Sk: each is isolated.
    EXPECT_EQ(tok->encode("$5+3=8^2|x~y`z<a>b", false).tokens,
              (V{"$", "5", "+", "3", "=", "8", "^", "2", "|", "x", "~", "y", "`", "z", "<", "a", ">", "b"}));
    // Each CJK ideograph is its own word; 字 is not in this vocabulary.
    EXPECT_EQ(tok->encode("中文字", false).tokens, (V{"中", "文", "[UNK]"}));
    // Control and format characters vanish; every kind of white space separates words.
    EXPECT_EQ(tok->encode(std::string("ab\0c\xE2\x80\x8B" "d\x07", 11), false).ids, tok->encode("abcd", false).ids);
    EXPECT_EQ(tok->encode("abcd", false).tokens, (V{"abc", "##d"}));
    EXPECT_EQ(tok->encode("a\xC2\xA0" "b\xE3\x80\x80" "c\td\r\ne", false).ids, tok->encode("a b c d e", false).ids);
    // Special tokens written in the text are kept whole (and never lower-cased); [cls] is text.
    EXPECT_EQ(tok->encode("[CLS] hello [SEP][MASK]", false).ids, (std::vector<int64_t>{101, 7592, 102, 103}));
    EXPECT_EQ(tok->encode("[cls]", false).tokens, (V{"[", "cl", "##s", "]"}));
    // Words longer than max_input_chars_per_word (100) are [UNK] whole.
    EXPECT_EQ(tok->encode(std::string(101, 'a'), false).ids, (std::vector<int64_t>{100}));
    EXPECT_NE(tok->encode(std::string(100, 'a'), false).ids.front(), 100);
    // Decoding joins words with spaces, glues ## pieces and applies BERT's punctuation clean-up,
    // which Hugging Face's decoder runs on each token: " ," loses its space, but "it ' s" spans
    // three tokens and stays (transformers' Python layer cleans the whole string afterwards).
    EXPECT_EQ(tok->decode(tok->encode("Hello, world! It's 3.14").ids), "hello, world! it ' s 3. 14");
    EXPECT_EQ(tok->decode(tok->encode("abcd").ids, false), "[CLS] abcd [SEP]");
  }
}

TEST(TokenizerBert, Truncation) {
  auto tok = Tokenizer::from_tokenizer_json(shared_tokenizers() / "bert-base-uncased" / "tokenizer.json");
  const std::string text = "the quick brown fox jumps over the lazy dog";
  Encoding full = tok->encode(text);
  ASSERT_EQ(full.ids.size(), 11u);
  EXPECT_FALSE(full.truncated);
  Encoding cut = tok->encode(text, true, 5);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.ids, (std::vector<int64_t>{101, full.ids[1], full.ids[2], full.ids[3], 102}));
  EXPECT_EQ(cut.special_tokens_mask, (std::vector<uint8_t>{1, 0, 0, 0, 1}));
  EXPECT_FALSE(tok->encode(text, true, 11).truncated);
  EXPECT_EQ(tok->encode(text, true, 2).ids, (std::vector<int64_t>{101, 102}));
  Encoding plain = tok->encode(text, false, 3);
  EXPECT_TRUE(plain.truncated);
  EXPECT_EQ(plain.ids, (std::vector<int64_t>{full.ids[1], full.ids[2], full.ids[3]}));
  EXPECT_NE(error_of([&] { tok->encode(text, true, 1); }).find("less than the 2 special tokens"), std::string::npos);
}

TEST(TokenizerBert, FolderConfigCasedVocab) {
  TempDir dir;
  fs::copy_file(shared_tokenizers() / "bert-base-uncased" / "vocab.txt", dir / "vocab.txt");
  aquin::test::write_bytes(dir / "tokenizer_config.json", R"({"do_lower_case": false, "pad_token": "[MASK]"})");
  auto tok = Tokenizer::from_folder(dir.path());
  EXPECT_EQ(tok->encode("hello", false).ids, (std::vector<int64_t>{7592}));
  EXPECT_NE(tok->encode("Hello", false).ids, (std::vector<int64_t>{7592}));  // case kept
  // strip_accents follows do_lower_case: "é" stays "é", which this uncased vocabulary lacks.
  EXPECT_EQ(tok->encode("é", false).tokens, (std::vector<std::string>{"[UNK]"}));
  EXPECT_EQ(Tokenizer::from_vocab_txt(dir / "vocab.txt")->encode("é", false).tokens, (std::vector<std::string>{"e"}));
  EXPECT_EQ(tok->pad_id(), 103);
}

// ---------------------------------------------------------------------------------------------
// Llama-3-style byte-level BPE (synthetic fixture, Python reference expectations)

TEST(TokenizerLlama3, FixtureCases) {
  auto tok = Tokenizer::from_folder(fixtures() / "llama3-mini");
  EXPECT_EQ(tok->kind(), "bpe-byte-level");
  const auto& e = expected()["llama3-mini"];
  EXPECT_EQ(tok->bos_id(), e["bos"].GetInt64());
  EXPECT_EQ(tok->eos_id(), tok->token_id("<|end_of_text|>"));
  int passed = 0, round_trips = 0;
  for (const auto& c : e["cases"].GetArray()) {
    std::string text = c["text"].GetString();
    auto ids = int_list(c["ids"]), plain = int_list(c["ids_no_special"]);
    Encoding enc = tok->encode(text);
    EXPECT_EQ(enc.ids, ids) << "text: \"" << printable(text) << "\"";
    EXPECT_EQ(tok->encode(text, false).ids, plain) << "text: \"" << printable(text) << "\"";
    EXPECT_EQ(tok->decode(ids), c["decoded"].GetString());
    std::string all = tok->decode(plain, false);
    EXPECT_EQ(all, c["decoded_all"].GetString());
    // Byte-level BPE loses nothing, except the white space lstrip/rstrip tokens swallow.
    if (text.find("<mask>") == std::string::npos && text.find("<tool>") == std::string::npos) {
      EXPECT_EQ(all, text);
      round_trips += all == text;
    }
    passed += enc.ids == ids;
  }
  EXPECT_EQ(passed, 31);
  EXPECT_EQ(round_trips, 29);
}

TEST(TokenizerLlama3, IgnoreMergesOff) {
  TempDir dir;
  auto tok = Tokenizer::from_tokenizer_json(
      edited_fixture(dir, "llama3-mini", "\"ignore_merges\": true", "\"ignore_merges\": false"));
  auto with = Tokenizer::from_folder(fixtures() / "llama3-mini");
  int differ = 0;
  for (const auto& c : expected()["llama3-mini"]["cases"].GetArray()) {
    std::string text = c["text"].GetString();
    auto want = int_list(c["ids_merges_only"]);
    EXPECT_EQ(tok->encode(text, false).ids, want) << "text: \"" << printable(text) << "\"";
    differ += with->encode(text, false).ids != want;
  }
  // " zebra" is in the vocabulary but no merge sequence builds it: only that case differs.
  EXPECT_EQ(differ, 1);
  EXPECT_EQ(with->encode("a zebra", false).tokens, (std::vector<std::string>{"a", "Ġzebra"}));
}

TEST(TokenizerLlama3, Qwen2StyleVariant) {
  // Qwen2's tokenizer.json differs from Llama 3's in an NFC normalizer and single digits.
  TempDir dir;
  fs::path edited = edited_fixture(dir, "llama3-mini", "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}");
  std::string text = read_text_file(edited);
  const std::string three_digits = "\\p{N}{1,3}";
  std::size_t at = text.find(three_digits);
  ASSERT_NE(at, std::string::npos);
  aquin::test::write_bytes(edited, text.replace(at, three_digits.size(), "\\p{N}"));
  auto tok = Tokenizer::from_tokenizer_json(edited);
  int differ = 0;
  for (const auto& c : expected()["llama3-mini"]["cases"].GetArray()) {
    std::string t = c["text"].GetString();
    auto want = int_list(c["ids_qwen2_style"]);
    EXPECT_EQ(tok->encode(t, false).ids, want) << "text: \"" << printable(t) << "\"";
    differ += want != int_list(c["ids_no_special"]);
  }
  EXPECT_EQ(differ, 2);  // the digits case and the decomposed-accents case
}

TEST(TokenizerLlama3, AddedTokenRules) {
  auto tok = Tokenizer::from_folder(fixtures() / "llama3-mini");
  auto id = [&](const char* t) { return *tok->token_id(t); };
  auto plain = [&](const std::string& s) { return tok->encode(s, false).ids; };
  auto cat = [](std::vector<int64_t> a, const std::vector<int64_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  // lstrip: "<mask>" takes the spaces before it; the text on its left tokenizes without them.
  EXPECT_EQ(plain("a   <mask>b"), cat(cat(plain("a"), {id("<mask>")}), plain("b")));
  // rstrip: "<tool>" takes the spaces after it.
  EXPECT_EQ(plain("x<tool>   y"), cat(cat(plain("x"), {id("<tool>")}), plain("y")));
  // single_word: only between non-word characters.
  EXPECT_EQ(plain("(ACME)"), cat(cat(plain("("), {id("ACME")}), plain(")")));
  for (const char* text : {"ACMEcorp", "x_ACME", "ACME2"}) {
    auto ids = plain(text);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), id("ACME")), 0) << text;
  }
  // Longest match wins at a position; the earliest position wins overall.
  EXPECT_EQ(plain("<|eot_id|><|end_of_text|>"), (std::vector<int64_t>{id("<|eot_id|>"), id("<|end_of_text|>")}));
  // Template: BOS first, marked special; decode skips it and the in-text specials.
  Encoding enc = tok->encode("Hi<|eot_id|>");
  EXPECT_EQ(enc.ids.front(), id("<|begin_of_text|>"));
  EXPECT_EQ(enc.special_tokens_mask.front(), 1);
  EXPECT_EQ(enc.special_tokens_mask.back(), 0);  // written in the text, not added by the template
  EXPECT_EQ(tok->decode(enc.ids), "Hi");
  EXPECT_EQ(tok->decode(enc.ids, false), "<|begin_of_text|>Hi<|eot_id|>");
  // Truncation keeps the BOS.
  Encoding cut = tok->encode("the the the the", true, 3);
  EXPECT_TRUE(cut.truncated);
  ASSERT_EQ(cut.ids.size(), 3u);
  EXPECT_EQ(cut.ids.front(), id("<|begin_of_text|>"));
}

TEST(TokenizerLlama3, RoundTripsRandomText) {
  auto tok = Tokenizer::from_folder(fixtures() / "llama3-mini");
  // Code points from many scripts, white space and symbols; no added token can appear.
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x370, 0x3FF}, {0x400, 0x4FF}, {0x590, 0x6FF},
      {0x900, 0x97F}, {0x2000, 0x206F}, {0x3000, 0x30FF}, {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0x1F300, 0x1F6FF}};
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      auto [lo, hi] = ranges[rng() % ranges.size()];
      char32_t c = lo + static_cast<char32_t>(rng() % (hi - lo + 1));
      if (c == '<') continue;
      if (c < 0x80) {
        text.push_back(static_cast<char>(c));
      } else if (c < 0x800) {
        text.push_back(static_cast<char>(0xC0 | (c >> 6)));
        text.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      } else if (c < 0x10000) {
        text.push_back(static_cast<char>(0xE0 | (c >> 12)));
        text.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      } else {
        text.push_back(static_cast<char>(0xF0 | (c >> 18)));
        text.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      }
    }
    ASSERT_EQ(tok->decode(tok->encode(text).ids), text) << "trial " << trial;
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece-style BPE (Llama 2 / Mistral layout; synthetic fixture)

TEST(TokenizerSentencePiece, FixtureCases) {
  auto tok = Tokenizer::from_folder(fixtures() / "spm-mini");
  EXPECT_EQ(tok->kind(), "bpe-sentencepiece");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->pad_id(), std::nullopt);
  int passed = 0;
  for (const auto& c : expected()["spm-mini"]["cases"].GetArray()) {
    std::string text = c["text"].GetString();
    auto ids = int_list(c["ids"]);
    Encoding enc = tok->encode(text);
    EXPECT_EQ(enc.ids, ids) << "text: \"" << printable(text) << "\"";
    EXPECT_EQ(tok->encode(text, false).ids, int_list(c["ids_no_special"]));
    EXPECT_EQ(tok->decode(ids), c["decoded"].GetString());
    EXPECT_EQ(tok->decode(int_list(c["ids_no_special"]), false), c["decoded_all"].GetString());
    passed += enc.ids == ids;
  }
  EXPECT_EQ(passed, 31);
}

TEST(TokenizerSentencePiece, UnknownWithoutByteFallback) {
  TempDir dir;
  auto fused = Tokenizer::from_tokenizer_json(
      edited_fixture(dir, "spm-mini", "\"byte_fallback\": true", "\"byte_fallback\": false"));
  std::string text = read_text_file(dir / "spm-mini.json");
  aquin::test::write_bytes(dir / "each.json",
                           text.replace(text.find("\"fuse_unk\": true"), 16, "\"fuse_unk\": false"));
  auto each = Tokenizer::from_tokenizer_json(dir / "each.json");
  for (const auto& c : expected()["spm-mini"]["cases"].GetArray()) {
    std::string t = c["text"].GetString();
    EXPECT_EQ(fused->encode(t, false).ids, int_list(c["ids_unk_fused"])) << "text: \"" << printable(t) << "\"";
    EXPECT_EQ(each->encode(t, false).ids, int_list(c["ids_unk_each"])) << "text: \"" << printable(t) << "\"";
  }
  // Three unknown characters in a row: one <unk> fused, three otherwise.
  EXPECT_EQ(fused->encode("字字字", false).ids, (std::vector<int64_t>{*fused->token_id("▁"), 0}));
  EXPECT_EQ(each->encode("字字字", false).ids, (std::vector<int64_t>{*each->token_id("▁"), 0, 0, 0}));
}

TEST(TokenizerSentencePiece, ByteFallbackTokens) {
  auto tok = Tokenizer::from_folder(fixtures() / "spm-mini");
  // U+1F999 is F0 9F A6 99 in UTF-8; the pieces are not in the vocabulary, so its bytes are.
  EXPECT_EQ(tok->encode("🦙", false).tokens, (std::vector<std::string>{"▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"}));
  EXPECT_EQ(tok->decode(tok->encode("🦙 and 字").ids), "🦙 and 字");
  // A byte run that is not valid UTF-8 decodes to one U+FFFD per byte token.
  auto b = [&](const char* t) { return *tok->token_id(t); };
  EXPECT_EQ(tok->decode({b("<0xF0>"), b("<0x9F>"), b("▁")}), "\xEF\xBF\xBD\xEF\xBF\xBD ");
}

TEST(TokenizerSentencePiece, MetaspaceFixtureCases) {
  auto tok = Tokenizer::from_folder(fixtures() / "spm-mini-metaspace");
  EXPECT_EQ(tok->kind(), "bpe-sentencepiece");
  int passed = 0;
  for (const auto& c : expected()["spm-mini-metaspace"]["cases"].GetArray()) {
    std::string text = c["text"].GetString();
    auto ids = int_list(c["ids"]);
    Encoding enc = tok->encode(text);
    EXPECT_EQ(enc.ids, ids) << "text: \"" << printable(text) << "\"";
    EXPECT_EQ(tok->decode(ids), c["decoded"].GetString());
    EXPECT_EQ(tok->decode(int_list(c["ids_no_special"]), false), c["decoded_all"].GetString());
    passed += enc.ids == ids;
  }
  EXPECT_EQ(passed, 31);
  // prepend_scheme "first": the piece after an added token gets no "▁", unlike Prepend("▁").
  auto legacy = Tokenizer::from_folder(fixtures() / "spm-mini");
  EXPECT_EQ(tok->encode("Hello world", false).ids, legacy->encode("Hello world", false).ids);
  EXPECT_NE(tok->encode("<s>Hello", false).ids, legacy->encode("<s>Hello", false).ids);
}

// ---------------------------------------------------------------------------------------------
// Loading errors and the other component types

TEST(TokenizerErrors, NamesWhatIsWrong) {
  TempDir dir;
  std::string msg = error_of([&] { Tokenizer::from_folder(dir.path()); });
  EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json, vocab.txt, vocab.json + merges.txt"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { Tokenizer::from_folder(dir / "missing"); }).find("not a folder"), std::string::npos);

  auto load = [&](const std::string& text) {
    aquin::test::write_bytes(dir / "tokenizer.json", text);
    return error_of([&] { Tokenizer::from_tokenizer_json(dir / "tokenizer.json"); });
  };
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << msg;
  };
  EXPECT_TRUE(has(load("{"), "tokenizer.json"));
  EXPECT_TRUE(has(load(tokenizer_json(R"({"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]})")),
                  "model: type \"Unigram\" is not supported"));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}, )")),
                  "normalizer: type \"Precompiled\" is not supported"));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "UnicodeScripts"}]}, )")),
                  "pre_tokenizer.pretokenizers[0]: type \"UnicodeScripts\""));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("decoder": {"type": "CTC"}, )")), "decoder: type \"CTC\""));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("post_processor": {"type": "Nope"}, )")), "post_processor: type \"Nope\""));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated", "invert": false}, )")),
                  "invalid regex"));
  EXPECT_TRUE(has(load(tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})")),
                  "merge 0 (\"a\" \"b\"): \"ab\" is not in the vocabulary"));
  EXPECT_TRUE(has(load(tokenizer_json(R"({"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []})")),
                  "dropout"));
  EXPECT_TRUE(has(load(tokenizer_json(R"({"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0}})")),
                  "\"[UNK]\" is not in the vocabulary"));
  EXPECT_TRUE(has(load(tokenizer_json(kTinyBpe, R"("post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}}, )")),
                  "template token \"<s>\" is not in \"special_tokens\""));

  auto gpt2 = Tokenizer::from_folder(shared_tokenizers() / "gpt2");
  EXPECT_TRUE(has(error_of([&] { gpt2->encode("ok \xC3("); }), "not valid UTF-8 at byte 3"));
  EXPECT_TRUE(has(error_of([&] { gpt2->encode("\xED\xA0\x80"); }), "not valid UTF-8 at byte 0"));  // a surrogate
}

TEST(TokenizerComponents, OtherPipelinePieces) {
  TempDir dir;
  auto load = [&](const std::string& model, const std::string& extra) {
    aquin::test::write_bytes(dir / "tokenizer.json", tokenizer_json(model, extra));
    return Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  };
  const std::string wp = R"({"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
      "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1, "b": 2, "##b": 3, "1": 4, "2": 5, "12": 6,
      "x": 7, "-": 8, "ab": 9, "c": 10, "é": 11, "e": 12}})";
  using I = std::vector<int64_t>;
  // Whitespace: words and punctuation runs; Digits(individual) splits 12 into 1 2.
  auto t = load(wp, R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Whitespace"},
      {"type": "Digits", "individual_digits": true}]}, )");
  EXPECT_EQ(t->encode("ab 12-x", false).ids, (I{9, 4, 5, 8, 7}));
  // Digits grouped, WhitespaceSplit keeps "12-x" together until Punctuation isolates "-".
  t = load(wp, R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
      {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": false}]}, )");
  EXPECT_EQ(t->encode("ab  12-x", false).ids, (I{9, 6, 8, 7}));
  // Split at a literal, delimiters removed.
  t = load(wp, R"("pre_tokenizer": {"type": "Split", "pattern": {"String": "-"}, "behavior": "Removed", "invert": false}, )");
  EXPECT_EQ(t->encode("a-b--c", false).ids, (I{1, 2, 10}));
  // Normalizers: NFKD + StripAccents + Lowercase + Strip + Replace.
  t = load(wp, R"("normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "StripAccents"},
      {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true},
      {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "x"}]},
      "pre_tokenizer": {"type": "WhitespaceSplit"}, )");
  EXPECT_EQ(t->encode("  ÉB 123  ", false).ids, (I{12, 3, 7}));  // "eb" "x" -> e ##b x
  EXPECT_EQ(t->encode("ÉAB", false).ids, (I{0}));  // "eab": after "e" neither "##ab" nor "##a": [UNK]
  // NFC composes e + U+0301 into é.
  t = load(wp, R"("normalizer": {"type": "NFC"}, )");
  EXPECT_EQ(t->encode("e\xCC\x81", false).ids, (I{11}));
  // BertProcessing / RobertaProcessing templates.
  t = load(wp, R"("post_processor": {"type": "RobertaProcessing", "sep": ["b", 2], "cls": ["a", 1],
      "trim_offsets": true, "add_prefix_space": false}, )");
  EXPECT_EQ(t->encode("x").ids, (I{1, 7, 2}));
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  // Template given in its string shorthand.
  t = load(wp, R"("post_processor": {"type": "TemplateProcessing", "single": "c:0 $A:0 x:0",
      "special_tokens": {"c": {"id": "c", "ids": [10], "tokens": ["c"]}, "x": {"id": "x", "ids": [7], "tokens": ["x"]}}}, )");
  EXPECT_EQ(t->encode("a").ids, (I{10, 1, 7}));
  // No decoder: tokens joined by spaces.
  EXPECT_EQ(t->decode({1, 3, 7}, false), "a ##b x");
}

TEST(TokenizerComponents, ByteTokenizerWithoutMerges) {
  // The demo models' layout (scripts/make_demo_models.py): 256 byte tokens, id = byte value, no
  // merges, specials after them; every UTF-8 byte is one token.
  rapidjson::Document doc = json::parse(
      R"({"added_tokens": [
            {"id": 256, "content": "<bos>", "special": true, "normalized": false},
            {"id": 257, "content": "<eos>", "special": true, "normalized": false},
            {"id": 258, "content": "<pad>", "special": true, "normalized": false}],
          "normalizer": null, "post_processor": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
          "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "unk_token": null, "vocab": {}, "merges": []}})",
      "byte tokenizer");
  auto& a = doc.GetAllocator();
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = printable ? b : next++;
    std::string ch = cp < 0x80 ? std::string(1, static_cast<char>(cp))
                               : std::string{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    doc["model"]["vocab"].AddMember(json::str(ch, a), rapidjson::Value(b), a);
  }
  TempDir dir;
  aquin::test::write_bytes(dir / "tokenizer.json", json::to_text(doc, false));
  auto tok = Tokenizer::from_folder(dir.path());
  const std::string text = "Hé<bos>\n";
  EXPECT_EQ(tok->encode(text).ids, (std::vector<int64_t>{'H', 0xC3, 0xA9, 256, '\n'}));
  EXPECT_EQ(tok->decode(tok->encode(text).ids, false), text);
  EXPECT_EQ(tok->bos_id(), 256);  // well-known names: no template, no tokenizer_config.json
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_EQ(tok->pad_id(), 258);
  EXPECT_EQ(tok->vocab_size(), 259);
}

TEST(TokenizerComponents, ThreadsShareOneTokenizer) {
  auto tok = Tokenizer::from_folder(shared_tokenizers() / "gpt2");
  auto vectors = read_vectors(shared_tokenizers() / "gpt2" / "vectors.jsonl");
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep)
        for (const auto& v : vectors) ok[static_cast<std::size_t>(k)] += tok->encode(v.text).ids == v.ids;
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(ok[static_cast<std::size_t>(k)], 20 * 40);
}
