#include "kiln/data/prepare.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "kiln/core/hash.h"
#include "kiln/core/logging.h"
#include "kiln/core/random.h"
#include "kiln/data/image_folder.h"
#include "kiln/data/images.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/table_source.h"
#include "kiln/data/table_stats.h"
#include "kiln/features/imputer.h"
#include "kiln/features/one_hot.h"
#include "kiln/features/pca.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"

namespace kiln::data {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Json class_counts(const torch::Tensor& y, const std::vector<std::string>& classes) {
  Json j = Json::object();
  if (y.scalar_type() != torch::kLong) return j;
  std::vector<int64_t> counts(classes.size(), 0);
  auto a = y.accessor<int64_t, 1>();
  for (int64_t i = 0; i < y.size(0); ++i) counts[static_cast<size_t>(a[i])]++;
  for (size_t c = 0; c < classes.size(); ++c) j[classes[c]] = counts[c];
  return j;
}

Json split_summary(const std::map<std::string, SplitTensors>& splits,
                   const std::vector<std::string>& classes) {
  Json j = Json::object();
  for (const char* name : {"train", "val", "test"}) {
    auto it = splits.find(name);
    if (it == splits.end()) continue;
    const auto& t = it->second;
    std::vector<int64_t> shape(t.x.sizes().begin(), t.x.sizes().end());
    j[name] = {{"rows", t.x.size(0)},
               {"x_shape", shape},
               {"x_dtype", t.x.dtype().name()},
               {"class_counts", class_counts(t.y, classes)}};
  }
  return j;
}

/// Folds of target encoding's cross-fitting over the training rows.
constexpr int64_t kTargetEncodingFolds = 5;

/// The fold (0..kTargetEncodingFolds-1) of each of n training rows: each class's rows (one group
/// for regression) shuffled by `seed` and dealt out in turn, so every fold holds each class.
std::vector<int64_t> target_encoding_folds(int64_t n, const std::vector<int64_t>& labels,
                                           uint64_t seed) {
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < n; ++i)
    groups[labels.empty() ? 0 : labels[static_cast<size_t>(i)]].push_back(i);
  std::vector<int64_t> fold_of(static_cast<size_t>(n), 0);
  int64_t next = 0;
  for (auto& [label, members] : groups) {
    deterministic_shuffle(members, mix_seed(seed, static_cast<uint64_t>(label),
                                            static_cast<uint64_t>(kTargetEncodingFolds)));
    for (int64_t i : members) fold_of[static_cast<size_t>(i)] = next++ % kTargetEncodingFolds;
  }
  return fold_of;
}

/// What a target encoding averages, per training row: the regression target, a binary task's
/// second-class indicator, or one indicator per class (N x d float32).
torch::Tensor target_encoding_targets(const torch::Tensor& y, bool classification,
                                      int64_t classes) {
  if (!classification) return y.to(torch::kFloat32).reshape({-1, 1});
  if (classes == 2) return y.eq(1).to(torch::kFloat32).reshape({-1, 1});
  return torch::one_hot(y, classes).to(torch::kFloat32);
}

torch::Tensor take_rows(const torch::Tensor& t, const std::vector<int64_t>& idx) {
  return t.index_select(0, torch::tensor(idx, torch::kLong)).contiguous();
}

std::unique_ptr<features::Transform> make_scaler(ScalingKind kind) {
  switch (kind) {
    case ScalingKind::kStandard:
      return std::make_unique<features::StandardScaler>();
    case ScalingKind::kMinMax:
      return std::make_unique<features::MinMaxScaler>();
    case ScalingKind::kRobust:
      return std::make_unique<features::RobustScaler>();
    case ScalingKind::kNone:
      return nullptr;
  }
  return nullptr;
}

features::ImputeStrategy impute_strategy(MissingPolicy p) {
  switch (p) {
    case MissingPolicy::kImputeMean:
      return features::ImputeStrategy::kMean;
    case MissingPolicy::kImputeMostFrequent:
      return features::ImputeStrategy::kMostFrequent;
    default:
      return features::ImputeStrategy::kMedian;
  }
}

// ---------------------------------------------------------------------------------------------
// Tables

