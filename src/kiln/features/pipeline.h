#pragma once

#include <torch/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "kiln/features/transform.h"

namespace kiln::features {

/// An ordered list of transforms, itself a Transform: fit() fits step i on the output of steps
/// 0..i-1 applied to the training data; apply() chains the steps. An empty pipeline is the
/// identity (F -> F, fitted by fit()). Errors carry the step: "pipeline step 1 (pca): ...".
/// Owns its steps; copying deep-copies them.
/// Thread-safety: as Transform (immutable once fitted; apply() is safe concurrently).
/// JSON: {"kind": "pipeline", "version": 1, "fitted", ["input_features", "output_features",]
///        "steps": [<each step's to_json()>, ...]}.
///
///   Pipeline p;
///   p.add(std::make_unique<Imputer>()).add(std::make_unique<StandardScaler>())
///    .add(std::make_unique<Pca>(PcaOptions().n_components(5)));
///   KILN_RETURN_IF_ERROR(p.fit(train));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor z, p.apply(test));   // N x 5
class Pipeline : public Transform {
 public:
  static constexpr const char* kKind = "pipeline";

  Pipeline() = default;
  /// Takes ownership of the steps; fit() fits them all.
  explicit Pipeline(std::vector<std::unique_ptr<Transform>> steps);
  Pipeline(const Pipeline& other);
  Pipeline& operator=(const Pipeline& other);
  Pipeline(Pipeline&&) = default;
  Pipeline& operator=(Pipeline&&) = default;

  /// Composes steps that are already fitted (e.g. a OneHotEncoder fitted on strings) into a fitted
  /// pipeline. InvalidArgument when a step is unfitted or a step's output_features() differs from
  /// the next step's input_features(). An empty list is an error (no feature count to record).
  static Expected<std::unique_ptr<Pipeline>> Create(std::vector<std::unique_ptr<Transform>> steps);

  /// Appends a step (takes ownership) and marks the pipeline unfitted. Not for a pipeline shared
  /// across threads.
  Pipeline& add(std::unique_ptr<Transform> step);

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<Pipeline>> from_json(const Json& j);

  size_t size() const { return steps_.size(); }
  const Transform& step(size_t i) const { return *steps_.at(i); }

 private:
  /// Checks every step is fitted and the feature counts chain; records the pipeline's shape.
  Status link_fitted_steps();

  std::vector<std::unique_ptr<Transform>> steps_;
};

}  // namespace kiln::features
