#include "kiln/serve/prediction_memory.h"

#include <algorithm>
#include <charconv>
#include <functional>

namespace kiln::serve {

namespace {

uint64_t hash_id(std::string_view id) { return std::hash<std::string_view>{}(id); }

}  // namespace

PredictionMemory::PredictionMemory(int64_t capacity) : capacity_(std::max<int64_t>(1, capacity)) {}

void PredictionMemory::remember(std::string_view id, int64_t row, int64_t rows, int64_t predicted,
                                double prediction) {
  if (static_cast<int64_t>(ring_.size()) < capacity_) ring_.emplace_back();
  Slot& s = slot(next_seq_);
  s.id.assign(id);  // reuses the slot's buffer: no allocation once the ring is warm
  if (rows != 1) {
    char digits[24];
    auto r = std::to_chars(digits, digits + sizeof digits, row);
    s.id += '#';
    s.id.append(digits, r.ptr);
  }
  s.entry = Entry{predicted, prediction, false};
  ++next_seq_;
}

void PredictionMemory::catch_up_index() {
  const int64_t oldest = next_seq_ - static_cast<int64_t>(ring_.size());
  // Entries of forgotten rows stay until they are most of the index; then start afresh.
  if (static_cast<int64_t>(index_.size()) > 2 * capacity_) {
    index_.clear();
    indexed_seq_ = oldest;
  }
  for (int64_t seq = std::max(indexed_seq_, oldest); seq < next_seq_; ++seq)
    index_[hash_id(slot(seq).id)] = seq;
  indexed_seq_ = next_seq_;
}

PredictionMemory::Entry* PredictionMemory::find(std::string_view row_id) {
  catch_up_index();
  auto it = index_.find(hash_id(row_id));
  if (it == index_.end()) return nullptr;
  const int64_t seq = it->second;
  if (seq < next_seq_ - static_cast<int64_t>(ring_.size())) return nullptr;  // forgotten
  Slot& s = slot(seq);
  return s.id == row_id ? &s.entry : nullptr;
}

}  // namespace kiln::serve
