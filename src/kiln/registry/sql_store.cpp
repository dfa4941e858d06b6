#include "kiln/registry/sql_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "kiln/core/clock.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/artifact_store.h"
#include "kiln/registry/catalogue.h"
#include "kiln/registry/query.h"

namespace kiln::registry {
namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : sep) + i;
  return s;
}

/// Tag keys follow the name rules; values are one line of at most 1024 bytes.
Status validate_tag(const std::string& key, const std::string& value) {
  KILN_RETURN_IF_ERROR(validate_name(key, "tag key"));
  if (value.size() > 1024)
    return Status::InvalidArgument("tag '" + key + "': value longer than 1024 bytes");
  for (char c : value)
    if (static_cast<unsigned char>(c) < 0x20)
      return Status::InvalidArgument("tag '" + key + "': value holds a control character");
  return Status::Ok();
}

std::string lineage_text(const Json& lineage, const char* key) {
  if (!lineage.is_object() || !lineage.contains(key) || !lineage.at(key).is_string()) return "";
  return lineage.at(key).get<std::string>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Catalogue plumbing: a cursor over a fully read result, RAII write transactions.

struct SqlModelStore::Impl {
  fs::path root;
  ArtifactStore artifacts{""};
  fs::path bundles;
  std::unique_ptr<Catalogue> catalogue;
  std::mutex mu;  // one catalogue connection: every use holds it
};

namespace {

using Impl = SqlModelStore::Impl;

/// One statement: bind ?1..?N, then step() through its rows (it runs on the first step()). Not
/// thread-safe (callers hold mu).
class Query {
 public:
  Query(Impl& impl, std::string sql) : impl_(impl), sql_(std::move(sql)) {}
  Query& bind(int i, const std::string& v) { return set(i, v); }
  Query& bind(int i, int64_t v) { return set(i, v); }
  /// True for a row, false when done.
  Expected<bool> step() {
    if (!ran_) {
      KILN_ASSIGN_OR_RETURN(result_, impl_.catalogue->execute(sql_, params_));
      ran_ = true;
      return !result_.rows.empty();
    }
    if (row_ < result_.rows.size()) ++row_;
    return row_ < result_.rows.size();
  }
  Status run() { return step().status(); }
  std::string text(int i) const { return result_.rows[row_][static_cast<size_t>(i)].value_or(""); }
  int64_t integer(int i) const {
    const auto& v = result_.rows[row_][static_cast<size_t>(i)];
    return v ? std::stoll(*v) : 0;
  }
  bool is_null(int i) const { return !result_.rows[row_][static_cast<size_t>(i)].has_value(); }

 private:
  Query& set(int i, SqlParam v) {
    if (params_.size() < static_cast<size_t>(i)) params_.resize(static_cast<size_t>(i));
    params_[static_cast<size_t>(i - 1)] = std::move(v);
    return *this;
  }
  Impl& impl_;
  std::string sql_;
  std::vector<SqlParam> params_;
  SqlRows result_;
  size_t row_ = 0;
  bool ran_ = false;
};

/// A write transaction that excludes every other writer (Catalogue::begin_write) ... COMMIT;
/// rolls back when not committed.
class Transaction {
 public:
  explicit Transaction(Impl& impl) : impl_(impl) {}
  Status begin() {
    KILN_RETURN_IF_ERROR(impl_.catalogue->begin_write());
    open_ = true;
    return Status::Ok();
  }
  Status commit() {
    open_ = false;
    return impl_.catalogue->commit();
  }
  ~Transaction() {
    if (open_) (void)impl_.catalogue->rollback();
  }

 private:
  Impl& impl_;
  bool open_ = false;
};

// ---- lookups (callers hold mu)

Expected<std::vector<std::string>> model_names(Impl& impl) {
  std::vector<std::string> names;
  Query q(impl, "SELECT DISTINCT name FROM versions ORDER BY name");
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    names.push_back(q.text(0));
  }
  return names;
}

Expected<std::vector<int64_t>> version_numbers(Impl& impl, const std::string& name) {
  std::vector<int64_t> out;
  Query q(impl, "SELECT version FROM versions WHERE name = ?1 ORDER BY version");
  q.bind(1, name);
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    out.push_back(q.integer(0));
  }
  return out;
}

Expected<std::vector<std::pair<std::string, int64_t>>> alias_targets(Impl& impl,
                                                                     const std::string& name) {
  std::vector<std::pair<std::string, int64_t>> out;
  Query q(impl, "SELECT alias, version FROM aliases WHERE name = ?1 ORDER BY alias");
  q.bind(1, name);
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    out.emplace_back(q.text(0), q.integer(1));
  }
  return out;
}

/// NotFound for an unknown model, listing the models that exist.
Status unknown_model(Impl& impl, const std::string& name) {
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> names, model_names(impl));
  return Status::NotFound(
      "no model '" + name + "' in the registry at " + impl.catalogue->location() +
      (names.empty() ? " (the registry is empty)" : " (models: " + join(names) + ")"));
}

