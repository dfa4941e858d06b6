#include "kiln/train/fine_tune.h"

#include <algorithm>
#include <map>
#include <set>

#include "kiln/model/bundle.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/model_store.h"
#include "kiln/train/optim.h"

namespace kiln::train {

namespace {

std::string shape_text(const torch::Tensor& t) { return model::shape_to_string(t.sizes().vec()); }

/// "3" → "layers.3"; a module path stays as is.
std::string module_prefix(const std::string& layer) {
  const bool index = !layer.empty() && std::all_of(layer.begin(), layer.end(), ::isdigit);
  return index ? "layers." + layer : layer;
}

bool under(const std::string& name, const std::string& prefix) {
  return name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
         name[prefix.size()] == '.';
}

}  // namespace

Json InitReport::to_json() const {
  return {{"ref", ref},   {"parent", parent},  {"loaded", loaded}, {"reinitialised", reinitialised},
          {"new", fresh}, {"dropped", dropped}};
}

std::string InitReport::summary() const {
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 4; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 4) s += ", ...";
    return s.empty() ? std::string() : " (" + s + ")";
  };
  return "init from " + (parent.empty() ? ref : parent) + ": loaded " +
         std::to_string(loaded.size()) + " tensors, re-initialised " +
         std::to_string(reinitialised.size()) + list(reinitialised) + ", new " +
         std::to_string(fresh.size()) + list(fresh) + ", dropped " +
         std::to_string(dropped.size()) + list(dropped);
}

Expected<InitReport> init_from(const std::string& ref, model::NetworkImpl& net,
                               const std::vector<std::string>& labels) {
  InitReport report;
  report.ref = ref;
  Expected<registry::ResolvedModel> resolved = registry::resolve_model_ref(ref);
  if (!resolved.ok())
    return Status(resolved.status().code(), "init: " + resolved.status().message());
  if (resolved->version > 0)
    report.parent = resolved->name + "@" + std::to_string(resolved->version);
  KILN_ASSIGN_OR_RETURN(model::Bundle bundle, model::read_bundle(resolved->bundle_dir));
  Expected<model::TensorMap> weights = model::load_bundle_weights(bundle);
  if (!weights.ok()) return Status(weights.status().code(), "init: " + weights.status().message());
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : net.named_parameters(true)) targets[item.key()] = item.value();
  for (const auto& item : net.named_buffers(true)) targets[item.key()] = item.value();
  // Other classes: the head (the last top-level layer with parameters) means something else now.
  std::string head;
  if (bundle.labels() != labels) {
    int last = -1;
    for (const auto& item : net.named_parameters(true)) {
      const std::string& n = item.key();
      if (n.rfind("layers.", 0) == 0)
        last = std::max(last, std::stoi(n.substr(7, n.find('.', 7) - 7)));
    }
    if (last >= 0) head = "layers." + std::to_string(last);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    auto it = weights->find(name);
    if (it == weights->end()) {
      report.fresh.push_back(name);
    } else if (!head.empty() && under(name, head)) {
      report.reinitialised.push_back(name + " (a head for other classes)");
    } else if (it->second.sizes() != target.sizes()) {
      report.reinitialised.push_back(name + " " + shape_text(target) + " was " +
                                     shape_text(it->second));
    } else {
      target.copy_(it->second.to(target.scalar_type()));
      report.loaded.push_back(name);
    }
  }
  for (const auto& [name, tensor] : *weights)
    if (!targets.count(name)) report.dropped.push_back(name);
  if (report.loaded.empty())
    return Status::InvalidArgument("init: " + ref +
                                   " shares no tensor of the same name and shape with this model "
                                   "(another architecture?)");
  return report;
}

Expected<TrainableGroups> trainable_groups(model::NetworkImpl& net,
                                           const std::vector<std::string>& freeze,
                                           const std::vector<TrainConfig::ParamGroup>& groups) {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& item : net.named_parameters(true)) params.emplace_back(item.key(), item.value());
  // Which group each parameter goes to: -1 frozen, 0 default, k + 1 param_groups[k].
  std::map<std::string, int> owner;
  auto claim = [&](const std::string& layer, int group, const std::string& what) -> Status {
    const std::string prefix = module_prefix(layer);
    bool any = false;
    for (const auto& [name, p] : params) {
      if (!under(name, prefix)) continue;
      any = true;
      auto [it, inserted] = owner.emplace(name, group);
      if (!inserted && it->second != group)
        return Status::InvalidArgument(what + ": layer '" + layer + "' is also " +
                                       (it->second < 0
                                            ? std::string("frozen")
                                            : "in param_groups." + std::to_string(it->second - 1)));
    }
    if (!any) {
      std::set<std::string> with_params;  // top-level indices
      for (const auto& [name, p] : params)
        if (name.rfind("layers.", 0) == 0)
          with_params.insert(name.substr(7, name.find('.', 7) - 7));
      std::string known;
      for (const std::string& k : with_params) known += (known.empty() ? "" : ", ") + k;
      return Status::InvalidArgument(
          what + ": '" + layer +
          "' names no layer with parameters (layers with parameters: " + known + ")");
    }
    return Status::Ok();
  };
  for (const std::string& layer : freeze) KILN_RETURN_IF_ERROR(claim(layer, -1, "freeze"));
  for (size_t k = 0; k < groups.size(); ++k)
    for (const std::string& layer : groups[k].layers)
      KILN_RETURN_IF_ERROR(
          claim(layer, static_cast<int>(k) + 1, "param_groups." + std::to_string(k)));
  std::vector<std::vector<torch::Tensor>> by_group(groups.size() + 1);
  TrainableGroups out;
  for (auto& [name, p] : params) {
    auto it = owner.find(name);
    const int g = it == owner.end() ? 0 : it->second;
    if (g < 0) {
      p.set_requires_grad(false);
      out.frozen += p.numel();
      continue;
    }
    by_group[static_cast<size_t>(g)].push_back(p);
    out.trainable += p.numel();
  }
  for (size_t g = 0; g < by_group.size(); ++g) {
    if (by_group[g].empty()) continue;
    out.params.push_back(std::move(by_group[g]));
    out.scales.push_back(g == 0 ? 1.0 : groups[g - 1].lr_scale);
  }
  if (out.params.empty())
    return Status::InvalidArgument("freeze: every parameter is frozen; nothing would train");
  return out;
}

Expected<std::unique_ptr<torch::optim::Optimizer>> make_grouped_optimizer(
    const TrainableGroups& groups, const OptimizerConfig& config) {
  KILN_ASSIGN_OR_RETURN(auto optimizer, make_optimizer(groups.params.front(), config));
  for (size_t g = 1; g < groups.params.size(); ++g)
    optimizer->add_param_group(
        torch::optim::OptimizerParamGroup(groups.params[g], optimizer->defaults().clone()));
  set_learning_rate(*optimizer, config.lr, groups.scales);
  return optimizer;
}

}  // namespace kiln::train