Expected<PrepareResult> prepare_table(const DatasetSpec& spec, const PrepareOptions& options) {
  const std::vector<std::string> na = spec.na_tokens.empty() ? default_na_tokens() : spec.na_tokens;
  KILN_ASSIGN_OR_RETURN(MergedTable merged, read_table_sources(spec, na));
  CsvTable& t = merged.table;
  const std::string file0 = merged.source_paths[0].string();
  if (t.rows.empty() && t.ragged.empty())
    return Status::InvalidArgument(file0 + ": no data rows after the header");

  Json cleaning;
  const int64_t rows_read = static_cast<int64_t>(t.rows.size() + t.ragged.size());
  cleaning["rows_read"] = rows_read;

  // Ragged records: an error, or rejected and listed.
  Json ragged = Json::array();
  for (size_t i = 0; i < t.ragged.size(); ++i) {
    Json r = {
        {"line", t.ragged[i].line}, {"fields", t.ragged[i].fields}, {"expected", t.header.size()}};
    if (merged.source_paths.size() > 1)
      r["source"] = merged.source_paths[merged.ragged_source[i]].filename().string();
    ragged.push_back(r);
  }
  if (!t.ragged.empty() && spec.cleaning.ragged == RaggedPolicy::kError) {
    std::string lines;
    for (size_t i = 0; i < t.ragged.size() && i < 20; ++i)
      lines += (i ? ", " : "") + std::to_string(t.ragged[i].line) + " (" +
               std::to_string(t.ragged[i].fields) + " fields)";
    const fs::path& src = merged.source_paths[merged.ragged_source[0]];
    return Status::InvalidArgument(
        src.string() + ": ragged rows (expected " + std::to_string(t.header.size()) +
        " fields) at line " + lines +
        "; fix the file or set cleaning.ragged: drop to reject and list them");
  }
  cleaning["ragged_rejected"] = ragged;

  // Columns: drop the listed ones, find the target.
  KILN_RETURN_IF_ERROR(column_indices(t, spec.drop_columns, "drop_columns").status());
  KILN_ASSIGN_OR_RETURN(const std::vector<size_t> categorical_columns_named,
                        column_indices(t, spec.categorical_columns, "categories.columns"));
  KILN_ASSIGN_OR_RETURN(const std::vector<size_t> target_encoded_named,
                        column_indices(t, spec.target_encoded_columns, "categories.target_encode"));
  std::vector<std::vector<double>> values;
  std::vector<ColumnFacts> facts = analyse_columns(t, &values, spec.category_column_names());
  const size_t target = merged.target_column;
  std::vector<size_t> feature_cols;
  for (size_t c = 0; c < t.header.size(); ++c) {
    if (c == target) continue;
    if (std::find(spec.drop_columns.begin(), spec.drop_columns.end(), t.header[c]) !=
        spec.drop_columns.end())
      continue;
    feature_cols.push_back(c);
  }
  if (feature_cols.empty()) return Status::InvalidArgument(file0 + ": no feature columns left");
  // Columns the spec names as categories must be features.
  for (const auto& [named_columns, field] :
       {std::pair{&categorical_columns_named, "categories.columns"},
        std::pair{&target_encoded_named, "categories.target_encode"}})
    for (size_t c : *named_columns) {
      const std::string named = file0 + ": " + field + " names '" + t.header[c] + "'";
      if (c == target) return Status::InvalidArgument(named + ", which is the target");
      if (std::find(feature_cols.begin(), feature_cols.end(), c) == feature_cols.end())
        return Status::InvalidArgument(named + ", which drop_columns drops");
    }
  // Numeric columns feed the imputer/scaler pipeline; categorical ones are one-hot encoded.
  std::vector<size_t> numeric_cols, categorical_cols;
  for (size_t c : feature_cols) (facts[c].numeric ? numeric_cols : categorical_cols).push_back(c);
  // The target-encoded ones among them (categories, as category_column_names() made them).
  std::vector<bool> target_encoded(categorical_cols.size(), false);
  for (size_t k = 0; k < categorical_cols.size(); ++k)
    target_encoded[k] = std::find(target_encoded_named.begin(), target_encoded_named.end(),
                                  categorical_cols[k]) != target_encoded_named.end();
  for (size_t k = 0; k < categorical_cols.size(); ++k)
    if (const size_t c = categorical_cols[k]; !target_encoded[k] && looks_like_identifier(facts[c]))
      KILN_LOG_WARN(
          "{}: column '{}' has {} distinct values in {} rows: an identifier? One-hot encoding "
          "gives it a column per value and no category to learn; list it under drop_columns (or, "
          "when its values recur, under categories.target_encode)",
          file0, t.header[c], facts[c].unique, facts[c].present);

  const bool classification =
      spec.task == TaskKind::kClassification ||
      (spec.task == TaskKind::kAuto && looks_like_classification(facts[target], t, target));

  // Row-level cleaning; `keep[r]` false once a row is dropped, with the reason recorded.
  const size_t n = t.rows.size();
  std::vector<bool> keep(n, true);
  Json dropped = Json::array();
  auto drop = [&](size_t r, const std::string& reason) {
    if (!keep[r]) return;
    keep[r] = false;
    Json d = {{"line", t.lines[r]}, {"reason", reason}};
    if (merged.source_paths.size() > 1)
      d["source"] = merged.source_paths[merged.row_source[r]].filename().string();
    dropped.push_back(d);
  };

  // Target must be present (and numeric for regression).
  for (size_t r = 0; r < n; ++r) {
    const std::string& cell = t.rows[r][target];
    if (t.is_missing(cell))
      drop(r, "missing target");
    else if (!classification && std::isnan(values[target][r]))
      drop(r, "target '" + cell + "' is not a number");
  }
  if (spec.cleaning.drop_duplicates)
    for (size_t r : duplicate_row_indices(t)) drop(r, "duplicate of an earlier row");

  // Non-numeric cells in numeric columns become missing; values[] already holds NaN there.
  Json non_numeric = Json::array();
  for (size_t c : numeric_cols)
    for (size_t r = 0; r < n; ++r)
      if (keep[r] && std::isnan(values[c][r]) && !t.is_missing(t.rows[r][c]))
        non_numeric.push_back(
            {{"line", t.lines[r]}, {"column", t.header[c]}, {"value", t.rows[r][c]}});
  cleaning["non_numeric_cells"] = non_numeric;

  int64_t missing_cells = 0;
  for (size_t r = 0; r < n; ++r) {
    if (!keep[r]) continue;
    for (size_t c : feature_cols) {
      bool missing = facts[c].numeric ? std::isnan(values[c][r]) : t.is_missing(t.rows[r][c]);
      if (!missing) continue;
      ++missing_cells;
      if (spec.cleaning.missing == MissingPolicy::kDrop) drop(r, "missing value in " + t.header[c]);
    }
  }

  // Extreme outliers, judged on the rows still kept.
  int64_t clipped = 0;
  Json outliers = Json::array();
  {
    for (size_t c : numeric_cols) {
      std::vector<double> kept_values;
      for (size_t r = 0; r < n; ++r)
        if (keep[r] && !std::isnan(values[c][r])) kept_values.push_back(values[c][r]);
      RobustStats rs = robust_stats(kept_values);
      if (rs.scale <= 0) continue;
      const double z_max = spec.cleaning.outlier_z;
      for (size_t r = 0; r < n; ++r) {
        double v = values[c][r];
        if (!keep[r] || std::isnan(v) || rs.z(v) <= z_max) continue;
        outliers.push_back(
            {{"line", t.lines[r]}, {"column", t.header[c]}, {"value", v}, {"z", rs.z(v)}});
        if (spec.cleaning.outliers == OutlierAction::kDrop) {
          drop(r, "extreme outlier in " + t.header[c]);
        } else if (spec.cleaning.outliers == OutlierAction::kClip) {
          double bound = z_max * rs.scale;
          values[c][r] = std::clamp(v, rs.median - bound, rs.median + bound);
          ++clipped;
        }
      }
    }
  }
  cleaning["outliers"] = outliers;
  cleaning["clipped_cells"] = clipped;

  std::vector<size_t> rows;
  for (size_t r = 0; r < n; ++r)
    if (keep[r]) rows.push_back(r);
  if (rows.empty()) return Status::InvalidArgument(file0 + ": cleaning dropped every row");
  std::sort(dropped.begin(), dropped.end(), [](const Json& a, const Json& b) {
    return a["line"].get<int64_t>() < b["line"].get<int64_t>();
  });
  cleaning["dropped_rows"] = dropped;
  cleaning["rows_kept"] = static_cast<int64_t>(rows.size());

  // Labels.
  std::vector<std::string> classes;
  std::vector<int64_t> labels;
  if (classification) {
    std::set<std::string> names;
    for (size_t r : rows) names.insert(t.rows[r][target]);
    classes.assign(names.begin(), names.end());
    if (facts[target].numeric)  // numeric labels sort as numbers: 2 before 10
      std::sort(classes.begin(), classes.end(), [](const std::string& a, const std::string& b) {
        double x = 0, y = 0;
        parse_double(a, &x);
        parse_double(b, &y);
        return x < y;
      });
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < classes.size(); ++i) index[classes[i]] = static_cast<int64_t>(i);
    for (size_t r : rows) labels.push_back(index[t.rows[r][target]]);
    if (classes.size() < 2)
      return Status::InvalidArgument(file0 + ": target '" + spec.target +
                                     "' has a single class after cleaning");
  }

  // Raw matrix (float64, NaN = missing) and targets.
  const int64_t m = static_cast<int64_t>(rows.size());
  const int64_t f = static_cast<int64_t>(numeric_cols.size());
  torch::Tensor x_raw = torch::empty({m, f}, torch::kFloat64);
  auto xa = x_raw.accessor<double, 2>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < f; ++j) xa[i][j] = values[numeric_cols[j]][rows[i]];
  // Categorical cells as strings; a missing cell is its own category.
  std::vector<std::vector<std::string>> categories_raw(categorical_cols.size());
  for (size_t k = 0; k < categorical_cols.size(); ++k)
    for (size_t r : rows) {
      const std::string& cell = t.rows[r][categorical_cols[k]];
      categories_raw[k].push_back(t.is_missing(cell) ? features::kMissingCategory : cell);
    }
  torch::Tensor y;
  if (classification) {
    y = torch::tensor(labels, torch::kLong);
  } else {
    std::vector<float> yv;
    for (size_t r : rows) yv.push_back(static_cast<float>(values[target][r]));
    y = torch::tensor(yv, torch::kFloat32);
  }

  const uint64_t seed = options.seed_.value_or(spec.split.seed);
  SplitIndices idx;
  if (spec.split.method == SplitPolicy::Method::kSklearn) {
    if (seed > 0xffffffffULL)
      return Status::InvalidArgument(file0 + ": split.method sklearn takes a seed below 2^32");
    idx = sklearn_split_indices(m, spec.split.test, spec.split.val, static_cast<uint32_t>(seed));
  } else {
    idx =
        split_indices(m, (classification && spec.split.stratify) ? labels : std::vector<int64_t>{},
                      spec.split.train, spec.split.val, seed);
  }

  // Fit the feature pipeline on train only, then apply it to every split.
  features::Pipeline pipeline;
  int64_t imputed = 0;
  if (spec.cleaning.missing != MissingPolicy::kDrop) {
    pipeline.add(std::make_unique<features::Imputer>(
        features::ImputerOptions().strategy(impute_strategy(spec.cleaning.missing))));
  }
  if (spec.variance_threshold)
    pipeline.add(std::make_unique<features::VarianceThreshold>(*spec.variance_threshold));
  if (auto scaler = make_scaler(spec.scaling)) pipeline.add(std::move(scaler));
  if (spec.pca) pipeline.add(std::make_unique<features::Pca>(*spec.pca));
  torch::Tensor x_train_raw = take_rows(x_raw, idx.train);
  if (f > 0)
    KILN_RETURN_IF_ERROR(
        pipeline.fit(x_train_raw).with_context(file0 + ": fitting transforms on train"));
  auto pick = [](const std::vector<std::string>& column, const std::vector<int64_t>& ids) {
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (int64_t i : ids) out.push_back(column[static_cast<size_t>(i)]);
    return out;
  };
  // Categories the train split holds fewer than min_frequency times join "<infrequent>",
  // which then also takes the ones train never saw (in val/test, and at serving).
  Json infrequent = Json::object();
  if (spec.category_min_frequency > 0)
    for (size_t k = 0; k < categorical_cols.size(); ++k) {
      std::map<std::string, int64_t> counts;
      for (int64_t i : idx.train) ++counts[categories_raw[k][static_cast<size_t>(i)]];
      std::set<std::string> frequent;
      Json rare = Json::array();
      for (const auto& [category, count] : counts)
        if (count >= spec.category_min_frequency)
          frequent.insert(category);
        else
          rare.push_back(category);
      if (rare.empty()) continue;
      infrequent[t.header[categorical_cols[k]]] = rare;
      for (std::string& cell : categories_raw[k])
        if (!frequent.count(cell)) cell = features::kInfrequentCategory;
    }
  // Unseen categories in val/test (or at serving) encode as all zeros.
  std::vector<features::OneHotEncoder> encoders;
  for (size_t k = 0; k < categorical_cols.size(); ++k) {
    encoders.emplace_back(
        features::OneHotEncoderOptions().handle_unknown(features::UnknownCategory::kIgnore));
    KILN_RETURN_IF_ERROR(
        encoders.back()
            .fit_categories(pick(categories_raw[k], idx.train))
            .with_context(file0 + ": column '" + t.header[categorical_cols[k]] + "'"));
  }
  // Target-encoded columns: fitted on the training rows, whose own encodings are cross-fitted.
  std::vector<torch::Tensor> train_encodings(categorical_cols.size());
  if (std::find(target_encoded.begin(), target_encoded.end(), true) != target_encoded.end()) {
    std::vector<int64_t> train_labels;
    if (classification)
      for (int64_t i : idx.train) train_labels.push_back(labels[static_cast<size_t>(i)]);
    const std::vector<int64_t> fold_of =
        target_encoding_folds(static_cast<int64_t>(idx.train.size()), train_labels, seed);
    const torch::Tensor targets = target_encoding_targets(take_rows(y, idx.train), classification,
                                                          static_cast<int64_t>(classes.size()));
    for (size_t k = 0; k < categorical_cols.size(); ++k) {
      if (!target_encoded[k]) continue;
      KILN_ASSIGN_OR_RETURN(torch::Tensor codes,
                            encoders[k].codes(pick(categories_raw[k], idx.train)));
      Expected<torch::Tensor> own =
          encoders[k].fit_target(codes, targets, fold_of, spec.target_smooth);
      if (!own.ok())
        return own.status().with_context(file0 + ": column '" + t.header[categorical_cols[k]] +
                                         "'");
      train_encodings[k] = std::move(*own);
    }
  }

  std::map<std::string, SplitTensors> splits;
  std::map<std::string, std::vector<int64_t>*> parts = {
      {"train", &idx.train}, {"val", &idx.val}, {"test", &idx.test}};
  for (auto& [name, ids] : parts) {
    if (ids->empty()) continue;
    std::vector<torch::Tensor> blocks;
    torch::Tensor raw;
    if (f > 0) {
      raw = take_rows(x_raw, *ids);
      imputed += torch::isnan(raw).sum().item<int64_t>();
      KILN_ASSIGN_OR_RETURN(torch::Tensor x, pipeline.apply(raw));
      blocks.push_back(x.to(torch::kFloat32));
    }
    // What the bundle's module takes for these rows: the raw numeric columns, then each
    // categorical column's code (the module folds the transforms and the one-hot encoding).
    std::vector<torch::Tensor> served;
    if (f > 0) served.push_back(raw.to(torch::kFloat32));
    for (size_t k = 0; k < encoders.size(); ++k) {
      KILN_ASSIGN_OR_RETURN(torch::Tensor codes, encoders[k].codes(pick(categories_raw[k], *ids)));
      // A target-encoded training row carries its cross-fitted encoding, every other row the
      // encoder's (what the bundle's module computes).
      if (name == "train" && train_encodings[k].defined()) {
        blocks.push_back(train_encodings[k]);
      } else {
        KILN_ASSIGN_OR_RETURN(torch::Tensor encoded, encoders[k].apply(codes));
        blocks.push_back(encoded.to(torch::kFloat32));
      }
      served.push_back(codes.to(torch::kFloat32));
    }
    splits[name] = SplitTensors{torch::cat(blocks, 1).contiguous(), take_rows(y, *ids), {}};
    if (!served.empty()) splits[name].raw_x = torch::cat(served, 1).contiguous();
  }
  if (!infrequent.empty()) cleaning["infrequent_categories"] = infrequent;
  cleaning["missing_cells"] = missing_cells;
  cleaning["imputed_cells"] = imputed;

  Json manifest;
  manifest["name"] = spec.name;
  manifest["kind"] = "table";
  manifest["task"] = classification ? "classification" : "regression";
  manifest["spec"] = spec.to_json();
  if (options.seed_) manifest["spec"]["split"]["seed"] = seed;
  if (options.limit_ > 0) manifest["spec"]["limit"] = options.limit_;
  Json sources = Json::array();
  for (size_t s = 0; s < merged.source_paths.size(); ++s)
    sources.push_back({{"file", merged.source_paths[s].filename().string()},
                       {"sha256", merged.source_sha256[s]}});
  manifest["sources"] = sources;
  // Schema: x columns are the numeric features (in CSV order, through `transforms`), then each
  // categorical feature's one-hot block (`categorical_encoders`, same order). raw_x (what a
  // bundle's module takes) has the same order with one code column per categorical feature.
  Json feats = Json::array();
  for (size_t c : numeric_cols) feats.push_back({{"name", t.header[c]}, {"type", "numeric"}});
  Json encoders_json = Json::array();
  for (size_t k = 0; k < categorical_cols.size(); ++k) {
    Json enc = encoders[k].to_json();
    feats.push_back({{"name", t.header[categorical_cols[k]]},
                     {"type", "categorical"},
                     {"categories", enc["categories"]}});
    if (target_encoded[k]) feats.back()["encoding"] = "target";
    encoders_json.push_back({{"column", t.header[categorical_cols[k]]}, {"encoder", enc}});
  }
  Json target_json = {{"name", spec.target}, {"type", classification ? "categorical" : "numeric"}};
  if (classification) target_json["classes"] = classes;
  manifest["schema"] = {{"features", feats},
                        {"target", target_json},
                        {"input_features", static_cast<int64_t>(feature_cols.size())},
                        {"output_features", splits["train"].x.size(1)}};
  manifest["cleaning"] = cleaning;
  manifest["splits"] = split_summary(splits, classes);
  // Where each prepared row came from, so raw rows can be matched to prepared ones (lineage,
  // and the check that serving the raw rows gives what training saw).
  for (auto& [name, ids] : parts) {
    if (ids->empty()) continue;
    Json lines = Json::array();
    for (int64_t i : *ids) {
      size_t r = rows[static_cast<size_t>(i)];
      if (merged.source_paths.size() > 1)
        lines.push_back({merged.row_source[r], t.lines[r]});
      else
        lines.push_back(t.lines[r]);
    }
    manifest["splits"][name]["source_lines"] = lines;
  }
  manifest["transforms"] = pipeline.to_json();
  if (!encoders_json.empty()) manifest["categorical_encoders"] = encoders_json;

  KILN_ASSIGN_OR_RETURN(fs::path dir,
                        write_snapshot(options.out_dir_, spec.name, manifest, splits));
  KILN_ASSIGN_OR_RETURN(Json written, read_json_file(dir / "manifest.json"));
  return PrepareResult{dir, written["content_hash"].get<std::string>(), written};
}

