#include "kiln/data/prepare.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <functional>
#include <set>

#include "kiln/core/csv.h"
#include "kiln/core/files.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/spec.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

using kiln::testing::shared_datasets_dir;
using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

DatasetSpec spec_for(const std::string& example) {
  auto spec = load_dataset_spec(source_dir() / "examples" / example);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

std::string file_bytes(const fs::path& p) { return *read_file(p); }

TEST(SplitIndicesTest, StratifiedFractionsPerClass) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 300; ++i) labels.push_back(i < 200 ? 0 : 1);
  SplitIndices s = split_indices(300, labels, 0.7, 0.15, 1);
  EXPECT_EQ(s.train.size() + s.val.size() + s.test.size(), 300u);
  int train_ones = 0;
  for (int64_t i : s.train) train_ones += labels[static_cast<size_t>(i)];
  EXPECT_EQ(train_ones, 70);  // round(100 * 0.7)
  EXPECT_EQ(s.train.size(), 210u);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.val.begin(), s.val.end());
  all.insert(s.test.begin(), s.test.end());
  EXPECT_EQ(all.size(), 300u);
  SplitIndices again = split_indices(300, labels, 0.7, 0.15, 1);
  EXPECT_EQ(s.train, again.train);
  SplitIndices other = split_indices(300, labels, 0.7, 0.15, 2);
  EXPECT_NE(s.train, other.train);
}

// Expected values printed by numpy 1.24 / scikit-learn 1.2 (Debian 12):
//   np.random.RandomState(42).permutation(20); np.random.RandomState(7).permutation(569)[:12]
//   sorted(train_test_split(np.arange(569), test_size=0.2, random_state=42)[1])[:10]
TEST(SplitIndicesTest, NumpyLegacyPermutationMatchesNumpyBitForBit) {
  EXPECT_EQ(
      numpy_legacy_permutation(20, 42),
      (std::vector<int64_t>{0, 17, 15, 1, 8, 5, 11, 3, 18, 16, 13, 2, 9, 19, 4, 12, 7, 10, 14, 6}));
  std::vector<int64_t> p = numpy_legacy_permutation(569, 7);
  EXPECT_EQ(std::vector<int64_t>(p.begin(), p.begin() + 12),
            (std::vector<int64_t>{350, 259, 115, 60, 275, 53, 221, 284, 146, 480, 283, 516}));
}

TEST(SplitIndicesTest, SklearnMethodReproducesTrainTestSplit) {
  SplitIndices s = sklearn_split_indices(569, 0.2, 0.1, 42);
  ASSERT_EQ(s.test.size(), 114u);  // ceil(569 * 0.2), as scikit-learn
  EXPECT_EQ(std::vector<int64_t>(s.test.begin(), s.test.begin() + 10),
            (std::vector<int64_t>{2, 6, 9, 10, 11, 29, 30, 39, 55, 70}));
  EXPECT_EQ(s.val.size(), 57u);  // round(569 * 0.1), carved from scikit-learn's train part
  EXPECT_EQ(s.train.size(), 569u - 114u - 57u);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.val.begin(), s.val.end());
  all.insert(s.test.begin(), s.test.end());
  EXPECT_EQ(all.size(), 569u);
}

