#pragma once
// The predictions a served version remembers for feedback: the last N rows by id, in a ring
// allocated once, so that remembering a row allocates nothing, ever. Torch-free.

#include <cstdint>
#include <string_view>
#include <vector>

namespace kiln::serve {

/// The last `capacity` predictions, each under its row id (`id` for a one-row request, `id#k`
/// for row k of a batch). A later row with the same id shadows an earlier one.
///
/// A row is kept as the 128-bit XXH3 hash of its id (two live ids colliding: odds ~1e-29 at
/// 100,000 rows) with its prediction, 40 bytes in a ring allocated by the constructor.
/// find() first indexes the rows remembered since its last call into an open-addressing table
/// (allocated at the first find(), so a server that gets no feedback has none). Nothing is
/// allocated per row: small long-lived allocations between a busy server's tensors pinned the
/// freed tensor memory (1.3 GB of RSS for a 784-input MLP under 64-row requests).
/// Not thread-safe: the caller serialises (LiveMonitor holds its lock).
///
///   PredictionMemory memory(100000);
///   memory.remember("r1", 0, 1, /*predicted=*/3, 0.0);
///   if (PredictionMemory::Entry* e = memory.find("r1")) e->labelled = true;
class PredictionMemory {
 public:
  struct Entry {
    int64_t predicted = -1;   ///< class index (classification), -1 otherwise
    double prediction = 0.0;  ///< the first output (regression), top-1 confidence (classifier)
    bool labelled = false;    ///< feedback joined already
  };

  explicit PredictionMemory(int64_t capacity);

  /// Remembers row `row` of a `rows`-row request `id`; forgets the oldest row beyond capacity.
  void remember(std::string_view id, int64_t row, int64_t rows, int64_t predicted,
                double prediction);
  /// The latest remembered prediction under `row_id` (`id` or `id#k`), or null when it was
  /// never remembered or has been forgotten. Valid until the next remember().
  Entry* find(std::string_view row_id);

  int64_t capacity() const { return capacity_; }
  /// Rows remembered now (at most capacity).
  int64_t size() const { return next_seq_ < capacity_ ? next_seq_ : capacity_; }

 private:
  struct Key {
    uint64_t low = 0, high = 0;  ///< XXH3-128 of the row id
    bool operator==(const Key& o) const { return low == o.low && high == o.high; }
  };
  struct Slot {
    Key key;
    Entry entry;
  };
  Slot& slot(int64_t seq) { return ring_[static_cast<size_t>(seq % capacity_)]; }
  int64_t oldest_seq() const { return next_seq_ - size(); }
  /// Indexes the rows remembered since the last call (at most capacity of them).
  void catch_up_index();
  /// Puts row `seq` in the index, over the cell of an older row with its key or of a forgotten
  /// row met first on the way.
  void index(int64_t seq);

  int64_t capacity_;
  std::vector<Slot> ring_;   ///< capacity slots; row s lives in slot s % capacity
  int64_t next_seq_ = 0;     ///< sequence number of the next row
  int64_t indexed_seq_ = 0;  ///< rows before this are in table_
  /// Open addressing with linear probing: seq + 1 of a row, 0 empty; a power of two at least
  /// twice the capacity. Cells of forgotten rows are reused by later rows; the table is rebuilt
  /// from the live rows when three quarters of it are in use.
  std::vector<int64_t> table_;
  int64_t table_used_ = 0;
};

}  // namespace kiln::serve