// ---------------------------------------------------------------------------------------------
// Images

/// Per-channel mean and sample standard deviation of uint8 pixels [N, C, H, W] scaled by 1/255,
/// from exact integer sums (a 256-bin histogram per channel): the same numbers bit for bit
/// whatever the thread count, so preparing the same data twice gives the same snapshot.
std::pair<std::vector<double>, std::vector<double>> pixel_statistics(const torch::Tensor& images) {
  const torch::Tensor px = images.contiguous();
  const int64_t n = px.size(0), channels = px.size(1), plane = px.size(2) * px.size(3);
  std::vector<std::array<uint64_t, 256>> histogram(channels);
  for (auto& h : histogram) h.fill(0);
  const uint8_t* p = px.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c, p += plane)
      for (int64_t k = 0; k < plane; ++k) ++histogram[c][p[k]];
  std::vector<double> mean(channels), stdev(channels);
  for (int64_t c = 0; c < channels; ++c) {
    unsigned __int128 count = 0, sum = 0, squares = 0;
    for (unsigned v = 0; v < 256; ++v) {
      count += histogram[c][v];
      sum += static_cast<unsigned __int128>(histogram[c][v]) * v;
      squares += static_cast<unsigned __int128>(histogram[c][v]) * v * v;
    }
    // var = (count * squares - sum^2) / (count * (count - 1)), exact up to the final division.
    const unsigned __int128 spread = count * squares - sum * sum;
    mean[c] = static_cast<long double>(sum) / static_cast<long double>(count) / 255.0L;
    stdev[c] =
        count > 1
            ? std::sqrt(static_cast<long double>(spread) /
                        (static_cast<long double>(count) * static_cast<long double>(count - 1))) /
                  255.0L
            : 0.0;
  }
  return {mean, stdev};
}