TEST(PrepareTest, SklearnSplitExampleHoldsScikitLearnsTestRows) {
  TempDir out;
  auto r = prepare_dataset(spec_for("breast-cancer/dataset-sklearn-split.yaml"),
                           PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& splits = r->manifest["splits"];
  EXPECT_EQ(splits["train"]["rows"], 455);
  EXPECT_EQ(splits["test"]["rows"], 114);
  EXPECT_FALSE(splits.contains("val"));
  // CSV lines (header = line 1) of scikit-learn's first ten test indices, sorted, plus 2.
  std::vector<int64_t> lines = splits["test"]["source_lines"].get<std::vector<int64_t>>();
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(std::vector<int64_t>(lines.begin(), lines.begin() + 10),
            (std::vector<int64_t>{4, 8, 11, 12, 13, 31, 32, 41, 57, 72}));
  EXPECT_EQ(r->manifest["spec"]["split"]["method"], "sklearn");
}

TEST(PrepareTest, SameInputsGiveTheSameSnapshotByteForByte) {
  TempDir a, b;
  auto ra = prepare_dataset(spec_for("breast-cancer/dataset.yaml"), PrepareOptions(a.path()));
  auto rb = prepare_dataset(spec_for("breast-cancer/dataset.yaml"), PrepareOptions(b.path()));
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_EQ(ra->content_hash, rb->content_hash);
  EXPECT_EQ(ra->snapshot_dir.filename(), rb->snapshot_dir.filename());
  for (const auto& entry : fs::directory_iterator(ra->snapshot_dir))
    EXPECT_EQ(file_bytes(entry.path()), file_bytes(rb->snapshot_dir / entry.path().filename()))
        << entry.path();
  // A different seed is a different snapshot.
  auto rc =
      prepare_dataset(spec_for("breast-cancer/dataset.yaml"), PrepareOptions(a.path()).seed(7));
  ASSERT_TRUE(rc.ok());
  EXPECT_NE(rc->content_hash, ra->content_hash);
}

TEST(PrepareTest, StratifiedSplitKeepsClassProportions) {
  TempDir out;
  auto r = prepare_dataset(spec_for("breast-cancer/dataset.yaml"), PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& splits = r->manifest["splits"];
  // 357 benign, 212 malignant; 70/15/15 per class.
  EXPECT_EQ(splits["train"]["class_counts"]["benign"], 250);
  EXPECT_EQ(splits["train"]["class_counts"]["malignant"], 148);
  EXPECT_EQ(splits["val"]["class_counts"]["benign"], 54);
  EXPECT_EQ(splits["val"]["class_counts"]["malignant"], 32);
  EXPECT_EQ(splits["test"]["class_counts"]["benign"], 53);
  EXPECT_EQ(splits["test"]["class_counts"]["malignant"], 32);
  EXPECT_EQ(r->manifest["schema"]["target"]["classes"], Json({"benign", "malignant"}));
}

TEST(PrepareTest, ScalingIsFittedOnTrainOnly) {
  TempDir out;
  auto r = prepare_dataset(spec_for("breast-cancer/dataset.yaml"), PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok());
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok()) << snap.status();
  torch::Tensor train = snap->splits["train"].x.to(torch::kFloat64);
  torch::Tensor test = snap->splits["test"].x.to(torch::kFloat64);
  EXPECT_LT(train.mean(0).abs().max().item<double>(), 1e-5);
  EXPECT_LT((train.std(0, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-4);
  EXPECT_GT(test.mean(0).abs().max().item<double>(), 1e-3);  // test statistics were not used
  EXPECT_EQ(snap->splits["train"].y.scalar_type(), torch::kLong);
  EXPECT_EQ(r->manifest["transforms"]["kind"], "pipeline");
}

TEST(PrepareTest, DirtyCsvIsRepairedAndEveryActionListed) {
  TempDir out;
  auto r = prepare_dataset(spec_for("breast-cancer/dirty.yaml"), PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& c = r->manifest["cleaning"];
  EXPECT_EQ(c["rows_read"], 577);
  ASSERT_EQ(c["ragged_rejected"].size(), 1u);
  EXPECT_EQ(c["ragged_rejected"][0]["line"], 226);
  std::vector<int64_t> dropped;
  for (const auto& d : c["dropped_rows"]) dropped.push_back(d["line"]);
  EXPECT_EQ(dropped, (std::vector<int64_t>{31, 543, 572, 573, 574, 575, 576, 577, 578}));
  EXPECT_EQ(c["rows_kept"], 567);
  EXPECT_EQ(c["non_numeric_cells"].size(), 3u);
  EXPECT_EQ(c["imputed_cells"], 19);  // 18 missing + 3 corrupt, less those on dropped rows
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok());
  for (const auto& [name, t] : snap->splits) {
    EXPECT_FALSE(torch::isnan(t.x).any().item<bool>()) << name;
    EXPECT_LT(t.x.abs().max().item<float>(), 100.0f) << name;  // the 1e30s are gone
  }
}

TEST(PrepareTest, RaggedRowsStopByDefaultAndLeaveNothingBehind) {
  TempDir out, specs;
  std::string text = *read_file(source_dir() / "examples/breast-cancer/dirty.yaml");
  text.replace(text.find("ragged: drop"), 12, "ragged: error");
  fs::path spec_path = specs / "dirty-strict.yaml";
  write_text(spec_path, text);
  auto spec = load_dataset_spec(spec_path);
  ASSERT_TRUE(spec.ok()) << spec.status();
  // Relative sources resolve against the spec's folder, so point them at the real file.
  spec->sources = {shared_datasets_dir() / "breast_cancer_dirty.csv"};
  auto r = prepare_dataset(*spec, PrepareOptions(out / "snapshots"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("breast_cancer_dirty.csv"), std::string::npos);
  EXPECT_NE(r.status().message().find("226"), std::string::npos) << r.status();
  EXPECT_TRUE(!fs::exists(out / "snapshots") || fs::is_empty(out / "snapshots"));
}

TEST(PrepareTest, MergesSourcesWithMatchingSchemas) {
  TempDir dir;
  // Split the real CSV into two files, the second with its columns in another order.
  auto table = read_csv(shared_datasets_dir() / "diabetes.csv");
  ASSERT_TRUE(table.ok());
  std::ofstream a(dir / "part1.csv"), b(dir / "part2.csv");
  auto join = [](const std::vector<std::string>& cells, bool reverse) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i)
      s += (i ? "," : "") + cells[reverse ? cells.size() - 1 - i : i];
    return s + "\n";
  };
  a << join(table->header, false);
  b << join(table->header, true);
  for (size_t r = 0; r < table->rows.size(); ++r)
    (r < 200 ? a : b) << join(table->rows[r], r >= 200);
  a.close();
  b.close();
  DatasetSpec merged = spec_for("diabetes/dataset.yaml");
  merged.sources = {dir / "part1.csv", dir / "part2.csv"};
  DatasetSpec single = spec_for("diabetes/dataset.yaml");
  auto rm = prepare_dataset(merged, PrepareOptions(dir / "out"));
  auto rs = prepare_dataset(single, PrepareOptions(dir / "out"));
  ASSERT_TRUE(rm.ok()) << rm.status();
  ASSERT_TRUE(rs.ok()) << rs.status();
  EXPECT_EQ(rm->manifest["cleaning"]["rows_kept"], 442);
  EXPECT_EQ(rm->manifest["sources"].size(), 2u);
  auto sm = read_snapshot(rm->snapshot_dir), ss = read_snapshot(rs->snapshot_dir);
  // Same rows in the same order: the same tensors, whatever the file split.
  EXPECT_TRUE(torch::equal(sm->splits["train"].x, ss->splits["train"].x));
  EXPECT_TRUE(torch::equal(sm->splits["test"].y, ss->splits["test"].y));

  write_text(dir / "other.csv", "age,sex,bmi\n1,2,3\n");
  merged.sources = {dir / "part1.csv", dir / "other.csv"};
  auto bad = prepare_dataset(merged, PrepareOptions(dir / "out"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("other.csv"), std::string::npos) << bad.status();
}

TEST(PrepareTest, RegressionTargetStaysFloat) {
  TempDir out;
  auto r = prepare_dataset(spec_for("diabetes/dataset.yaml"), PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest["task"], "regression");
  auto snap = read_snapshot(r->snapshot_dir);
  EXPECT_EQ(snap->splits["train"].y.scalar_type(), torch::kFloat32);
  EXPECT_EQ(snap->splits["train"].x.size(0) + snap->splits["val"].x.size(0) +
                snap->splits["test"].x.size(0),
            442);
}

// categories.columns makes a numeric-looking code column (diabetes' sex: 1 or 2) a category:
// one-hot encoded like a text column, its code last in raw_x, recorded in the spec.
TEST(PrepareTest, ANumericColumnNamedInCategoriesColumnsIsOneHotEncoded) {
  TempDir out;
  DatasetSpec spec = spec_for("diabetes/dataset.yaml");
  spec.categorical_columns = {"sex"};
  auto r = prepare_dataset(spec, PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& features = r->manifest["schema"]["features"];
  ASSERT_EQ(features.size(), 10u);
  EXPECT_EQ(features[9]["name"], "sex");
  EXPECT_EQ(features[9]["type"], "categorical");
  EXPECT_EQ(features[9]["categories"], Json({"1", "2"}));
  EXPECT_EQ(r->manifest["spec"]["categories"]["columns"], Json({"sex"}));
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const SplitTensors& train = snap->splits["train"];
  EXPECT_EQ(train.x.size(1), 11);  // 9 numeric + a 2-wide one-hot block
  ASSERT_EQ(train.raw_x.size(1), 10);
  const torch::Tensor codes = train.raw_x.select(1, 9);
  EXPECT_TRUE(torch::equal(codes.to(torch::kLong), train.x.slice(1, 9, 11).argmax(1)));
  EXPECT_GT((codes == 0).sum().item<int64_t>(), 100);
  EXPECT_GT((codes == 1).sum().item<int64_t>(), 100);
  // The plain spec's hash is not moved by the new setting's existence.
  TempDir plain_out;
  auto plain = prepare_dataset(spec_for("diabetes/dataset.yaml"), PrepareOptions(plain_out.path()));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->manifest["spec"].contains("categories"));
  EXPECT_EQ(plain->manifest["schema"]["features"][1]["type"], "numeric");

  for (const auto& [columns, error] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"sexx"}, "categories.columns names 'sexx', which is not a column"},
           {{"disease_progression"}, "which is the target"}}) {
    spec.categorical_columns = columns;
    auto bad = prepare_dataset(spec, PrepareOptions(out / "bad"));
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find(error), std::string::npos) << bad.status();
  }
  spec.categorical_columns = {"sex"};
  spec.drop_columns = {"sex"};
  auto dropped = prepare_dataset(spec, PrepareOptions(out / "bad"));
  ASSERT_FALSE(dropped.ok());
  EXPECT_NE(dropped.status().message().find("which drop_columns drops"), std::string::npos)
      << dropped.status();
}

