#include "kiln/data/spec.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <set>

#include "kiln/core/csv.h"
#include "kiln/core/yaml.h"

namespace kiln::data {
namespace {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

constexpr EnumName<MissingPolicy> kMissing[] = {
    {MissingPolicy::kDrop, "drop"},
    {MissingPolicy::kImputeMean, "mean"},
    {MissingPolicy::kImputeMedian, "median"},
    {MissingPolicy::kImputeMostFrequent, "most_frequent"}};
constexpr EnumName<OutlierAction> kOutliers[] = {
    {OutlierAction::kKeep, "keep"}, {OutlierAction::kClip, "clip"}, {OutlierAction::kDrop, "drop"}};
constexpr EnumName<RaggedPolicy> kRagged[] = {{RaggedPolicy::kError, "error"},
                                              {RaggedPolicy::kDrop, "drop"}};
constexpr EnumName<ScalingKind> kScaling[] = {{ScalingKind::kNone, "none"},
                                              {ScalingKind::kStandard, "standard"},
                                              {ScalingKind::kMinMax, "minmax"},
                                              {ScalingKind::kRobust, "robust"}};
constexpr EnumName<TaskKind> kTasks[] = {{TaskKind::kAuto, "auto"},
                                         {TaskKind::kClassification, "classification"},
                                         {TaskKind::kRegression, "regression"}};

template <typename E, size_t N>
const char* name_of(const EnumName<E> (&table)[N], E v) {
  for (const auto& e : table)
    if (e.value == v) return e.name;
  return "?";
}

/// Reads YAML nodes with errors that name file, line and dotted field path.
class SpecReader {
 public:
  explicit SpecReader(fs::path file) : file_(std::move(file)) {}

  Status error(const YAML::Node& node, const std::string& field, const std::string& what) const {
    return located(node, field + ": " + what);
  }

  /// `message` led by the file and the node's line.
  Status located(const YAML::Node& node, const std::string& message) const {
    std::string where = file_.string();
    if (node.Mark().line >= 0) where += " line " + std::to_string(node.Mark().line + 1);
    return Status::InvalidArgument(where + ": " + message);
  }

  Status check_keys(const YAML::Node& map, const std::string& prefix,
                    const std::set<std::string>& allowed) const {
    if (!map.IsMap()) return error(map, prefix.empty() ? "<top>" : prefix, "expected a mapping");
    for (const auto& kv : map) {
      std::string key = kv.first.as<std::string>();
      if (!allowed.count(key)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        return error(kv.first, prefix.empty() ? key : prefix + "." + key,
                     "unknown field (expected one of: " + list + ")");
      }
    }
    return Status::Ok();
  }

  template <typename T>
  Status get(const YAML::Node& node, const std::string& field, T* out) const {
    if (!node.IsScalar()) return error(node, field, "expected a scalar value");
    try {
      *out = node.as<T>();
    } catch (const YAML::Exception&) {
      return error(node, field, "cannot read '" + node.Scalar() + "' as the expected type");
    }
    return Status::Ok();
  }

  Status get_list(const YAML::Node& node, const std::string& field,
                  std::vector<std::string>* out) const {
    out->clear();
    if (node.IsScalar()) {
      out->push_back(node.Scalar());
      return Status::Ok();
    }
    if (!node.IsSequence()) return error(node, field, "expected a list");
    for (const auto& item : node) {
      if (!item.IsScalar()) return error(item, field, "expected a list of strings");
      out->push_back(item.Scalar());
    }
    return Status::Ok();
  }

  template <typename E, size_t N>
  Status get_enum(const YAML::Node& node, const std::string& field, const EnumName<E> (&table)[N],
                  E* out) const {
    std::string text;
    KILN_RETURN_IF_ERROR(get(node, field, &text));
    std::string names;
    for (const auto& e : table) {
      if (text == e.name) {
        *out = e.value;
        return Status::Ok();
      }
      names += (names.empty() ? "" : ", ") + std::string(e.name);
    }
    return error(node, field, "'" + text + "' is not one of " + names);
  }

  fs::path resolve(const fs::path& base, const std::string& p) const {
    fs::path path(p);
    if (path.is_absolute()) return path;
    return (base / path).lexically_normal();
  }

