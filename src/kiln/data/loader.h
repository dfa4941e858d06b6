#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/data/augment.h"
#include "kiln/data/images.h"

namespace kiln::data {

/// How a Loader cuts an in-memory dataset into batches. Only the batch size is required.
///
///   auto opts = LoaderOptions(128).shuffle(true).workers(2).seed(7)
///                   .augment(AugmentOptions().crop_padding(2).hflip(0.5f))
///                   .normalize({0.2860f}, {0.3530f});
struct LoaderOptions {
  explicit LoaderOptions(int64_t batch_size) : batch_size_(batch_size) {}

  LoaderOptions& batch_size(int64_t n) {
    batch_size_ = n;
    return *this;
  }
  /// A fresh permutation every epoch, drawn from (seed, epoch). Off: dataset order.
  LoaderOptions& shuffle(bool on) {
    shuffle_ = on;
    return *this;
  }
  /// Drop the last batch when it would be smaller than batch_size.
  LoaderOptions& drop_last(bool on) {
    drop_last_ = on;
    return *this;
  }
  /// Worker threads building batches ahead of the consumer. 0: next() builds each batch itself.
  LoaderOptions& workers(int64_t n) {
    workers_ = n;
    return *this;
  }
  /// Most batches built or being built ahead of the consumer (0: 2 × workers). Bounds memory.
  LoaderOptions& prefetch(int64_t n) {
    prefetch_ = n;
    return *this;
  }
  /// Root of every random choice: the permutation comes from (seed, epoch), the augmentation of
  /// batch k from (seed, epoch, k), so batches are reproducible whatever the thread timing.
  LoaderOptions& seed(uint64_t s) {
    seed_ = s;
    return *this;
  }
  /// Image augmentation (N×C×H×W inputs only), applied after scaling and before normalize.
  LoaderOptions& augment(const AugmentOptions& a) {
    augment_ = a;
    return *this;
  }
  /// Divide uint8 inputs by 255 (on by default); off: plain cast to float. Float inputs are
  /// never scaled.
  LoaderOptions& scale_uint8(bool on) {
    scale_uint8_ = on;
    return *this;
  }
  /// Per-channel (images) or per-column (tables) `(x - mean) / std`, after augmentation. Either
  /// one value each, or one per channel/column.
  LoaderOptions& normalize(std::vector<float> mean, std::vector<float> stdev) {
    mean_ = std::move(mean);
    std_ = std::move(stdev);
    return *this;
  }
  /// Image batches come out in channels_last memory format (same shape, NHWC strides).
  LoaderOptions& channels_last(bool on) {
    channels_last_ = on;
    return *this;
  }

  /// Build batches with tensor ops on `device` instead of CPU loops on worker threads: the
  /// dataset is copied there once (uint8 stays uint8), and each batch is gathered, scaled,
  /// augmented (the same draws from the same Rng streams as the CPU path), normalised and laid
  /// out there by next(), on the consumer thread; workers and prefetch are unused. For training
  /// on a GPU, where the whole of a dataset like Fashion-MNIST fits. Batch::indices stays on the
  /// CPU. On the CPU the batches equal the worker path's up to float rounding.
  LoaderOptions& device(torch::Device d) {
    device_ = d;
    return *this;
  }

  /// Data-parallel training: batch k of an epoch is rank `index`'s share of the global batch k
  /// (the same permutation and batch boundaries on every rank; rows [b·index/count,
  /// b·(index+1)/count) of its b rows), so the ranks together see exactly what one process sees.
  LoaderOptions& shard(int64_t index, int64_t count) {
    shard_index_ = index;
    shard_count_ = count;
    return *this;
  }

  /// InvalidArgument naming the field for values that are wrong whatever the data (batch_size
  /// < 1, negative workers/prefetch, mean/std of different lengths or std <= 0, bad augment).
  Status validate() const;
  /// Every field, for run records and manifests.
  Json to_json() const;
  std::string to_string() const;

