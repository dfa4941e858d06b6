// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO (Debian's LibTorch is built
// with Gloo; the symbols are in libtorch_cpu).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "kiln/train/distributed.h"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace kiln::train {

namespace {

Expected<int> env_int(const char* name, int fallback, bool required) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required) return Status::InvalidArgument(std::string(name) + " is not set");
    return fallback;
  }
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > 1'000'000)
    return Status::InvalidArgument(std::string(name) + "=" + v + ": expected a whole number");
  return static_cast<int>(n);
}

}  // namespace

struct DistributedContext::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

Expected<DistributedSettings> distributed_settings_from_env() {
  DistributedSettings s;
  KILN_ASSIGN_OR_RETURN(s.world_size, env_int("WORLD_SIZE", 1, false));
  if (s.world_size <= 1) {
    s.world_size = 1;
    return s;
  }
  KILN_ASSIGN_OR_RETURN(s.rank, env_int("RANK", 0, true));
  KILN_ASSIGN_OR_RETURN(s.local_rank, env_int("LOCAL_RANK", s.rank, false));
  KILN_ASSIGN_OR_RETURN(s.master_port, env_int("MASTER_PORT", 0, true));
  if (s.rank >= s.world_size)
    return Status::InvalidArgument("RANK=" + std::to_string(s.rank) +
                                   " is outside WORLD_SIZE=" + std::to_string(s.world_size));
  if (s.master_port <= 0 || s.master_port > 65535)
    return Status::InvalidArgument("MASTER_PORT=" + std::to_string(s.master_port) +
                                   ": not a TCP port");
  const char* addr = std::getenv("MASTER_ADDR");
  if (!addr || !*addr) return Status::InvalidArgument("MASTER_ADDR is not set");
  s.master_addr = addr;
  KILN_ASSIGN_OR_RETURN(
      const int bucket_kb,
      env_int("KILN_DDP_BUCKET_KB", static_cast<int>(s.bucket_bytes / 1024), false));
  if (bucket_kb <= 0)
    return Status::InvalidArgument("KILN_DDP_BUCKET_KB=0: the bucket size must be > 0 KiB");
  s.bucket_bytes = int64_t{bucket_kb} * 1024;
  return s;
}

DistributedContext::DistributedContext(DistributedSettings settings, std::unique_ptr<Impl> impl)
    : settings_(std::move(settings)), impl_(std::move(impl)) {}

DistributedContext::~DistributedContext() = default;

Expected<std::unique_ptr<DistributedContext>> DistributedContext::Join(
    const DistributedSettings& s) {
  auto impl = std::make_unique<Impl>();
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(s.timeout_seconds * 1000));
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(s.master_port);
    store_options.isServer = s.rank == 0;
    store_options.numWorkers = s.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(s.master_addr, store_options);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // The device (address) this rank's Gloo pairs bind to: the interface that reaches the
    // master (loopback for a one-machine job), not whatever the hostname resolves to.
    options->devices.push_back(s.master_addr == "127.0.0.1" || s.master_addr == "localhost"
                                   ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                   : c10d::ProcessGroupGloo::createDefaultDevice());
    options->threads = 1;
    impl->group =
        c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, s.rank, s.world_size, options);
  } catch (const std::exception& e) {
    return Status::Unavailable("distributed training: rank " + std::to_string(s.rank) + " of " +
                               std::to_string(s.world_size) + " could not join via " +
                               s.master_addr + ":" + std::to_string(s.master_port) + ": " +
                               e.what());
  }
  return std::unique_ptr<DistributedContext>(new DistributedContext(s, std::move(impl)));
}

Status DistributedContext::allreduce_mean(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return Status::Ok();
  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> flat;
  flat.reserve(tensors.size());
  for (const torch::Tensor& t : tensors) flat.push_back(t.detach().reshape(-1).to(torch::kFloat32));
  std::vector<torch::Tensor> buffer = {torch::cat(flat)};
  try {
    impl_->group->allreduce(buffer)->wait();
  } catch (const std::exception& e) {
    return Status::Unavailable("distributed training: all-reduce failed on rank " +
                               std::to_string(rank()) + " (a rank died or timed out): " + e.what());
  }
  buffer[0].div_(static_cast<double>(world_size()));
  int64_t at = 0;
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(buffer[0].slice(0, at, at + n).view(t.sizes()));
    at += n;
  }
  allreduce_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++allreduce_calls_;
  return Status::Ok();
}