 private:
  fs::path file_;
};

Status read_split_policy(const SpecReader& r, const YAML::Node& node, SplitPolicy* split) {
  KILN_RETURN_IF_ERROR(
      r.check_keys(node, "split", {"method", "train", "val", "test", "seed", "stratify"}));
  if (node["method"]) {
    static constexpr EnumName<SplitPolicy::Method> kMethods[] = {
        {SplitPolicy::Method::kKiln, "kiln"}, {SplitPolicy::Method::kSklearn, "sklearn"}};
    KILN_RETURN_IF_ERROR(r.get_enum(node["method"], "split.method", kMethods, &split->method));
    if (split->method == SplitPolicy::Method::kSklearn) split->stratify = false;
  }
  if (node["train"]) KILN_RETURN_IF_ERROR(r.get(node["train"], "split.train", &split->train));
  if (node["val"]) KILN_RETURN_IF_ERROR(r.get(node["val"], "split.val", &split->val));
  if (node["test"]) KILN_RETURN_IF_ERROR(r.get(node["test"], "split.test", &split->test));
  if (node["seed"]) KILN_RETURN_IF_ERROR(r.get(node["seed"], "split.seed", &split->seed));
  if (node["stratify"])
    KILN_RETURN_IF_ERROR(r.get(node["stratify"], "split.stratify", &split->stratify));
  for (double f : {split->train, split->val, split->test})
    if (!(f >= 0.0 && f <= 1.0)) return r.error(node, "split", "fractions must lie in [0, 1]");
  if (split->method == SplitPolicy::Method::kSklearn) {
    if (split->stratify)
      return r.error(node["stratify"], "split.stratify",
                     "method sklearn reproduces train_test_split without stratify; drop "
                     "'stratify: true' or use method kiln");
    if (split->seed > 0xffffffffULL)
      return r.error(node["seed"], "split.seed", "method sklearn takes a seed below 2^32");
  }
  return Status::Ok();
}

Status read_images(const SpecReader& r, const YAML::Node& root, const fs::path& base,
                   DatasetSpec* spec) {
  fs::path data_root = base;
  if (root["root"]) {
    std::string text;
    KILN_RETURN_IF_ERROR(r.get(root["root"], "root", &text));
    data_root = r.resolve(base, text);
  }
  if (root["format"]) {
    std::string fmt;
    KILN_RETURN_IF_ERROR(r.get(root["format"], "format", &fmt));
    if (fmt == "idx")
      spec->image_format = ImageFormat::kIdx;
    else if (fmt == "cifar10")
      spec->image_format = ImageFormat::kCifar10;
    else if (fmt == "image_folder")
      spec->image_format = ImageFormat::kImageFolder;
    else
      return r.error(root["format"], "format",
                     "'" + fmt + "' is not one of idx, cifar10, image_folder");
  }
  const bool folder = spec->image_format == ImageFormat::kImageFolder;
  for (const char* key : {"image", "corrupt"})
    if (root[key] && !folder) return r.error(root[key], key, "only for format: image_folder");
  if (folder && root["image"]) {
    const YAML::Node image = root["image"];
    KILN_RETURN_IF_ERROR(r.check_keys(image, "image", {"size", "channels", "resize"}));
    if (image["size"]) {
      const YAML::Node size = image["size"];
      std::vector<int64_t> hw;
      if (size.IsScalar()) {
        int64_t v = 0;
        KILN_RETURN_IF_ERROR(r.get(size, "image.size", &v));
        hw = {v, v};
      } else if (size.IsSequence()) {
        for (const auto& item : size) {
          int64_t v = 0;
          KILN_RETURN_IF_ERROR(r.get(item, "image.size", &v));
          hw.push_back(v);
        }
      }
      if (hw.size() != 2 || hw[0] <= 0 || hw[1] <= 0 || hw[0] > 4096 || hw[1] > 4096)
        return r.error(size, "image.size", "expected N or [height, width], each 1..4096");
      spec->image_folder.height = hw[0];
      spec->image_folder.width = hw[1];
    }
    if (image["channels"]) {
      KILN_RETURN_IF_ERROR(
          r.get(image["channels"], "image.channels", &spec->image_folder.channels));
      if (spec->image_folder.channels != 1 && spec->image_folder.channels != 3)
        return r.error(image["channels"], "image.channels", "expected 1 (grey) or 3 (RGB)");
    }
    if (image["resize"]) {
      KILN_RETURN_IF_ERROR(r.get(image["resize"], "image.resize", &spec->image_folder.resize));
      if (spec->image_folder.resize != "crop" && spec->image_folder.resize != "stretch")
        return r.error(image["resize"], "image.resize", "expected crop or stretch");
    }
  }
  if (folder && root["corrupt"]) {
    KILN_RETURN_IF_ERROR(r.get(root["corrupt"], "corrupt", &spec->image_folder.corrupt));
    if (spec->image_folder.corrupt != "skip" && spec->image_folder.corrupt != "fail")
      return r.error(root["corrupt"], "corrupt", "expected skip or fail");
  }
  const YAML::Node splits = root["splits"];
  if (!splits || !splits.IsMap() || splits.size() == 0)
    return r.error(splits ? splits : root, "splits", "an images dataset needs a 'splits' mapping");
  for (const auto& kv : splits) {
    ImageSplitSource src;
    src.split = kv.first.as<std::string>();
    if (src.split != "train" && src.split != "test")
      return r.error(kv.first, "splits." + src.split, "split names are 'train' and 'test'");
    const std::string field = "splits." + src.split;
    if (folder) {
      std::string path;
      if (!kv.second.IsScalar())
        return r.error(kv.second, field, "expected a folder of <class>/ subfolders");
      KILN_RETURN_IF_ERROR(r.get(kv.second, field, &path));
      src.folder = r.resolve(data_root, path);
    } else if (spec->image_format == ImageFormat::kIdx) {
      KILN_RETURN_IF_ERROR(r.check_keys(kv.second, field, {"images", "labels"}));
      if (!kv.second["images"] || !kv.second["labels"])
        return r.error(kv.second, field, "needs both 'images' and 'labels'");
      std::string images, labels;
      KILN_RETURN_IF_ERROR(r.get(kv.second["images"], field + ".images", &images));
      KILN_RETURN_IF_ERROR(r.get(kv.second["labels"], field + ".labels", &labels));
      src.images = r.resolve(data_root, images);
      src.labels = r.resolve(data_root, labels);
    } else {
      KILN_RETURN_IF_ERROR(r.check_keys(kv.second, field, {"batches"}));
      std::vector<std::string> batches;
      if (!kv.second["batches"]) return r.error(kv.second, field, "needs 'batches'");
      KILN_RETURN_IF_ERROR(r.get_list(kv.second["batches"], field + ".batches", &batches));
      for (const auto& b : batches) src.batches.push_back(r.resolve(data_root, b));
    }
    spec->image_splits.push_back(std::move(src));
  }
  if (root["classes"]) KILN_RETURN_IF_ERROR(r.get_list(root["classes"], "classes", &spec->classes));
  // Images: val is carved from train; the given test split stays as it is.
  spec->split.val = 0.1;
  if (root["split"]) KILN_RETURN_IF_ERROR(read_split_policy(r, root["split"], &spec->split));
  return Status::Ok();
}

Status read_table(const SpecReader& r, const YAML::Node& root, const fs::path& base,
                  DatasetSpec* spec) {
  if (!root["sources"]) return r.error(root, "sources", "a table dataset needs 'sources'");
  std::vector<std::string> sources;
  KILN_RETURN_IF_ERROR(r.get_list(root["sources"], "sources", &sources));
  if (sources.empty()) return r.error(root["sources"], "sources", "list is empty");
  for (const auto& s : sources) spec->sources.push_back(r.resolve(base, s));
  if (!root["target"]) return r.error(root, "target", "a table dataset needs a 'target' column");
  KILN_RETURN_IF_ERROR(r.get(root["target"], "target", &spec->target));
  if (root["task"]) KILN_RETURN_IF_ERROR(r.get_enum(root["task"], "task", kTasks, &spec->task));
  if (root["na_tokens"])
    KILN_RETURN_IF_ERROR(r.get_list(root["na_tokens"], "na_tokens", &spec->na_tokens));
  if (root["drop_columns"])
    KILN_RETURN_IF_ERROR(r.get_list(root["drop_columns"], "drop_columns", &spec->drop_columns));
  if (root["scaling"])
    KILN_RETURN_IF_ERROR(r.get_enum(root["scaling"], "scaling", kScaling, &spec->scaling));
  if (const YAML::Node c = root["categories"]) {
    KILN_RETURN_IF_ERROR(r.check_keys(
        c, "categories", {"columns", "min_frequency", "target_encode", "target_smooth"}));
    if (c["target_encode"])
      KILN_RETURN_IF_ERROR(r.get_list(c["target_encode"], "categories.target_encode",
                                      &spec->target_encoded_columns));
    if (c["target_smooth"]) {
      KILN_RETURN_IF_ERROR(
          r.get(c["target_smooth"], "categories.target_smooth", &spec->target_smooth));
      if (!(spec->target_smooth >= 0) || !std::isfinite(spec->target_smooth))
        return r.error(c["target_smooth"], "categories.target_smooth",
                       "must be a number >= 0 (leave it out for the automatic weight)");
      if (!c["target_encode"])
        return r.error(c["target_smooth"], "categories.target_smooth",
                       "smooths target encoding; list its columns under categories.target_encode");
    }
    if (c["columns"])
      KILN_RETURN_IF_ERROR(
          r.get_list(c["columns"], "categories.columns", &spec->categorical_columns));
    if (c["min_frequency"]) {
      KILN_RETURN_IF_ERROR(
          r.get(c["min_frequency"], "categories.min_frequency", &spec->category_min_frequency));
      if (spec->category_min_frequency < 1)
        return r.error(c["min_frequency"], "categories.min_frequency", "must be at least 1");
    }
  }
  if (const YAML::Node f = root["features"]) {
    // One reader for the spec's `features:` and a train config's `data.features`.
    Expected<Json> j = yaml_to_json(YAML::Dump(f));
    if (!j.ok()) return r.error(f, "features", j.status().message());
    if (Status st = read_feature_settings(*j, spec); !st.ok()) return r.located(f, st.message());
  }
  if (const YAML::Node c = root["cleaning"]) {
    KILN_RETURN_IF_ERROR(
        r.check_keys(c, "cleaning", {"missing", "duplicates", "outliers", "outlier_z", "ragged"}));
    CleaningPolicy& p = spec->cleaning;
    if (c["missing"])
      KILN_RETURN_IF_ERROR(r.get_enum(c["missing"], "cleaning.missing", kMissing, &p.missing));
    if (c["duplicates"]) {
      std::string d;
      KILN_RETURN_IF_ERROR(r.get(c["duplicates"], "cleaning.duplicates", &d));
      if (d != "drop" && d != "keep")
        return r.error(c["duplicates"], "cleaning.duplicates",
                       "'" + d + "' is not one of drop, keep");
      p.drop_duplicates = d == "drop";
    }
    if (c["outliers"])
      KILN_RETURN_IF_ERROR(r.get_enum(c["outliers"], "cleaning.outliers", kOutliers, &p.outliers));
    if (c["outlier_z"]) {
      KILN_RETURN_IF_ERROR(r.get(c["outlier_z"], "cleaning.outlier_z", &p.outlier_z));
      if (!(p.outlier_z > 0)) return r.error(c["outlier_z"], "cleaning.outlier_z", "must be > 0");
    }
    if (c["ragged"])
      KILN_RETURN_IF_ERROR(r.get_enum(c["ragged"], "cleaning.ragged", kRagged, &p.ragged));
  }
  if (root["split"]) KILN_RETURN_IF_ERROR(read_split_policy(r, root["split"], &spec->split));
  double sum = spec->split.train + spec->split.val + spec->split.test;
  if (std::fabs(sum - 1.0) > 1e-6)
    return r.error(root["split"] ? root["split"] : root, "split",
                   "train + val + test must sum to 1 (got " + std::to_string(sum) + ")");
  if (spec->split.train <= 0) return r.error(root["split"], "split.train", "must be > 0");
  return Status::Ok();
}

}  // namespace

Status read_feature_settings(const Json& features, DatasetSpec* spec) {
  auto bad = [](const std::string& field, const std::string& what) {
    return Status::InvalidArgument(field + ": " + what);
  };
  if (!features.is_object()) return bad("features", "expected a mapping {variance_threshold, pca}");
  for (const auto& [key, value] : features.items())
    if (key != "variance_threshold" && key != "pca")
      return bad("features." + key, "unknown field (expected one of: pca, variance_threshold)");
  if (features.contains("variance_threshold")) {
    const Json& v = features.at("variance_threshold");
    if (v.is_null()) {
      spec->variance_threshold.reset();
    } else if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0) {
      return bad("features.variance_threshold", "must be a finite number >= 0 (null: off)");
    } else {
      spec->variance_threshold = features::VarianceThresholdOptions().threshold(v.get<double>());
    }
  }
  if (features.contains("pca")) {
    const Json& p = features.at("pca");
    if (p.is_null()) {
      spec->pca.reset();
      return Status::Ok();
    }
    if (!p.is_object())
      return bad("features.pca", "expected a mapping {n_components | variance_fraction, whiten}");
    features::PcaOptions pca;
    for (const auto& [key, v] : p.items()) {
      const std::string field = "features.pca." + key;
      if (key == "n_components") {
        if (!v.is_number_integer() || v.get<int64_t>() < 1)
          return bad(field, "must be an integer, at least 1");
        pca.n_components_ = v.get<int64_t>();
      } else if (key == "variance_fraction") {
        if (!v.is_number() || !(v.get<double>() > 0 && v.get<double>() < 1))
          return bad(field, "must satisfy 0 < f < 1");
        pca.variance_fraction_ = v.get<double>();
      } else if (key == "whiten") {
        if (!v.is_boolean()) return bad(field, "must be true or false");
        pca.whiten_ = v.get<bool>();
      } else {
        return bad(field,
                   "unknown field (expected one of: n_components, variance_fraction, whiten)");
      }
    }
    if (pca.n_components_ > 0 && pca.variance_fraction_ > 0)
      return bad("features.pca", "set n_components or variance_fraction, not both");
    spec->pca = pca;
  }
  return Status::Ok();
}

