#include "kiln/pipeline/content_hash.h"

#include <algorithm>
#include <set>

#include "kiln/core/hash.h"
#include "kiln/core/version.h"
#include "kiln/core/yaml.h"

namespace kiln::pipeline {
namespace {

constexpr const char* kMissing = "missing";

/// The files a stage's YAML (dataset spec, training config, suite) names (`data`, `spec`,
/// `sources`, an image spec's split files under `root`), followed through nested YAML.
void collect_yaml_inputs(const fs::path& yaml, std::set<fs::path>* visited,
                         std::vector<fs::path>* out) {
  if (!visited->insert(yaml.lexically_normal()).second) return;
  auto doc = read_yaml_file(yaml);
  if (!doc.ok() || !doc->is_object()) return;
  std::vector<std::string> named;
  for (const char* key : {"data", "spec", "sources"}) {
    if (!doc->contains(key)) continue;
    const Json& v = (*doc)[key];
    if (v.is_string()) named.push_back(v.get<std::string>());
    if (v.is_array())
      for (const Json& item : v)
        if (item.is_string()) named.push_back(item.get<std::string>());
  }
  // Image specs: splits.<split>.{images,labels} under `root`.
  if (doc->contains("splits") && (*doc)["splits"].is_object()) {
    std::string root = ".";
    if (doc->contains("root") && (*doc)["root"].is_string()) root = (*doc)["root"];
    for (const auto& split : (*doc)["splits"].items()) {
      if (!split.value().is_object()) continue;
      for (const char* key : {"images", "labels"})
        if (split.value().contains(key) && split.value()[key].is_string())
          named.push_back((fs::path(root) / split.value()[key].get<std::string>()).string());
    }
  }
  for (const std::string& n : named) {
    if (n.find('@') != std::string::npos) continue;  // a registry reference, not a file
    const fs::path p = (yaml.parent_path() / n).lexically_normal();
    if (!fs::exists(p)) continue;
    out->push_back(p);
    const std::string ext = p.extension().string();
    if (ext == ".yaml" || ext == ".yml") collect_yaml_inputs(p, visited, out);
  }
}

}  // namespace

Expected<std::string> hash_path(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return sha256_file(path);
  if (!fs::is_directory(path, ec)) return Status::NotFound(path.string() + ": no such file");
  std::vector<std::pair<std::string, fs::path>> files;
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file())
      files.emplace_back(it->path().lexically_relative(path).generic_string(), it->path());
  if (ec) return Status::IoError(path.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  Sha256 listing;
  for (const auto& [rel, full] : files) {
    KILN_ASSIGN_OR_RETURN(std::string h, sha256_file(full));
    listing.update(rel);
    listing.update(std::string_view("\0", 1));
    listing.update(h);
    listing.update("\n");
  }
  return listing.hex_digest();
}

Expected<std::map<std::string, std::string>> stage_inputs(
    const PipelineFile& file, const StageSpec& stage,
    const std::map<std::string, std::string>& upstream_hashes) {
  std::map<std::string, std::string> inputs;
  const fs::path dir = file.directory();
  auto add = [&](const fs::path& abs) -> Status {
    std::string label = abs.lexically_relative(dir).generic_string();
    if (label.empty()) label = abs.generic_string();
    auto h = hash_path(abs);
    if (!h.ok() && h.status().code() != StatusCode::kNotFound) return h.status();
    inputs[label] = h.ok() ? *h : kMissing;
    return Status::Ok();
  };
  std::vector<fs::path> paths;
  for (const std::string& d : stage.deps) paths.push_back((dir / d).lexically_normal());
  for (const std::string* yaml : {&stage.spec, &stage.config, &stage.suite, &stage.space}) {
    if (yaml->empty()) continue;
    const fs::path p = (dir / *yaml).lexically_normal();
    paths.push_back(p);
    std::set<fs::path> visited;
    collect_yaml_inputs(p, &visited, &paths);
  }
  for (const fs::path& p : paths) KILN_RETURN_IF_ERROR(add(p));
  inputs["stage config"] = sha256_hex(canonical_json(stage.node));
  inputs["kiln version"] = kVersion;
  for (const std::string& u : stage.upstream()) {
    auto it = upstream_hashes.find(u);
    inputs["upstream " + u] = it == upstream_hashes.end() ? kMissing : it->second;
  }
  return inputs;
}

std::string dependency_hash(const std::map<std::string, std::string>& inputs) {
  Json j = Json::object();
  for (const auto& [k, v] : inputs) j[k] = v;  // std::map: sorted keys
  return sha256_hex(canonical_json(j));
}

CacheDecision decide(const std::map<std::string, std::string>& inputs,
                     const std::optional<std::map<std::string, std::string>>& last, bool forced,
                     const std::vector<std::string>& missing_outputs) {
  if (forced) return {true, "forced"};
  if (!last) return {true, "never run"};
  std::vector<std::string> changed;
  for (const auto& [label, hash] : inputs) {
    auto it = last->find(label);
    if (it == last->end() || it->second != hash) changed.push_back(label);
  }
  for (const auto& [label, hash] : *last)
    if (!inputs.count(label)) changed.push_back(label + " (removed)");
  if (!changed.empty()) {
    std::string reason = "changed: ";
    for (size_t i = 0; i < changed.size(); ++i) reason += (i ? ", " : "") + changed[i];
    return {true, reason};
  }
  if (!missing_outputs.empty()) {
    std::string reason = "outputs missing: ";
    for (size_t i = 0; i < missing_outputs.size(); ++i)
      reason += (i ? ", " : "") + missing_outputs[i];
    return {true, reason};
  }
  return {false, "up to date"};
}

}  // namespace kiln::pipeline
