// A byte-level BPE tokenizer.json with one token per byte and no merges: text maps to the ids of
// its UTF-8 bytes, so tests (and benchmarks) can write prompts that are exactly the token ids they
// want. Shared by the unit tests and bench_merge.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace aquin::test {

// GPT-2's byte -> printable character map, for a byte-level tokenizer.json over the first
// `vocab` byte values (no merges: one token per byte).
inline std::string byte_tokenizer_json(int vocab) {
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::string vocab_json;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool p = std::find(printable.begin(), printable.end(), b) != printable.end();
    const int cp = p ? b : 256 + extra++;
    if (b >= vocab) continue;
    std::string key = utf8(cp);
    if (key == "\"" || key == "\\") key = "\\" + key;
    vocab_json += (vocab_json.empty() ? "" : ",") + std::string("\"") + key + "\":" + std::to_string(b);
  }
  return R"({"version":"1.0","added_tokens":[],"normalizer":null,)"
         R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false},)"
         R"("post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false},)"
         R"("model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,)"
         R"("fuse_unk":false,"byte_fallback":false,"vocab":{)" +
         vocab_json + R"(},"merges":[]}})";
}

}  // namespace aquin::test
