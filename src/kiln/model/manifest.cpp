#include "kiln/model/manifest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/features/options.h"

namespace kiln::model {

bool is_plain_bundle_file_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 255) return false;
  for (char c : name)
    if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x20) return false;
  return true;
}

Expected<std::vector<int64_t>> json_int_list(const Json& j, const std::string& field) {
  if (!j.is_array() || j.empty())
    return Status::InvalidArgument("\"" + field + "\" must be a non-empty array of integers");
  std::vector<int64_t> out;
  for (const Json& e : j) {
    if (!e.is_number_integer())
      return Status::InvalidArgument("\"" + field + "\" must be an array of integers, got " +
                                     j.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

namespace {

/// A signature entry list: [{"name": str, "dtype": str, "shape": [int, ...]}, ...], non-empty.
Status validate_tensor_list(const Json& list, const std::string& field) {
  if (!list.is_array() || list.empty())
    return Status::InvalidArgument("\"" + field + "\" must be a non-empty array");
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& t = list[i];
    const std::string where = field + "[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("name") || !t.at("name").is_string() ||
        !t.contains("dtype") || !t.at("dtype").is_string() || !t.contains("shape"))
      return Status::InvalidArgument("\"" + where + "\" must hold \"name\", \"dtype\", \"shape\"");
    KILN_RETURN_IF_ERROR(json_int_list(t.at("shape"), where + ".shape").status());
  }
  return Status::Ok();
}

}  // namespace

// A bundle with a "model" spec (trained by Kiln) needs input_shape and outputs; a module-only
// bundle (a TorchScript file trained elsewhere) needs a full signature instead.
Status validate_bundle_manifest(const Json& m) {
  if (!m.is_object()) return Status::InvalidArgument("manifest must be a JSON object");
  const std::string task = m.value("task", "");
  if (task != "classification" && task != "regression" && task != kCustomTask)
    return Status::InvalidArgument(
        "\"task\" must be \"classification\", \"regression\" or \"custom\"");
  const bool network = m.contains("model");
  if (!network) {
    if (!m.contains("signature") || !m.at("signature").is_object())
      return Status::InvalidArgument(
          "missing \"model\" (and no \"signature\" for a TorchScript-only bundle)");
    const Json& s = m.at("signature");
    KILN_RETURN_IF_ERROR(validate_tensor_list(s.value("inputs", Json()), "signature.inputs"));
    KILN_RETURN_IF_ERROR(validate_tensor_list(s.value("outputs", Json()), "signature.outputs"));
  } else {
    if (task == kCustomTask)
      return Status::InvalidArgument("a \"custom\" task bundle carries no \"model\" spec");
    KILN_RETURN_IF_ERROR(ModelSpec::from_json(m.at("model"), "model").status());
    if (!m.contains("input_shape")) return Status::InvalidArgument("missing \"input_shape\"");
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape,
                          json_int_list(m.at("input_shape"), "input_shape"));
    for (int64_t d : shape)
      if (d <= 0) return Status::InvalidArgument("\"input_shape\" must hold positive sizes");
    if (!m.contains("outputs") || !m.at("outputs").is_number_integer() ||
        m.at("outputs").get<int64_t>() < 1)
      return Status::InvalidArgument("\"outputs\" must be a positive integer");
  }
  if (m.contains("labels") && !m.at("labels").is_null()) {
    const Json& labels = m.at("labels");
    if (!labels.is_array()) return Status::InvalidArgument("\"labels\" must be an array");
    int64_t outputs = 0;
    if (network) {
      outputs = m.at("outputs").get<int64_t>();
    } else {
      const Json& shape = m.at("signature").at("outputs").at(0).at("shape");
      if (!shape.empty() && shape.back().get<int64_t>() > 0) outputs = shape.back().get<int64_t>();
    }
    if (task == "classification" && !labels.empty() && outputs > 0 &&
        static_cast<int64_t>(labels.size()) != outputs)
      return Status::InvalidArgument("\"labels\" has " + std::to_string(labels.size()) +
                                     " entries for " + std::to_string(outputs) + " outputs");
  }
  if (m.contains("signature")) {
    const Json& s = m.at("signature");
    if (!s.is_object() || !s.contains("inputs") || !s.contains("outputs") ||
        !s.at("inputs").is_array() || !s.at("outputs").is_array())
      return Status::InvalidArgument("\"signature\" must hold \"inputs\" and \"outputs\" arrays");
  }
  return Status::Ok();
}

