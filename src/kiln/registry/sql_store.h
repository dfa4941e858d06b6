#pragma once

#include <memory>

#include "kiln/registry/catalogue.h"
#include "kiln/registry/model_store.h"

namespace kiln::registry {

/// The ModelStore on a SQL catalogue (SQLite on one machine, PostgreSQL shared by many), a
/// content-addressed ArtifactStore (ROOT/artifacts/) and verified, read-only materialised
/// bundles (ROOT/bundles/<bundle sha256>/, hard links to the artifacts, so tampering with an
/// artifact is also refused by read_bundle on every load). With PostgreSQL, ROOT is a directory
/// every host mounts.
///
/// Crash safety: artifacts are written (temp + fsync + rename) before the version row; the row,
/// its files and tags go in one transaction; version numbers are allocated inside the
/// catalogue's exclusive write transaction, so concurrent pushers in different processes (or on
/// different hosts) never collide and never leave gaps. Thread-safe: one catalogue connection
/// behind a mutex (wait_for_change() uses its own).
/// What SqlModelStore::Migrate copied.
struct MigrationReport {
  int64_t models = 0;
  int64_t versions = 0;
  int64_t aliases = 0;
  int64_t alias_events = 0;
  int64_t tags = 0;
  int64_t artifacts_copied = 0;  ///< 0 when both stores share one root
  int64_t bytes_copied = 0;
  Json to_json() const;
};

class SqlModelStore : public ModelStore {
 public:
  /// A store on `catalogue` with its files under `root` (created when absent).
  static Expected<std::unique_ptr<SqlModelStore>> Create(std::unique_ptr<Catalogue> catalogue,
                                                         const fs::path& root);
  ~SqlModelStore() override;

  Expected<ResolvedModel> resolve(const std::string& ref) override;
  Expected<VersionInfo> push(const PushRequest& request) override;
  Expected<std::vector<VersionInfo>> list(const ListQuery& query) override;
  Expected<VersionInfo> show(const std::string& ref) override;
  Expected<std::vector<VersionInfo>> lineage(const std::string& ref) override;
  Status set_alias(const std::string& name, const std::string& alias, int64_t version) override;
  Status remove_alias(const std::string& name, const std::string& alias) override;
  Expected<int64_t> rollback_alias(const std::string& name, const std::string& alias) override;
  Expected<std::vector<AliasEvent>> alias_history(const std::string& name,
                                                  const std::string& alias) override;
  Status tag(const std::string& ref, const std::string& key, const std::string& value) override;
  Expected<Json> diff(const std::string& ref_a, const std::string& ref_b) override;
  Expected<fs::path> pull(const std::string& ref, const fs::path& out) override;
  Status remove(const std::string& ref) override;
  Expected<GcReport> gc(int64_t grace_seconds) override;
  Expected<VerifyReport> verify() override;
  fs::path root() const override;
  std::string catalogue_location() const override;
  bool notifies_changes() const override;
  Expected<bool> wait_for_change(std::chrono::milliseconds timeout) override;

  /// Copies every model of `from` into `to`, preserving version numbers, next numbers (deleted
  /// versions stay unused), creation times, tags, lineage, aliases and their whole history; the
  /// artifacts are copied (verified) when the roots differ. One transaction on `to` (all or
  /// nothing) while `from` is write-locked. FailedPrecondition, naming them, when `to` already
  /// holds a model of the same name.
  static Expected<MigrationReport> Migrate(SqlModelStore& from, SqlModelStore& to);

  struct Impl;

 private:
  explicit SqlModelStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The store open_model_store() opens, as its concrete type.
Expected<std::unique_ptr<SqlModelStore>> open_sql_store(const StoreOptions& options = {});

}  // namespace kiln::registry
