#pragma once
// Running a TorchScript module on a batch: its outputs unpacked, and large batches in smaller
// forwards where the CPU runs those faster. Shared by serving (TorchScriptRunner) and by what
// measures the served module (kiln compress, the benchmarks), so both time the same forwards.

#include <torch/script.h>

#include <vector>

#include "kiln/core/expected.h"

namespace kiln::model {

/// The tensors of one module call's result: a tensor, or a tuple or list of tensors. Internal
/// naming what else it was.
Expected<std::vector<torch::Tensor>> module_outputs(const c10::IValue& result);

/// `module`'s outputs for `batch`, run in forwards of at most `rows_per_forward` rows (0: one
/// forward) whose outputs are concatenated in order; no device moves, no inference guard (the
/// caller's). Internal naming the failure (the interpreter's message for a failed forward).
/// Thread-safety: that of `module` (one caller at a time for a TorchScript module).
Expected<std::vector<torch::Tensor>> forward_in_chunks(torch::jit::Module& module,
                                                       const torch::Tensor& batch,
                                                       int64_t rows_per_forward = 0);

/// How a CPU module runs its largest batches best, measured by choose_forward_chunking.
struct ForwardChunking {
  int64_t rows_per_forward = 0;  ///< 0: whole batches
  double whole_samples_per_s = 0;
  double chunked_samples_per_s = 0;  ///< at rows_per_forward (when not 0)
};

/// Times `module` on `batch` (the largest batch it will be given) whole and in forwards of half,
/// a quarter, ... of its rows (at least 8), each the best of 3 after one untimed forward, and
/// picks the fastest chunk when it beats the whole batch by 10% and its outputs agree with the
/// whole batch's (rtol 1e-4, atol 1e-5). A network whose activations outgrow the CPU's caches at
/// the largest batch runs faster in smaller forwards: the Fashion-MNIST CNN's fp32 module did
/// 1.2-1.3x the samples/s at batch 64 in forwards of 16 (docs/benchmarks.md). For CPU modules (a
/// GPU wants whole batches): whole batches on a GPU, for batches under 16 rows, and on any
/// failure (which the caller's own forward reports). Runs under InferenceMode on the current
/// intra-op threads. Blocks (about 16 forwards of `batch`).
ForwardChunking choose_forward_chunking(torch::jit::Module module, const torch::Tensor& batch);

}  // namespace kiln::model