/// "versions: 1, 2, 3; aliases: production -> 3" for error messages.
Expected<std::string> what_exists(Impl& impl, const std::string& name) {
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> versions, version_numbers(impl, name));
  KILN_ASSIGN_OR_RETURN(auto aliases, alias_targets(impl, name));
  std::vector<std::string> v, a;
  for (int64_t n : versions) v.push_back(std::to_string(n));
  for (const auto& [alias, n] : aliases) a.push_back(alias + " -> " + std::to_string(n));
  return "versions: " + (v.empty() ? std::string("none") : join(v)) +
         "; aliases: " + (a.empty() ? std::string("none") : join(a));
}

/// The (name, version) a NAME@VERSION / NAME@ALIAS reference names now.
Expected<std::pair<std::string, int64_t>> lookup(Impl& impl, const std::string& text) {
  KILN_ASSIGN_OR_RETURN(ModelRef ref, parse_model_ref(text));
  if (ref.is_path())
    return Status::InvalidArgument("'" + text +
                                   "' is a bundle path; give a registered model as "
                                   "NAME@VERSION or NAME@ALIAS");
  if (ref.kind == ModelRef::Kind::kVersion) {
    Query q(impl, "SELECT 1 FROM versions WHERE name = ?1 AND version = ?2");
    q.bind(1, ref.name).bind(2, ref.version);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (row) return std::make_pair(ref.name, ref.version);
  } else {
    Query q(impl, "SELECT version FROM aliases WHERE name = ?1 AND alias = ?2");
    q.bind(1, ref.name).bind(2, ref.alias);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (row) return std::make_pair(ref.name, q.integer(0));
    if (ref.alias == "latest") {
      Query m(impl, "SELECT MAX(version) FROM versions WHERE name = ?1");
      m.bind(1, ref.name);
      KILN_ASSIGN_OR_RETURN(bool mrow, m.step());
      if (mrow && !m.is_null(0)) return std::make_pair(ref.name, m.integer(0));
    }
  }
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> versions, version_numbers(impl, ref.name));
  if (versions.empty()) return unknown_model(impl, ref.name);
  KILN_ASSIGN_OR_RETURN(std::string exists, what_exists(impl, ref.name));
  if (ref.kind == ModelRef::Kind::kVersion)
    return Status::NotFound("model '" + ref.name + "' has no version " +
                            std::to_string(ref.version) + " (" + exists + ")");
  return Status::NotFound("model '" + ref.name + "' has no alias '" + ref.alias + "' (" + exists +
                          ")");
}

Expected<std::map<std::string, std::string>> version_files(Impl& impl, const std::string& name,
                                                           int64_t version) {
  std::map<std::string, std::string> files;
  Query q(impl, "SELECT file, sha256 FROM version_files WHERE name = ?1 AND version = ?2");
  q.bind(1, name).bind(2, version);
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    files[q.text(0)] = q.text(1);
  }
  return files;
}

Expected<VersionInfo> load_version(Impl& impl, const std::string& name, int64_t version) {
  VersionInfo v;
  {
    Query q(impl,
            "SELECT bundle_sha256, task, description, created_at, size_bytes, manifest, "
            "snapshot_hash, config_hash, parent_name, parent_version, kiln_version, git_commit "
            "FROM versions WHERE name = ?1 AND version = ?2");
    q.bind(1, name).bind(2, version);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return Status::NotFound("model '" + name + "' has no version " + std::to_string(version));
    v.name = name;
    v.version = version;
    v.bundle_sha256 = q.text(0);
    v.task = q.text(1);
    v.description = q.text(2);
    v.created_at = q.text(3);
    v.size_bytes = q.integer(4);
    try {
      v.manifest = Json::parse(q.text(5));
    } catch (const nlohmann::json::exception& e) {
      return Status::DataLoss(name + "@" + std::to_string(version) +
                              ": stored manifest is not JSON: " + e.what());
    }
    v.lineage = Lineage{q.text(6), q.text(7), q.text(8), q.integer(9), q.text(10), q.text(11)};
  }
  KILN_ASSIGN_OR_RETURN(v.files, version_files(impl, name, version));
  {
    Query q(impl, "SELECT key, value FROM tags WHERE name = ?1 AND version = ?2 ORDER BY key");
    q.bind(1, name).bind(2, version);
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      v.tags[q.text(0)] = q.text(1);
    }
  }
  {
    Query q(impl, "SELECT alias FROM aliases WHERE name = ?1 AND version = ?2 ORDER BY alias");
    q.bind(1, name).bind(2, version);
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      v.aliases.push_back(q.text(0));
    }
  }
  return v;
}