// ---- Bundle accessors: read_bundle() validated the fields they read.

std::string Bundle::task() const { return manifest.value("task", ""); }

std::vector<std::string> Bundle::labels() const {
  std::vector<std::string> out;
  if (manifest.contains("labels") && manifest.at("labels").is_array())
    for (const Json& l : manifest.at("labels"))
      out.push_back(l.is_string() ? l.get<std::string>() : l.dump());
  return out;
}

std::vector<std::string> Bundle::feature_names() const {
  std::vector<std::string> out;
  if (manifest.contains("schema") && manifest.at("schema").contains("features"))
    for (const Json& f : manifest.at("schema").at("features")) out.push_back(f.value("name", ""));
  return out;
}

int64_t Bundle::feature_index(const std::string& name) const {
  const std::vector<std::string> names = feature_names();
  auto it = std::find(names.begin(), names.end(), name);
  return it == names.end() ? -1 : it - names.begin();
}

Expected<ModelSpec> Bundle::model_spec() const {
  if (!manifest.contains("model"))
    return Status::InvalidArgument(dir.string() +
                                   ": a TorchScript-only bundle (no model spec or weights; only "
                                   "model.pt can be loaded)");
  return ModelSpec::from_json(manifest.at("model"), "model");
}

Json Bundle::preprocessing() const {
  return manifest.contains("preprocessing") ? manifest.at("preprocessing") : Json();
}

std::vector<int64_t> Bundle::input_shape() const {
  auto shape = json_int_list(manifest.value("input_shape", Json()), "input_shape");
  return shape.ok() ? *shape : std::vector<int64_t>{};
}

int64_t Bundle::outputs() const {
  if (manifest.contains("outputs")) return manifest.value("outputs", int64_t{0});
  try {  // a TorchScript-only bundle: the last dim of the first output, when fixed
    const Json& shape = manifest.at("signature").at("outputs").at(0).at("shape");
    if (!shape.empty() && shape.back().get<int64_t>() > 0) return shape.back().get<int64_t>();
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}

bool Bundle::has_network() const { return manifest.contains("model"); }

std::vector<int64_t> Bundle::raw_input_shape() const {
  try {
    auto shape = json_int_list(manifest.at("signature").at("inputs").at(0).at("shape"), "shape");
    if (shape.ok() && !shape->empty())
      return std::vector<int64_t>(shape->begin() + 1, shape->end());
  } catch (const nlohmann::json::exception&) {
  }
  return input_shape();
}

Json bundle_signature(const std::string& task, const std::vector<int64_t>& raw_input_shape,
                      int64_t outputs) {
  std::vector<int64_t> in{-1};
  in.insert(in.end(), raw_input_shape.begin(), raw_input_shape.end());
  return Json{
      {"inputs", Json::array({Json{{"name", "input"}, {"dtype", "FP32"}, {"shape", in}}})},
      {"outputs", Json::array({Json{{"name", task == "regression" ? "predictions" : "logits"},
                                    {"dtype", "FP32"},
                                    {"shape", std::vector<int64_t>{-1, outputs}}}})}};
}

std::string manifest_sha256(const Json& manifest) {
  nlohmann::json sorted = manifest;  // std::map objects: keys sorted at every level
  if (sorted.is_object()) sorted.erase(kManifestHashKey);
  return sha256_hex(sorted.dump());
}

fs::path bundle_dir_of(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path / kBundleManifestFile, ec)) return path;
  if (fs::exists(path / "bundle" / kBundleManifestFile, ec)) return path / "bundle";
  return path;
}

