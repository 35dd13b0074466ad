#include <aquin/sdk/prompts.hpp>

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <sstream>

namespace aquin {

namespace {

// One row: a string, or {"instruction": ..., "response": ...} joined as instruction, blank line,
// response (the layout of most instruction-tuning data).
std::string row_text(const rapidjson::Value& v, const std::string& where) {
  std::string text;
  if (v.IsString()) {
    text = v.GetString();
  } else if (v.IsObject() && v.HasMember("instruction") && v["instruction"].IsString()) {
    text = v["instruction"].GetString();
    if (v.HasMember("response")) {
      if (!v["response"].IsString()) throw InputError(where, "\"response\" is not a string");
      const std::string r = v["response"].GetString();
      if (!r.empty()) text += "\n\n" + r;
    }
  } else {
    throw InputError(where, "expected a string or an object with an \"instruction\" string");
  }
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw InputError(where, "empty prompt");
  return text;
}

}  // namespace

std::vector<std::string> read_prompts(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  const std::string file = path.string();
  std::vector<std::string> out;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw InputError(file, "no prompts in the file");
  if (text[first] == '[') {
    rapidjson::Document d;
    d.Parse(text.c_str(), text.size());
    if (d.HasParseError()) {
      const std::size_t off = d.GetErrorOffset();
      const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(std::min(off, text.size())), '\n');
      throw InputError(file, "line " + std::to_string(line) + ": invalid JSON: " + rapidjson::GetParseError_En(d.GetParseError()));
    }
    for (rapidjson::SizeType i = 0; i < d.Size(); ++i)
      out.push_back(row_text(d[i], file + ": item " + std::to_string(i + 1)));
  } else {
    std::istringstream in(text);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      rapidjson::Document d;
      d.Parse(line.c_str(), line.size());
      const std::string where = file + ": line " + std::to_string(n);
      if (d.HasParseError()) throw InputError(where, std::string("invalid JSON: ") + rapidjson::GetParseError_En(d.GetParseError()));
      out.push_back(row_text(d, where));
    }
  }
  if (out.empty()) throw InputError(file, "no prompts in the file");
  return out;
}

std::vector<std::string> builtin_prompts() {
  return {
      "The capital of France is",
      "Write a short poem about the sea.",
      "def fibonacci(n):",
      "Explain why the sky is blue in one sentence.",
      "Translate to German: The weather is nice today.",
      "Q: What is 17 times 3?\nA:",
      "Once upon a time, in a small village,",
      "List three uses of a paperclip.",
  };
}

}  // namespace aquin
