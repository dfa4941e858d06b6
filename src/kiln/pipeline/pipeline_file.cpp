#include "kiln/pipeline/pipeline_file.h"

#include <algorithm>
#include <functional>
#include <set>

#include "kiln/core/files.h"
#include "kiln/core/yaml.h"

namespace kiln::pipeline {
namespace {

struct KindInfo {
  StageKind kind;
  const char* name;
  const char* required;  ///< the field the kind cannot do without ("" = none)
  std::vector<std::string> fields;
};

const std::vector<KindInfo>& kinds() {
  static const std::vector<KindInfo> table = {
      {StageKind::kPrepare, "prepare", "spec", {"spec"}},
      {StageKind::kTrain, "train", "config", {"config"}},
      {StageKind::kTune, "tune", "config", {"config", "space", "args"}},
      {StageKind::kTest, "test", "", {"suite"}},
      {StageKind::kPush, "push", "name", {"name"}},
      {StageKind::kPromote, "promote", "alias", {"alias"}},
      {StageKind::kRollout, "rollout", "route", {"route", "server", "candidate", "alias", "args"}},
      {StageKind::kShell, "shell", "cmd", {"cmd"}},
  };
  return table;
}

std::string kind_list() {
  std::string out;
  for (const KindInfo& k : kinds()) out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

const std::vector<std::string> kCommonFields = {"kind", "needs", "gate", "deps", "outs", "desc"};

}  // namespace

const char* stage_kind_name(StageKind kind) {
  for (const KindInfo& k : kinds())
    if (k.kind == kind) return k.name;
  return "?";
}

std::vector<std::string> StageSpec::upstream() const {
  std::vector<std::string> all = needs;
  if (!gate.empty() && std::find(all.begin(), all.end(), gate) == all.end()) all.push_back(gate);
  return all;
}

const StageSpec* PipelineFile::find(const std::string& name) const {
  for (const StageSpec& s : stages)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<std::string> PipelineFile::downstream(const std::string& name) const {
  std::set<std::string> reached = {name};
  std::vector<std::string> out;
  for (const StageSpec& s : stages) {  // topological order: upstream stages come first
    for (const std::string& u : s.upstream()) {
      if (reached.count(u)) {
        reached.insert(s.name);
        out.push_back(s.name);
        break;
      }
    }
  }
  return out;
}

std::map<std::string, int> PipelineFile::layers() const {
  std::map<std::string, int> layer;
  for (const StageSpec& s : stages) {
    int l = 0;
    for (const std::string& u : s.upstream()) l = std::max(l, layer[u] + 1);
    layer[s.name] = l;
  }
  return layer;
}

Expected<PipelineFile> parse_pipeline(const std::string& text, const fs::path& path) {
  std::map<std::string, int> lines;
  auto doc = yaml_to_json(text, &lines);
  if (!doc.ok()) return Status::InvalidArgument(path.string() + ": " + doc.status().message());
  auto at = [&](const std::string& key) {
    auto it = lines.find(key);
    return path.string() + (it == lines.end() ? "" : ":" + std::to_string(it->second));
  };
  auto bad = [&](const std::string& key, const std::string& what) {
    return Status::InvalidArgument(at(key) + ": " + what);
  };
  if (!doc->is_object()) return bad("", "a pipeline file is a mapping with `stages:`");
  for (auto it = doc->begin(); it != doc->end(); ++it)
    if (it.key() != "stages") return bad(it.key(), "unknown top-level field '" + it.key() + "'");
  if (!doc->contains("stages") || !(*doc)["stages"].is_object() || (*doc)["stages"].empty())
    return bad("stages", "`stages:` must map stage names to stages");

  PipelineFile file;
  file.path = fs::absolute(path).lexically_normal();
  std::vector<StageSpec> parsed;
  const Json& stages = (*doc)["stages"];
  for (auto it = stages.begin(); it != stages.end(); ++it) {
    const std::string key = "stages." + it.key();
    StageSpec s;
    s.name = it.key();
    s.node = it.value();
    s.line = lines.count(key) ? lines[key] : 0;
    const std::string who = "stage '" + s.name + "': ";
    if (!s.node.is_object()) return bad(key, who + "a stage is a mapping with `kind:`");
    if (!s.node.contains("kind") || !s.node["kind"].is_string())
      return bad(key, who + "`kind:` is required (" + kind_list() + ")");
    const std::string kind = s.node["kind"];
    auto info = std::find_if(kinds().begin(), kinds().end(),
                             [&](const KindInfo& k) { return kind == k.name; });
    if (info == kinds().end())
      return bad(key + ".kind", who + "unknown kind '" + kind + "' (" + kind_list() + ")");
    s.kind = info->kind;
    for (auto f = s.node.begin(); f != s.node.end(); ++f) {
      const std::string& field = f.key();
      const bool known = std::count(kCommonFields.begin(), kCommonFields.end(), field) ||
                         std::count(info->fields.begin(), info->fields.end(), field);
      if (!known)
        return bad(key + "." + field, who + "unknown field '" + field + "' for kind " + kind);
      if (field == "kind" || field == "desc") continue;
      const Json& v = f.value();
      if (field == "needs" || field == "deps" || field == "outs" || field == "args") {
        std::vector<std::string>* list = field == "needs"  ? &s.needs
                                         : field == "deps" ? &s.deps
                                         : field == "args" ? &s.args
                                                           : &s.outs;
        if (v.is_string()) {
          list->push_back(v.get<std::string>());
          continue;
        }
        if (!v.is_array())
          return bad(key + "." + field, who + "`" + field + "` is a list of names");
        for (const Json& item : v) {
          if (field == "args" && (item.is_number() || item.is_boolean())) {
            list->push_back(item.dump());  // `args: [--trials, 4]`
            continue;
          }
          if (!item.is_string())
            return bad(key + "." + field, who + "`" + field + "` entries are strings");
          list->push_back(item.get<std::string>());
        }
        continue;
      }
      if (!v.is_string() || v.get<std::string>().empty())
        return bad(key + "." + field, who + "`" + field + "` must be a non-empty string");
      const std::string value = v.get<std::string>();
      if (field == "spec") s.spec = value;
      if (field == "config") s.config = value;
      if (field == "suite") s.suite = value;
      if (field == "name") s.push_name = value;
      if (field == "cmd") s.cmd = value;
      if (field == "gate") s.gate = value;
      if (field == "alias") s.alias = value;
      if (field == "space") s.space = value;
      if (field == "route") s.route = value;
      if (field == "server") s.server = value;
      if (field == "candidate") s.candidate = value;
    }
    if (s.kind == StageKind::kTune && s.space.empty())
      return bad(key, who + "kind tune needs `space:` (the search space YAML)");
    if (s.kind == StageKind::kRollout && (s.server.empty() || s.candidate.empty()))
      return bad(key, who + "kind rollout needs `server:` and `candidate:`");
    if (*info->required && !s.node.contains(info->required))
      return bad(key, who + "kind " + kind + " needs `" + info->required + ":`");
    parsed.push_back(std::move(s));
  }

  std::set<std::string> names;
  for (const StageSpec& s : parsed) names.insert(s.name);
  for (const StageSpec& s : parsed) {
    const std::string key = "stages." + s.name;
    for (const std::string& n : s.needs) {
      if (!names.count(n))
        return bad(key + ".needs", "stage '" + s.name + "': needs '" + n + "', which is no stage");
      if (n == s.name) return bad(key + ".needs", "stage '" + s.name + "' needs itself");
    }
    if (!s.gate.empty()) {
      if (!names.count(s.gate))
        return bad(key + ".gate", "stage '" + s.name + "': gate '" + s.gate + "' is no stage");
      const StageSpec& g = *std::find_if(parsed.begin(), parsed.end(),
                                         [&](const StageSpec& x) { return x.name == s.gate; });
      if (g.kind != StageKind::kTest && g.kind != StageKind::kShell)
        return bad(key + ".gate",
                   "stage '" + s.name + "': gate '" + s.gate + "' must be a test (or shell) stage");
    }
    // Test and push take the bundle of a train (or tune) stage upstream; promote, and a rollout
    // that promotes, the version a push made.
    const bool wants_bundle = s.kind == StageKind::kTest || s.kind == StageKind::kPush;
    if (wants_bundle || s.kind == StageKind::kPromote ||
        (s.kind == StageKind::kRollout && !s.alias.empty())) {
      const StageKind source = wants_bundle ? StageKind::kTrain : StageKind::kPush;
      std::set<std::string> seen;
      std::function<bool(const std::string&)> reaches = [&](const std::string& n) {
        if (!seen.insert(n).second) return false;
        auto st = std::find_if(parsed.begin(), parsed.end(),
                               [&](const StageSpec& x) { return x.name == n; });
        if (st->kind == source || (wants_bundle && st->kind == StageKind::kTune)) return true;
        for (const std::string& u : st->upstream())
          if (reaches(u)) return true;
        return false;
      };
      bool found = false;
      for (const std::string& u : s.upstream()) found = found || reaches(u);
      if (!found)
        return bad(key, "stage '" + s.name + "': kind " + stage_kind_name(s.kind) + " needs a " +
                            stage_kind_name(source) + " stage upstream (its " +
                            (wants_bundle ? "bundle" : "registered version") + ")");
    }
  }

  // Kahn's algorithm, file order among the ready stages; what is left is on a cycle.
  std::set<std::string> placed;
  while (file.stages.size() < parsed.size()) {
    bool progressed = false;
    for (const StageSpec& s : parsed) {
      if (placed.count(s.name)) continue;
      const auto up = s.upstream();
      if (std::all_of(up.begin(), up.end(),
                      [&](const std::string& u) { return placed.count(u); })) {
        file.stages.push_back(s);
        placed.insert(s.name);
        progressed = true;
      }
    }
    if (!progressed) {
      // Report a stage that is on the cycle itself, not one merely downstream of it.
      for (const StageSpec& s : parsed) {
        if (placed.count(s.name)) continue;
        std::set<std::string> seen;
        std::function<bool(const std::string&)> reaches = [&](const std::string& n) {
          const StageSpec& st = *std::find_if(parsed.begin(), parsed.end(),
                                              [&](const StageSpec& x) { return x.name == n; });
          for (const std::string& u : st.upstream()) {
            if (u == s.name) return true;
            if (!placed.count(u) && seen.insert(u).second && reaches(u)) return true;
          }
          return false;
        };
        if (reaches(s.name))
          return bad("stages." + s.name,
                     "stage '" + s.name + "' is on a cycle (its needs lead back to it)");
      }
      return Status::Internal(path.string() + ": cycle not found");
    }
  }
  return file;
}

Expected<PipelineFile> read_pipeline_file(const fs::path& path) {
  if (!fs::exists(path)) return Status::NotFound(path.string() + ": no such pipeline file");
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse_pipeline(text, path);
}

}  // namespace kiln::pipeline