// categories.target_encode: diabetes' age (57 distinct years) as one column of its smoothed,
// standardised mean target (a column of numbers named there is a category without
// categories.columns); val and test rows carry the encoder's table, training rows their
// cross-fitted values.
TEST(PrepareTest, ATargetEncodedColumnIsOneColumnOfCrossFittedTargetMeans) {
  TempDir out;
  DatasetSpec spec = spec_for("diabetes/dataset.yaml");
  spec.target_encoded_columns = {"age"};
  auto r = prepare_dataset(spec, PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& features = r->manifest["schema"]["features"];
  ASSERT_EQ(features.size(), 10u);
  EXPECT_EQ(features[9]["name"], "age");
  EXPECT_EQ(features[9]["type"], "categorical");
  EXPECT_EQ(features[9]["encoding"], "target");
  EXPECT_EQ(r->manifest["spec"]["categories"]["target_encode"], Json({"age"}));
  const Json& encoder = r->manifest["categorical_encoders"][0]["encoder"];
  const Json& table = encoder["target_encoding"]["table"];
  const int64_t ages = static_cast<int64_t>(encoder["categories"].size());
  EXPECT_GT(ages, 40);
  ASSERT_EQ(static_cast<int64_t>(table.size()), ages);
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const SplitTensors& train = snap->splits["train"];
  EXPECT_EQ(train.x.size(1), 10);  // 9 numeric + 1 target-encoded
  EXPECT_NEAR(encoder["target_encoding"]["mean"][0].get<double>(), train.y.mean().item<double>(),
              1e-3);
  auto encoded = [&](const SplitTensors& split, int64_t row) {
    const auto code = static_cast<int64_t>(split.raw_x[row][9].item<float>());
    return code < 0 ? 0.0 : table[static_cast<size_t>(code)][0].get<double>();
  };
  for (const char* name : {"val", "test"}) {
    const SplitTensors& split = snap->splits[name];
    for (int64_t i = 0; i < split.x.size(0); ++i)
      ASSERT_NEAR(split.x[i][9].item<double>(), encoded(split, i), 1e-5) << name << " row " << i;
  }
  int64_t cross_fitted = 0;
  for (int64_t i = 0; i < train.x.size(0); ++i)
    cross_fitted += std::abs(train.x[i][9].item<double>() - encoded(train, i)) > 1e-6;
  EXPECT_GT(cross_fitted, train.x.size(0) / 2);

  // target_smooth: a heavy numeric smooth pulls every age toward the overall mean, so the
  // table's spread is smaller than with the automatic weight; a new snapshot records it.
  spec.target_smooth = 1000;
  auto smoothed = prepare_dataset(spec, PrepareOptions(out.path()));
  ASSERT_TRUE(smoothed.ok()) << smoothed.status();
  EXPECT_NE(smoothed->snapshot_dir, r->snapshot_dir);
  EXPECT_EQ(smoothed->manifest["spec"]["categories"]["target_smooth"], 1000);
  auto spread = [](const Json& rows) {
    double lo = 1e9, hi = -1e9;
    for (const auto& row : rows) {
      lo = std::min(lo, row[0].get<double>());
      hi = std::max(hi, row[0].get<double>());
    }
    return hi - lo;
  };
  const Json& smoothed_table =
      smoothed->manifest["categorical_encoders"][0]["encoder"]["target_encoding"]["table"];
  EXPECT_LT(spread(smoothed_table), spread(table) / 2)
      << spread(smoothed_table) << " vs " << spread(table);
  spec.target_smooth = -1;

  for (const auto& [columns, error] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"nope"}, "categories.target_encode names 'nope', which is not a column"},
           {{"disease_progression"},
            "categories.target_encode names 'disease_progression', which is the target"}}) {
    spec.target_encoded_columns = columns;
    auto bad = prepare_dataset(spec, PrepareOptions(out / "bad"));
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find(error), std::string::npos) << bad.status();
  }
}

