#pragma once
// What the train tests share: one breast-cancer snapshot per test process (each gtest case runs in
// its own process under ctest) and configs written against a snapshot.

#include <string>
#include <vector>

#include "kiln/data/prepare.h"
#include "kiln/data/spec.h"
#include "kiln/train/config.h"
#include "support/test_support.h"

namespace kiln::train {

/// examples/breast-cancer/dataset.yaml prepared once into a temp dir that lives until exit.
inline const fs::path& breast_cancer_snapshot() {
  static testing::TempDir dir;  // removed at exit
  static fs::path snapshot = [] {
    auto spec =
        data::load_dataset_spec(testing::source_dir() / "examples/breast-cancer/dataset.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    auto r = data::prepare_dataset(*spec, data::PrepareOptions(dir.path()));
    EXPECT_TRUE(r.ok()) << r.status();
    return r->snapshot_dir;
  }();
  return snapshot;
}

/// A training config: `data: <data>` followed by `yaml`, loaded with `overrides`.
inline Expected<TrainConfig> config_for(const fs::path& data, const std::string& yaml,
                                        const std::vector<std::string>& overrides = {}) {
  testing::TempDir dir;
  testing::write_text(dir / "train.yaml", "data: " + data.string() + "\n" + yaml);
  return load_train_config(dir / "train.yaml", overrides);
}

}  // namespace kiln::train