/// ROOT/bundles/<sha>: hard links to the verified artifacts (copies where links fail), built in a
/// staging directory and renamed into place, so concurrent resolvers never see half of it.
Expected<fs::path> materialise(Impl& impl, const std::string& name, int64_t version,
                               const std::string& bundle_sha) {
  const fs::path dir = impl.bundles / bundle_sha;
  struct stat st {};
  if (::stat((dir / model::kBundleManifestFile).c_str(), &st) == 0) return dir;
  const std::string ref = name + "@" + std::to_string(version);
  KILN_ASSIGN_OR_RETURN(auto files, version_files(impl, name, version));
  KILN_ASSIGN_OR_RETURN(StagingDirectory staging, StagingDirectory::Create(dir));
  for (const auto& [file, sha] : files) {
    KILN_RETURN_IF_ERROR(impl.artifacts.check(sha).with_context(ref + " " + file));
    const fs::path dest = staging.path() / file;
    if (::link(impl.artifacts.path_of(sha).c_str(), dest.c_str()) != 0)
      KILN_RETURN_IF_ERROR(impl.artifacts.copy_verified(sha, dest).with_context(ref + " " + file));
  }
  KILN_RETURN_IF_ERROR(staging.publish());
  return dir;
}

/// Builds the alias's target stack from its history: set pushes, rm pushes 0, rollback pops.
Expected<std::vector<int64_t>> alias_stack(Impl& impl, const std::string& name,
                                           const std::string& alias) {
  std::vector<int64_t> stack;
  Query q(impl,
          "SELECT action, version FROM alias_history WHERE name = ?1 AND alias = ?2 ORDER BY id");
  q.bind(1, name).bind(2, alias);
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    const std::string action = q.text(0);
    const int64_t v = q.integer(1);
    if (action == "rollback") {
      if (!stack.empty()) stack.pop_back();
    } else if (stack.empty() || stack.back() != v) {
      stack.push_back(action == "rm" ? 0 : v);
    }
  }
  return stack;
}

Status record_alias(Impl& impl, const std::string& name, const std::string& alias,
                    const std::string& action, int64_t version) {
  const std::string now = utc_now_iso8601();
  if (action == "rm") {
    Query d(impl, "DELETE FROM aliases WHERE name = ?1 AND alias = ?2");
    KILN_RETURN_IF_ERROR(d.bind(1, name).bind(2, alias).run());
  } else {
    Query u(impl,
            "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?1, ?2, ?3, ?4) "
            "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, "
            "updated_at = excluded.updated_at");
    KILN_RETURN_IF_ERROR(u.bind(1, name).bind(2, alias).bind(3, version).bind(4, now).run());
  }
  Query h(impl,
          "INSERT INTO alias_history (name, alias, action, version, at) VALUES (?1, ?2, ?3, ?4, "
          "?5)");
  KILN_RETURN_IF_ERROR(
      h.bind(1, name).bind(2, alias).bind(3, action).bind(4, version).bind(5, now).run());
  return impl.catalogue->notify(name + "@" + alias);  // servers on NAME@ALIAS reload at once
}

Status check_version_exists(Impl& impl, const std::string& name, int64_t version) {
  Query q(impl, "SELECT 1 FROM versions WHERE name = ?1 AND version = ?2");
  q.bind(1, name).bind(2, version);
  KILN_ASSIGN_OR_RETURN(bool row, q.step());
  if (row) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> versions, version_numbers(impl, name));
  if (versions.empty()) return unknown_model(impl, name);
  KILN_ASSIGN_OR_RETURN(std::string exists, what_exists(impl, name));
  return Status::NotFound("model '" + name + "' has no version " + std::to_string(version) + " (" +
                          exists + ")");
}

int64_t age_seconds(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(st.st_mtime);
}

Json diff_maps(const Json& a, const Json& b) {
  Json out = Json::object();
  for (const auto& [k, v] : a.items())
    if (!b.contains(k) || b.at(k) != v)
      out[k] = {{"a", v}, {"b", b.contains(k) ? b.at(k) : Json()}};
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) out[k] = {{"a", Json()}, {"b", v}};
  return out;
}