  int64_t batch_size_;
  bool shuffle_ = false;
  bool drop_last_ = false;
  int64_t workers_ = 0;
  int64_t prefetch_ = 0;
  uint64_t seed_ = 0;
  AugmentOptions augment_;
  bool scale_uint8_ = true;
  std::vector<float> mean_;
  std::vector<float> std_;
  bool channels_last_ = false;
  int64_t shard_index_ = 0;
  int64_t shard_count_ = 1;
  std::optional<torch::Device> device_;
};

/// One batch as the loader hands it out. Plain value type; owns its tensors.
struct Batch {
  torch::Tensor inputs;   ///< float32, B×C×H×W (channels_last if asked) or B×F
  torch::Tensor targets;  ///< the dataset's targets for these rows (int64 B or float32 B…)
                          ///< (inputs and targets on LoaderOptions::device when set)
  torch::Tensor indices;  ///< int64 B: the dataset rows, in batch order
  int64_t epoch = 0;
  int64_t index = 0;  ///< batch number within the epoch
  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
};

/// A user step run on each batch after augmentation and normalisation, on a worker thread (so it
/// must be thread-safe), with an Rng private to (seed, epoch, batch). A non-ok Status or an
/// exception is reported by Loader::next() for that batch.
using BatchTransform = std::function<Status(Batch&, Rng&)>;

/// Shuffles, batches, scales, augments and normalises an in-memory dataset, building batches on
/// worker threads ahead of the consumer with a bounded prefetch window.
///
/// Determinism: batch k of epoch e is a pure function of (data, options, e, k): bit-identical for
/// any number of workers, any thread timing, and when an epoch is resumed at batch k.
///
/// Threads: Create, start_epoch, next and the destructor belong to one consumer thread;
/// batch(), permutation() and the accessors are const and thread-safe. Workers use no ATen
/// kernels (plain loops into torch::empty storage), and each worker sets its own OpenMP thread
/// count to 1 — a per-thread setting, unlike the process-wide at::set_num_threads — so ATen ops
/// inside a BatchTransform stay on the worker and do not oversubscribe the cores the training
/// step uses. The dataset tensors are shared, not copied (unless non-contiguous): do not write to
/// them while the loader lives.
///
///   KILN_ASSIGN_OR_RETURN(ImageSet train, read_idx_images(images_path, labels_path));
///   KILN_ASSIGN_OR_RETURN(auto loader, Loader::Create(train, LoaderOptions(128).workers(2)));
///   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
///     KILN_RETURN_IF_ERROR(loader->start_epoch(epoch));
///     while (true) {
///       KILN_ASSIGN_OR_RETURN(std::optional<Batch> batch, loader->next());  // blocks
///       if (!batch) break;  // end of epoch
///       step(batch->inputs, batch->targets);
///     }
///   }
class Loader {
 public:
  /// `inputs`: uint8 or float32, N×C×H×W images or N×F table; `targets`: int64 or float32 with
  /// N rows. InvalidArgument names the problem: bad options, empty dataset, mismatched lengths,
  /// unsupported dtype/rank, augmentation or channels_last on a table, normalize length not
  /// matching the channels/columns. Starts the worker threads (idle until start_epoch).
  static Expected<std::unique_ptr<Loader>> Create(torch::Tensor inputs, torch::Tensor targets,
                                                  const LoaderOptions& options,
                                                  BatchTransform transform = nullptr);
  /// Images as inputs, labels as targets.
  static Expected<std::unique_ptr<Loader>> Create(const ImageSet& set, const LoaderOptions& options,
                                                  BatchTransform transform = nullptr);

  /// Stops and joins the workers; blocks at most for the batches they are building.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Begins (or restarts) `epoch` at batch `first_batch` (0 ≤ first_batch ≤ batches_per_epoch()),
  /// abandoning any epoch in progress: its queued batches are dropped and the ones being built
  /// are discarded when done. Not thread-safe (consumer thread).
  Status start_epoch(int64_t epoch, int64_t first_batch = 0);
  /// The next batch of the current epoch, std::nullopt once it is exhausted. Blocks until the
  /// batch is ready. Errors: FailedPrecondition before start_epoch; a batch's failure (transform
  /// status, or Internal for an exception), repeated until the next start_epoch.
  /// Not thread-safe (consumer thread).
  Expected<std::optional<Batch>> next();

  /// Builds batch `index` of `epoch` on the calling thread, identical to what next() returns.
  /// Thread-safe. InvalidArgument for an index outside the epoch.
  Expected<Batch> batch(int64_t epoch, int64_t index) const;
  /// The order in which `epoch` visits the dataset rows (identity without shuffle). Thread-safe.
  std::vector<int64_t> permutation(int64_t epoch) const;

  int64_t size() const;               ///< samples in the dataset
  int64_t batches_per_epoch() const;  ///< including a short last batch unless drop_last
  const LoaderOptions& options() const;

 private:
  struct Impl;
  explicit Loader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::data
