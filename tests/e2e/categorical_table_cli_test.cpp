// A table with a text column: training one-hot encodes it inside the served module, which takes
// the category's code; `kiln predict` maps a CSV's text to codes, `kiln serve` lists the codes in
// its metadata and answers them with the same predictions, and the column really counts.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::breast_cancer_rows;
using testing::HttpClient;
using testing::read_text;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// breast_cancer.csv with a first column "site" that tells the diagnosis apart (north for most
/// malignant rows, south for most benign), "east" now and then, and missing in every 7th row.
/// `swap` exchanges north and south.
std::string with_site(bool swap = false, const std::string& only = "") {
  const auto rows = breast_cancer_rows();
  std::istringstream in(read_text(testing::shared_datasets_dir() / "breast_cancer.csv"));
  std::string header;
  std::getline(in, header);
  std::string out = "site," + header + "\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string site = i % 7 == 0                                   ? ""
                       : i % 5 == 0                                 ? "east"
                       : (rows[i].diagnosis == "malignant") != swap ? "north"
                                                                    : "south";
    if (!only.empty()) site = only;
    out += site;
    for (double v : rows[i].features) {
      std::ostringstream cell;
      cell.precision(17);
      cell << v;
      out += "," + cell.str();
    }
    out += "," + rows[i].diagnosis + "\n";
  }
  return out;
}

/// `kiln predict --json`'s malignant probability per row.
std::vector<double> malignant(const fs::path& predictions) {
  std::vector<double> p;
  for (const Json& row : Json::parse(read_text(predictions)))
    p.push_back(row["probabilities"]["malignant"].get<double>());
  return p;
}