Json config_of(const VersionInfo& v) {
  Json c = Json::object();
  for (const char* key : {"task", "training", "model", "preprocessing", "signature", "labels"})
    if (v.manifest.contains(key)) c[key] = v.manifest.at(key);
  return flatten_json(c);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

SqlModelStore::SqlModelStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqlModelStore::~SqlModelStore() = default;

fs::path SqlModelStore::root() const { return impl_->root; }

Expected<std::unique_ptr<SqlModelStore>> SqlModelStore::Create(std::unique_ptr<Catalogue> catalogue,
                                                               const fs::path& root) {
  auto impl = std::make_unique<Impl>();
  impl->root = root;
  impl->artifacts = ArtifactStore(impl->root / "artifacts");
  impl->bundles = impl->root / "bundles";
  impl->catalogue = std::move(catalogue);
  std::error_code ec;
  for (const fs::path& d : {impl->root, impl->artifacts.root(), impl->bundles}) {
    fs::create_directories(d, ec);
    if (ec) return Status::IoError("cannot create directory " + d.string() + ": " + ec.message());
  }
  return std::unique_ptr<SqlModelStore>(new SqlModelStore(std::move(impl)));
}

std::string SqlModelStore::catalogue_location() const { return impl_->catalogue->location(); }

bool SqlModelStore::notifies_changes() const { return impl_->catalogue->notifies_changes(); }

Expected<bool> SqlModelStore::wait_for_change(std::chrono::milliseconds timeout) {
  return impl_->catalogue->wait_for_change(timeout);  // its own connection: no mu
}

Expected<ResolvedModel> SqlModelStore::resolve(const std::string& ref) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  ResolvedModel r;
  // The hot path (a server polling NAME@ALIAS): one indexed read and a stat.
  const size_t at = ref.find('@');
  if (at != std::string::npos && ref.find('/') == std::string::npos) {
    Query q(*impl_,
            "SELECT v.version, v.bundle_sha256 FROM aliases a JOIN versions v ON v.name = a.name "
            "AND v.version = a.version WHERE a.name = ?1 AND a.alias = ?2");
    q.bind(1, ref.substr(0, at)).bind(2, ref.substr(at + 1));
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (row) {
      r.name = ref.substr(0, at);
      r.version = q.integer(0);
      r.bundle_sha256 = q.text(1);
    }
  }
  if (r.name.empty()) {
    KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
    Query q(*impl_, "SELECT bundle_sha256 FROM versions WHERE name = ?1 AND version = ?2");
    q.bind(1, nv.first).bind(2, nv.second);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) return Status::NotFound(ref + ": no such version");
    r.name = nv.first;
    r.version = nv.second;
    r.bundle_sha256 = q.text(0);
  }
  KILN_ASSIGN_OR_RETURN(r.bundle_dir, materialise(*impl_, r.name, r.version, r.bundle_sha256));
  return r;
}

Expected<VersionInfo> SqlModelStore::push(const PushRequest& req) {
  KILN_RETURN_IF_ERROR(validate_name(req.name_));
  for (const auto& [k, v] : req.tags_) KILN_RETURN_IF_ERROR(validate_tag(k, v));
  if (req.description_.size() > 4096)
    return Status::InvalidArgument("--description is longer than 4096 bytes");
  const fs::path dir = model::bundle_dir_of(req.bundle_dir_);  // a run directory: its bundle/
  KILN_ASSIGN_OR_RETURN(model::Bundle bundle, model::read_bundle(dir));  // verifies every sha256
  (void)bundle;
  // The manifest bytes we hash are the ones we store and parse: every file is then checked
  // against this manifest while it is copied, so a bundle changing under us fails cleanly.
  KILN_ASSIGN_OR_RETURN(std::string manifest_text, read_file(dir / model::kBundleManifestFile));
  const std::string bundle_sha = sha256_hex(manifest_text);
  Json manifest;
  try {
    manifest = Json::parse(manifest_text);
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss(dir.string() + ": manifest.json changed while pushing");
  }
  std::map<std::string, std::string> files;  // name -> sha256
  files[model::kBundleManifestFile] = bundle_sha;
  for (const auto& [file, sha] : manifest.at("files").items()) files[file] = sha.get<std::string>();
  std::map<std::string, int64_t> sizes;
  int64_t total = 0;
  for (const auto& [file, sha] : files) {
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(dir / file, ec));
    if (ec) return Status::DataLoss((dir / file).string() + ": missing (listed in the manifest)");
    sizes[file] = size;
    total += size;
  }

  std::lock_guard<std::mutex> lock(impl_->mu);
  // Parent: given explicitly, else a "NAME@VERSION" lineage.parent in the manifest.
  std::string parent_name;
  int64_t parent_version = 0;
  const Json lineage = manifest.value("lineage", Json::object());
  std::string parent_ref = req.parent_;
  if (parent_ref.empty() && lineage.is_object() && lineage.contains("parent") &&
      lineage.at("parent").is_string())
    parent_ref = lineage.at("parent").get<std::string>();
  if (!parent_ref.empty()) {
    Expected<std::pair<std::string, int64_t>> p = lookup(*impl_, parent_ref);
    if (p.ok()) {
      parent_name = p->first;
      parent_version = p->second;
    } else if (!req.parent_.empty()) {
      return p.status().with_context("--parent");
    }
  }

  // Artifacts first (outside the write lock: big copies never block other pushers' commits).
  for (const auto& [file, sha] : files)
    KILN_RETURN_IF_ERROR(impl_->artifacts.put_file(dir / file, sha));

  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  // Under the write lock gc cannot run: re-check that every artifact is still there (a gc may
  // have removed an old unreferenced one between put_file and here).
  for (const auto& [file, sha] : files)
    if (!impl_->artifacts.contains(sha))
      KILN_RETURN_IF_ERROR(impl_->artifacts.put_file(dir / file, sha));
  const std::string now = utc_now_iso8601();
  {
    Query q(*impl_,
            "INSERT INTO models (name, next_version, created_at) VALUES (?1, 1, ?2) "
            "ON CONFLICT (name) DO NOTHING");
    KILN_RETURN_IF_ERROR(q.bind(1, req.name_).bind(2, now).run());
  }
  int64_t version = 0;
  {
    Query q(*impl_, "SELECT next_version FROM models WHERE name = ?1");
    q.bind(1, req.name_);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) return Status::Internal("registry: model row vanished inside a transaction");
    version = q.integer(0);
  }
  {
    Query q(*impl_,
            "INSERT INTO versions (name, version, bundle_sha256, task, description, created_at, "
            "size_bytes, manifest, snapshot_hash, config_hash, parent_name, parent_version, "
            "kiln_version, git_commit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
            "?13, ?14)");
    q.bind(1, req.name_).bind(2, version).bind(3, bundle_sha);
    q.bind(4, manifest.value("task", "")).bind(5, req.description_).bind(6, now).bind(7, total);
    q.bind(8, manifest.dump());
    q.bind(9, lineage_text(lineage, "snapshot_hash"))
        .bind(10, lineage_text(lineage, "config_hash"));
    q.bind(11, parent_name).bind(12, parent_version);
    q.bind(13, lineage_text(lineage, "kiln_version")).bind(14, lineage_text(lineage, "git_commit"));
    KILN_RETURN_IF_ERROR(q.run());
  }
  for (const auto& [file, sha] : files) {
    Query q(*impl_,
            "INSERT INTO version_files (name, version, file, sha256, size) VALUES (?1, ?2, ?3, ?4, "
            "?5)");
    KILN_RETURN_IF_ERROR(q.bind(1, req.name_)
                             .bind(2, version)
                             .bind(3, file)
                             .bind(4, sha)
                             .bind(5, sizes[file])
                             .run());
  }
  for (const auto& [k, v] : req.tags_) {
    Query q(*impl_, "INSERT INTO tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4)");
    KILN_RETURN_IF_ERROR(q.bind(1, req.name_).bind(2, version).bind(3, k).bind(4, v).run());
  }
  {
    Query q(*impl_, "UPDATE models SET next_version = ?2 WHERE name = ?1");
    KILN_RETURN_IF_ERROR(q.bind(1, req.name_).bind(2, version + 1).run());
  }
  KILN_RETURN_IF_ERROR(impl_->catalogue->notify(req.name_));  // NAME@latest moved
  KILN_RETURN_IF_ERROR(txn.commit());
  return load_version(*impl_, req.name_, version);
}

