// Bundles: write/read round trip, sha256 verification (tampered, missing files), format checks,
// overwrite refusal, and no partial directory on failure.
#include "kiln/model/bundle.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "export_helpers.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/model/export.h"
#include "kiln/model/manifest.h"
#include "support/test_support.h"

namespace kiln::model {
namespace {

using testing::build_net;
using testing::max_abs_diff;

struct Fixture {
  std::shared_ptr<NetworkImpl> net;
  Json pre;
  Json manifest;
  torch::jit::Module module{"Empty"};
};

Fixture make_fixture() {
  Fixture f;
  f.net = build_net(testing::kPeerCnn, {1, 12, 12}, 3);
  f.pre = testing::image_normalize({0.3}, {0.35});
  auto m = export_torchscript(*f.net, f.pre);
  EXPECT_TRUE(m.ok()) << m.status();
  if (m.ok()) f.module = *m;
  f.manifest =
      Json{{"task", "classification"},
           {"labels", {"cat", "dog", "emu"}},
           {"preprocessing", f.pre},
           {"model", f.net->spec().to_json()},
           {"input_shape", {1, 12, 12}},
           {"outputs", 3},
           {"training", {{"epochs", 2}, {"lr", 0.01}}},
           {"metrics", {{"val_accuracy", 0.75}}},
           {"lineage", {{"snapshot_hash", "abc"}, {"config_hash", "def"}, {"parent", nullptr}}}};
  return f;
}

Expected<fs::path> write(const Fixture& f, const fs::path& dir,
                         const WriteBundleOptions& options = {}) {
  return write_bundle(dir, f.manifest, network_state(*f.net), f.module,
                      {{"curves.csv", "epoch,loss\n1,0.5\n2,0.25\n"}}, options);
}

TEST(Bundle, TableColumnsGiveTheCodesTheModuleTakes) {
  const TableColumns columns(Json::parse(R"([
      {"name": "age", "type": "numeric"},
      {"name": "site", "type": "categorical", "categories": ["<missing>", "left", "right"]},
      {"name": "shift", "type": "categorical", "categories": ["<infrequent>", "day", "night"]}])"));
  ASSERT_EQ(columns.size(), 3u);
  EXPECT_TRUE(columns.any_categorical());
  EXPECT_FALSE(columns.categorical(0));
  EXPECT_EQ(columns.name(1), "site");
  EXPECT_EQ(columns.code(1, "right", false), 2);
  EXPECT_EQ(columns.code(1, "", true), 0);         // a missing cell is "<missing>"
  EXPECT_EQ(columns.code(1, "attic", false), -1);  // never seen: all zeros
  EXPECT_EQ(columns.code(2, "night", false), 2);
  EXPECT_EQ(columns.code(2, "dusk", false), 0);  // never seen: "<infrequent>", where there is one
  EXPECT_EQ(columns.code(2, "", true), 0);
  EXPECT_FALSE(TableColumns(Json()).any_categorical());
  EXPECT_EQ(columns.categorical_columns(), (std::vector<size_t>{1, 2}));
  // What an FP32 request may send as a code: an index, -1 (never seen) or NaN (missing).
  for (const float ok : {0.0f, 2.0f, -1.0f, std::numeric_limits<float>::quiet_NaN()})
    EXPECT_EQ(columns.code_error(1, ok), "") << ok;
  for (const float bad : {3.0f, 0.5f, -2.0f}) {
    const std::string why = columns.code_error(1, bad);
    EXPECT_NE(why.find("column 'site' takes a category's code"), std::string::npos) << why;
    EXPECT_NE(why.find(R"(0 "<missing>", 1 "left", 2 "right")"), std::string::npos) << why;
  }
}

TEST(Bundle, WriteReadRoundTrip) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  const fs::path dir = tmp / "bundle";
  auto written = write(f, dir);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, dir);
  for (const char* name : {"manifest.json", "weights.pt", "model.pt", "curves.csv"})
    EXPECT_TRUE(fs::is_regular_file(dir / name)) << name;