TEST(SnapshotTest, TamperedFileIsRefused) {
  TempDir out;
  auto r = prepare_dataset(spec_for("diabetes/dataset.yaml"), PrepareOptions(out.path()));
  ASSERT_TRUE(r.ok());
  fs::path victim = r->snapshot_dir / "train_x.npy";
  std::string bytes = *read_file(victim);
  bytes[bytes.size() - 1] ^= 1;
  fs::permissions(victim, fs::perms::owner_write, fs::perm_options::add);
  write_text(victim, bytes);
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(snap.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(snap.status().message().find("train_x.npy"), std::string::npos);
}

TEST(PrepareTest, FashionMnistSubsetCarvesStratifiedValidation) {
  TempDir out;
  auto r = prepare_dataset(spec_for("fashion-mnist/dataset.yaml"),
                           PrepareOptions(out.path()).limit(2000));
  ASSERT_TRUE(r.ok()) << r.status();
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->splits["train"].x.size(0) + snap->splits["val"].x.size(0), 2000);
  EXPECT_EQ(snap->splits["test"].x.size(0), 2000);
  EXPECT_EQ(snap->splits["train"].x.scalar_type(), torch::kUInt8);
  EXPECT_EQ(snap->splits["val"].x.sizes(),
            (std::vector<int64_t>{snap->splits["val"].x.size(0), 1, 28, 28}));
  // Each class's share of val is within one image of 10% of its share of the subset.
  torch::Tensor all = torch::cat({snap->splits["train"].y, snap->splits["val"].y});
  torch::Tensor val_counts = torch::bincount(snap->splits["val"].y, {}, 10);
  torch::Tensor all_counts = torch::bincount(all, {}, 10);
  for (int c = 0; c < 10; ++c)
    EXPECT_NEAR(val_counts[c].item<double>(), all_counts[c].item<double>() * 0.1, 1.0) << c;
  const Json& tr = r->manifest["transforms"];
  EXPECT_EQ(tr["kind"], "image_normalize");
  EXPECT_NEAR(tr["mean"][0].get<double>(), 0.286, 0.02);
  // The fitted statistics are exact (integer sums): torch's float64 reductions agree to rounding,
  // and preparing again with another thread count gives the same snapshot, bit for bit.
  const torch::Tensor px = snap->splits["train"].x.to(torch::kFloat64).div(255.0);
  EXPECT_NEAR(tr["mean"][0].get<double>(), px.mean().item<double>(), 1e-12);
  EXPECT_NEAR(tr["std"][0].get<double>(), px.std().item<double>(), 1e-12);
  const int threads = torch::get_num_threads();
  torch::set_num_threads(threads == 1 ? 2 : 1);
  TempDir again;
  auto r2 = prepare_dataset(spec_for("fashion-mnist/dataset.yaml"),
                            PrepareOptions(again.path()).limit(2000));
  torch::set_num_threads(threads);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->content_hash, r->content_hash);
  EXPECT_EQ(canonical_json(r2->manifest["transforms"]), canonical_json(tr));
}