Expected<std::vector<VersionInfo>> SqlModelStore::list(const ListQuery& query) {
  std::vector<WhereClause> where;
  for (const auto& w : query.where_) {
    KILN_ASSIGN_OR_RETURN(WhereClause c, parse_where(w));
    where.push_back(c);
  }
  if (!query.name_.empty()) KILN_RETURN_IF_ERROR(validate_name(query.name_));
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<std::pair<std::string, int64_t>> keys;
  {
    Query q(*impl_, query.name_.empty()
                        ? "SELECT name, version FROM versions ORDER BY name, version"
                        : "SELECT name, version FROM versions WHERE name = ?1 ORDER BY version");
    if (!query.name_.empty()) q.bind(1, query.name_);
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      keys.emplace_back(q.text(0), q.integer(1));
    }
  }
  if (keys.empty() && !query.name_.empty()) return unknown_model(*impl_, query.name_);
  std::vector<VersionInfo> versions;
  std::vector<Json> records;
  for (const auto& [name, version] : keys) {
    KILN_ASSIGN_OR_RETURN(VersionInfo v, load_version(*impl_, name, version));
    Json record = v.to_json();
    bool keep = true;
    for (const auto& w : where) keep = keep && w.matches(record);
    if (!keep) continue;
    record["_index"] = versions.size();
    versions.push_back(std::move(v));
    records.push_back(std::move(record));
  }
  if (query.sort_.empty()) return versions;
  KILN_RETURN_IF_ERROR(sort_records(&records, query.sort_));
  std::vector<VersionInfo> sorted;
  for (const Json& r : records) sorted.push_back(versions[r["_index"].get<size_t>()]);
  return sorted;
}

Expected<VersionInfo> SqlModelStore::show(const std::string& ref) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
  return load_version(*impl_, nv.first, nv.second);
}

Expected<std::vector<VersionInfo>> SqlModelStore::lineage(const std::string& ref) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
  std::vector<VersionInfo> chain;
  std::set<std::pair<std::string, int64_t>> seen;
  while (!nv.first.empty() && seen.insert(nv).second) {
    Expected<VersionInfo> v = load_version(*impl_, nv.first, nv.second);
    if (!v.ok()) break;  // a deleted ancestor ends the walk
    nv = {v->lineage.parent_name, v->lineage.parent_version};
    chain.push_back(std::move(*v));
  }
  return chain;
}

