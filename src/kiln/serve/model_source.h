#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "kiln/core/expected.h"

namespace kiln::registry {
class ModelStore;
}

namespace kiln::serve {

/// Where a model reference points now: the served name, a version, a verified local bundle
/// directory, and a digest that changes iff the bundle's content changes.
struct ResolvedModel {
  std::string name;
  int64_t version = 0;  ///< registry version; 0 for a bundle path
  std::filesystem::path bundle_dir;
  std::string bundle_sha256;
};

/// Resolves `--model` references; the model manager polls it for hot reload. Implementations must
/// be thread-safe (resolve() is called from the poll thread) and must not block for long.
class ModelSource {
 public:
  virtual ~ModelSource() = default;
  virtual Expected<ResolvedModel> resolve(const std::string& ref) = 0;
  /// True when wait_for_change() reports changes as they commit (a PostgreSQL registry): the
  /// manager then re-resolves at once instead of at the next poll.
  virtual bool notifies_changes() { return false; }
  /// Blocks up to `timeout` for a change; true when one arrived. Default: false, at once.
  virtual Expected<bool> wait_for_change(std::chrono::milliseconds timeout) {
    (void)timeout;
    return false;
  }
};

/// Bundle directories given by path (a symlink to a bundle works, and swapping the link is the
/// atomic way to roll out a new bundle). name = the directory's (or link's) name, version 0 (the
/// manager then numbers the loads it serves 1, 2, ...), bundle_sha256 = sha256 of manifest.json
/// (which lists the sha256 of every file).
class BundlePathSource : public ModelSource {
 public:
  Expected<ResolvedModel> resolve(const std::string& ref) override;
};

/// What `kiln serve` uses: registry references (NAME@VERSION, NAME@ALIAS, NAME@latest) through
/// the registry at kiln_home() (its catalogue as open_model_store() picks it), and bundle
/// directories as BundlePathSource does (registry::resolve_model_ref). The store is opened on
/// first use (the first registry reference) and kept. An alias moved by `kiln registry alias set`
/// is seen at the next poll on SQLite, and at once on PostgreSQL (LISTEN/NOTIFY). Thread-safe.
class RegistryModelSource : public ModelSource {
 public:
  RegistryModelSource();
  ~RegistryModelSource() override;
  Expected<ResolvedModel> resolve(const std::string& ref) override;
  bool notifies_changes() override;
  Expected<bool> wait_for_change(std::chrono::milliseconds timeout) override;

 private:
  /// The store, opened on first use; null with the error when it cannot be opened.
  Expected<registry::ModelStore*> store();
  std::mutex mu_;
  std::unique_ptr<registry::ModelStore> store_;
};

}  // namespace kiln::serve
