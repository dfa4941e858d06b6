#include "kiln/data/loader.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>

namespace kiln::data {
namespace {

// Stream tags so that the permutation, the augmentation and the user transform of the same
// (seed, epoch, batch) draw unrelated random numbers.
constexpr uint64_t kShuffleStream = 0x5348554646ULL;  // "SHUFF"
constexpr uint64_t kAugmentStream = 0x4155474dULL;    // "AUGM"
constexpr uint64_t kTransformStream = 0x5846524dULL;  // "XFRM"

std::string shape_string(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// Keeps ATen work started on this thread (only ever from a BatchTransform) single-threaded.
// OpenMP's thread count is a per-thread setting, so this leaves the consumer's intra-op threads
// alone, unlike at::set_num_threads. ATen first applies its own default lazily per thread, so
// trigger that before overriding it. omp_set_num_threads is looked up at run time because our
// targets do not link OpenMP themselves; LibTorch has already loaded it.
void limit_this_thread_to_one_intra_op_thread() {
  (void)at::get_num_threads();
  using SetThreads = void (*)(int);
  static const auto set_threads =
      reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_threads) set_threads(1);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LoaderOptions

Status LoaderOptions::validate() const {
  if (batch_size_ < 1)
    return Status::InvalidArgument("loader.batch_size: " + std::to_string(batch_size_) +
                                   " must be >= 1");
  if (workers_ < 0 || workers_ > 256)
    return Status::InvalidArgument("loader.workers: " + std::to_string(workers_) +
                                   " must be in [0, 256]");
  if (shard_count_ < 1 || shard_index_ < 0 || shard_index_ >= shard_count_)
    return Status::InvalidArgument("loader.shard: rank " + std::to_string(shard_index_) + " of " +
                                   std::to_string(shard_count_));
  if (shard_count_ > batch_size_)
    return Status::InvalidArgument("loader.shard: a batch of " + std::to_string(batch_size_) +
                                   " cannot be shared by " + std::to_string(shard_count_) +
                                   " ranks");
  if (prefetch_ < 0)
    return Status::InvalidArgument("loader.prefetch: " + std::to_string(prefetch_) +
                                   " must be >= 0 (0: 2 x workers)");
  if (mean_.size() != std_.size())
    return Status::InvalidArgument("loader.normalize: " + std::to_string(mean_.size()) +
                                   " means but " + std::to_string(std_.size()) + " stds");
  for (size_t i = 0; i < std_.size(); ++i) {
    if (!std::isfinite(mean_[i]) || !std::isfinite(std_[i]) || !(std_[i] > 0.f))
      return Status::InvalidArgument("loader.normalize: entry " + std::to_string(i) +
                                     " needs a finite mean and a std > 0");
  }
  Status s = augment_.validate();
  if (!s.ok()) return s;
  return Status::Ok();
}

Json LoaderOptions::to_json() const {
  Json j;
  j["batch_size"] = batch_size_;
  j["shuffle"] = shuffle_;
  j["drop_last"] = drop_last_;
  if (shard_count_ > 1) j["shard"] = {shard_index_, shard_count_};
  j["workers"] = workers_;
  j["prefetch"] = prefetch_;
  j["seed"] = seed_;
  j["augment"] = augment_.to_json();
  j["scale_uint8"] = scale_uint8_;
  j["mean"] = mean_;
  j["std"] = std_;
  j["channels_last"] = channels_last_;
  return j;
}

std::string LoaderOptions::to_string() const { return to_json().dump(); }

// ---------------------------------------------------------------------------------------------
// Loader::Impl

struct Loader::Impl {
  LoaderOptions options{1};
  std::optional<Augmenter> augmenter;  // only when options.augment_ is enabled
  BatchTransform transform;
  torch::Tensor inputs;   // contiguous, CPU
  torch::Tensor targets;  // contiguous, CPU
  int64_t n = 0;
  int64_t num_batches = 0;
  int64_t prefetch = 0;
  std::vector<float> mean;  // resolved to one entry per channel/column, or empty
  std::vector<float> stdev;

  // Worker state, guarded by mu.
  std::mutex mu;
  std::condition_variable work_cv;   // workers: there is a batch to claim, or stop
  std::condition_variable ready_cv;  // consumer: a batch finished
  bool stop = false;
  bool active = false;  // an epoch was started
  int64_t generation = 0;
  int64_t epoch = 0;
  int64_t next_claim = 0;
  int64_t next_consume = 0;
  int64_t end = 0;
  std::shared_ptr<const std::vector<int64_t>> perm;
  std::map<int64_t, Expected<Batch>> ready;
  std::optional<Status> failed;
  std::vector<std::thread> threads;

  std::vector<int64_t> permutation(int64_t e) const {
    std::vector<int64_t> p(n);
    std::iota(p.begin(), p.end(), int64_t{0});
    if (options.shuffle_) {
      Rng rng = Rng::from_key(options.seed_, static_cast<uint64_t>(e), 0, kShuffleStream);
      for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.uniform_int(0, i)]);
    }
    return p;
  }

