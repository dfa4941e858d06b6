#include "kiln/serve/prediction_memory.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kiln::serve {

PredictionMemory::PredictionMemory(int64_t capacity)
    : capacity_(std::max<int64_t>(1, capacity)), ring_(static_cast<size_t>(capacity_)) {}

void PredictionMemory::remember(std::string_view id, int64_t row, int64_t rows, int64_t predicted,
                                double prediction) {
  XXH128_hash_t h;
  if (rows == 1) {
    h = XXH3_128bits(id.data(), id.size());
  } else {
    // The row id is id#row; hashed from the stack (or streamed when the id is long).
    char suffix[24] = {'#'};
    const size_t suffix_size =
        static_cast<size_t>(std::to_chars(suffix + 1, suffix + sizeof suffix, row).ptr - suffix);
    char text[160];
    if (id.size() + suffix_size <= sizeof text) {
      std::memcpy(text, id.data(), id.size());
      std::memcpy(text + id.size(), suffix, suffix_size);
      h = XXH3_128bits(text, id.size() + suffix_size);
    } else {
      XXH3_state_t state;
      XXH3_128bits_reset(&state);
      XXH3_128bits_update(&state, id.data(), id.size());
      XXH3_128bits_update(&state, suffix, suffix_size);
      h = XXH3_128bits_digest(&state);
    }
  }
  Slot& s = slot(next_seq_);
  s.key = Key{h.low64, h.high64};
  s.entry = Entry{predicted, prediction, false};
  ++next_seq_;
}

void PredictionMemory::index(int64_t seq) {
  const Key key = slot(seq).key;
  const size_t mask = table_.size() - 1;
  const int64_t oldest = oldest_seq();
  for (size_t i = static_cast<size_t>(key.low) & mask;; i = (i + 1) & mask) {
    const int64_t cell = table_[i];
    if (cell == 0) {
      table_[i] = seq + 1;
      ++table_used_;
      return;
    }
    const int64_t held = cell - 1;
    if (held < oldest || slot(held).key == key) {  // forgotten, or an older row with this id
      table_[i] = seq + 1;
      return;
    }
  }
}

void PredictionMemory::catch_up_index() {
  if (table_.empty()) {
    size_t cells = 16;
    while (cells < 2 * static_cast<size_t>(capacity_)) cells *= 2;
    table_.assign(cells, 0);
  }
  const int64_t oldest = oldest_seq();
  int64_t from = std::max(indexed_seq_, oldest);
  if (table_used_ + (next_seq_ - from) > static_cast<int64_t>(table_.size()) * 3 / 4) {
    std::fill(table_.begin(), table_.end(), 0);  // rebuilt from the live rows, oldest first
    table_used_ = 0;
    from = oldest;
  }
  for (int64_t seq = from; seq < next_seq_; ++seq) index(seq);
  indexed_seq_ = next_seq_;
}

PredictionMemory::Entry* PredictionMemory::find(std::string_view row_id) {
  catch_up_index();
  const XXH128_hash_t h = XXH3_128bits(row_id.data(), row_id.size());
  const Key key{h.low64, h.high64};
  const size_t mask = table_.size() - 1;
  const int64_t oldest = oldest_seq();
  for (size_t i = static_cast<size_t>(key.low) & mask; table_[i] != 0; i = (i + 1) & mask) {
    const int64_t seq = table_[i] - 1;
    if (seq >= oldest && slot(seq).key == key) return &slot(seq).entry;
  }
  return nullptr;
}

}  // namespace kiln::serve