Expected<PrepareResult> prepare_images(const DatasetSpec& spec, const PrepareOptions& options) {
  const int64_t limit = options.limit_ > 0 ? options.limit_ : spec.limit;
  std::map<std::string, ImageSet> sets;
  Json sources = Json::array();
  Json skipped = Json::array();
  std::vector<std::string> folder_classes = spec.classes;
  if (spec.image_format == ImageFormat::kImageFolder) {
    // Train first: its class folders name the classes the test split is labelled with.
    const std::vector<const ImageSplitSource*> order = spec.image_splits_train_first();
    for (const ImageSplitSource* src : order) {
      KILN_ASSIGN_OR_RETURN(ImageFolder folder, read_image_folder(src->folder, spec.image_folder,
                                                                  folder_classes, limit));
      folder_classes = folder.classes;
      for (const SkippedImage& s : folder.skipped) {
        KILN_LOG_WARN("{}: skipped (corrupt: skip): {}", s.path.string(), s.reason);
        skipped.push_back({{"split", src->split}, {"file", s.path.string()}, {"reason", s.reason}});
      }
      sources.push_back({{"split", src->split},
                         {"folder", src->folder.filename().string()},
                         {"files", folder.files},
                         {"sha256", folder.sha256}});
      sets[src->split] = std::move(folder.set);
    }
  }
  for (const auto& src : spec.image_splits) {
    if (spec.image_format == ImageFormat::kImageFolder) break;
    Expected<ImageSet> set = spec.image_format == ImageFormat::kIdx
                                 ? read_idx_images(src.images, src.labels, limit)
                                 : read_cifar10(src.batches, limit);
    if (!set.ok()) return set.status();
    std::vector<fs::path> files = spec.image_format == ImageFormat::kIdx
                                      ? std::vector<fs::path>{src.images, src.labels}
                                      : src.batches;
    for (const auto& file : files) {
      KILN_ASSIGN_OR_RETURN(std::string sha, sha256_file(file));
      sources.push_back(
          {{"split", src.split}, {"file", file.filename().string()}, {"sha256", sha}});
    }
    sets[src.split] = std::move(*set);
  }
  if (!sets.count("train"))
    return Status::InvalidArgument(spec.spec_path.string() + ": splits: needs 'train'");
  const ImageSet& train = sets["train"];
  int64_t num_classes = train.labels.max().item<int64_t>() + 1;
  for (const auto& [name, set] : sets)
    num_classes = std::max(num_classes, set.labels.max().item<int64_t>() + 1);
  std::vector<std::string> classes =
      spec.image_format == ImageFormat::kImageFolder ? folder_classes : spec.classes;
  if (!classes.empty() && static_cast<int64_t>(classes.size()) < num_classes)
    return Status::InvalidArgument(spec.spec_path.string() + ": classes lists " +
                                   std::to_string(classes.size()) + " names but labels go up to " +
                                   std::to_string(num_classes - 1));
  for (int64_t c = static_cast<int64_t>(classes.size()); c < num_classes; ++c)
    classes.push_back(std::to_string(c));

  const uint64_t seed = options.seed_.value_or(spec.split.seed);
  std::vector<int64_t> labels(train.labels.data_ptr<int64_t>(),
                              train.labels.data_ptr<int64_t>() + train.size());
  SplitIndices idx =
      split_indices(train.size(), spec.split.stratify ? labels : std::vector<int64_t>{},
                    1.0 - spec.split.val, spec.split.val, seed);
  std::map<std::string, SplitTensors> splits;
  // Images are stored raw (uint8 pixels), so they need no separate raw_x.
  splits["train"] = {take_rows(train.images, idx.train), take_rows(train.labels, idx.train), {}};
  if (!idx.val.empty())
    splits["val"] = {take_rows(train.images, idx.val), take_rows(train.labels, idx.val), {}};
  if (sets.count("test")) splits["test"] = {sets["test"].images, sets["test"].labels, {}};

  // Normalisation statistics from train only: x' = (x/255 - mean[c]) / std[c].
  const auto [mean_v, std_v] = pixel_statistics(splits["train"].x);

  Json manifest;
  manifest["name"] = spec.name;
  manifest["kind"] = "images";
  manifest["task"] = "classification";
  manifest["spec"] = spec.to_json();
  if (options.seed_) manifest["spec"]["split"]["seed"] = seed;
  if (options.limit_ > 0) manifest["spec"]["limit"] = options.limit_;
  manifest["sources"] = sources;
  std::vector<int64_t> shape(train.images.sizes().begin() + 1, train.images.sizes().end());
  manifest["schema"] = {
      {"input", {{"dtype", "uint8"}, {"shape", shape}, {"layout", "NCHW"}}},
      {"target", {{"name", "label"}, {"type", "categorical"}, {"classes", classes}}}};
  manifest["cleaning"] = {
      {"rows_read", train.size() + (sets.count("test") ? sets["test"].size() : 0)},
      {"val_from_train", spec.split.val}};
  if (spec.image_format == ImageFormat::kImageFolder) {
    manifest["cleaning"]["corrupt_skipped"] = skipped.size();
    manifest["cleaning"]["skipped_files"] = skipped;
  }
  manifest["splits"] = split_summary(splits, classes);
  manifest["transforms"] = {{"kind", "image_normalize"},
                            {"version", 1},
                            {"input_scale", 1.0 / 255.0},
                            {"mean", mean_v},
                            {"std", std_v}};
  KILN_ASSIGN_OR_RETURN(fs::path dir,
                        write_snapshot(options.out_dir_, spec.name, manifest, splits));
  KILN_ASSIGN_OR_RETURN(Json written, read_json_file(dir / "manifest.json"));
  return PrepareResult{dir, written["content_hash"].get<std::string>(), written};
}

}  // namespace