  Expected<Batch> build(int64_t e, int64_t k, const std::vector<int64_t>& p) const;
  // build() plus the transform, with exceptions turned into a Status.
  Expected<Batch> build_guarded(int64_t e, int64_t k, const std::vector<int64_t>& p) const;
  void worker_loop();
};

Expected<Batch> Loader::Impl::build(int64_t e, int64_t k, const std::vector<int64_t>& p) const {
  const int64_t bs = options.batch_size_;
  int64_t first = k * bs;
  int64_t b = std::min(bs, n - first);
  if (options.shard_count_ > 1) {  // this rank's share of the global batch
    const int64_t lo = b * options.shard_index_ / options.shard_count_;
    const int64_t hi = b * (options.shard_index_ + 1) / options.shard_count_;
    first += lo;
    b = hi - lo;
  }
  const int64_t* rows = p.data() + first;

  Batch batch;
  batch.epoch = e;
  batch.index = k;

  // Indices.
  batch.indices = torch::empty({b}, torch::kInt64);
  std::memcpy(batch.indices.data_ptr<int64_t>(), rows, b * sizeof(int64_t));

  // Targets: copy whole rows of bytes.
  {
    std::vector<int64_t> shape = targets.sizes().vec();
    shape[0] = b;
    batch.targets = torch::empty(shape, targets.options());
    const size_t row_bytes = targets.numel() / n * targets.element_size();
    const auto* src = static_cast<const uint8_t*>(targets.data_ptr());
    auto* dst = static_cast<uint8_t*>(batch.targets.data_ptr());
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(dst + i * row_bytes, src + rows[i] * row_bytes, row_bytes);
  }

  // Inputs.
  std::vector<int64_t> shape = inputs.sizes().vec();
  shape[0] = b;
  const bool images = inputs.dim() == 4;
  const bool channels_last = images && options.channels_last_;
  batch.inputs =
      torch::empty(shape, torch::TensorOptions()
                              .dtype(torch::kFloat32)
                              .memory_format(channels_last ? torch::MemoryFormat::ChannelsLast
                                                           : torch::MemoryFormat::Contiguous));
  const int64_t sample = inputs.numel() / n;
  // Images: C planes of H×W; tables: F "channels" of one value each.
  const int64_t channels = inputs.size(1);
  const int64_t plane = sample / channels;
  float* out = batch.inputs.data_ptr<float>();
  const bool is_uint8 = inputs.scalar_type() == torch::kUInt8;
  const float divisor = (is_uint8 && options.scale_uint8_) ? 255.f : 1.f;
  std::vector<float> work(channels_last ? sample : 0);
  std::vector<float> scratch;
  Rng batch_rng = Rng::from_key(options.seed_, static_cast<uint64_t>(e), static_cast<uint64_t>(k),
                                kAugmentStream);

  for (int64_t i = 0; i < b; ++i) {
    float* x = channels_last ? work.data() : out + i * sample;
    if (is_uint8) {
      const uint8_t* src = inputs.data_ptr<uint8_t>() + rows[i] * sample;
      if (divisor == 1.f) {
        for (int64_t j = 0; j < sample; ++j) x[j] = static_cast<float>(src[j]);
      } else {
        for (int64_t j = 0; j < sample; ++j) x[j] = static_cast<float>(src[j]) / divisor;
      }
    } else {
      std::memcpy(x, inputs.data_ptr<float>() + rows[i] * sample, sample * sizeof(float));
    }
    if (augmenter) {
      Rng sample_rng(batch_rng.next());
      augmenter->apply_sample(x, channels, inputs.size(2), inputs.size(3), sample_rng, scratch);
    }
    if (!mean.empty()) {
      for (int64_t c = 0; c < channels; ++c) {
        const float m = mean[c];
        const float s = stdev[c];
        float* v = x + c * plane;
        for (int64_t j = 0; j < plane; ++j) v[j] = (v[j] - m) / s;
      }
    }
    if (channels_last) {
      float* dst = out + i * sample;  // H×W×C
      for (int64_t c = 0; c < channels; ++c) {
        const float* v = x + c * plane;
        for (int64_t j = 0; j < plane; ++j) dst[j * channels + c] = v[j];
      }
    }
  }
  return batch;
}

Expected<Batch> Loader::Impl::build_guarded(int64_t e, int64_t k,
                                            const std::vector<int64_t>& p) const {
  const std::string where = "loader: batch " + std::to_string(k) + " of epoch " + std::to_string(e);
  try {
    Expected<Batch> batch = build(e, k, p);
    if (!batch.ok() || !transform) return batch;
    Rng rng = Rng::from_key(options.seed_, static_cast<uint64_t>(e), static_cast<uint64_t>(k),
                            kTransformStream);
    Status s = transform(*batch, rng);
    if (!s.ok()) return s.with_context(where);
    return batch;
  } catch (const std::exception& ex) {
    return Status::Internal(where + ": " + ex.what());
  } catch (...) {
    return Status::Internal(where + ": unknown exception");
  }
}

void Loader::Impl::worker_loop() {
  limit_this_thread_to_one_intra_op_thread();
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    work_cv.wait(lock, [&] {
      return stop ||
             (active && !failed && next_claim < end && next_claim < next_consume + prefetch);
    });
    if (stop) return;
    const int64_t k = next_claim++;
    const int64_t gen = generation;
    const int64_t e = epoch;
    std::shared_ptr<const std::vector<int64_t>> p = perm;
    lock.unlock();
    Expected<Batch> batch = build_guarded(e, k, *p);
    lock.lock();
    if (gen != generation) continue;  // the epoch was abandoned meanwhile
    ready.emplace(k, std::move(batch));
    ready_cv.notify_one();
  }
}

