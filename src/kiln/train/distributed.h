#pragma once

// Data-parallel training across processes (one machine or many): which rank this process is,
// and the collectives the trainer needs, on c10d's Gloo process group over TCP. The launch
// contract is torchrun's (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), so
// `torchrun --no-python kiln train ...` works as well as `kiln train --nproc N`.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::train {

/// Where a rank finds the others. Plain value.
struct DistributedSettings {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// How long collectives and the rendezvous wait for a missing rank before failing.
  double timeout_seconds = 300;
  /// Gradient all-reduce bucket size (GradientReducer; KILN_DDP_BUCKET_KB, PyTorch's
  /// bucket_cap_mb): larger means fewer, later all-reduces.
  int64_t bucket_bytes = 512 * 1024;
};

/// The settings torchrun's environment gives (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
/// LOCAL_RANK; and Kiln's KILN_DDP_BUCKET_KB), or std::nullopt-like world_size 1 when WORLD_SIZE is
/// unset or 1. InvalidArgument names a malformed variable (a non-number, RANK outside
/// 0..WORLD_SIZE-1, a missing MASTER_*).
Expected<DistributedSettings> distributed_settings_from_env();

/// One rank's membership of a data-parallel job: a Gloo process group whose TCP store rank 0
/// hosts. Collectives block until every rank joins them (or the timeout passes: Unavailable
/// naming the collective); every rank must call the same collectives in the same order. Owned by
/// the trainer for one run; not thread-safe (the training thread only).
class DistributedContext {
 public:
  /// Joins the job: rank 0 listens on master_addr:master_port, the others connect (waiting up to
  /// the timeout for it). Unavailable when the rendezvous fails.
  static Expected<std::unique_ptr<DistributedContext>> Join(const DistributedSettings& settings);
  ~DistributedContext();

  int rank() const { return settings_.rank; }
  int world_size() const { return settings_.world_size; }
  /// Rank 0: writes checkpoints, evaluates, logs and writes the bundle.
  bool leader() const { return settings_.rank == 0; }
  int64_t bucket_bytes() const { return settings_.bucket_bytes; }

  /// Replaces each tensor (any float dtype, CPU) by its mean over the ranks: one all-reduce of
  /// their concatenation. For gradients and batch-norm statistics.
  Status allreduce_mean(const std::vector<torch::Tensor>& tensors);
  /// Sums `values` (float64) over the ranks, in place.
  Status allreduce_sum(std::vector<double>* values);
  /// Rank 0's `value` on every rank.
  Status broadcast_flag(bool* value);
  /// Waits until every rank gets here.
  Status barrier(const std::string& what);
  /// Seconds the training thread spent waiting for all-reduces so far (the communication a step
  /// pays for; a GradientReducer's overlapped part is not counted), and their number.
  double allreduce_seconds() const { return allreduce_seconds_; }
  int64_t allreduce_calls() const { return allreduce_calls_; }

 private:
  friend class GradientReducer;
  struct Impl;
  DistributedContext(DistributedSettings settings, std::unique_ptr<Impl> impl);
  DistributedSettings settings_;
  std::unique_ptr<Impl> impl_;
  double allreduce_seconds_ = 0;
  int64_t allreduce_calls_ = 0;
};

/// All-reduces a network's gradients while backward() still runs, as PyTorch's DDP does. The
/// parameters that require gradients are split into buckets of about `bucket_bytes`, in reverse
/// order (the order backward produces their gradients); a hook on each parameter copies its
/// gradient into its bucket, and a full bucket's all-reduce starts at once on Gloo's own thread
/// while backward computes the layers before it. Buckets start in index order on every rank
/// (Gloo pairs collectives by order), so a bucket that fills early waits for those before it.
/// finish() after backward() starts what is left (a parameter without a gradient this step
/// counts as zeros), waits, and sets each parameter's gradient to its mean over the ranks.
/// Accumulated batches (DDP's no_sync()): set_synchronising(false) before all but a step's last
/// backward(), which then only add into each .grad; the last one all-reduces the sums.
/// The parameters and the context must outlive it; its destructor removes the hooks. The hooks
/// run on the thread that calls backward() (CPU autograd), finish() on the training thread.
///
///   GradientReducer reducer(*dist, net->parameters(), dist->bucket_bytes());
///   loss.backward();                          // buckets all-reduce as they fill
///   KILN_RETURN_IF_ERROR(reducer.finish());   // every .grad is now the mean over the ranks
class GradientReducer {
 public:
  GradientReducer(DistributedContext& context, const std::vector<torch::Tensor>& parameters,
                  int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Whether the backward()s that follow all-reduce (true, the default) or only add their
  /// gradients into each .grad, as one process does (false). The next synchronising backward()
  /// all-reduces what .grad holds plus its own gradient, and finish() follows it.
  void set_synchronising(bool on);
  /// Completes this step's all-reduces (Unavailable naming the rank when one failed) and writes
  /// the means into the parameters' gradients; ready for the next step's backward().
  Status finish();
  int64_t bucket_count() const;
  /// Buckets whose all-reduce started while backward() ran (not left to finish()), all steps.
  int64_t started_in_backward() const;

 private:
  struct State;
  DistributedContext& context_;
  std::shared_ptr<State> state_;  ///< shared with the hooks
  std::vector<std::pair<torch::Tensor, unsigned>> hooks_;
};

}  // namespace kiln::train
