#include "kiln/improve/production_rows.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <unordered_map>

#include "kiln/core/hash.h"

namespace kiln::improve {

namespace fs = std::filesystem;

Json ProductionRows::to_json() const {
  return {{"labelled_rows", static_cast<int64_t>(rows.size())},
          {"files", files},
          {"predictions", predictions},
          {"hashed_predictions", hashed_predictions},
          {"feedback", feedback},
          {"unlabelled", unlabelled},
          {"bad_lines", bad_lines}};
}

bool in_holdout(const std::string& id, double fraction) {
  if (fraction <= 0) return false;
  if (fraction >= 1) return true;
  // The first 8 hex digits of sha256(id): uniform, and the same on every machine and run.
  const std::string h = sha256_hex("kiln-holdout:" + id);
  const double u = static_cast<double>(std::stoull(h.substr(0, 8), nullptr, 16)) / 4294967296.0;
  return u < fraction;
}

Expected<ProductionRows> read_production_rows(const fs::path& log_dir,
                                              const std::set<std::string>& models) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(log_dir, ec))
    for (const auto& entry : fs::directory_iterator(log_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("predictions-", 0) == 0 && name.find(".jsonl") != std::string::npos)
        files.push_back(entry.path());
    }
  if (files.empty())
    return Status::NotFound(log_dir.string() +
                            ": no prediction log (predictions-PORT.jsonl); serve the model with "
                            "--prediction-log inputs");
  std::sort(files.begin(), files.end());
  ProductionRows out;
  out.files = static_cast<int64_t>(files.size());
  std::unordered_map<std::string, LabelledRow> predicted;
  std::unordered_map<std::string, Json> truth;
  for (const fs::path& file : files) {
    std::ifstream in(file);
    if (!in) return Status::IoError(file.string() + ": cannot read");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string()) {
        ++out.bad_lines;
        continue;
      }
      const std::string id = j["id"].get<std::string>();
      if (j.contains("truth")) {
        ++out.feedback;
        truth[id] = j["truth"];
        continue;
      }
      const std::string model = j.value("model", "");
      if (!models.empty() && !models.count(model)) continue;
      ++out.predictions;
      if (!j.contains("inputs") || !j["inputs"].is_array()) {
        ++out.hashed_predictions;
        continue;
      }
      LabelledRow row;
      row.id = id;
      row.model = model;
      row.version = j.value("version", "");
      row.ts = j.value("ts", 0.0);
      row.inputs.reserve(j["inputs"].size());
      bool numbers = true;
      for (const Json& v : j["inputs"]) {
        if (!v.is_number()) {
          numbers = false;
          break;
        }
        row.inputs.push_back(v.get<float>());
      }
      if (!numbers) {
        ++out.bad_lines;
        continue;
      }
      auto it = predicted.find(id);
      if (it == predicted.end() || it->second.ts <= row.ts) predicted[id] = std::move(row);
    }
  }
  for (auto& [id, row] : predicted) {
    auto t = truth.find(id);
    if (t == truth.end()) {
      ++out.unlabelled;
      continue;
    }
    row.truth = t->second;
    out.rows.push_back(std::move(row));
  }
  std::sort(out.rows.begin(), out.rows.end(), [](const LabelledRow& a, const LabelledRow& b) {
    return a.ts != b.ts ? a.ts < b.ts : a.id < b.id;
  });
  return out;
}

}  // namespace kiln::improve