  auto b = read_bundle(dir);
  ASSERT_TRUE(b.ok()) << b.status();
  const Json& m = b->manifest;
  EXPECT_EQ(m["format"], "kiln.bundle");
  EXPECT_EQ(m["format_version"], 2);
  EXPECT_EQ(m["manifest_sha256"], manifest_sha256(m));
  EXPECT_EQ(b->task(), "classification");
  EXPECT_EQ(b->labels(), (std::vector<std::string>{"cat", "dog", "emu"}));
  EXPECT_EQ(b->input_shape(), (std::vector<int64_t>{1, 12, 12}));
  EXPECT_EQ(b->outputs(), 3);
  EXPECT_EQ(b->preprocessing(), f.pre);
  EXPECT_EQ(m["metrics"]["val_accuracy"], 0.75);
  EXPECT_EQ(m["lineage"]["snapshot_hash"], "abc");
  EXPECT_TRUE(m["lineage"].contains("kiln_version"));
  EXPECT_TRUE(m["created_at"].is_string());
  EXPECT_EQ(m["signature"]["inputs"][0]["shape"], Json::parse("[-1,1,12,12]"));
  EXPECT_EQ(m["signature"]["outputs"][0]["name"], "logits");
  EXPECT_EQ(m["signature"]["outputs"][0]["shape"], Json::parse("[-1,3]"));
  auto spec = b->model_spec();
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->to_json(), f.net->spec().to_json());
  for (const char* name : {"weights.pt", "model.pt", "curves.csv"}) {
    auto h = sha256_file(dir / name);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(m["files"][name], *h) << name;
  }

  // Weights come back by name, bit for bit.
  auto weights = load_bundle_weights(*b);
  ASSERT_TRUE(weights.ok()) << weights.status();
  TensorMap state = network_state(*f.net);
  ASSERT_EQ(weights->size(), state.size());
  for (const auto& [name, t] : state) {
    ASSERT_TRUE(weights->count(name)) << name;
    EXPECT_TRUE(torch::equal(weights->at(name), t)) << name;
  }

  // The module and the rebuilt eager network agree with the original.
  torch::Tensor raw = torch::randint(0, 256, {4, 1, 12, 12}).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  torch::Tensor want = f.net->forward(testing::normalise_images(raw, {0.3}, {0.35}));
  auto module = load_bundle_module(*b);
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_LE(max_abs_diff(module->forward({raw}).toTensor(), want), 1e-5);
  auto net = load_bundle_network(*b);
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_TRUE(torch::equal((*net)->forward(testing::normalise_images(raw, {0.3}, {0.35})), want));
}

TEST(Bundle, RegressionSignatureUsesRawTableShape) {
  auto net = build_net(R"({"layers": [{"type": "linear", "out": "outputs"}]})", {2}, 1);
  Json pre = Json::parse(R"({"kind": "variance_threshold", "version": 1, "fitted": true,
      "input_features": 4, "output_features": 2, "options": {"threshold": 0.0},
      "variances": [1, 0, 1, 0], "kept": [0, 2]})");
  auto module = export_torchscript(*net, pre);
  ASSERT_TRUE(module.ok()) << module.status();
  Json m = {{"task", "regression"},
            {"preprocessing", pre},
            {"model", net->spec().to_json()},
            {"input_shape", {2}},
            {"outputs", 1}};
  kiln::testing::TempDir tmp;
  ASSERT_TRUE(write_bundle(tmp / "b", m, network_state(*net), *module).ok());
  auto b = read_bundle(tmp / "b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->manifest["signature"]["inputs"][0]["shape"], Json::parse("[-1,4]"));
  EXPECT_EQ(b->manifest["signature"]["outputs"][0]["name"], "predictions");
  EXPECT_EQ(b->raw_input_shape(), std::vector<int64_t>{4});
  EXPECT_TRUE(b->labels().empty());
}

void flip_one_byte(const fs::path& path, size_t offset) {
  std::string bytes = kiln::testing::read_text(path);
  ASSERT_GT(bytes.size(), offset);
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(Bundle, TamperedFileIsDataLossNamingIt) {
  Fixture f = make_fixture();
  for (const char* name : {"weights.pt", "model.pt", "curves.csv"}) {
    kiln::testing::TempDir tmp;
    ASSERT_TRUE(write(f, tmp / "b").ok());
    flip_one_byte(tmp / "b" / name, 5);
    auto b = read_bundle(tmp / "b");
    ASSERT_FALSE(b.ok()) << name;
    EXPECT_EQ(b.status().code(), StatusCode::kDataLoss) << b.status();
    EXPECT_NE(b.status().message().find(name), std::string::npos) << b.status();
  }
}

TEST(Bundle, TamperAfterReadIsCaughtByTheLoaders) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  ASSERT_TRUE(write(f, tmp / "b").ok());
  auto b = read_bundle(tmp / "b");
  ASSERT_TRUE(b.ok());
  flip_one_byte(tmp / "b" / "weights.pt", 100);
  auto w = load_bundle_weights(*b);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(w.status().message().find("weights.pt"), std::string::npos);
  fs::remove(tmp / "b" / "model.pt");
  auto m = load_bundle_module(*b);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find("model.pt"), std::string::npos);
}