Expected<Bundle> read_bundle(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return Status::NotFound(dir.string() + ": no such bundle directory");
  const fs::path mpath = dir / kBundleManifestFile;
  if (!fs::exists(mpath, ec)) return Status::NotFound(mpath.string() + ": missing (not a bundle)");
  Bundle b;
  b.dir = dir;
  KILN_ASSIGN_OR_RETURN(b.manifest, read_json_file(mpath));
  const Json& m = b.manifest;
  if (!m.is_object() || m.value("format", "") != kBundleFormat)
    return Status::InvalidArgument(mpath.string() +
                                   ": not a Kiln bundle manifest (\"format\" is not \"" +
                                   kBundleFormat + "\")");
  if (!m.contains("format_version") || !m.at("format_version").is_number_integer())
    return Status::InvalidArgument(mpath.string() + ": missing integer \"format_version\"");
  const int64_t version = m.at("format_version").get<int64_t>();
  if (version > kBundleFormatVersion || version < 1)
    return Status::InvalidArgument(mpath.string() + ": bundle format version " +
                                   std::to_string(version) + " is not supported (this Kiln reads " +
                                   std::to_string(kBundleFormatVersion) + ")");
  // Version 2 seals the manifest itself; version 1 bundles (no self-hash) are read as before.
  if (version >= 2) {
    if (!m.contains(kManifestHashKey) || !m.at(kManifestHashKey).is_string())
      return Status::DataLoss(mpath.string() + ": missing \"" + kManifestHashKey +
                              "\" (a format_version 2 manifest seals itself)");
    if (m.at(kManifestHashKey).get<std::string>() != manifest_sha256(m))
      return Status::DataLoss(mpath.string() + ": edited after it was written (its contents do " +
                              "not match its \"" + kManifestHashKey + "\")");
  }
  KILN_RETURN_IF_ERROR(validate_bundle_manifest(m).with_context(mpath.string()));
  if (!m.contains("files") || !m.at("files").is_object())
    return Status::InvalidArgument(mpath.string() + ": missing \"files\"");
  std::vector<const char*> required{kBundleModuleFile};
  if (m.contains("model")) required.push_back(kBundleWeightsFile);
  for (const char* required : required)
    if (!m.at("files").contains(required))
      return Status::DataLoss(mpath.string() + ": \"files\" does not list " + required);
  for (const auto& [name, hash] : m.at("files").items()) {
    if (!is_plain_bundle_file_name(name) || !hash.is_string())
      return Status::InvalidArgument(mpath.string() + ": bad \"files\" entry \"" + name + "\"");
    const fs::path path = dir / name;
    if (!fs::is_regular_file(path, ec))
      return Status::DataLoss(path.string() + ": missing (listed in the bundle manifest)");
    KILN_ASSIGN_OR_RETURN(std::string actual, sha256_file(path));
    if (actual != hash.get<std::string>())
      return Status::DataLoss(path.string() + ": sha256 does not match the bundle manifest");
  }
  return b;
}

TableColumns::TableColumns(const Bundle& bundle)
    : TableColumns(bundle.manifest.contains("schema") && bundle.manifest["schema"].is_object() &&
                           bundle.manifest["schema"].contains("features")
                       ? bundle.manifest["schema"]["features"]
                       : Json()) {}

TableColumns::TableColumns(const Json& schema_features) {
  if (!schema_features.is_array()) return;
  for (const Json& f : schema_features) {
    names_.push_back(f.value("name", ""));
    std::unordered_map<std::string, int64_t> codes;
    std::vector<std::string> categories;
    if (f.value("type", "numeric") == "categorical" && f.contains("categories") &&
        f["categories"].is_array())
      for (size_t i = 0; i < f["categories"].size(); ++i)
        if (f["categories"][i].is_string()) {
          codes.emplace(f["categories"][i].get<std::string>(), static_cast<int64_t>(i));
          categories.push_back(f["categories"][i].get<std::string>());
        }
    if (!codes.empty()) categorical_columns_.push_back(names_.size() - 1);
    categories_.push_back(std::move(categories));
    // Looked up once here, not per cell: a missing cell's code, and an unseen category's (the
    // infrequent category where rare ones were merged, else -1).
    auto code_of = [&](const char* category, float otherwise) {
      const auto it = codes.find(category);
      return it == codes.end() ? otherwise : static_cast<float>(it->second);
    };
    const float unseen = code_of(features::kInfrequentCategory, -1.0f);
    unseen_code_.push_back(unseen);
    missing_code_.push_back(code_of(features::kMissingCategory, unseen));
    codes_.push_back(std::move(codes));
  }
}