const char* to_string(MissingPolicy v) { return name_of(kMissing, v); }
const char* to_string(OutlierAction v) { return name_of(kOutliers, v); }
const char* to_string(RaggedPolicy v) { return name_of(kRagged, v); }
const char* to_string(ScalingKind v) { return name_of(kScaling, v); }
const char* to_string(TaskKind v) { return name_of(kTasks, v); }

std::vector<const ImageSplitSource*> DatasetSpec::image_splits_train_first() const {
  std::vector<const ImageSplitSource*> order;
  for (const auto& src : image_splits) {
    if (src.split == "train")
      order.insert(order.begin(), &src);
    else
      order.push_back(&src);
  }
  return order;
}

Json DatasetSpec::to_json() const {
  Json j;
  j["name"] = name;
  j["kind"] = kind == DatasetKind::kImages ? "images" : "table";
  if (kind == DatasetKind::kImages) {
    j["format"] = image_format == ImageFormat::kIdx       ? "idx"
                  : image_format == ImageFormat::kCifar10 ? "cifar10"
                                                          : "image_folder";
    if (image_format == ImageFormat::kImageFolder)
      j["image"] = {{"size", {image_folder.height, image_folder.width}},
                    {"channels", image_folder.channels},
                    {"resize", image_folder.resize},
                    {"corrupt", image_folder.corrupt}};
    Json splits = Json::object();
    for (const auto& s : image_splits) {
      Json e;
      if (image_format == ImageFormat::kImageFolder) {
        e = s.folder.filename().string();
      } else if (image_format == ImageFormat::kIdx) {
        e["images"] = s.images.filename().string();
        e["labels"] = s.labels.filename().string();
      } else {
        e["batches"] = Json::array();
        for (const auto& b : s.batches) e["batches"].push_back(b.filename().string());
      }
      splits[s.split] = e;
    }
    j["splits"] = splits;
    j["classes"] = classes;
  } else {
    j["sources"] = Json::array();
    for (const auto& s : sources) j["sources"].push_back(s.filename().string());
    j["target"] = target;
    j["task"] = to_string(task);
    j["na_tokens"] = na_tokens.empty() ? default_na_tokens() : na_tokens;
    j["drop_columns"] = drop_columns;
    j["cleaning"] = {{"missing", to_string(cleaning.missing)},
                     {"duplicates", cleaning.drop_duplicates ? "drop" : "keep"},
                     {"outliers", to_string(cleaning.outliers)},
                     {"outlier_z", cleaning.outlier_z},
                     {"ragged", to_string(cleaning.ragged)}};
    j["scaling"] = to_string(scaling);
    // Recorded only when set, so existing snapshot hashes stay as they were.
    if (category_min_frequency > 0) j["categories"]["min_frequency"] = category_min_frequency;
    if (!categorical_columns.empty()) j["categories"]["columns"] = categorical_columns;
    if (!target_encoded_columns.empty()) j["categories"]["target_encode"] = target_encoded_columns;
    if (target_smooth >= 0) j["categories"]["target_smooth"] = target_smooth;
    if (variance_threshold) j["features"]["variance_threshold"] = variance_threshold->threshold_;
    if (pca) j["features"]["pca"] = pca->to_json();
  }
  j["split"] = {{"train", split.train},
                {"val", split.val},
                {"test", split.test},
                {"seed", split.seed},
                {"stratify", split.stratify}};
  // Only non-default methods are recorded, so existing snapshot hashes stay as they were.
  if (split.method == SplitPolicy::Method::kSklearn) j["split"]["method"] = "sklearn";
  j["limit"] = limit;
  return j;
}

