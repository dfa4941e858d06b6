#include "kiln/model/zoo.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace kiln::model {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

Status error(const std::string& path, const std::string& what) {
  return Status::InvalidArgument(path + ": " + what);
}

Status check_dropout(const Json& v, const std::string& path) {
  if (v.is_number() && v.get<double>() >= 0 && v.get<double>() < 1) return Status::Ok();
  return error(path, "expected a number in [0, 1), got " + v.dump());
}

LayerSpec L(std::string type, Json params = Json::object()) {
  LayerSpec l;
  l.type = std::move(type);
  l.params = std::move(params);
  return l;
}

struct ZooParam {
  std::string name;
  Json default_value;
};

const std::map<std::string, std::vector<ZooParam>>& zoo_params_table() {
  static const auto* table = new std::map<std::string, std::vector<ZooParam>>{
      {"mlp", {{"hidden", Json::array({256, 128})}, {"dropout", 0.0}, {"activation", "relu"}}},
      {"cnn-small", {{"width", 32}, {"hidden", 128}, {"dropout", 0.2}, {"convs", 1}}},
      {"resnet-small", {{"width", 16}, {"depth", 1}, {"stages", 3}}},
  };
  return *table;
}

Expected<int64_t> zoo_int(const Json& p, const std::string& key, const std::string& path) {
  const Json& v = p[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    return error(path + "." + key, "expected an integer >= 1, got " + v.dump());
  return v.get<int64_t>();
}

Expected<double> zoo_dropout(const Json& p, const std::string& path) {
  KILN_RETURN_IF_ERROR(check_dropout(p["dropout"], path + ".dropout"));
  return p["dropout"].get<double>();
}

}  // namespace

Expected<ModelSpec> zoo_model_at(const std::string& name, const Json& params,
                                 const std::string& path) {
  auto entry = zoo_params_table().find(name);
  if (entry == zoo_params_table().end())
    return error(path, "unknown zoo model '" + name + "' (valid: " + join(zoo_names()) + ")");
  if (!params.is_null() && !params.is_object())
    return error(path, "zoo parameters must be an object, got " + std::string(params.type_name()));
  std::vector<std::string> valid;
  for (const auto& zp : entry->second) valid.push_back(zp.name);
  Json p = Json::object();
  for (const auto& zp : entry->second) p[zp.name] = zp.default_value;
  if (params.is_object()) {
    for (const auto& [key, value] : params.items()) {
      if (!p.contains(key))
        return error(path + "." + key,
                     "unknown parameter for zoo model " + name + " (valid: " + join(valid) + ")");
      p[key] = value;
    }
  }
  ModelSpec spec;
  spec.name = name;
  std::vector<LayerSpec>& ls = spec.layers;
  if (name == "mlp") {
    const Json& hidden = p["hidden"];
    if (!hidden.is_array())
      return error(path + ".hidden", "expected a list of layer widths, got " + hidden.dump());
    for (size_t i = 0; i < hidden.size(); ++i) {
      if (!hidden[i].is_number_integer() || hidden[i].get<int64_t>() < 1)
        return error(path + ".hidden[" + std::to_string(i) + "]",
                     "expected an integer >= 1, got " + hidden[i].dump());
    }
    KILN_ASSIGN_OR_RETURN(double dropout, zoo_dropout(p, path));
    static const std::vector<std::string> kActivations = {"relu", "gelu",    "elu", "leaky_relu",
                                                          "tanh", "sigmoid", "silu"};
    const Json& act = p["activation"];
    if (!act.is_string() || std::find(kActivations.begin(), kActivations.end(),
                                      act.get<std::string>()) == kActivations.end())
      return error(path + ".activation",
                   "unknown activation " + act.dump() + " (valid: " + join(kActivations) + ")");
    ls.push_back(L("flatten"));
    for (const auto& h : hidden) {
      ls.push_back(L("linear", {{"out", h}}));
      ls.push_back(L(act.get<std::string>()));
      if (dropout > 0) ls.push_back(L("dropout", {{"p", dropout}}));
    }
    ls.push_back(L("linear", {{"out", "outputs"}}));
  } else if (name == "cnn-small") {
    KILN_ASSIGN_OR_RETURN(int64_t width, zoo_int(p, "width", path));
    KILN_ASSIGN_OR_RETURN(int64_t hidden, zoo_int(p, "hidden", path));
    KILN_ASSIGN_OR_RETURN(double dropout, zoo_dropout(p, path));
    KILN_ASSIGN_OR_RETURN(int64_t convs, zoo_int(p, "convs", path));
    if (convs > 4)
      return error(path + ".convs", "expected at most 4, got " + std::to_string(convs));
    // Two blocks of `convs` 3x3 conv-BN-ReLU layers, each block closed by a 2x2 max pool;
    // convs: 2 is the VGG pattern.
    for (int64_t c : {width, 2 * width}) {
      for (int64_t i = 0; i < convs; ++i) {
        ls.push_back(
            L("conv2d",
              {{"out", c}, {"kernel", 3}, {"padding", 1}, {"bias", false}, {"init", "kaiming"}}));
        ls.push_back(L("batchnorm2d"));
        ls.push_back(L("relu"));
      }
      ls.push_back(L("maxpool2d", {{"kernel", 2}}));
    }
    ls.push_back(L("flatten"));
    ls.push_back(L("linear", {{"out", hidden}}));
    ls.push_back(L("relu"));
    if (dropout > 0) ls.push_back(L("dropout", {{"p", dropout}}));
    ls.push_back(L("linear", {{"out", "outputs"}}));
  } else {  // resnet-small
    KILN_ASSIGN_OR_RETURN(int64_t width, zoo_int(p, "width", path));
    KILN_ASSIGN_OR_RETURN(int64_t depth, zoo_int(p, "depth", path));
    KILN_ASSIGN_OR_RETURN(int64_t stages, zoo_int(p, "stages", path));
    if (stages > 6)
      return error(path + ".stages", "expected at most 6, got " + std::to_string(stages));
    auto conv = [](int64_t out, int64_t stride) {
      return L("conv2d", {{"out", out},
                          {"kernel", 3},
                          {"stride", stride},
                          {"padding", 1},
                          {"bias", false},
                          {"init", "kaiming"}});
    };
    ls.push_back(conv(width, 1));
    ls.push_back(L("batchnorm2d"));
    ls.push_back(L("relu"));
    for (int64_t s = 0; s < stages; ++s) {
      int64_t channels = width << s;
      for (int64_t b = 0; b < depth; ++b) {
        int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        LayerSpec block = L("residual");
        block.body = {conv(channels, stride), L("batchnorm2d"), L("relu"), conv(channels, 1),
                      L("batchnorm2d")};
        ls.push_back(std::move(block));
        ls.push_back(L("relu"));
      }
    }
    ls.push_back(L("adaptive_avgpool2d", {{"output_size", 1}}));
    ls.push_back(L("flatten"));
    ls.push_back(L("linear", {{"out", "outputs"}}));
  }
  spec.zoo_params = std::move(p);
  return spec;
}

const std::vector<std::string>& zoo_names() {
  static const std::vector<std::string> names = {"mlp", "cnn-small", "resnet-small"};
  return names;
}

Json zoo_defaults(const std::string& name) {
  Json p = Json::object();
  auto entry = zoo_params_table().find(name);
  if (entry != zoo_params_table().end())
    for (const auto& zp : entry->second) p[zp.name] = zp.default_value;
  return p;
}

Expected<ModelSpec> zoo_model(const std::string& name, const Json& params) {
  return zoo_model_at(name, params, "zoo model " + name);
}

}  // namespace kiln::model
