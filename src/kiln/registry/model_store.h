#pragma once

// The model registry: immutable numbered versions of named models, aliases with history, tags,
// lineage, and a content-addressed artifact store. ModelStore is the seam between callers (CLI,
// serve, compress, pipelines) and the backend (SqlModelStore on an SQLite or PostgreSQL
// catalogue).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/registry/ref.h"

namespace kiln::registry {

namespace fs = std::filesystem;

/// What a reference resolves to right now.
struct ResolvedModel {
  std::string name;
  int64_t version = 0;  ///< 0 for a bundle path
  fs::path bundle_dir;  ///< verified bundle on local disk; read_bundle() loads (and re-hashes) it
  std::string
      bundle_sha256;  ///< identity: sha256 of manifest.json, changes iff the content changes
};

/// Where a version came from.
struct Lineage {
  std::string snapshot_hash;
  std::string config_hash;
  std::string parent_name;     ///< empty when none
  int64_t parent_version = 0;  ///< 0 when none
  std::string kiln_version;
  std::string git_commit;
};

/// One registered version as stored: a plain value; thread-compatible.
struct VersionInfo {
  std::string name;
  int64_t version = 0;
  std::string bundle_sha256;
  std::string description;
  std::string created_at;  ///< ISO 8601 UTC, when it was pushed
  int64_t size_bytes = 0;  ///< sum of the bundle's file sizes
  std::string task;
  Json manifest;                             ///< the bundle's manifest.json
  std::map<std::string, std::string> files;  ///< file name -> sha256 (manifest.json included)
  std::map<std::string, std::string> tags;
  std::vector<std::string> aliases;  ///< aliases pointing here now
  Lineage lineage;

  /// The test metrics (manifest metrics.test, else the flat numbers of manifest metrics), with
  /// the validation ones under "val" when present.
  Json metrics() const;
  /// {"name", "version", "bundle_sha256", "task", "description", "created_at", "size_bytes",
  ///  "metrics", "tags", "aliases", "lineage", "files"} (+ "manifest" when `with_manifest`).
  Json to_json(bool with_manifest = false) const;
};

/// Options of ModelStore::push().
struct PushRequest {
  PushRequest(fs::path bundle_dir, std::string name)
      : bundle_dir_(std::move(bundle_dir)), name_(std::move(name)) {}
  PushRequest& tag(const std::string& key, const std::string& value) {
    tags_[key] = value;
    return *this;
  }
  PushRequest& description(std::string v) {
    description_ = std::move(v);
    return *this;
  }
  /// The version this one was fine-tuned or compressed from (NAME@VERSION or NAME@ALIAS). When
  /// unset, a manifest lineage.parent of the form "NAME@VERSION" is used.
  PushRequest& parent(std::string v) {
    parent_ = std::move(v);
    return *this;
  }
  fs::path bundle_dir_;
  std::string name_;
  std::map<std::string, std::string> tags_;
  std::string description_;
  std::string parent_;
};

/// Options of ModelStore::list().
struct ListQuery {
  ListQuery& name(std::string v) {
    name_ = std::move(v);
    return *this;
  }
  /// A filter "KEY OP VALUE" (OP: = == != < <= > >=) over the fields of VersionInfo::to_json()
  /// (e.g. "metrics.accuracy>0.9", "tags.stage=prod", "version>=3"); several are ANDed.
  ListQuery& where(std::string v) {
    where_.push_back(std::move(v));
    return *this;
  }
  /// A field of VersionInfo::to_json() (e.g. "metrics.accuracy"); a leading '-' sorts descending.
  /// Default: name, then version.
  ListQuery& sort(std::string v) {
    sort_ = std::move(v);
    return *this;
  }
  std::string name_;
  std::vector<std::string> where_;
  std::string sort_;
};

/// One entry of an alias's history, oldest first.
struct AliasEvent {
  std::string action;   ///< "set", "rollback" or "rm"
  int64_t version = 0;  ///< target after the event (0 after "rm")
  std::string at;       ///< ISO 8601 UTC
};

/// Result of ModelStore::gc().
struct GcReport {
  int64_t artifacts_removed = 0;
  int64_t bytes_removed = 0;
  int64_t cache_entries_removed = 0;
  int64_t temp_files_removed = 0;
  int64_t artifacts_kept_young = 0;  ///< unreferenced but younger than the grace period
  Json to_json() const;
};

/// Result of ModelStore::verify(): clean when `problems` is empty.
struct VerifyReport {
  int64_t artifacts_checked = 0;
  int64_t versions_checked = 0;
  std::vector<std::string> problems;  ///< each names the artifact, file and versions affected
  bool clean() const { return problems.empty(); }
  Json to_json() const;
};

/// The registry. Implementations are thread-safe (one object may be shared) and
/// multi-process-safe (several processes may open the same root). Every call blocks on disk and
/// database I/O. Versions are immutable; numbers are 1, 2, 3... per name, never reused.
///
///   KILN_ASSIGN_OR_RETURN(auto store, open_model_store());
///   KILN_ASSIGN_OR_RETURN(VersionInfo v, store->push(PushRequest("runs/x/bundle", "fmnist")));
///   KILN_RETURN_IF_ERROR(store->set_alias("fmnist", "production", v.version));
///   KILN_ASSIGN_OR_RETURN(ResolvedModel m, store->resolve("fmnist@production"));
///   KILN_ASSIGN_OR_RETURN(model::Bundle b, model::read_bundle(m.bundle_dir));
class ModelStore {
 public:
  virtual ~ModelStore() = default;