Expected<DatasetSpec> load_dataset_spec(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound(path.string() + ": no such file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::BadFile&) {
    return Status::IoError(path.string() + ": cannot read");
  } catch (const YAML::ParserException& e) {
    return Status::InvalidArgument(path.string() + " line " + std::to_string(e.mark.line + 1) +
                                   ": invalid YAML: " + e.msg);
  }
  SpecReader r(path);
  if (!root || root.IsNull()) return Status::InvalidArgument(path.string() + ": empty spec");
  KILN_RETURN_IF_ERROR(
      r.check_keys(root, "",
                   {"name", "kind", "format", "root", "splits", "classes", "image", "corrupt",
                    "sources", "target", "task", "na_tokens", "drop_columns", "cleaning", "scaling",
                    "categories", "features", "split", "limit"}));
  DatasetSpec spec;
  spec.spec_path = path;
  spec.name = path.parent_path().filename().string();
  if (root["name"]) KILN_RETURN_IF_ERROR(r.get(root["name"], "name", &spec.name));
  std::string kind = "table";
  if (root["kind"]) KILN_RETURN_IF_ERROR(r.get(root["kind"], "kind", &kind));
  if (root["limit"]) KILN_RETURN_IF_ERROR(r.get(root["limit"], "limit", &spec.limit));
  fs::path base = fs::absolute(path).parent_path();
  if (kind == "images") {
    spec.kind = DatasetKind::kImages;
    KILN_RETURN_IF_ERROR(read_images(r, root, base, &spec));
  } else if (kind == "table") {
    spec.kind = DatasetKind::kTable;
    KILN_RETURN_IF_ERROR(read_table(r, root, base, &spec));
  } else {
    return r.error(root["kind"], "kind", "'" + kind + "' is not one of images, table");
  }
  return spec;
}

