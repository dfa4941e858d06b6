#pragma once
// The labelled production rows of a served model: the prediction log's lines (`kiln serve
// --prediction-log inputs`) joined to the feedback lines by row id. Torch-free.

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::improve {

/// One production row with its ground truth.
struct LabelledRow {
  std::string id;             ///< the row id the server gave (`ID` or `ID#k`)
  std::string model;          ///< the served model that answered (a route target's name)
  std::string version;        ///< its version
  double ts = 0;              ///< when it was predicted (unix seconds)
  std::vector<float> inputs;  ///< as the model received them (row-major)
  Json truth;                 ///< class name or index, or a number (regression)
};

/// What reading the logs found.
struct ProductionRows {
  std::vector<LabelledRow> rows;  ///< oldest first
  int64_t files = 0;
  int64_t predictions = 0;         ///< prediction lines of the wanted models
  int64_t hashed_predictions = 0;  ///< of those, logged as a hash only (no inputs to learn from)
  int64_t feedback = 0;            ///< feedback lines
  int64_t unlabelled = 0;          ///< predictions with inputs but no feedback (yet)
  int64_t bad_lines = 0;           ///< lines that are not JSON objects (e.g. a torn last line)
  Json to_json() const;            ///< the counts
};

/// Reads every `predictions-*.jsonl` file in `log_dir` (rotated `.1`, `.2`, ... included) and
/// joins prediction lines whose "model" is in `models` (all models when empty) to feedback lines
/// by id (a feedback line may come from any file, before or after its prediction). A row id
/// predicted twice keeps its latest prediction. NotFound when the directory holds no log.
/// Blocks (file I/O); thread-safe.
Expected<ProductionRows> read_production_rows(const std::filesystem::path& log_dir,
                                              const std::set<std::string>& models);

/// Whether a row id belongs to the holdout: a stable hash of the id against `fraction`, so a row
/// is held out (never trained on) in every improvement cycle alike.
bool in_holdout(const std::string& id, double fraction);

}  // namespace kiln::improve
