// Word -> ids memo shared by the models: natural text repeats a small set of words, so most
// words skip the merge loop entirely. Bounded; cleared when full so memory stays flat on
// endless streams of new words.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace aquin::tok {

class WordCache {
 public:
  explicit WordCache(std::size_t capacity = 50000) : capacity_(capacity) {}

  /// Appends the cached ids of `word` to `ids` and returns true, or returns false.
  bool lookup(std::string_view word, std::vector<int32_t>& ids) const {
    if (word.size() > kMaxWordBytes) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = map_.find(word);
    if (it == map_.end()) return false;
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(std::string_view word, const int32_t* ids, std::size_t n) const {
    if (word.size() > kMaxWordBytes) return;  // long "words" (no pre-tokenizer) rarely repeat
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() >= capacity_) {
      map_.clear();
      keys_.clear();
    }
    if (map_.count(word) != 0) return;  // another thread got there first
    keys_.emplace_back(word);
    map_.emplace(std::string_view(keys_.back()), std::vector<int32_t>(ids, ids + n));
  }

 private:
  static constexpr std::size_t kMaxWordBytes = 256;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  // Keys are views into keys_ (a deque never moves its elements), so a lookup needs no allocation.
  mutable std::deque<std::string> keys_;
  mutable std::unordered_map<std::string_view, std::vector<int32_t>> map_;
};

}  // namespace aquin::tok