DatasetSpec csv_dataset_spec(const fs::path& csv, const std::string& target) {
  DatasetSpec spec;
  spec.name = csv.stem().string();
  spec.kind = DatasetKind::kTable;
  spec.sources = {csv};
  spec.target = target;
  return spec;
}

std::vector<std::string> DatasetSpec::category_column_names() const {
  std::vector<std::string> names = categorical_columns;
  for (const std::string& column : target_encoded_columns)
    if (std::find(names.begin(), names.end(), column) == names.end()) names.push_back(column);
  return names;
}

Expected<DatasetSpec> resolve_dataset(const std::string& spec_or_csv, const std::string& target,
                                      const std::vector<std::string>& categorical,
                                      const std::vector<std::string>& target_encoded) {
  KILN_ASSIGN_OR_RETURN(DatasetSpec spec, resolve_dataset(spec_or_csv, target));
  for (const auto& [flag, given, list] :
       {std::tuple{"--categorical", &categorical, &spec.categorical_columns},
        std::tuple{"--target-encode", &target_encoded, &spec.target_encoded_columns}}) {
    if (!given->empty() && spec.kind != DatasetKind::kTable)
      return Status::InvalidArgument(std::string(flag) + ": " + spec_or_csv +
                                     " is an image dataset");
    for (const std::string& column : *given)
      if (std::find(list->begin(), list->end(), column) == list->end()) list->push_back(column);
  }
  return spec;
}

Expected<DatasetSpec> resolve_dataset(const std::string& spec_or_csv, const std::string& target) {
  fs::path p(spec_or_csv);
  std::string ext = p.extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".csv") {
    if (target.empty())
      return Status::InvalidArgument(spec_or_csv + ": a CSV given directly needs --target COLUMN");
    std::error_code ec;
    if (!fs::exists(p, ec)) return Status::NotFound(spec_or_csv + ": no such file");
    return csv_dataset_spec(p, target);
  }
  if (ext == ".yaml" || ext == ".yml") {
    KILN_ASSIGN_OR_RETURN(DatasetSpec spec, load_dataset_spec(p));
    if (!target.empty() && spec.kind == DatasetKind::kTable) spec.target = target;
    return spec;
  }
  return Status::InvalidArgument(spec_or_csv +
                                 ": expected a dataset spec (.yaml) or a CSV file (.csv)");
}

}  // namespace kiln::data
