#include "kiln/model/spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "kiln/core/yaml.h"
#include "kiln/model/zoo.h"

namespace kiln::model {
namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

Status error(const std::string& path, const std::string& what) {
  return Status::InvalidArgument(path + ": " + what);
}

// The keys each layer type accepts besides "type" (and "body" for residual).
const std::map<std::string, std::vector<std::string>>& layer_keys() {
  static const auto* keys = new std::map<std::string, std::vector<std::string>>{
      {"linear", {"out", "in", "bias", "init"}},
      {"conv2d", {"out", "kernel", "stride", "padding", "bias", "in", "init"}},
      {"batchnorm1d", {"eps", "momentum"}},
      {"batchnorm2d", {"eps", "momentum"}},
      {"dropout", {"p"}},
      {"maxpool2d", {"kernel", "stride", "padding"}},
      {"avgpool2d", {"kernel", "stride", "padding"}},
      {"adaptive_avgpool2d", {"output_size"}},
      {"flatten", {}},
      {"relu", {}},
      {"gelu", {}},
      {"elu", {"alpha"}},
      {"leaky_relu", {"slope"}},
      {"tanh", {}},
      {"sigmoid", {}},
      {"silu", {}},
      {"residual", {"projection_batchnorm"}},
  };
  return *keys;
}

const std::vector<std::string> kInits = {"kaiming", "xavier", "normal", "zeros"};

std::string type_name(const Json& v) { return v.type_name(); }

Status check_positive_int_or_pair(const Json& v, const std::string& path, bool allow_zero) {
  auto ok_int = [&](const Json& x) {
    return x.is_number_integer() && (allow_zero ? x.get<int64_t>() >= 0 : x.get<int64_t>() >= 1);
  };
  if (ok_int(v)) return Status::Ok();
  if (v.is_array() && v.size() == 2 && ok_int(v[0]) && ok_int(v[1])) return Status::Ok();
  return error(path, std::string("expected ") +
                         (allow_zero ? "an integer >= 0" : "an integer >= 1") +
                         " or a [h, w] pair of them, got " + v.dump());
}

Status check_number(const Json& v, const std::string& path, double lo, bool lo_open, double hi,
                    bool hi_open) {
  if (!v.is_number()) return error(path, "expected a number, got " + v.dump());
  double d = v.get<double>();
  bool ok = std::isfinite(d) && (lo_open ? d > lo : d >= lo) && (hi_open ? d < hi : d <= hi);
  if (!ok) {
    auto num = [](double x) {
      if (std::isinf(x)) return std::string(x < 0 ? "-inf" : "inf");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", x);
      return std::string(buf);
    };
    std::string range =
        std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
    return error(path, "expected a number in " + range + ", got " + v.dump());
  }
  return Status::Ok();
}

Status check_param(const std::string& type, const std::string& key, const Json& v,
                   const std::string& path) {
  const double kInf = HUGE_VAL;
  if (key == "out") {
    if (v.is_string() && v.get<std::string>() == "outputs") return Status::Ok();
    if (v.is_number_integer() && v.get<int64_t>() >= 1) return Status::Ok();
    return error(path, "expected an integer >= 1 or \"outputs\", got " + v.dump());
  }
  if (key == "in") {
    if (v.is_number_integer() && v.get<int64_t>() >= 1) return Status::Ok();
    return error(path, "expected an integer >= 1, got " + v.dump());
  }
  if (key == "kernel" || key == "stride" || key == "output_size")
    return check_positive_int_or_pair(v, path, false);
  if (key == "padding") return check_positive_int_or_pair(v, path, true);
  if (key == "bias" || key == "projection_batchnorm") {
    if (v.is_boolean()) return Status::Ok();
    return error(path, "expected true or false, got " + v.dump());
  }
  if (key == "init") {
    if (v.is_string() &&
        std::find(kInits.begin(), kInits.end(), v.get<std::string>()) != kInits.end())
      return Status::Ok();
    return error(path, "unknown init " + v.dump() + " (valid: " + join(kInits) + ")");
  }
  if (key == "p") return check_number(v, path, 0, false, 1, true);
  if (key == "eps") return check_number(v, path, 0, true, kInf, false);
  if (key == "momentum") return check_number(v, path, 0, false, 1, false);
  if (key == "slope" || key == "alpha") return check_number(v, path, -kInf, false, kInf, false);
  return error(path, "unhandled key for " + type);  // unreachable: keys come from layer_keys()
}

Expected<std::vector<LayerSpec>> parse_layers(const Json& j, const std::string& path);

Expected<LayerSpec> parse_layer(const Json& j, const std::string& path) {
  if (!j.is_object())
    return error(path, "expected a layer object {type: ...}, got " + type_name(j));
  auto t = j.find("type");
  if (t == j.end()) return error(path, "missing 'type' (valid: " + join(layer_types()) + ")");
  if (!t->is_string()) return error(path + ".type", "expected a string, got " + t->dump());
  LayerSpec layer;
  layer.type = t->get<std::string>();
  auto known = layer_keys().find(layer.type);
  if (known == layer_keys().end()) {
    return error(path + ".type",
                 "unknown layer '" + layer.type + "' (valid: " + join(layer_types()) + ")");
  }
  const std::vector<std::string>& allowed = known->second;
  for (const auto& [key, value] : j.items()) {
    if (key == "type") continue;
    if (key == "body" && layer.type == "residual") continue;
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::vector<std::string> valid = {"type"};
      valid.insert(valid.end(), allowed.begin(), allowed.end());
      if (layer.type == "residual") valid.push_back("body");
      return error(path + "." + key,
                   "unknown key for " + layer.type + " (valid: " + join(valid) + ")");
    }
    KILN_RETURN_IF_ERROR(check_param(layer.type, key, value, path + "." + key));
    layer.params[key] = value;
  }
  if (layer.type == "linear" && !layer.params.contains("out"))
    return error(path, "linear needs 'out' (an integer or \"outputs\")");
  if (layer.type == "conv2d") {
    if (!layer.params.contains("out")) return error(path, "conv2d needs 'out' (output channels)");
    if (!layer.params.contains("kernel")) return error(path, "conv2d needs 'kernel'");
  }
  if (layer.type == "residual") {
    auto b = j.find("body");
    if (b == j.end()) return error(path, "residual needs 'body' (a list of layers)");
    KILN_ASSIGN_OR_RETURN(layer.body, parse_layers(*b, path + ".body"));
  }
  return layer;
}