// ---------------------------------------------------------------------------------------------
// Loader

Loader::Loader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->work_cv.notify_all();
  for (std::thread& t : impl_->threads) t.join();
}

Expected<std::unique_ptr<Loader>> Loader::Create(const ImageSet& set, const LoaderOptions& options,
                                                 BatchTransform transform) {
  return Create(set.images, set.labels, options, std::move(transform));
}

Expected<std::unique_ptr<Loader>> Loader::Create(torch::Tensor inputs, torch::Tensor targets,
                                                 const LoaderOptions& options,
                                                 BatchTransform transform) {
  KILN_RETURN_IF_ERROR(options.validate());
  if (!inputs.defined() || !targets.defined())
    return Status::InvalidArgument("loader: inputs and targets must both be defined tensors");
  if (!inputs.device().is_cpu() || !targets.device().is_cpu())
    return Status::InvalidArgument("loader: inputs and targets must be CPU tensors");
  if (inputs.scalar_type() != torch::kUInt8 && inputs.scalar_type() != torch::kFloat32)
    return Status::InvalidArgument(std::string("loader: inputs must be uint8 or float32, got ") +
                                   c10::toString(inputs.scalar_type()));
  if (inputs.dim() != 4 && inputs.dim() != 2)
    return Status::InvalidArgument(
        "loader: inputs must be N×C×H×W images or an N×F table, got "
        "shape " +
        shape_string(inputs));
  if (targets.scalar_type() != torch::kInt64 && targets.scalar_type() != torch::kFloat32)
    return Status::InvalidArgument(std::string("loader: targets must be int64 or float32, got ") +
                                   c10::toString(targets.scalar_type()));
  if (targets.dim() < 1)
    return Status::InvalidArgument("loader: targets must have one row per sample, got a scalar");
  if (inputs.size(0) != targets.size(0))
    return Status::InvalidArgument(
        "loader: " + std::to_string(inputs.size(0)) + " inputs " + shape_string(inputs) + " but " +
        std::to_string(targets.size(0)) + " targets " + shape_string(targets));
  if (inputs.size(0) == 0) return Status::InvalidArgument("loader: the dataset is empty");
  if (inputs.numel() == 0)
    return Status::InvalidArgument("loader: inputs have an empty sample shape " +
                                   shape_string(inputs));
  const bool images = inputs.dim() == 4;
  if (!images && options.augment_.enabled())
    return Status::InvalidArgument(
        "loader.augment: augmentation needs N×C×H×W images, inputs are "
        "a table " +
        shape_string(inputs));
  if (!images && options.channels_last_)
    return Status::InvalidArgument(
        "loader.channels_last: needs N×C×H×W images, inputs are a "
        "table " +
        shape_string(inputs));
  const int64_t channels = inputs.size(1);
  const size_t given = options.mean_.size();
  if (given > 1 && static_cast<int64_t>(given) != channels)
    return Status::InvalidArgument("loader.normalize: " + std::to_string(given) + " values for " +
                                   std::to_string(channels) + (images ? " channels" : " columns"));

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (options.augment_.enabled()) {
    KILN_ASSIGN_OR_RETURN(Augmenter aug, Augmenter::Create(options.augment_));
    impl->augmenter.emplace(aug);
  }
  impl->transform = std::move(transform);
  impl->inputs = inputs.contiguous();
  impl->targets = targets.contiguous();
  impl->n = inputs.size(0);
  const int64_t bs = options.batch_size_;
  impl->num_batches = options.drop_last_ ? impl->n / bs : (impl->n + bs - 1) / bs;
  impl->prefetch =
      options.prefetch_ > 0 ? options.prefetch_ : std::max<int64_t>(1, 2 * options.workers_);
  if (given > 0) {
    impl->mean.assign(channels, options.mean_[0]);
    impl->stdev.assign(channels, options.std_[0]);
    if (given > 1) {
      impl->mean = options.mean_;
      impl->stdev = options.std_;
    }
  }
  Impl* raw = impl.get();
  for (int64_t i = 0; i < options.workers_; ++i)
    impl->threads.emplace_back([raw] { raw->worker_loop(); });
  return std::unique_ptr<Loader>(new Loader(std::move(impl)));
}