TEST(Bundle, MissingFileIsDataLoss) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  ASSERT_TRUE(write(f, tmp / "b").ok());
  fs::remove(tmp / "b" / "model.pt");
  auto b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(b.status().message().find("model.pt"), std::string::npos) << b.status();

  auto none = read_bundle(tmp / "nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

// Writes the fixture's bundle to `dir` and returns its manifest as written.
Json written_manifest(const fs::path& dir) {
  Fixture f = make_fixture();
  EXPECT_TRUE(write(f, dir).ok());
  auto m = read_json_file(dir / "manifest.json");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : Json();
}

TEST(Bundle, WrongFormatOrNewerVersionIsInvalidArgument) {
  kiln::testing::TempDir tmp;
  const fs::path mpath = tmp / "b" / "manifest.json";
  const Json original = written_manifest(tmp / "b");

  // Each edit is resealed, so these test the field checks rather than the self-hash.
  const auto write_sealed = [&](Json m) {
    m["manifest_sha256"] = manifest_sha256(m);
    return write_json_file_atomic(mpath, m).ok();
  };
  Json newer = original;
  newer["format_version"] = 3;
  ASSERT_TRUE(write_sealed(newer));
  auto b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("version 3"), std::string::npos) << b.status();

  Json other = original;
  other["format"] = "kiln.snapshot";
  ASSERT_TRUE(write_sealed(other));
  b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);

  Json no_task = original;
  no_task.erase("task");
  ASSERT_TRUE(write_sealed(no_task));
  b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("task"), std::string::npos) << b.status();
}

TEST(Bundle, ManifestSealsItselfAndVersionOneStillReads) {
  kiln::testing::TempDir tmp;
  const fs::path mpath = tmp / "b" / "manifest.json";
  const Json original = written_manifest(tmp / "b");

  // An edit outside "files" (a better metric, say) is tampering, caught like a changed file.
  Json edited = original;
  edited["metrics"]["val_accuracy"] = 0.99;
  ASSERT_TRUE(write_json_file_atomic(mpath, edited).ok());
  auto b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(b.status().message().find("manifest.json: edited after it was written"),
            std::string::npos)
      << b.status();

  Json unsealed = original;
  unsealed.erase("manifest_sha256");
  ASSERT_TRUE(write_json_file_atomic(mpath, unsealed).ok());
  b = read_bundle(tmp / "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kDataLoss);

  // Reordered keys and other whitespace are the same manifest.
  nlohmann::json sorted = original;  // keys sorted
  ASSERT_TRUE(write_file_atomic(mpath, sorted.dump(4)).ok());
  b = read_bundle(tmp / "b");
  ASSERT_TRUE(b.ok()) << b.status();

  // A version 1 bundle (written before the seal) reads as before.
  Json v1 = original;
  v1.erase("manifest_sha256");
  v1["format_version"] = 1;
  ASSERT_TRUE(write_json_file_atomic(mpath, v1).ok());
  b = read_bundle(tmp / "b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->manifest["metrics"]["val_accuracy"], 0.75);
}

TEST(Bundle, OverwriteRefusedUnlessAsked) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  const fs::path dir = tmp / "b";
  ASSERT_TRUE(write(f, dir).ok());
  auto first = read_json_file(dir / "manifest.json");
  ASSERT_TRUE(first.ok());

  f.manifest["metrics"]["val_accuracy"] = 0.9;
  auto again = write(f, dir);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  auto unchanged = read_json_file(dir / "manifest.json");
  EXPECT_EQ(*unchanged, *first);

  auto replaced = write(f, dir, WriteBundleOptions().overwrite(true));
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  auto b = read_bundle(dir);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->manifest["metrics"]["val_accuracy"], 0.9);
  // Nothing else left beside it (no staging or old copies).
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);

  // An existing empty directory is fine without overwrite.
  fs::create_directories(tmp / "empty");
  EXPECT_TRUE(write(f, tmp / "empty").ok());
}