Status DistributedContext::allreduce_sum(std::vector<double>* values) {
  if (values->empty()) return Status::Ok();
  std::vector<torch::Tensor> buffer = {torch::tensor(*values, torch::kFloat64)};
  try {
    impl_->group->allreduce(buffer)->wait();
  } catch (const std::exception& e) {
    return Status::Unavailable("distributed training: all-reduce failed on rank " +
                               std::to_string(rank()) + ": " + e.what());
  }
  for (size_t i = 0; i < values->size(); ++i)
    (*values)[i] = buffer[0][static_cast<int64_t>(i)].item<double>();
  return Status::Ok();
}

Status DistributedContext::broadcast_flag(bool* value) {
  std::vector<torch::Tensor> buffer = {torch::full({1}, *value ? 1 : 0, torch::kInt64)};
  try {
    impl_->group->broadcast(buffer)->wait();
  } catch (const std::exception& e) {
    return Status::Unavailable("distributed training: broadcast failed on rank " +
                               std::to_string(rank()) + ": " + e.what());
  }
  *value = buffer[0].item<int64_t>() != 0;
  return Status::Ok();
}

Status DistributedContext::barrier(const std::string& what) {
  try {
    impl_->group->barrier()->wait();
  } catch (const std::exception& e) {
    return Status::Unavailable("distributed training: rank " + std::to_string(rank()) +
                               " waited for the others at " + what + " in vain: " + e.what());
  }
  return Status::Ok();
}

struct GradientReducer::State {
  struct Bucket {
    std::vector<size_t> members;  ///< indices into parameters
    torch::Tensor flat;           ///< float32, the members' gradients back to back
    size_t ready = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::vector<torch::Tensor> parameters;
  std::vector<size_t> bucket_of, offset_of;  ///< per parameter
  std::vector<char> arrived;                 ///< per parameter, this step
  std::vector<Bucket> buckets;
  size_t next_to_start = 0;
  int64_t started_in_backward = 0;  ///< buckets the hooks started, over all steps
  std::string error;                ///< the first failure of a hook-started all-reduce
  bool synchronising = true;        ///< false: backward() only adds into .grad (no_sync)
  bool local_sums = false;          ///< a backward() since finish() added into .grad
  std::mutex mu;

  /// Starts the buckets that are full, in index order. Holds mu.
  void start_ready_buckets(bool in_backward) {
    while (next_to_start < buckets.size() &&
           buckets[next_to_start].ready == buckets[next_to_start].members.size()) {
      Bucket& b = buckets[next_to_start++];
      std::vector<torch::Tensor> tensors{b.flat};
      if (in_backward) ++started_in_backward;
      try {
        b.work = group->allreduce(tensors);
      } catch (const std::exception& e) {
        if (error.empty()) error = e.what();
      }
    }
  }

  /// Parameter `param`'s slice of its bucket.
  torch::Tensor slot(size_t param) {
    const int64_t offset = static_cast<int64_t>(offset_of[param]);
    return buckets[bucket_of[param]].flat.slice(0, offset, offset + parameters[param].numel());
  }

  void arrived_gradient(size_t param, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mu);
    if (!synchronising) {  // autograd adds it into .grad after this hook
      local_sums = true;
      return;
    }
    Bucket& b = buckets[bucket_of[param]];
    torch::Tensor into = slot(param);
    into.copy_(grad.detach().reshape(-1));
    // The accumulated batches' sum is in .grad (the hook runs before autograd adds to it).
    const torch::Tensor& summed = parameters[param].grad();
    if (local_sums && summed.defined()) into.add_(summed.detach().reshape(-1));
    if (!arrived[param]) {
      arrived[param] = 1;
      ++b.ready;
    }
    start_ready_buckets(/*in_backward=*/true);
  }
};

