#include "tokenizer/vocab.hpp"

#include <algorithm>

namespace aquin::tok {

Vocab::Vocab(std::vector<std::pair<std::string, int32_t>> entries) {
  int32_t max_id = -1;
  for (const auto& e : entries) max_id = std::max(max_id, e.second);
  tokens_.resize(static_cast<std::size_t>(max_id + 1));
  present_.assign(tokens_.size(), false);
  std::vector<int32_t> order;
  order.reserve(entries.size());
  for (auto& e : entries) {
    auto id = static_cast<std::size_t>(e.second);
    tokens_[id] = std::move(e.first);
    present_[id] = true;
    order.push_back(e.second);
  }
  // Inserted in file order, so a duplicated token string ends with its last id. tokens_ is
  // complete before the first view is taken.
  index_.reserve(order.size());
  for (int32_t id : order) index_[std::string_view(tokens_[static_cast<std::size_t>(id)])] = id;
}

}  // namespace aquin::tok