Status SqlModelStore::set_alias(const std::string& name, const std::string& alias,
                                int64_t version) {
  KILN_RETURN_IF_ERROR(validate_name(name));
  KILN_RETURN_IF_ERROR(validate_alias(alias));
  std::lock_guard<std::mutex> lock(impl_->mu);
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  KILN_RETURN_IF_ERROR(check_version_exists(*impl_, name, version));
  KILN_RETURN_IF_ERROR(record_alias(*impl_, name, alias, "set", version));
  return txn.commit();
}

Status SqlModelStore::remove_alias(const std::string& name, const std::string& alias) {
  KILN_RETURN_IF_ERROR(validate_name(name));
  KILN_RETURN_IF_ERROR(validate_alias(alias));
  std::lock_guard<std::mutex> lock(impl_->mu);
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  KILN_RETURN_IF_ERROR(lookup(*impl_, name + "@" + alias).status());
  {
    Query q(*impl_, "SELECT 1 FROM aliases WHERE name = ?1 AND alias = ?2");
    q.bind(1, name).bind(2, alias);
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)  // NAME@latest resolves without an alias row
      return Status::NotFound("model '" + name + "' has no alias '" + alias + "'");
  }
  KILN_RETURN_IF_ERROR(record_alias(*impl_, name, alias, "rm", 0));
  return txn.commit();
}

Expected<int64_t> SqlModelStore::rollback_alias(const std::string& name, const std::string& alias) {
  KILN_RETURN_IF_ERROR(validate_name(name));
  KILN_RETURN_IF_ERROR(validate_alias(alias));
  std::lock_guard<std::mutex> lock(impl_->mu);
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> stack, alias_stack(*impl_, name, alias));
  if (stack.empty()) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> versions, version_numbers(*impl_, name));
    if (versions.empty()) return unknown_model(*impl_, name);
    KILN_ASSIGN_OR_RETURN(std::string exists, what_exists(*impl_, name));
    return Status::NotFound("model '" + name + "' has no alias '" + alias + "' (" + exists + ")");
  }
  stack.pop_back();
  if (stack.empty() || stack.back() == 0)
    return Status::FailedPrecondition(name + "@" + alias +
                                      " has no earlier target to roll back to");
  const int64_t target = stack.back();
  Status exists = check_version_exists(*impl_, name, target);
  if (!exists.ok())
    return Status::FailedPrecondition(name + "@" + alias + ": the previous target, version " +
                                      std::to_string(target) + ", was deleted");
  KILN_RETURN_IF_ERROR(record_alias(*impl_, name, alias, "rollback", target));
  KILN_RETURN_IF_ERROR(txn.commit());
  return target;
}

Expected<std::vector<AliasEvent>> SqlModelStore::alias_history(const std::string& name,
                                                               const std::string& alias) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<AliasEvent> events;
  Query q(*impl_,
          "SELECT action, version, at FROM alias_history WHERE name = ?1 AND alias = ?2 ORDER BY "
          "id");
  q.bind(1, name).bind(2, alias);
  for (;;) {
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    events.push_back(AliasEvent{q.text(0), q.integer(1), q.text(2)});
  }
  return events;
}

Status SqlModelStore::tag(const std::string& ref, const std::string& key,
                          const std::string& value) {
  KILN_RETURN_IF_ERROR(validate_tag(key, value));
  std::lock_guard<std::mutex> lock(impl_->mu);
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
  Query q(*impl_,
          "INSERT INTO tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT "
          "(name, version, key) DO UPDATE SET value = excluded.value");
  KILN_RETURN_IF_ERROR(q.bind(1, nv.first).bind(2, nv.second).bind(3, key).bind(4, value).run());
  return txn.commit();
}

Expected<Json> SqlModelStore::diff(const std::string& ref_a, const std::string& ref_b) {
  KILN_ASSIGN_OR_RETURN(VersionInfo a, show(ref_a));
  KILN_ASSIGN_OR_RETURN(VersionInfo b, show(ref_b));
  Json la = a.to_json()["lineage"], lb = b.to_json()["lineage"];
  Json fa = Json::object(), fb = Json::object();
  for (const auto& [f, s] : a.files) fa[f] = s;
  for (const auto& [f, s] : b.files) fb[f] = s;
  Json ma = flatten_json(a.metrics()), mb = flatten_json(b.metrics());
  return Json{{"a", a.name + "@" + std::to_string(a.version)},
              {"b", b.name + "@" + std::to_string(b.version)},
              {"same_content", a.bundle_sha256 == b.bundle_sha256},
              {"config", diff_maps(config_of(a), config_of(b))},
              {"metrics", diff_maps(ma, mb)},
              {"lineage", diff_maps(flatten_json(la), flatten_json(lb))},
              {"tags", diff_maps(a.to_json()["tags"], b.to_json()["tags"])},
              {"files", diff_maps(fa, fb)}};
}

