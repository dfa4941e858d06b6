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

// A host tensor's copy on `device`. On a GPU it goes through pinned memory without making the
// host wait: a copy from pageable memory would first wait for every kernel queued before it, so
// the host could not queue the next training step while the GPU runs this one. (The caching
// host allocator keeps the pinned block until the copy is done.)
torch::Tensor upload(const torch::Tensor& host, const torch::Device& device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
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
  if (device_) j["device"] = device_->str();
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
  // With options.device_: the dataset there, and mean/std as 1×C(×1×1) tensors there.
  torch::Tensor device_inputs, device_targets, device_mean, device_stdev;
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

  // The dataset rows of batch k (this rank's share of them): [first, first + count) of p.
  std::pair<int64_t, int64_t> batch_rows(int64_t k) const {
    const int64_t bs = options.batch_size_;
    int64_t first = k * bs;
    int64_t b = std::min(bs, n - first);
    if (options.shard_count_ > 1) {
      const int64_t lo = b * options.shard_index_ / options.shard_count_;
      const int64_t hi = b * (options.shard_index_ + 1) / options.shard_count_;
      first += lo;
      b = hi - lo;
    }
    return {first, b};
  }
  Rng augment_rng(int64_t e, int64_t k) const {
    return Rng::from_key(options.seed_, static_cast<uint64_t>(e), static_cast<uint64_t>(k),
                         kAugmentStream);
  }
  Expected<Batch> build(int64_t e, int64_t k, const std::vector<int64_t>& p) const;
  // build() with tensor ops on options.device_.
  Expected<Batch> build_on_device(int64_t e, int64_t k, const std::vector<int64_t>& p) const;
  // The augmentation of a batch of images already on the device, as apply_sample would do it.
  torch::Tensor augment_on_device(torch::Tensor x, int64_t e, int64_t k) const;
  // build() plus the transform, with exceptions turned into a Status.
  Expected<Batch> build_guarded(int64_t e, int64_t k, const std::vector<int64_t>& p) const;
  void worker_loop();
};

Expected<Batch> Loader::Impl::build(int64_t e, int64_t k, const std::vector<int64_t>& p) const {
  if (options.device_) return build_on_device(e, k, p);
  const auto [first, b] = batch_rows(k);
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
  Rng batch_rng = augment_rng(e, k);

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

Expected<Batch> Loader::Impl::build_on_device(int64_t e, int64_t k,
                                              const std::vector<int64_t>& p) const {
  const auto [first, b] = batch_rows(k);
  const torch::Device device = *options.device_;
  Batch batch;
  batch.epoch = e;
  batch.index = k;
  batch.indices =
      torch::from_blob(const_cast<int64_t*>(p.data() + first), {b}, torch::kInt64).clone();
  const torch::Tensor rows = upload(batch.indices, device);
  batch.targets = device_targets.index_select(0, rows);
  torch::Tensor x = device_inputs.index_select(0, rows).to(torch::kFloat32);
  if (inputs.scalar_type() == torch::kUInt8 && options.scale_uint8_) x = x / 255.f;
  if (augmenter) x = augment_on_device(std::move(x), e, k);
  if (device_mean.defined()) x = (x - device_mean) / device_stdev;
  batch.inputs = x.dim() == 4 && options.channels_last_
                     ? x.contiguous(torch::MemoryFormat::ChannelsLast)
                     : x.contiguous();
  return batch;
}

torch::Tensor Loader::Impl::augment_on_device(torch::Tensor x, int64_t e, int64_t k) const {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const AugmentOptions& o = augmenter->options();
  const bool noisy = o.noise_std_ > 0.f;
  // The draws, on the host, from the CPU path's streams: sample i of batch k draws from
  // Rng(augment_rng(e, k).next()), the i-th such value.
  std::vector<int64_t> params(static_cast<size_t>(b) * 8);  // dy dx flip erase y x h w
  torch::Tensor noise = noisy ? torch::empty({b, c, h, w}, torch::kFloat32) : torch::Tensor();
  Rng batch_rng = augment_rng(e, k);
  for (int64_t i = 0; i < b; ++i) {
    Rng sample_rng(batch_rng.next());
    const SampleAugmentation a = augmenter->draw(
        c, h, w, sample_rng, noisy ? noise.data_ptr<float>() + i * c * h * w : nullptr);
    int64_t* row = params.data() + i * 8;
    row[0] = a.dy;
    row[1] = a.dx;
    row[2] = a.flip;
    row[3] = a.erase;
    row[4] = a.erase_y;
    row[5] = a.erase_x;
    row[6] = a.erase_h;
    row[7] = a.erase_w;
  }
  const torch::Device device = x.device();
  const torch::Tensor table =
      upload(torch::from_blob(params.data(), {b, 8}, torch::kInt64), device);
  auto column = [&](int64_t j) { return table.select(1, j).view({b, 1, 1}); };
  const auto as_long = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const torch::Tensor ys = torch::arange(h, as_long).view({1, h, 1});
  const torch::Tensor xs = torch::arange(w, as_long).view({1, 1, w});
  if (o.crop_padding_ > 0 || o.translate_ > 0 || o.hflip_ > 0.f) {
    // out(y, x) = in(y - dy, x') with x' = flip ? W-1-dx-x : x-dx; zero outside the image.
    const torch::Tensor dy = column(0), dx = column(1), flip = column(2).to(torch::kBool);
    const torch::Tensor sy = ys - dy;                                          // B×H×1
    const torch::Tensor sx = torch::where(flip, (w - 1) - dx - xs, xs - dx);   // B×1×W
    const torch::Tensor inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w);  // B×H×W
    const torch::Tensor source = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).view({b, 1, h * w});
    const torch::Tensor moved =
        x.reshape({b, c, h * w}).gather(2, source.expand({b, c, h * w})).view({b, c, h, w});
    x = torch::where(inside.unsqueeze(1), moved, torch::zeros({}, x.options()));
  }
  if (noisy) x = x + upload(noise, device) * o.noise_std_;
  if (o.erase_prob_ > 0.f) {
    const torch::Tensor y0 = column(4), x0 = column(5);
    const torch::Tensor erased = column(3).to(torch::kBool) & (ys >= y0) & (ys < y0 + column(6)) &
                                 (xs >= x0) & (xs < x0 + column(7));  // B×H×W
    x = torch::where(erased.unsqueeze(1), torch::full({}, o.erase_value_, x.options()), x);
  }
  return x;
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
  if (options.device_) {
    try {
      impl->device_inputs = impl->inputs.to(*options.device_);
      impl->device_targets = impl->targets.to(*options.device_);
      if (!impl->mean.empty()) {
        std::vector<int64_t> shape{1, channels};
        if (images) shape = {1, channels, 1, 1};
        impl->device_mean = torch::tensor(impl->mean).view(shape).to(*options.device_);
        impl->device_stdev = torch::tensor(impl->stdev).view(shape).to(*options.device_);
      }
    } catch (const std::exception& ex) {
      return Status::Unavailable("loader.device: cannot place the dataset on " +
                                 options.device_->str() + ": " + ex.what());
    }
    return std::unique_ptr<Loader>(new Loader(std::move(impl)));  // no workers
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