TEST(CategoricalTableCliTest, ATextColumnIsEncodedInsideTheServedModule) {
  TempDir home;
  write_text(home / "sites.csv", with_site());
  auto r = run_kiln({"train", "--data", (home / "sites.csv").string(), "--target", "diagnosis",
                     "--model", "mlp", "--set", "seed=1", "--out", (home / "run").string()},
                    home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const fs::path bundle = home / "run" / "bundle";
  const Json manifest = Json::parse(read_text(bundle / "manifest.json"));
  EXPECT_EQ(manifest["preprocessing"]["kind"], "table");
  EXPECT_EQ(manifest["signature"]["inputs"][0]["shape"], Json::parse("[-1, 31]"));
  EXPECT_GT(manifest["metrics"]["test"]["accuracy"].get<double>(), 0.9) << manifest["metrics"];

  // predict reads the text column by name; the site changes the predictions.
  auto predict = [&](const std::string& csv, const std::string& out) {
    write_text(home / (out + ".csv"), csv);
    const auto p =
        run_kiln({"predict", bundle.string(), "--input", (home / (out + ".csv")).string(), "--json",
                  "--output", (home / (out + ".json")).string()},
                 home.path());
    EXPECT_EQ(p.exit_code, 0) << p.err;
    return malignant(home / (out + ".json"));
  };
  const std::vector<double> as_is = predict(with_site(), "as_is");
  const std::vector<double> swapped = predict(with_site(true), "swapped");
  ASSERT_EQ(as_is.size(), 569u);
  ASSERT_EQ(swapped.size(), 569u);
  double moved = 0;
  for (size_t i = 0; i < as_is.size(); ++i)
    moved = std::max(moved, std::abs(as_is[i] - swapped[i]));
  EXPECT_GT(moved, 0.05);
  // A site training never saw is no error: its one-hot block is all zeros.
  EXPECT_EQ(predict(with_site(false, "west"), "unseen").size(), 569u);

  // serve: the metadata lists the columns and the codes; the codes give predict's answers.
  ServerProcess server({"--model", "cancer=" + bundle.string()}, home.path(), home / "serve.log");
  ASSERT_TRUE(server.ready()) << server.log();
  HttpClient c(server.port());
  const Json meta = Json::parse(c.get("/v2/models/cancer").body);
  const Json& features = meta["parameters"]["features"];
  ASSERT_EQ(features.size(), 31u) << meta.dump();
  EXPECT_EQ(features[30], Json::parse(R"({"name": "site", "type": "categorical",
      "categories": ["<missing>", "east", "north", "south"]})"));
  const auto rows = breast_cancer_rows();
  Json data = Json::array();
  const int n = 14;
  for (int i = 0; i < n; ++i) {
    Json row(rows[static_cast<size_t>(i)].features);
    const int code = i % 7 == 0                                              ? 0
                     : i % 5 == 0                                            ? 1
                     : rows[static_cast<size_t>(i)].diagnosis == "malignant" ? 2
                                                                             : 3;
    row.push_back(code);
    data.push_back(row);
  }
  const Json body = {
      {"inputs", {{{"name", "input"}, {"shape", {n, 31}}, {"datatype", "FP32"}, {"data", data}}}},
      {"outputs", {{{"name", "probabilities"}}}}};
  const auto answer = c.post("/v2/models/cancer/infer", body.dump());
  ASSERT_EQ(answer.status, 200) << answer.body;
  const Json probabilities = Json::parse(answer.body)["outputs"][0]["data"];
  for (int i = 0; i < n; ++i)
    EXPECT_NEAR(probabilities[2 * i + 1].get<double>(), as_is[static_cast<size_t>(i)], 1e-5) << i;

  // BYTES: every column as text in input order, the site by name ("" is missing).
  Json text = Json::array();
  for (int i = 0; i < n; ++i) {
    Json row = Json::array();
    for (double v : rows[static_cast<size_t>(i)].features) {
      std::ostringstream cell;
      cell.precision(9);
      cell << v;
      row.push_back(cell.str());
    }
    const auto& diagnosis = rows[static_cast<size_t>(i)].diagnosis;
    row.push_back(i % 7 == 0                 ? ""
                  : i % 5 == 0               ? "east"
                  : diagnosis == "malignant" ? "north"
                                             : "south");
    text.push_back(row);
  }
  Json as_text = body;
  as_text["inputs"][0]["datatype"] = "BYTES";
  as_text["inputs"][0]["data"] = text;
  const auto by_name = c.post("/v2/models/cancer/infer", as_text.dump());
  ASSERT_EQ(by_name.status, 200) << by_name.body;
  const Json named = Json::parse(by_name.body)["outputs"][0]["data"];
  for (int i = 0; i < n; ++i)
    EXPECT_NEAR(named[2 * i + 1].get<double>(), as_is[static_cast<size_t>(i)], 1e-5) << i;
  // kiln loadtest takes the table's columns by name from the CSV (the label left out) and sends
  // them as text: every request answered.
  const auto load = run_kiln(
      {"loadtest", "http://127.0.0.1:" + std::to_string(server.port()) + "/v2/models/cancer/infer",
       "--data", (home / "sites.csv").string(), "--rate", "100", "--duration", "1", "--json"},
      home.path());
  ASSERT_EQ(load.exit_code, 0) << load.out << load.err;
  const Json report = Json::parse(load.out);
  EXPECT_EQ(report["errors"]["total"], 0) << report.dump();
  EXPECT_GE(report["requests"]["completed"].get<int64_t>(), 90) << report.dump();

  // A numeric column's text that is no number is named by row and column.
  as_text["inputs"][0]["data"][3][1] = "soft";
  const auto bad = c.post("/v2/models/cancer/infer", as_text.dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("row 3, column 'mean_texture'"), std::string::npos) << bad.body;

  // FP32: the site takes a code. -1 (a site never seen) is one; 7, or 1.5, is none: a 400 that
  // says what the codes are, rather than an all-zero block the client did not mean.
  Json coded = body;
  coded["inputs"][0]["data"][2][30] = -1;
  EXPECT_EQ(c.post("/v2/models/cancer/infer", coded.dump()).status, 200);
  for (const double code : {7.0, 1.5}) {
    coded["inputs"][0]["data"][2][30] = code;
    const auto wrong = c.post("/v2/models/cancer/infer", coded.dump());
    EXPECT_EQ(wrong.status, 400) << code;
    EXPECT_NE(wrong.body.find("(row 2): column 'site' takes a category's code"), std::string::npos)
        << wrong.body;
    EXPECT_NE(wrong.body.find(R"(0 \"<missing>\", 1 \"east\", 2 \"north\", 3 \"south\")"),
              std::string::npos)
        << wrong.body;
  }
}

/// `kiln predict --json`'s regression prediction per row.
std::vector<double> predictions(const fs::path& file) {
  std::vector<double> p;
  for (const Json& row : Json::parse(read_text(file))) p.push_back(row["prediction"].get<double>());
  return p;
}

/// `kiln predict BUNDLE`'s predictions for diabetes' first 40 rows with column `column` (0-based)
/// set to `value` in every row (the CSV written into `home`).
std::vector<double> predict_diabetes_with(const fs::path& bundle, const fs::path& home,
                                          size_t column, const std::string& value) {
  std::istringstream in(read_text(testing::shared_datasets_dir() / "diabetes.csv"));
  std::string line, csv;
  std::getline(in, line);
  csv = line + "\n";
  for (int i = 0; i < 40 && std::getline(in, line); ++i) {
    size_t begin = 0;
    for (size_t c = 0; c < column; ++c) begin = line.find(',', begin) + 1;
    csv += line.substr(0, begin) + value + line.substr(line.find(',', begin)) + "\n";
  }
  const std::string name = "column" + std::to_string(column) + "-" + value;
  write_text(home / (name + ".csv"), csv);
  const auto p = run_kiln({"predict", bundle.string(), "--input", (home / (name + ".csv")).string(),
                           "--json", "--output", (home / (name + ".json")).string()},
                          home);
  EXPECT_EQ(p.exit_code, 0) << p.err;
  return predictions(home / (name + ".json"));
}

/// Trains the quick path's MLP (seed 1) on diabetes with the spec line `categories` into
/// HOME/run; returns the bundle's directory (empty, with the failure reported, when it failed).
fs::path train_diabetes_with(const TempDir& home, const std::string& categories) {
  write_text(home / "dataset.yaml", "name: diabetes\nkind: table\nsources: [" +
                                        (testing::shared_datasets_dir() / "diabetes.csv").string() +
                                        "]\ntarget: disease_progression\ntask: regression\n" +
                                        categories + "\nsplit: {stratify: false}\n");
  auto r = run_kiln({"train", "--data", (home / "dataset.yaml").string(), "--model", "mlp", "--set",
                     "seed=1", "--out", (home / "run").string()},
                    home.path(), {"KILN_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.exit_code == 0 ? home / "run" / "bundle" : fs::path();
}

/// The largest change between two runs of predictions for the same 40 rows.
double largest_change(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(b.size(), 40u);
  double moved = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    moved = std::max(moved, std::abs(a[i] - b[i]));
  return moved;
}

// A numeric code column named in categories.columns (diabetes' sex, 1 or 2) is a category end to
// end: the served module one-hot encodes it, predict reads its cells as written, and a code
// training never saw is an all-zero block rather than a number the network extrapolates from.
TEST(CategoricalTableCliTest, ANumericCodeColumnDeclaredCategoricalIsEncodedByItsCells) {
  TempDir home;
  const fs::path bundle = train_diabetes_with(home, "categories: {columns: [sex]}");
  ASSERT_FALSE(bundle.empty());
  const Json manifest = Json::parse(read_text(bundle / "manifest.json"));
  EXPECT_EQ(manifest["preprocessing"]["kind"], "table");
  EXPECT_EQ(manifest["signature"]["inputs"][0]["shape"], Json::parse("[-1, 10]"));
  EXPECT_GT(manifest["metrics"]["test"]["r2"].get<double>(), 0.3) << manifest["metrics"];

  // The same rows with sex (column 1) set to 1, to 2 and to 7 (unseen): all predicted, and sex
  // counts.
  EXPECT_GT(largest_change(predict_diabetes_with(bundle, home.path(), 1, "1"),
                           predict_diabetes_with(bundle, home.path(), 1, "2")),
            1.0);
  EXPECT_EQ(predict_diabetes_with(bundle, home.path(), 1, "7").size(), 40u);
}

// categories.target_encode: diabetes' age as a category, target-encoded: the served module
// takes the age's code and multiplies its one-hot row by the encoder's table (one input column
// where one-hot would give 57), predict maps ages to codes, an age training never saw gets the
// overall mean, and the ONNX export carries the same table.
TEST(CategoricalTableCliTest, ATargetEncodedColumnIsEncodedInsideTheServedModule) {
  TempDir home;
  const fs::path bundle = train_diabetes_with(home, "categories: {target_encode: [age]}");
  ASSERT_FALSE(bundle.empty());
  const Json manifest = Json::parse(read_text(bundle / "manifest.json"));
  EXPECT_EQ(manifest["signature"]["inputs"][0]["shape"], Json::parse("[-1, 10]"));
  const Json& age = manifest["preprocessing"]["categorical"][0];
  EXPECT_EQ(age["column"], "age");
  EXPECT_EQ(age["target_table"].size(), age["categories"].size());
  EXPECT_GT(manifest["metrics"]["test"]["r2"].get<double>(), 0.3) << manifest["metrics"];

  // The first 40 rows with every age set to 25, to 65 and to 150 (unseen): all predicted.
  // The first 40 rows with every age (column 0) set to 25, to 65 and to 150 (unseen).
  EXPECT_GT(largest_change(predict_diabetes_with(bundle, home.path(), 0, "25"),
                           predict_diabetes_with(bundle, home.path(), 0, "65")),
            0.1);
  EXPECT_EQ(predict_diabetes_with(bundle, home.path(), 0, "150").size(), 40u);

  const auto onnx = run_kiln(
      {"export", bundle.string(), "--format", "onnx", "--out", (home / "model.onnx").string()},
      home.path());
  EXPECT_EQ(onnx.exit_code, 0) << onnx.out << onnx.err;
}

}  // namespace
}  // namespace kiln