Expected<fs::path> SqlModelStore::pull(const std::string& ref, const fs::path& out) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
  KILN_ASSIGN_OR_RETURN(auto files, version_files(*impl_, nv.first, nv.second));
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec) || !fs::is_empty(out, ec))
      return Status::AlreadyExists(out.string() + ": exists and is not an empty directory");
    fs::remove(out, ec);
  }
  const std::string where = nv.first + "@" + std::to_string(nv.second);
  KILN_ASSIGN_OR_RETURN(StagingDirectory staging, StagingDirectory::Create(out));
  for (const auto& [file, sha] : files)
    KILN_RETURN_IF_ERROR(impl_->artifacts.copy_verified(sha, staging.path() / file)
                             .with_context(where + " " + file));
  KILN_RETURN_IF_ERROR(staging.publish());
  return out;
}

Status SqlModelStore::remove(const std::string& ref) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  KILN_ASSIGN_OR_RETURN(auto nv, lookup(*impl_, ref));
  const std::string where = nv.first + "@" + std::to_string(nv.second);
  {
    std::vector<std::string> aliases;
    Query q(*impl_, "SELECT alias FROM aliases WHERE name = ?1 AND version = ?2 ORDER BY alias");
    q.bind(1, nv.first).bind(2, nv.second);
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      aliases.push_back(q.text(0));
    }
    if (!aliases.empty())
      return Status::FailedPrecondition(
          "refusing to delete " + where + ": alias " + join(aliases) +
          " points at it (move it with 'kiln registry alias set' or remove it first)");
  }
  for (const char* sql : {"DELETE FROM versions WHERE name = ?1 AND version = ?2",
                          "DELETE FROM version_files WHERE name = ?1 AND version = ?2",
                          "DELETE FROM tags WHERE name = ?1 AND version = ?2"}) {
    Query q(*impl_, sql);
    KILN_RETURN_IF_ERROR(q.bind(1, nv.first).bind(2, nv.second).run());
  }
  KILN_RETURN_IF_ERROR(impl_->catalogue->notify(nv.first));
  return txn.commit();
}

Expected<GcReport> SqlModelStore::gc(int64_t grace_seconds) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  GcReport report;
  // Hold the write lock throughout: no push can commit a version referencing an artifact we are
  // about to remove (a push re-checks its artifacts under this lock before it commits).
  Transaction txn(*impl_);
  KILN_RETURN_IF_ERROR(txn.begin());
  std::set<std::string> referenced, bundles;
  {
    Query q(*impl_, "SELECT DISTINCT sha256 FROM version_files");
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      referenced.insert(q.text(0));
    }
    Query b(*impl_, "SELECT DISTINCT bundle_sha256 FROM versions");
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, b.step());
      if (!row) break;
      bundles.insert(b.text(0));
    }
  }
  std::error_code ec;
  for (const auto& shard : fs::directory_iterator(impl_->artifacts.root(), ec)) {
    if (!shard.is_directory()) continue;
    for (const auto& e : fs::directory_iterator(shard.path(), ec)) {
      const std::string file = e.path().filename().string();
      const bool old = age_seconds(e.path()) >= grace_seconds;
      if (is_sha256_hex(file)) {
        if (referenced.count(file)) continue;
        if (!old) {
          ++report.artifacts_kept_young;
          continue;
        }
        const auto size = static_cast<int64_t>(fs::file_size(e.path(), ec));
        if (fs::remove(e.path(), ec)) {
          ++report.artifacts_removed;
          report.bytes_removed += size;
        }
      } else if (!file.empty() && file[0] == '.' && old) {  // a killed push's temp file
        if (fs::remove(e.path(), ec)) ++report.temp_files_removed;
      }
    }
  }
  for (const auto& e : fs::directory_iterator(impl_->bundles, ec)) {
    const std::string dir = e.path().filename().string();
    if (is_sha256_hex(dir)
            ? !bundles.count(dir)
            : (!dir.empty() && dir[0] == '.' && age_seconds(e.path()) >= grace_seconds)) {
      if (fs::remove_all(e.path(), ec) > 0) ++report.cache_entries_removed;
    }
  }
  KILN_RETURN_IF_ERROR(txn.commit());
  return report;
}

