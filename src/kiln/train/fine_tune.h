#pragma once
// Fine-tuning: a network started from another model's weights (matched by name and shape), layers
// frozen, and per-group learning rates. Used by train() for `init:`, `freeze:`, `param_groups:`.

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/network.h"
#include "kiln/train/config.h"

namespace kiln::train {

/// What init_from() did, tensor by tensor (parameters and buffers, by module path).
struct InitReport {
  std::string ref;                  ///< as given
  std::string parent;               ///< NAME@VERSION when ref is a registry reference, else ""
  std::vector<std::string> loaded;  ///< same name and shape: copied
  std::vector<std::string> reinitialised;  ///< same name, other shape (e.g. a new head): fresh
  std::vector<std::string> fresh;          ///< only in this network (layers added): fresh
  std::vector<std::string> dropped;        ///< only in the source (layers removed): ignored
  Json to_json() const;
  /// "init from fmnist@3: loaded 6 tensors, re-initialised 2 (layers.7.weight [5,128] was
  /// [10,128], ...), new 0, dropped 0".
  std::string summary() const;
};

/// Copies into `net` every tensor of `ref`'s weights with the same name and shape. `labels` are
/// the new task's classes (empty: regression): when they differ from the source's (other names or
/// order), the last layer with parameters, the head, starts fresh even where its shape fits.
/// InvalidArgument when nothing matches (another architecture altogether) or the reference is a
/// TorchScript-only bundle; NotFound for an unknown reference. Not thread-safe against users of
/// `net`.
Expected<InitReport> init_from(const std::string& ref, model::NetworkImpl& net,
                               const std::vector<std::string>& labels = {});

/// The trainable parameters, grouped: group 0 at the schedule's rate (scale 1), then one group
/// per `param_groups` entry; the parameters of `freeze` layers get requires_grad false and no
/// group. A layer is a top-level index ("3") or a module path ("layers.3.body.0"), matching the
/// parameters under it. InvalidArgument names an entry that matches no parameter, a layer both
/// frozen and in a group, or one in two groups.
struct TrainableGroups {
  std::vector<std::vector<torch::Tensor>> params;  ///< non-empty groups only
  std::vector<double> scales;                      ///< one per group
  int64_t frozen = 0;                              ///< frozen parameter elements
  int64_t trainable = 0;                           ///< trainable parameter elements
};
Expected<TrainableGroups> trainable_groups(model::NetworkImpl& net,
                                           const std::vector<std::string>& freeze,
                                           const std::vector<TrainConfig::ParamGroup>& groups);

/// make_optimizer over the groups (each later group a copy of the defaults), rates scaled.
Expected<std::unique_ptr<torch::optim::Optimizer>> make_grouped_optimizer(
    const TrainableGroups& groups, const OptimizerConfig& config);

}  // namespace kiln::train