Status Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  Impl& s = *impl_;
  if (epoch < 0)
    return Status::InvalidArgument("loader.start_epoch: epoch " + std::to_string(epoch) +
                                   " must be >= 0");
  if (first_batch < 0 || first_batch > s.num_batches)
    return Status::InvalidArgument("loader.start_epoch: first batch " +
                                   std::to_string(first_batch) + " is outside [0, " +
                                   std::to_string(s.num_batches) + "]");
  auto p = std::make_shared<const std::vector<int64_t>>(s.permutation(epoch));
  std::map<int64_t, Expected<Batch>> dropped;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.generation;
    dropped.swap(s.ready);  // freed outside the lock
    s.epoch = epoch;
    s.next_claim = s.next_consume = first_batch;
    s.end = s.num_batches;
    s.perm = std::move(p);
    s.failed.reset();
    s.active = true;
  }
  s.work_cv.notify_all();
  return Status::Ok();
}

Expected<std::optional<Batch>> Loader::next() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.active) return Status::FailedPrecondition("loader: next() called before start_epoch()");
  if (s.failed) return *s.failed;
  if (s.next_consume >= s.end) return std::optional<Batch>();
  const int64_t k = s.next_consume;
  if (s.threads.empty()) {  // no workers: build it here
    std::shared_ptr<const std::vector<int64_t>> p = s.perm;
    const int64_t e = s.epoch;
    lock.unlock();
    Expected<Batch> batch = s.build_guarded(e, k, *p);
    lock.lock();
    ++s.next_consume;
    if (!batch.ok()) {
      s.failed = batch.status();
      return batch.status();
    }
    return std::optional<Batch>(std::move(batch).value());
  }
  s.ready_cv.wait(lock, [&] { return s.ready.count(k) > 0; });
  auto node = s.ready.extract(k);
  ++s.next_consume;
  lock.unlock();
  s.work_cv.notify_all();
  if (!node.mapped().ok()) {
    lock.lock();
    s.failed = node.mapped().status();
    return node.mapped().status();
  }
  return std::optional<Batch>(std::move(node.mapped()).value());
}

Expected<Batch> Loader::batch(int64_t epoch, int64_t index) const {
  if (epoch < 0 || index < 0 || index >= impl_->num_batches)
    return Status::InvalidArgument("loader.batch: batch " + std::to_string(index) + " of epoch " +
                                   std::to_string(epoch) + " is outside the epoch's " +
                                   std::to_string(impl_->num_batches) + " batches");
  return impl_->build_guarded(epoch, index, impl_->permutation(epoch));
}

std::vector<int64_t> Loader::permutation(int64_t epoch) const { return impl_->permutation(epoch); }
int64_t Loader::size() const { return impl_->n; }
int64_t Loader::batches_per_epoch() const { return impl_->num_batches; }
const LoaderOptions& Loader::options() const { return impl_->options; }

}  // namespace kiln::data
