#pragma once

#include <memory>

#include "kiln/registry/model_store.h"

namespace kiln::registry {

/// The default ModelStore backend: one SQLite database in WAL mode (ROOT/registry.db), a
/// content-addressed ArtifactStore (ROOT/artifacts/) and verified, read-only materialised
/// bundles (ROOT/bundles/<bundle sha256>/, hard links to the artifacts, so tampering with an
/// artifact is also refused by read_bundle on every load).
///
/// Crash safety: artifacts are written (temp + fsync + rename) before the version row; the row,
/// its files and tags go in one transaction; version numbers are allocated inside BEGIN
/// IMMEDIATE (busy_timeout set), so concurrent pushers in different processes never collide.
/// Thread-safe: one connection behind a mutex. Multi-process-safe through SQLite locking.
class SqliteModelStore : public ModelStore {
 public:
  /// Opens or creates the registry under options.root_ (kiln_home() when empty).
  static Expected<std::unique_ptr<SqliteModelStore>> Create(const StoreOptions& options);
  ~SqliteModelStore() override;

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

  struct Impl;

 private:
  explicit SqliteModelStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::registry
