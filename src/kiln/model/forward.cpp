#include "kiln/model/forward.h"

#include <c10/core/InferenceMode.h>

#include <chrono>
#include <limits>
#include <optional>
#include <string>

#include "kiln/model/device.h"

namespace kiln::model {

Expected<std::vector<torch::Tensor>> module_outputs(const c10::IValue& result) {
  std::vector<torch::Tensor> tensors;
  if (result.isTensor()) {
    tensors.push_back(result.toTensor());
  } else if (result.isTuple()) {
    for (const auto& v : result.toTupleRef().elements()) {
      if (!v.isTensor()) return Status::Internal("model output tuple holds a non-tensor");
      tensors.push_back(v.toTensor());
    }
  } else if (result.isTensorList()) {
    for (const auto& t : result.toTensorVector()) tensors.push_back(t);
  } else if (result.isList()) {
    for (const auto& v : result.toListRef()) {
      if (!v.isTensor()) return Status::Internal("model output list holds a non-tensor");
      tensors.push_back(v.toTensor());
    }
  } else {
    return Status::Internal("model returned " + result.tagKind() + ", not tensors");
  }
  return tensors;
}

Expected<std::vector<torch::Tensor>> forward_in_chunks(torch::jit::Module& module,
                                                       const torch::Tensor& batch,
                                                       int64_t rows_per_forward) {
  try {
    if (rows_per_forward <= 0 || batch.size(0) <= rows_per_forward)
      return module_outputs(module.forward({batch}));
    std::vector<std::vector<torch::Tensor>> parts;
    for (const torch::Tensor& chunk : batch.split(rows_per_forward)) {
      KILN_ASSIGN_OR_RETURN(std::vector<torch::Tensor> out,
                            module_outputs(module.forward({chunk})));
      if (!parts.empty() && out.size() != parts[0].size())
        return Status::Internal("model returned " + std::to_string(parts[0].size()) +
                                " outputs, then " + std::to_string(out.size()));
      parts.push_back(std::move(out));
    }
    std::vector<torch::Tensor> joined;
    for (size_t i = 0; i < parts[0].size(); ++i) {
      std::vector<torch::Tensor> pieces;
      for (const auto& p : parts) pieces.push_back(p[i]);
      joined.push_back(torch::cat(pieces, 0));
    }
    return joined;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what());
  }
}

ForwardChunking choose_forward_chunking(torch::jit::Module module, const torch::Tensor& batch) {
  ForwardChunking best;
  const int64_t rows = batch.size(0);
  if (rows < 16 || !module_device(module).is_cpu()) return best;
  c10::InferenceMode guard;
  using Clock = std::chrono::steady_clock;
  // Best of 3 timed runs after an untimed one (oneDNN builds its primitives for a new batch size
  // on first use), whose outputs land in `outputs`; nullopt when a forward fails.
  auto seconds_per_batch = [&](int64_t chunk,
                               std::vector<torch::Tensor>& outputs) -> std::optional<double> {
    Expected<std::vector<torch::Tensor>> first = forward_in_chunks(module, batch, chunk);
    if (!first.ok()) return std::nullopt;
    outputs = std::move(first).value();
    double fastest = std::numeric_limits<double>::infinity();
    for (int i = 0; i < 3; ++i) {
      const auto t0 = Clock::now();
      if (!forward_in_chunks(module, batch, chunk).ok()) return std::nullopt;
      fastest = std::min(fastest, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return fastest;
  };
  std::vector<torch::Tensor> want;
  const std::optional<double> whole_s = seconds_per_batch(0, want);
  if (!whole_s) return best;
  best.whole_samples_per_s = static_cast<double>(rows) / *whole_s;
  double best_s = *whole_s * 0.9;  // a chunking must beat whole batches by 10%
  for (int64_t chunk = rows / 2; chunk >= 8; chunk /= 2) {
    std::vector<torch::Tensor> got;
    const std::optional<double> s = seconds_per_batch(chunk, got);
    if (!s || *s >= best_s || got.size() != want.size()) continue;
    bool same = true;
    for (size_t i = 0; same && i < want.size(); ++i)
      same = want[i].sizes() == got[i].sizes() &&
             torch::allclose(want[i], got[i], 1e-4, 1e-5, /*equal_nan=*/true);
    if (!same) continue;
    best_s = *s;
    best.rows_per_forward = chunk;
    best.chunked_samples_per_s = static_cast<double>(rows) / *s;
  }
  return best;
}

}  // namespace kiln::model
