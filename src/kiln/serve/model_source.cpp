#include "kiln/serve/model_source.h"

#include "kiln/core/hash.h"
#include "kiln/model/bundle.h"
#include "kiln/registry/model_store.h"
#include "kiln/registry/ref.h"

namespace kiln::serve {

namespace fs = std::filesystem;

Expected<ResolvedModel> BundlePathSource::resolve(const std::string& ref) {
  const fs::path given(ref);
  std::error_code ec;
  if (!fs::is_directory(given, ec)) return Status::NotFound(ref + ": no such bundle directory");
  const fs::path dir = model::bundle_dir_of(given);
  const fs::path manifest = dir / "manifest.json";
  if (!fs::exists(manifest, ec))
    return Status::NotFound(manifest.string() + ": missing (not a bundle)");
  ResolvedModel m;
  fs::path clean = given.lexically_normal();  // a run directory names the model, not "bundle"
  if (clean.filename().empty()) clean = clean.parent_path();
  m.name = clean.filename().string();
  m.version = 0;
  m.bundle_dir = dir;
  KILN_ASSIGN_OR_RETURN(m.bundle_sha256, sha256_file(manifest));
  return m;
}

RegistryModelSource::RegistryModelSource() = default;
RegistryModelSource::~RegistryModelSource() = default;

Expected<registry::ModelStore*> RegistryModelSource::store() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!store_) {
    KILN_ASSIGN_OR_RETURN(store_, registry::open_model_store());
  }
  return store_.get();
}

Expected<ResolvedModel> RegistryModelSource::resolve(const std::string& ref) {
  KILN_ASSIGN_OR_RETURN(registry::ModelRef parsed, registry::parse_model_ref(ref));
  registry::ResolvedModel r;
  if (parsed.is_path()) {
    KILN_ASSIGN_OR_RETURN(r, registry::resolve_model_ref(ref));
  } else {
    KILN_ASSIGN_OR_RETURN(registry::ModelStore * s, store());
    KILN_ASSIGN_OR_RETURN(r, s->resolve(ref));  // the store is thread-safe
  }
  ResolvedModel m;
  m.name = r.name;
  m.version = r.version;
  m.bundle_dir = r.bundle_dir;
  m.bundle_sha256 = r.bundle_sha256;
  return m;
}

bool RegistryModelSource::notifies_changes() {
  // Only once a registry reference opened the store: serving bundle paths alone never opens
  // (or creates) a registry.
  std::lock_guard<std::mutex> lock(mu_);
  return store_ && store_->notifies_changes();
}

Expected<bool> RegistryModelSource::wait_for_change(std::chrono::milliseconds timeout) {
  KILN_ASSIGN_OR_RETURN(registry::ModelStore * s, store());
  return s->wait_for_change(timeout);
}

}  // namespace kiln::serve