Expected<std::vector<LayerSpec>> parse_layers(const Json& j, const std::string& path) {
  if (!j.is_array()) return error(path, "expected a list of layers, got " + type_name(j));
  if (j.empty()) return error(path, "expected at least one layer");
  std::vector<LayerSpec> layers;
  for (size_t i = 0; i < j.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(LayerSpec layer, parse_layer(j[i], path + "[" + std::to_string(i) + "]"));
    layers.push_back(std::move(layer));
  }
  return layers;
}

}  // namespace

Json LayerSpec::to_json() const {
  Json j = Json::object();
  j["type"] = type;
  if (params.is_object())
    for (const auto& [key, value] : params.items()) j[key] = value;
  if (type == "residual") {
    Json b = Json::array();
    for (const auto& l : body) b.push_back(l.to_json());
    j["body"] = std::move(b);
  }
  return j;
}

Json ModelSpec::to_json() const {
  Json layers_json = Json::array();
  for (const auto& l : layers) layers_json.push_back(l.to_json());
  return Json{{"name", name},
              {"zoo_params", zoo_params.is_null() ? Json::object() : zoo_params},
              {"layers", std::move(layers_json)}};
}

Expected<ModelSpec> ModelSpec::from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) return error(where, "expected an object, got " + type_name(j));
  for (const auto& [key, value] : j.items()) {
    if (key != "name" && key != "zoo_params" && key != "layers")
      return error(where + "." + key, "unknown key (valid: name, zoo_params, layers)");
  }
  ModelSpec spec;
  if (auto n = j.find("name"); n != j.end()) {
    if (!n->is_string() || n->get<std::string>().empty())
      return error(where + ".name", "expected a non-empty string, got " + n->dump());
    spec.name = n->get<std::string>();
  }
  if (auto z = j.find("zoo_params"); z != j.end()) {
    if (!z->is_object() && !z->is_null())
      return error(where + ".zoo_params", "expected an object, got " + type_name(*z));
    spec.zoo_params = z->is_null() ? Json::object() : *z;
  }
  auto l = j.find("layers");
  if (l == j.end()) return error(where, "missing 'layers'");
  KILN_ASSIGN_OR_RETURN(spec.layers, parse_layers(*l, where + ".layers"));
  return spec;
}

const std::vector<std::string>& layer_types() {
  static const std::vector<std::string> types = {
      "linear",    "conv2d",    "batchnorm1d",        "batchnorm2d", "dropout",
      "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "flatten",     "relu",
      "gelu",      "elu",       "leaky_relu",         "tanh",        "sigmoid",
      "silu",      "residual"};
  return types;
}

Expected<ModelSpec> parse_model_spec(const Json& j, const std::string& where) {
  if (!j.is_object())
    return error(where, "expected an object with 'zoo' or 'layers', got " + type_name(j));
  if (auto z = j.find("zoo"); z != j.end()) {
    if (!z->is_string())
      return error(where + ".zoo", "expected a zoo model name (valid: " + join(zoo_names()) + ")");
    if (j.contains("layers")) return error(where, "give either 'zoo' or 'layers', not both");
    Json params = Json::object();
    for (const auto& [key, value] : j.items())
      if (key != "zoo") params[key] = value;
    const auto& names = zoo_names();
    if (std::find(names.begin(), names.end(), z->get<std::string>()) == names.end())
      return error(where + ".zoo", "unknown zoo model '" + z->get<std::string>() +
                                       "' (valid: " + join(names) + ")");
    return zoo_model_at(z->get<std::string>(), params, where);
  }
  if (!j.contains("layers"))
    return error(where,
                 "expected 'zoo: <name>' (valid: " + join(zoo_names()) + ") or 'layers: [...]'");
  return ModelSpec::from_json(j, where);
}

Expected<Json> read_yaml_file(const fs::path& path) { return kiln::read_yaml_file(path); }

Expected<ModelSpec> load_model_spec_file(const fs::path& path) {
  Json root;
  if (path.extension() == ".json") {
    KILN_ASSIGN_OR_RETURN(root, read_json_file(path));
  } else {
    KILN_ASSIGN_OR_RETURN(root, read_yaml_file(path));
  }
  const Json* section = &root;
  if (root.is_object() && root.contains("model")) section = &root["model"];
  Expected<ModelSpec> spec = parse_model_spec(*section, "model");
  if (!spec.ok()) return spec.status().with_context(path.string());
  return spec;
}

}  // namespace kiln::model
