#pragma once

// Small real bundles for the registry tests: a seeded MLP over 4 features, exported with
// write_bundle(); `note` goes into an extra file so bundles can differ in one small file.

#include <gtest/gtest.h>

#include <string>

#include "kiln/core/json.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"

namespace kiln::registry::testing {

namespace fs = std::filesystem;

inline fs::path make_bundle(const fs::path& dir, uint64_t seed, const std::string& note,
                            double accuracy = 0.9, const std::string& lr = "0.01") {
  auto spec = model::zoo_model("mlp", Json{{"hidden", Json::array({8})}});
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto net = model::NetworkImpl::Create(*spec, {4}, 3, seed);
  EXPECT_TRUE(net.ok()) << net.status();
  auto module = model::export_torchscript(**net);
  EXPECT_TRUE(module.ok()) << module.status();
  Json manifest = {
      {"task", "classification"},
      {"labels", {"a", "b", "c"}},
      {"model", spec->to_json()},
      {"input_shape", {4}},
      {"outputs", 3},
      {"training", {{"epochs", 2}, {"lr", lr}}},
      {"metrics", {{"test", {{"accuracy", accuracy}}}, {"val", {{"accuracy", 0.8}}}}},
      {"lineage", {{"snapshot_hash", "snap" + std::to_string(seed)}, {"config_hash", "cfg" + lr}}},
      {"created_at", "2026-01-01T00:00:00Z"}};
  auto written = model::write_bundle(dir, manifest, model::network_state(**net), *module,
                                     {{"notes.txt", note}});
  EXPECT_TRUE(written.ok()) << written.status();
  return dir;
}

}  // namespace kiln::registry::testing
