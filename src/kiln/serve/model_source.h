#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "kiln/core/expected.h"

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
/// the registry under kiln_home(), and bundle directories as BundlePathSource does
/// (registry::resolve_model_ref). Each resolve opens the store (SQLite, WAL): an alias moved by
/// `kiln registry alias set` is seen at the next poll. Thread-safe.
class RegistryModelSource : public ModelSource {
 public:
  Expected<ResolvedModel> resolve(const std::string& ref) override;
};

}  // namespace kiln::serve
