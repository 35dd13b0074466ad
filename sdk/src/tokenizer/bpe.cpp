#include "tokenizer/bpe.hpp"

#include <aquin/sdk/errors.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <unordered_map>

#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"
#include "tokenizer/word_cache.hpp"

namespace aquin::tok {

namespace {

struct MergeInfo {
  int32_t rank;
  int32_t new_id;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool removed;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // Heap order: lowest rank first; among equal ranks the leftmost, as Hugging Face does.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

class Bpe : public Model {
 public:
  Bpe(std::vector<std::pair<std::string, int32_t>> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      const BpeOptions& options, const std::string& what)
      : vocab_(std::move(vocab)), o_(options) {
    merges_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& [a, b] = merges[rank];
      auto where = [&] { return "merge " + std::to_string(rank) + " (\"" + a + "\" \"" + b + "\")"; };
      auto ia = vocab_.find(a), ib = vocab_.find(b);
      if (!ia) throw InputError(what, where() + ": \"" + a + "\" is not in the vocabulary");
      if (!ib) throw InputError(what, where() + ": \"" + b + "\" is not in the vocabulary");
      // The right part carries the continuation prefix, which the merged token has only once.
      std::string right = b;
      const std::string& prefix = o_.continuing_subword_prefix;
      if (!prefix.empty() && right.compare(0, prefix.size(), prefix) == 0) right.erase(0, prefix.size());
      auto merged = vocab_.find(a + right);
      if (!merged) throw InputError(what, where() + ": \"" + a + right + "\" is not in the vocabulary");
      // A repeated pair keeps its last rank, like the map Hugging Face builds.
      merges_[pair_key(*ia, *ib)] = MergeInfo{static_cast<int32_t>(rank), *merged};
    }
    if (o_.unk_token) {
      if (auto u = vocab_.find(*o_.unk_token)) unk_id_ = *u;
    }
    byte_ids_.fill(-1);
    if (o_.byte_fallback) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        if (auto id = vocab_.find(name)) byte_ids_[static_cast<std::size_t>(b)] = *id;
      }
    }
  }

  void tokenize(std::string_view word, std::vector<int32_t>& ids) const override {
    if (word.empty()) return;
    if (o_.ignore_merges) {
      if (auto id = vocab_.find(word)) {
        ids.push_back(*id);
        return;
      }
    }
    if (cache_.lookup(word, ids)) return;
    std::size_t start = ids.size();
    merge_word(word, ids);
    cache_.store(word, ids.data() + start, ids.size() - start);
  }

  const Vocab& vocab() const override { return vocab_; }
  int32_t unk_id() const override { return unk_id_; }

 private:
  // One symbol per code point, with the unknown-character rules of Hugging Face's merge_word.
  void initial_symbols(std::string_view word, std::vector<Symbol>& syms) const {
    syms.clear();
    auto add = [&](int32_t id) {
      syms.push_back(Symbol{id, static_cast<int32_t>(syms.size()) - 1, -1, false});
    };
    bool plain = o_.continuing_subword_prefix.empty() && o_.end_of_word_suffix.empty();
    bool pending_unk = false;  // an unknown symbol not yet added (it may fuse with the next)
    std::string buf;
    for (std::size_t i = 0; i < word.size();) {
      std::size_t begin = i;
      i += utf8_len(static_cast<unsigned char>(word[i]));
      std::string_view ch = word.substr(begin, i - begin);
      std::optional<int32_t> id;
      if (plain) {
        id = vocab_.find(ch);
      } else {
        buf.clear();
        if (begin > 0) buf += o_.continuing_subword_prefix;
        buf += ch;
        if (i >= word.size()) buf += o_.end_of_word_suffix;
        id = vocab_.find(buf);
      }
      if (id) {
        if (pending_unk) add(unk_id_);
        pending_unk = false;
        add(*id);
        continue;
      }
      if (o_.byte_fallback) {
        // Byte tokens stand for the bytes of the symbol as looked up (prefix/suffix included).
        std::string_view bytes = plain ? ch : std::string_view(buf);
        bool all = std::all_of(bytes.begin(), bytes.end(),
                               [&](char b) { return byte_ids_[static_cast<unsigned char>(b)] >= 0; });
        if (all) {
          if (pending_unk) add(unk_id_);
          pending_unk = false;
          for (char b : bytes) add(byte_ids_[static_cast<unsigned char>(b)]);
          continue;
        }
      }
      if (!o_.unk_token) continue;  // no unknown token: the character is dropped, as in Hugging Face
      if (unk_id_ < 0)
        throw InputError("text", "the BPE unknown token \"" + *o_.unk_token + "\" is not in the vocabulary");
      if (pending_unk && !o_.fuse_unk) add(unk_id_);
      pending_unk = true;
    }
    if (pending_unk) add(unk_id_);
    for (std::size_t k = 0; k + 1 < syms.size(); ++k) syms[k].next = static_cast<int32_t>(k + 1);
  }

  void merge_word(std::string_view word, std::vector<int32_t>& ids) const {
    thread_local std::vector<Symbol> syms;
    thread_local std::vector<Candidate> heap;
    initial_symbols(word, syms);
    heap.clear();
    auto push_pair = [&](int32_t left_pos) {
      const Symbol& l = syms[static_cast<std::size_t>(left_pos)];
      auto it = merges_.find(pair_key(l.id, syms[static_cast<std::size_t>(l.next)].id));
      if (it == merges_.end()) return;
      heap.push_back(Candidate{it->second.rank, left_pos, it->second.new_id});
      std::push_heap(heap.begin(), heap.end());
    };
    for (std::size_t k = 0; k + 1 < syms.size(); ++k) push_pair(static_cast<int32_t>(k));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      Candidate top = heap.back();
      heap.pop_back();
      Symbol& s = syms[static_cast<std::size_t>(top.pos)];
      if (s.removed || s.next < 0) continue;
      Symbol& r = syms[static_cast<std::size_t>(s.next)];
      // Stale entry: the pair at this position changed since it was queued.
      auto it = merges_.find(pair_key(s.id, r.id));
      if (it == merges_.end() || it->second.new_id != top.new_id) continue;
      s.id = top.new_id;
      r.removed = true;
      s.next = r.next;
      if (s.next >= 0) syms[static_cast<std::size_t>(s.next)].prev = top.pos;
      if (s.prev >= 0) push_pair(s.prev);
      if (s.next >= 0) push_pair(top.pos);
    }
    for (int32_t k = syms.empty() ? -1 : 0; k >= 0; k = syms[static_cast<std::size_t>(k)].next)
      ids.push_back(syms[static_cast<std::size_t>(k)].id);
  }

  Vocab vocab_;
  BpeOptions o_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  int32_t unk_id_ = -1;
  std::array<int32_t, 256> byte_ids_{};
  WordCache cache_;
};

}  // namespace

std::unique_ptr<Model> make_bpe(std::vector<std::pair<std::string, int32_t>> vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges,
                                const BpeOptions& options, const std::string& what) {
  return std::make_unique<Bpe>(std::move(vocab), merges, options, what);
}

}  // namespace aquin::tok
