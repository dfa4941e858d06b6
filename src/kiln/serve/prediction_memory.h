#pragma once
// The predictions a served version remembers for feedback: the last N rows by id, kept in a ring
// so that remembering one costs a slot write (no hashing, no allocation once warm); the id index
// is built only when feedback asks. Torch-free.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::serve {

/// The last `capacity` predictions, each under its row id (`id` for a one-row request, `id#k`
/// for row k of a batch). A later row with the same id shadows an earlier one.
///
/// remember() appends to a ring; find() first indexes the rows appended since the last find()
/// (each row is indexed at most once, and only if feedback ever comes), so a server that gets no
/// feedback pays no hashing. Not thread-safe: the caller serialises (LiveMonitor holds its lock).
///
///   PredictionMemory memory(100000);
///   memory.remember("r1", 0, 1, /*predicted=*/3, 0.0);
///   if (PredictionMemory::Entry* e = memory.find("r1")) e->labelled = true;
class PredictionMemory {
 public:
  struct Entry {
    int64_t predicted = -1;   ///< class index (classification), -1 otherwise
    double prediction = 0.0;  ///< the first output (regression)
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
  int64_t size() const { return static_cast<int64_t>(ring_.size()); }

 private:
  struct Slot {
    std::string id;
    Entry entry;
  };
  Slot& slot(int64_t seq) { return ring_[static_cast<size_t>(seq % capacity_)]; }
  /// Indexes the rows remembered since the last call; rebuilds the index when forgotten rows
  /// make up most of it.
  void catch_up_index();

  int64_t capacity_;
  std::vector<Slot> ring_;   ///< grows to capacity, then wraps
  int64_t next_seq_ = 0;     ///< sequence number of the next row; row s lives in slot s % capacity
  int64_t indexed_seq_ = 0;  ///< rows before this are in index_
  /// 64-bit hash of a row id → its latest sequence number; find() checks the slot still holds
  /// that id (two live ids sharing a hash, odds ~1e-10 at 100,000 rows, would shadow each other).
  std::unordered_map<uint64_t, int64_t> index_;
};

}  // namespace kiln::serve