std::string TableColumns::code_error(size_t column, float value) const {
  const auto k = static_cast<float>(categories_[column].size());
  if (std::isnan(value) || (value == std::floor(value) && value >= -1 && value < k)) return "";
  std::string listed;
  for (size_t i = 0; i < categories_[column].size() && i < 10; ++i)
    listed += (i ? ", " : "") + std::to_string(i) + " " + Json(categories_[column][i]).dump();
  if (categories_[column].size() > 10) listed += ", ...";
  std::ostringstream shown;
  shown << value;
  return "column '" + names_[column] + "' takes a category's code, and " + shown.str() +
         " is none of its " + std::to_string(categories_[column].size()) + " (" + listed +
         "; -1 for one training never saw): send the code, or every column as text (BYTES)";
}

float TableColumns::code(size_t column, const std::string& text, bool missing) const {
  if (missing) return missing_code_[column];
  const auto& codes = codes_[column];
  const auto it = codes.find(text);
  return it == codes.end() ? unseen_code_[column] : static_cast<float>(it->second);
}

bool accepts_missing_values(const Json& preprocessing) {
  if (!preprocessing.is_object()) return false;
  // A table with categorical columns: its numeric part decides (a missing code is an unknown
  // category, encoded as zeros).
  if (preprocessing.value("kind", "") == "table")
    return accepts_missing_values(preprocessing.value("numeric", Json()));
  if (preprocessing.value("kind", "") == "imputer") return true;
  if (preprocessing.contains("steps") && preprocessing["steps"].is_array())
    for (const auto& step : preprocessing["steps"])
      if (step.is_object() && step.value("kind", "") == "imputer") return true;
  return false;
}

namespace {
/// Whether every value is finite: the exponent bits of two floats at a time, all ones = NaN or
/// infinity (SWAR, ~10x the speed of an isinf/isnan loop with its early exit; the serving path
/// checks every request's values).
bool all_finite(const float* values, int64_t n) {
  constexpr uint64_t kExponents = 0x7f8000007f800000ULL, kOne = 0x0080000000800000ULL,
                     kTops = 0x8000000080000000ULL;
  uint64_t flagged = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    uint64_t pair;
    std::memcpy(&pair, values + i, sizeof pair);
    flagged |= ((pair & kExponents) + kOne) & kTops;  // a top bit set: that float's exponent is 255
  }
  for (; i < n; ++i) flagged |= !std::isfinite(values[i]);
  return flagged == 0;
}
}  // namespace

Status check_input_values(const float* values, int64_t rows, int64_t row_size, bool allow_nan) {
  if (all_finite(values, rows * row_size)) return Status::Ok();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < row_size; ++i) {
      const float v = values[r * row_size + i];
      if (std::isinf(v) || (!allow_nan && std::isnan(v)))
        return Status::InvalidArgument(
            "row " + std::to_string(r) + ", value " + std::to_string(i) + " is " +
            (std::isnan(v) ? std::string("NaN") : std::string(v > 0 ? "+Infinity" : "-Infinity")) +
            (std::isnan(v) ? " (this model has no imputer to take missing values)"
                           : " (not a value any model can use)"));
    }
  return Status::Ok();
}

Json Bundle::precision_entry(const std::string& precision) const {
  if (precision == kPrecisionFp32)
    return Json{{"file", kBundleModuleFile}, {"metrics", manifest.value("metrics", Json())}};
  if (!manifest.contains("precisions") || !manifest.at("precisions").is_object() ||
      !manifest.at("precisions").contains(precision))
    return Json();
  return manifest.at("precisions").at(precision);
}

Json Bundle::test_metrics(const std::string& precision) const {
  const Json entry = precision_entry(precision);
  if (!entry.is_object() || !entry.contains("metrics") || !entry.at("metrics").is_object() ||
      !entry.at("metrics").contains("test"))
    return Json();
  return entry.at("metrics").at("test");
}

}  // namespace kiln::model