TEST(Bundle, NoPartialDirectoryOnFailure) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  // Rejected before anything is written.
  Json bad = f.manifest;
  bad.erase("model");
  auto a = write_bundle(tmp / "b", bad, network_state(*f.net), f.module);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  auto c = write_bundle(tmp / "b", f.manifest, network_state(*f.net), f.module,
                        {{"../escape.txt", "x"}});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  // Fails midway: the OS refuses an over-long file name once staging has begun.
  auto d = write_bundle(tmp / "b", f.manifest, network_state(*f.net), f.module,
                        {{std::string(250, 'x'), "x"}});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kIoError) << d.status();
  EXPECT_TRUE(fs::is_empty(tmp.path())) << "partial bundle or staging directory left behind";
}

}  // namespace
}  // namespace kiln::model

namespace kiln::model {
namespace {

// A TorchScript-only bundle (a model trained elsewhere): manifest + model.pt, no spec or weights.
TEST(Bundle, ModuleOnlyBundleRoundTripAndClearErrors) {
  Fixture f = make_fixture();
  kiln::testing::TempDir tmp;
  std::ostringstream os;
  f.module.save(os);
  Json m = {{"task", "custom"},
            {"signature",
             {{"inputs", {{{"name", "input"}, {"dtype", "FP32"}, {"shape", {-1, 1, 12, 12}}}}},
              {"outputs", {{{"name", "logits"}, {"dtype", "FP32"}, {"shape", {-1, 3}}}}}}}};
  auto written = write_module_bundle(tmp / "b", m, os.str());
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_FALSE(fs::exists(tmp / "b" / "weights.pt"));
  auto b = read_bundle(tmp / "b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->task(), "custom");
  EXPECT_FALSE(b->has_network());
  EXPECT_EQ(b->raw_input_shape(), (std::vector<int64_t>{1, 12, 12}));
  EXPECT_EQ(b->outputs(), 3);
  auto module = load_bundle_module(*b);
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(module->forward({torch::zeros({2, 1, 12, 12})}).toTensor().sizes(),
            (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(load_bundle_weights(*b).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_bundle_network(*b).status().code(), StatusCode::kInvalidArgument);
  // Labels make it a classifier; their count must match the output width.
  Json labelled = m;
  labelled["task"] = "classification";
  labelled["labels"] = {"a", "b"};
  EXPECT_EQ(write_module_bundle(tmp / "c", labelled, os.str()).status().code(),
            StatusCode::kInvalidArgument);
  labelled["labels"] = {"a", "b", "c"};
  EXPECT_TRUE(write_module_bundle(tmp / "c", labelled, os.str()).ok());
  // A signature is required without a model spec; a spec-less manifest is refused by write_bundle.
  Json unsigned_m = {{"task", "custom"}};
  EXPECT_EQ(write_module_bundle(tmp / "d", unsigned_m, os.str()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(write_bundle(tmp / "e", m, network_state(*f.net), f.module).status().code(),
            StatusCode::kInvalidArgument);
}

// The non-finite gate every served request passes: its fast path (two floats at a time) and the
// row/value its error names, for each position of a row of odd length.
TEST(Bundle, InputValuesGateNamesTheNonFiniteValue) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(3 * 7);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * float(i) * 1e30f;
  x[4] = std::numeric_limits<float>::max();
  x[5] = std::numeric_limits<float>::denorm_min();
  x[6] = -0.0f;
  EXPECT_TRUE(check_input_values(x.data(), 3, 7, false).ok());
  for (size_t at = 0; at < x.size(); ++at) {
    for (float bad : {inf, -inf, nan}) {
      std::vector<float> y = x;
      y[at] = bad;
      const Status s = check_input_values(y.data(), 3, 7, /*allow_nan=*/false);
      ASSERT_FALSE(s.ok()) << at;
      const std::string where =
          "row " + std::to_string(at / 7) + ", value " + std::to_string(at % 7) + " is ";
      EXPECT_NE(s.message().find(where), std::string::npos) << s.message();
      EXPECT_EQ(check_input_values(y.data(), 3, 7, /*allow_nan=*/true).ok(), bad != bad)
          << "missing values pass where the model imputes them; infinities never";
    }
  }
}

}  // namespace
}  // namespace kiln::model