  /// NAME@VERSION or NAME@ALIAS (NAME@latest: the highest version unless an alias is so named)
  /// to a verified bundle directory on local disk, materialised on first use (artifacts
  /// re-hashed then; later calls are one indexed read and a stat). NotFound lists what exists;
  /// DataLoss names a corrupt artifact. Bundle paths are InvalidArgument here (see
  /// resolve_model_ref).
  virtual Expected<ResolvedModel> resolve(const std::string& ref) = 0;

  /// Stores the bundle's files as artifacts and records the next version of the name in one
  /// transaction: a crash leaves no visible version. InvalidArgument for a bad name, tag or
  /// bundle; DataLoss when the bundle's files do not match its manifest.
  virtual Expected<VersionInfo> push(const PushRequest& request) = 0;

  /// Versions matching the query. InvalidArgument for a bad --where/--sort expression.
  virtual Expected<std::vector<VersionInfo>> list(const ListQuery& query) = 0;

  /// One version with its tags, aliases and lineage.
  virtual Expected<VersionInfo> show(const std::string& ref) = 0;

  /// The version, then its parent, grandparent... as far as the registry knows them.
  virtual Expected<std::vector<VersionInfo>> lineage(const std::string& ref) = 0;

  /// Points NAME@ALIAS at VERSION (recorded in the alias history).
  virtual Status set_alias(const std::string& name, const std::string& alias, int64_t version) = 0;
  /// Removes the alias (recorded in the history).
  virtual Status remove_alias(const std::string& name, const std::string& alias) = 0;
  /// Points the alias back at its previous target (undoing the last set; repeated calls walk
  /// further back). FailedPrecondition when there is no earlier target. Returns the new target.
  virtual Expected<int64_t> rollback_alias(const std::string& name, const std::string& alias) = 0;
  /// The alias's history, oldest first.
  virtual Expected<std::vector<AliasEvent>> alias_history(const std::string& name,
                                                          const std::string& alias) = 0;

  /// Sets (or replaces) tag `key` on a version. Tags are the only mutable part of a version.
  virtual Status tag(const std::string& ref, const std::string& key, const std::string& value) = 0;

  /// {"a", "b", "config": {...}, "metrics": {...}, "lineage": {...}, "files": {...}}: each holds
  /// the keys whose values differ, as {"a": x, "b": y}.
  virtual Expected<Json> diff(const std::string& ref_a, const std::string& ref_b) = 0;

  /// Writes a verified copy of the version's bundle to `out` (which must not exist or be empty),
  /// built aside and renamed into place. DataLoss names a corrupt or missing artifact.
  virtual Expected<fs::path> pull(const std::string& ref, const fs::path& out) = 0;

  /// Deletes a version (its number is never reused). FailedPrecondition while an alias points
  /// at it. Artifacts stay until gc().
  virtual Status remove(const std::string& ref) = 0;

  /// Removes artifacts no version references and older than `grace_seconds` (a push writes its
  /// artifacts before it commits its version; the grace period keeps gc from racing it), stale
  /// temp files, and materialised bundles of deleted versions.
  virtual Expected<GcReport> gc(int64_t grace_seconds) = 0;

  /// Re-hashes every referenced artifact. The report names each mismatch or missing file.
  virtual Expected<VerifyReport> verify() = 0;

  /// The registry's root directory (artifacts/ and bundles/; registry.db with SQLite).
  virtual fs::path root() const = 0;
  /// Where the catalogue is: ROOT/registry.db, or postgresql://host:port/db (password hidden).
  virtual std::string catalogue_location() const = 0;

  /// True when wait_for_change() reports changes by other processes as they commit
  /// (PostgreSQL LISTEN/NOTIFY); SQLite registries are polled instead.
  virtual bool notifies_changes() const = 0;
  /// Blocks up to `timeout` for a committed change (a push, an alias set, rolled back or
  /// removed, a delete) by anyone; true when one arrived. Without notifications: sleeps the
  /// timeout and returns false. Thread-safe beside the other calls.
  virtual Expected<bool> wait_for_change(std::chrono::milliseconds timeout) = 0;
};

/// Options of open_model_store().
struct StoreOptions {
  /// Directory holding registry.db, artifacts/ and bundles/. Default: kiln_home().
  StoreOptions& root(fs::path v) {
    root_ = std::move(v);
    return *this;
  }
  /// The catalogue: "" (default) takes $KILN_REGISTRY, else the `catalogue:` line of
  /// ROOT/registry.yaml, else SQLite at ROOT/registry.db. "sqlite" is SQLite at ROOT;
  /// "postgresql://..." (or "postgres://...") a PostgreSQL database, whose artifacts still live
  /// under ROOT (a directory every host mounts).
  StoreOptions& catalogue(std::string v) {
    catalogue_ = std::move(v);
    return *this;
  }
  /// How long a writer waits for another process's transaction (SQLite busy_timeout).
  StoreOptions& busy_timeout_ms(int v) {
    busy_timeout_ms_ = v;
    return *this;
  }
  fs::path root_;
  std::string catalogue_;
  int busy_timeout_ms_ = 60000;
};

/// Opens (creating when absent) the registry: the catalogue StoreOptions::catalogue picks
/// (SQLite in WAL mode at ROOT/registry.db by default), artifacts under ROOT/artifacts/,
/// materialised bundles under ROOT/bundles/. InvalidArgument names an unknown catalogue and
/// where it came from; Unavailable an unreachable PostgreSQL.
Expected<std::unique_ptr<ModelStore>> open_model_store(const StoreOptions& options = {});

/// Convenience used by eval/predict/export/serve: a bundle path resolves to itself (name = the
/// directory name, version 0, bundle_sha256 = sha256 of its manifest.json); NAME@... goes
/// through the store at kiln_home(). Does not verify a bundle path (read_bundle does).
Expected<ResolvedModel> resolve_model_ref(const std::string& ref);

}  // namespace kiln::registry