GradientReducer::GradientReducer(DistributedContext& context,
                                 const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes)
    : context_(context), state_(std::make_shared<State>()) {
  State& s = *state_;
  s.group = context.impl_->group;
  for (const torch::Tensor& p : parameters)
    if (p.requires_grad()) s.parameters.push_back(p);
  s.bucket_of.resize(s.parameters.size());
  s.offset_of.resize(s.parameters.size());
  s.arrived.assign(s.parameters.size(), 0);
  int64_t bytes = 0;
  for (size_t k = s.parameters.size(); k-- > 0;) {
    if (s.buckets.empty() || bytes >= bucket_bytes) {
      s.buckets.emplace_back();
      bytes = 0;
    }
    s.bucket_of[k] = s.buckets.size() - 1;
    s.offset_of[k] = static_cast<size_t>(bytes / 4);
    s.buckets.back().members.push_back(k);
    bytes += s.parameters[k].numel() * 4;
  }
  for (State::Bucket& b : s.buckets) {
    int64_t numel = 0;
    for (size_t k : b.members) numel += s.parameters[k].numel();
    b.flat = torch::zeros({numel}, torch::kFloat32);
  }
  std::weak_ptr<State> weak = state_;
  for (size_t k = 0; k < s.parameters.size(); ++k) {
    torch::Tensor& p = s.parameters[k];
    const unsigned handle = p.register_hook([weak, k](torch::Tensor grad) {
      if (std::shared_ptr<State> state = weak.lock()) state->arrived_gradient(k, grad);
    });
    hooks_.emplace_back(p, handle);
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [p, handle] : hooks_) p.remove_hook(handle);
}

int64_t GradientReducer::bucket_count() const {
  return static_cast<int64_t>(state_->buckets.size());
}

int64_t GradientReducer::started_in_backward() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->started_in_backward;
}

void GradientReducer::set_synchronising(bool on) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->synchronising = on;
}

Status GradientReducer::finish() {
  State& s = *state_;
  const auto start = std::chrono::steady_clock::now();
  std::string failure;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    // Parameters the last backward gave no gradient count as zeros, or as what the accumulated
    // batches summed into .grad (the other ranks may have one: every rank all-reduces the same
    // buckets).
    for (size_t k = 0; k < s.parameters.size(); ++k) {
      if (s.arrived[k]) continue;
      State::Bucket& b = s.buckets[s.bucket_of[k]];
      const torch::Tensor& summed = s.parameters[k].grad();
      if (s.local_sums && summed.defined())
        s.slot(k).copy_(summed.detach().reshape(-1));
      else
        s.slot(k).zero_();
      s.arrived[k] = 1;
      ++b.ready;
    }
    s.start_ready_buckets(/*in_backward=*/false);
    failure = s.error;
  }
  for (State::Bucket& b : s.buckets) {
    try {
      if (b.work) b.work->wait();
    } catch (const std::exception& e) {
      if (failure.empty()) failure = e.what();
    }
    b.work.reset();
  }
  std::fill(s.arrived.begin(), s.arrived.end(), 0);
  for (State::Bucket& b : s.buckets) b.ready = 0;
  s.next_to_start = 0;
  s.error.clear();
  s.synchronising = true;
  s.local_sums = false;
  if (!failure.empty())
    return Status::Unavailable("distributed training: all-reduce failed on rank " +
                               std::to_string(context_.rank()) +
                               " (a rank died or timed out): " + failure);
  torch::NoGradGuard no_grad;
  const double world = static_cast<double>(context_.world_size());
  for (size_t k = 0; k < s.parameters.size(); ++k) {
    torch::Tensor& p = s.parameters[k];
    const torch::Tensor mean = s.slot(k).view(p.sizes()).div(world);
    if (p.grad().defined())
      p.mutable_grad().copy_(mean);
    else
      p.mutable_grad() = mean.to(p.dtype());
  }
  context_.allreduce_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  context_.allreduce_calls_ += static_cast<int64_t>(s.buckets.size());
  return Status::Ok();
}

}  // namespace kiln::train