TEST(PrepareTest, CorruptImageFileFailsWithoutPartialSnapshot) {
  TempDir dir;
  std::string gz = *read_file("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
  write_text(dir / "labels.gz", gz.substr(0, gz.size() / 2));
  DatasetSpec spec = spec_for("fashion-mnist/dataset.yaml");
  for (auto& s : spec.image_splits)
    if (s.split == "test") s.labels = dir / "labels.gz";
  auto r = prepare_dataset(spec, PrepareOptions(dir / "out"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("labels.gz"), std::string::npos) << r.status();
  EXPECT_TRUE(!fs::exists(dir / "out") || fs::is_empty(dir / "out"));
}

}  // namespace
}  // namespace kiln::data

namespace kiln::data {
namespace {

/// dir/with_site.csv: the real breast-cancer rows behind a first column "site", `site(row)`.
void write_with_site(const fs::path& dir, const std::function<std::string(size_t)>& site) {
  auto table = read_csv(kiln::testing::shared_datasets_dir() / "breast_cancer.csv");
  ASSERT_TRUE(table.ok());
  std::ofstream out(dir / "with_site.csv");
  out << "site";
  for (const auto& h : table->header) out << "," << h;
  out << "\n";
  for (size_t r = 0; r < table->rows.size(); ++r) {
    out << site(r);
    for (const auto& cell : table->rows[r]) out << "," << cell;
    out << "\n";
  }
}

// A categorical feature column (added to the real breast-cancer rows) is one-hot encoded after the
// scaled numeric block; a missing cell is its own category.
TEST(PrepareTest, CategoricalFeaturesAreOneHotEncoded) {
  kiln::testing::TempDir dir;
  const char* sites[] = {"left", "right", "", "left"};
  write_with_site(dir.path(), [&](size_t r) { return sites[r % 4]; });
  auto spec = resolve_dataset((dir / "with_site.csv").string(), "diagnosis");
  ASSERT_TRUE(spec.ok());
  auto r = prepare_dataset(*spec, PrepareOptions(dir / "out"));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& schema = r->manifest["schema"];
  EXPECT_EQ(schema["input_features"], 31);
  EXPECT_EQ(schema["output_features"], 33);  // 30 numeric + {<missing>, left, right}
  const Json& site = schema["features"][30];
  EXPECT_EQ(site["name"], "site");
  EXPECT_EQ(site["categories"], Json({"<missing>", "left", "right"}));
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok());
  torch::Tensor onehot = snap->splits["train"].x.slice(1, 30, 33);
  EXPECT_TRUE(torch::all(onehot.sum(1) == 1).item<bool>());
  // What the bundle's module takes: the 30 raw numeric columns, then the site's code, whose
  // one-hot row is the prepared one.
  const torch::Tensor& raw = snap->splits["train"].raw_x;
  ASSERT_TRUE(raw.defined());
  ASSERT_EQ(raw.size(1), 31);
  const torch::Tensor codes = raw.select(1, 30).to(torch::kLong);
  EXPECT_TRUE(torch::equal(codes, onehot.argmax(1)));
  EXPECT_EQ(codes.min().item<int64_t>(), 0);
  EXPECT_EQ(codes.max().item<int64_t>(), 2);
  EXPECT_EQ(r->manifest["categorical_encoders"][0]["column"], "site");
}

// With categories.min_frequency, a category the train split holds too rarely joins
// "<infrequent>", and so does one it never saw; the cleaning report names them.
TEST(PrepareTest, RareCategoriesJoinTheInfrequentCategory) {
  kiln::testing::TempDir dir;
  // left/right alternate; "attic" is on 3 rows only.
  write_with_site(dir.path(), [](size_t r) -> std::string {
    return r == 10 || r == 20 || r == 30 ? "attic" : r % 2 ? "left" : "right";
  });
  auto spec = resolve_dataset((dir / "with_site.csv").string(), "diagnosis");
  ASSERT_TRUE(spec.ok());
  spec->category_min_frequency = 5;
  auto r = prepare_dataset(*spec, PrepareOptions(dir / "out"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest["schema"]["features"][30]["categories"],
            Json({"<infrequent>", "left", "right"}));
  EXPECT_EQ(r->manifest["cleaning"]["infrequent_categories"]["site"], Json({"attic"}))
      << r->manifest["cleaning"].dump();
  EXPECT_EQ(r->manifest["spec"]["categories"]["min_frequency"], 5);
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok());
  int64_t infrequent = 0;
  for (const auto& [name, split] : snap->splits)
    infrequent += (split.raw_x.select(1, 30) == 0).sum().item<int64_t>();
  EXPECT_EQ(infrequent, 3);
  // Without the setting, attic is a category of its own and the spec records nothing new.
  spec->category_min_frequency = 0;
  auto plain = prepare_dataset(*spec, PrepareOptions(dir / "out2"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->manifest["schema"]["features"][30]["categories"],
            Json({"attic", "left", "right"}));
  EXPECT_FALSE(plain->manifest["spec"].contains("categories"));
}

// features: variance_threshold drops a column constant on the train split (before scaling),
// pca projects the scaled numeric columns onto n components, both fitted on train only; the text
// column's one-hot block follows the components, and raw_x still holds every raw column.
TEST(PrepareTest, VarianceThresholdAndPcaAreFittedOnTrainAndRecorded) {
  kiln::testing::TempDir dir;
  const char* sites[] = {"left", "right"};
  write_with_site(dir.path(), [&](size_t r) { return sites[r % 2]; });
  // A constant column: "site,..." becomes "site,unit,..." with unit always 1.
  std::string text = *read_file(dir / "with_site.csv");
  std::string csv;
  for (size_t at = 0, line = 0; at < text.size(); ++line) {
    const size_t comma = text.find(',', at), eol = text.find('\n', at);
    csv += text.substr(at, comma - at) + (line == 0 ? ",unit" : ",1") +
           text.substr(comma, eol - comma + 1);
    at = eol + 1;
  }
  write_text(dir / "with_unit.csv", csv);
  auto spec = resolve_dataset((dir / "with_unit.csv").string(), "diagnosis");
  ASSERT_TRUE(spec.ok());
  spec->variance_threshold = features::VarianceThresholdOptions();
  spec->pca = features::PcaOptions().n_components(6);
  auto r = prepare_dataset(*spec, PrepareOptions(dir / "out"));
  ASSERT_TRUE(r.ok()) << r.status();
  const Json& steps = r->manifest["transforms"]["steps"];
  ASSERT_EQ(steps.size(), 4u) << steps.dump();
  EXPECT_EQ(steps[1]["kind"], "variance_threshold");
  EXPECT_EQ(steps[1]["kept"].size(), 30u);  // the 31 numeric columns less "unit"
  EXPECT_EQ(steps[3]["kind"], "pca");
  EXPECT_EQ(r->manifest["schema"]["output_features"], 8);  // 6 components + {left, right}
  EXPECT_EQ(r->manifest["spec"]["features"]["variance_threshold"], 0.0);
  EXPECT_EQ(r->manifest["spec"]["features"]["pca"]["n_components"], 6);
  auto snap = read_snapshot(r->snapshot_dir);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const SplitTensors& train = snap->splits["train"];
  ASSERT_EQ(train.x.size(1), 8);
  EXPECT_EQ(train.raw_x.size(1), 32);  // 31 raw numeric columns and the site's code
  // Fitted on train: the components are centred there, and ordered by the variance they hold.
  const torch::Tensor components = train.x.slice(1, 0, 6).to(torch::kFloat64);
  EXPECT_LT(components.mean(0).abs().max().item<double>(), 1e-4);
  const torch::Tensor variance = components.var(0);
  for (int64_t k = 1; k < 6; ++k)
    EXPECT_GE(variance[k - 1].item<double>(), variance[k].item<double>()) << k;
  EXPECT_GT(snap->splits["test"].x.slice(1, 0, 6).mean(0).abs().max().item<double>(), 1e-4);
  // Without the settings the spec records nothing new (existing hashes stay).
  spec->variance_threshold.reset();
  spec->pca.reset();
  EXPECT_FALSE(spec->to_json().contains("features"));
}

}  // namespace
}  // namespace kiln::data
