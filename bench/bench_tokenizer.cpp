// bench_tokenizer: how fast aquin's tokenizers encode, on text like the demo's.
//
// The corpus is the demo's texts (examples/demo/*.txt) and the published test vectors' texts,
// repeated to at least --kb KiB (default 400). For each tokenizer it reports
//   - load time;
//   - cold encode: a freshly loaded tokenizer (empty per-word cache), the corpus as one text;
//   - warm encode: median of --reps runs (default 5) on the same tokenizer, as one text and line
//     by line (many short calls, as an adapter encoding prompts would);
// and checks that every run gives the same ids, and that byte-level BPE decodes back to the corpus.
// Exit status 1 when a check fails.
//
//   bench_tokenizer [--kb N] [--reps N]
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The "text" values of a vectors.jsonl, read without a JSON library: each is the first string
// after "text": on its line (escapes decoded for the few the files use).
std::vector<std::string> vector_texts(const fs::path& jsonl) {
  std::vector<std::string> out;
  std::istringstream in(aquin::read_text_file(jsonl));
  std::string line;
  while (std::getline(in, line)) {
    std::size_t at = line.find("\"text\": \"");
    if (at == std::string::npos) continue;
    std::string s;
    for (std::size_t i = at + 9; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] != '\\') {
        s.push_back(line[i]);
        continue;
      }
      char e = line[++i];
      s.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
    }
    out.push_back(s);
  }
  return out;
}

std::string build_corpus(std::size_t min_bytes) {
  const fs::path src = AQUIN_SOURCE_DIR, shared = fs::path(AQUIN_SHARED_DIR) / "testdata" / "tokenizers";
  std::string unit;
  for (const char* name : {"corpus.txt", "finetune.txt"}) unit += aquin::read_text_file(src / "examples" / "demo" / name) + "\n";
  for (const char* set : {"gpt2", "bert-base-uncased"})
    for (const auto& t : vector_texts(shared / set / "vectors.jsonl")) unit += t + "\n";
  std::string corpus;
  while (corpus.size() < min_bytes) corpus += unit;
  return corpus;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  while (begin < s.size()) {
    std::size_t end = s.find('\n', begin);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(begin, end - begin + (end < s.size() ? 1 : 0)));
    begin = end + 1;
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool run(const char* name, const std::function<std::unique_ptr<aquin::Tokenizer>()>& load, const std::string& corpus,
         int reps, bool byte_level) {
  bool ok = true;
  auto t0 = Clock::now();
  auto tok = load();
  double load_s = seconds_since(t0);

  t0 = Clock::now();
  auto cold = tok->encode(corpus, false).ids;
  double cold_s = seconds_since(t0);

  std::vector<double> whole, lines;
  std::vector<std::string> corpus_lines = split_lines(corpus);
  std::size_t line_tokens = 0;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    auto again = tok->encode(corpus, false).ids;
    whole.push_back(seconds_since(t0));
    if (again != cold) {
      std::printf("  FAIL %s: run %d gave different ids\n", name, r + 1);
      ok = false;
    }
    t0 = Clock::now();
    std::size_t n = 0;
    for (const auto& l : corpus_lines) n += tok->encode(l, false).ids.size();
    lines.push_back(seconds_since(t0));
    line_tokens = n;
  }
  double tokens = static_cast<double>(cold.size()), mb = static_cast<double>(corpus.size()) / 1e6;
  std::printf("%-34s load %7.1f ms | %8zu tokens (%.2f bytes/token)\n", name, load_s * 1e3, cold.size(),
              static_cast<double>(corpus.size()) / tokens);
  std::printf("  cold, one text      %9.0f tokens/s  %6.2f MB/s\n", tokens / cold_s, mb / cold_s);
  std::printf("  warm, one text      %9.0f tokens/s  %6.2f MB/s  (median of %d)\n", tokens / median(whole),
              mb / median(whole), reps);
  std::printf("  warm, %5zu lines    %9.0f tokens/s  %6.2f MB/s\n", corpus_lines.size(),
              static_cast<double>(line_tokens) / median(lines), mb / median(lines));
  if (byte_level) {
    std::vector<int64_t> ids(cold.begin(), cold.end());
    t0 = Clock::now();
    bool round = tok->decode(ids, false) == corpus;
    double dec_s = seconds_since(t0);
    std::printf("  decode              %9.0f tokens/s  round trip %s\n", tokens / dec_s, round ? "exact" : "DIFFERS");
    ok = ok && round;
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t kb = 400;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--kb") && i + 1 < argc) kb = static_cast<std::size_t>(std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_tokenizer [--kb N] [--reps N]\n");
      return 2;
    }
  }
  const std::string corpus = build_corpus(kb * 1024);
  const fs::path shared = fs::path(AQUIN_SHARED_DIR) / "testdata" / "tokenizers";
  std::printf("corpus: %.0f KiB (demo texts + test vectors, repeated), single thread\n\n", corpus.size() / 1024.0);
  bool ok = true;
  ok &= run("GPT-2 byte-level BPE (slow files)", [&] { return aquin::Tokenizer::from_folder(shared / "gpt2"); }, corpus,
            reps, true);
  ok &= run("BERT WordPiece (tokenizer.json)",
            [&] { return aquin::Tokenizer::from_folder(shared / "bert-base-uncased"); }, corpus, reps, false);
  ok &= run("Llama-3-style BPE (fixture vocab)",
            [&] { return aquin::Tokenizer::from_folder(fs::path(AQUIN_SOURCE_DIR) / "tests/data/tokenizers/llama3-mini"); },
            corpus, reps, true);
  std::printf("\n%s\n", ok ? "checks: ids identical across runs; byte-level decode exact" : "checks FAILED");
  return ok ? 0 : 1;
}