Expected<VerifyReport> SqlModelStore::verify() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  VerifyReport report;
  KILN_RETURN_IF_ERROR(impl_->catalogue->check_integrity(&report.problems));
  {
    Query q(*impl_, "SELECT COUNT(*) FROM versions");
    KILN_ASSIGN_OR_RETURN(bool row, q.step());
    report.versions_checked = row ? q.integer(0) : 0;
  }
  std::map<std::string, std::vector<std::string>> users;  // sha -> "name@v file"
  {
    Query q(*impl_,
            "SELECT sha256, name, version, file FROM version_files ORDER BY sha256, name, version");
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      users[q.text(0)].push_back(q.text(1) + "@" + std::to_string(q.integer(2)) + " " + q.text(3));
    }
  }
  for (const auto& [sha, used_by] : users) {
    ++report.artifacts_checked;
    Status st = impl_->artifacts.check(sha);
    if (st.ok()) continue;
    const std::string what = st.code() == StatusCode::kNotFound
                                 ? impl_->artifacts.path_of(sha).string() + ": missing"
                                 : st.message();
    report.problems.push_back(what + " (used by " + join(used_by) + ")");
  }
  return report;
}

}  // namespace kiln::registry

namespace kiln::registry {
namespace {

/// The registry's tables with the columns Migrate copies, in an order that keeps every
/// reference valid (alias_history without its id: the destination numbers it in source order).
struct TableCopy {
  const char* table;
  const char* columns;
  int count;
  const char* order;
};
constexpr TableCopy kTables[] = {
    {"models", "name, next_version, created_at", 3, "name"},
    {"versions",
     "name, version, bundle_sha256, task, description, created_at, size_bytes, manifest, "
     "snapshot_hash, config_hash, parent_name, parent_version, kiln_version, git_commit",
     14, "name, version"},
    {"version_files", "name, version, file, sha256, size", 5, "name, version, file"},
    {"tags", "name, version, key, value", 4, "name, version, key"},
    {"aliases", "name, alias, version, updated_at", 4, "name, alias"},
    {"alias_history", "name, alias, action, version, at", 5, "id"},
};

}  // namespace

Expected<MigrationReport> SqlModelStore::Migrate(SqlModelStore& from, SqlModelStore& to) {
  Impl& src = *from.impl_;
  Impl& dst = *to.impl_;
  if (&from == &to || src.catalogue->location() == dst.catalogue->location())
    return Status::InvalidArgument("migrate: the source and destination are both " +
                                   src.catalogue->location());
  std::scoped_lock lock(src.mu, dst.mu);
  MigrationReport report;
  // The source's write lock: no push, alias move or gc changes it while we copy.
  Transaction read_lock(src);
  KILN_RETURN_IF_ERROR(read_lock.begin());
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> names, model_names(src));
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> existing, model_names(dst));
  std::vector<std::string> clash;
  for (const auto& n : names)
    if (std::find(existing.begin(), existing.end(), n) != existing.end()) clash.push_back(n);
  if (!clash.empty())
    return Status::FailedPrecondition("the registry at " + dst.catalogue->location() +
                                      " already holds model " + join(clash) +
                                      "; migrate into an empty registry (or delete them there)");

  // Artifacts first (as push does): the destination never references a missing file.
  std::error_code ec;
  if (!fs::equivalent(src.artifacts.root(), dst.artifacts.root(), ec)) {
    Query q(src, "SELECT DISTINCT sha256 FROM version_files ORDER BY sha256");
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) break;
      const std::string sha = q.text(0);
      if (dst.artifacts.contains(sha)) continue;
      KILN_RETURN_IF_ERROR(src.artifacts.check(sha).with_context("migrate"));
      KILN_RETURN_IF_ERROR(dst.artifacts.put_file(src.artifacts.path_of(sha), sha));
      ++report.artifacts_copied;
      report.bytes_copied += static_cast<int64_t>(fs::file_size(dst.artifacts.path_of(sha), ec));
    }
  }

  Transaction txn(dst);
  KILN_RETURN_IF_ERROR(txn.begin());
  for (const TableCopy& t : kTables) {
    std::string placeholders;
    for (int i = 1; i <= t.count; ++i) placeholders += (i > 1 ? ", ?" : "?") + std::to_string(i);
    const std::string insert = std::string("INSERT INTO ") + t.table + " (" + t.columns +
                               ") VALUES (" + placeholders + ")";
    Query rows(src,
               std::string("SELECT ") + t.columns + " FROM " + t.table + " ORDER BY " + t.order);
    int64_t copied = 0;
    for (;;) {
      KILN_ASSIGN_OR_RETURN(bool row, rows.step());
      if (!row) break;
      Query q(dst, insert);
      for (int i = 0; i < t.count; ++i) q.bind(i + 1, rows.text(i));
      KILN_RETURN_IF_ERROR(q.run().with_context(std::string("migrate ") + t.table));
      ++copied;
    }
    const std::string table = t.table;
    if (table == "models") report.models = copied;
    if (table == "versions") report.versions = copied;
    if (table == "tags") report.tags = copied;
    if (table == "aliases") report.aliases = copied;
    if (table == "alias_history") report.alias_events = copied;
  }
  for (const auto& n : names) KILN_RETURN_IF_ERROR(dst.catalogue->notify(n));
  KILN_RETURN_IF_ERROR(txn.commit());
  return report;
}

}  // namespace kiln::registry