SplitIndices split_indices(int64_t n, const std::vector<int64_t>& labels, double train_fraction,
                           double val_fraction, uint64_t seed) {
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < n; ++i)
    groups[labels.empty() ? 0 : labels[static_cast<size_t>(i)]].push_back(i);
  SplitIndices out;
  for (auto& [label, members] : groups) {
    deterministic_shuffle(members, mix_seed(seed, static_cast<uint64_t>(label)));
    const int64_t size = static_cast<int64_t>(members.size());
    int64_t n_train = std::llround(static_cast<double>(size) * train_fraction);
    int64_t n_val = std::llround(static_cast<double>(size) * val_fraction);
    n_train = std::clamp<int64_t>(n_train, 0, size);
    n_val = std::clamp<int64_t>(n_val, 0, size - n_train);
    out.train.insert(out.train.end(), members.begin(), members.begin() + n_train);
    out.val.insert(out.val.end(), members.begin() + n_train, members.begin() + n_train + n_val);
    out.test.insert(out.test.end(), members.begin() + n_train + n_val, members.end());
  }
  for (auto* v : {&out.train, &out.val, &out.test}) std::sort(v->begin(), v->end());
  return out;
}

std::vector<int64_t> numpy_legacy_permutation(int64_t n, uint32_t seed) {
  std::vector<int64_t> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(out.begin(), out.end(), int64_t{0});
  std::mt19937 mt(seed);
  for (int64_t i = n - 1; i >= 1; --i) {
    const uint64_t max = static_cast<uint64_t>(i);
    uint64_t mask = max;
    for (int shift : {1, 2, 4, 8, 16, 32}) mask |= mask >> shift;
    uint64_t j;
    if (max <= 0xffffffffULL) {
      do j = static_cast<uint64_t>(mt()) & mask;
      while (j > max);
    } else {
      do {
        const uint64_t hi = mt();
        j = ((hi << 32) | mt()) & mask;
      } while (j > max);
    }
    std::swap(out[static_cast<size_t>(i)], out[static_cast<size_t>(j)]);
  }
  return out;
}

SplitIndices sklearn_split_indices(int64_t n, double test_fraction, double val_fraction,
                                   uint32_t seed) {
  const std::vector<int64_t> perm = numpy_legacy_permutation(n, seed);
  const auto count = [n](double v) { return std::clamp<int64_t>(v, 0, n); };
  const int64_t n_test = count(std::ceil(test_fraction * static_cast<double>(n) - 1e-9));
  const int64_t n_val =
      std::min(count(std::llround(val_fraction * static_cast<double>(n))), n - n_test);
  SplitIndices out;
  out.test.assign(perm.begin(), perm.begin() + n_test);
  out.val.assign(perm.begin() + n_test, perm.begin() + n_test + n_val);
  out.train.assign(perm.begin() + n_test + n_val, perm.end());
  for (auto* v : {&out.train, &out.val, &out.test}) std::sort(v->begin(), v->end());
  return out;
}

Expected<PrepareResult> prepare_dataset(const DatasetSpec& spec, const PrepareOptions& options) {
  DatasetSpec effective = spec;
  if (options.limit_ > 0) effective.limit = options.limit_;
  if (spec.kind == DatasetKind::kImages) return prepare_images(effective, options);
  return prepare_table(effective, options);
}

}  // namespace kiln::data
