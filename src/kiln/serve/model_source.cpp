#include "kiln/serve/model_source.h"

#include "kiln/core/hash.h"
#include "kiln/model/bundle.h"
#include "kiln/registry/model_store.h"

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

Expected<ResolvedModel> RegistryModelSource::resolve(const std::string& ref) {
  KILN_ASSIGN_OR_RETURN(registry::ResolvedModel r, registry::resolve_model_ref(ref));
  ResolvedModel m;
  m.name = r.name;
  m.version = r.version;
  m.bundle_dir = r.bundle_dir;
  m.bundle_sha256 = r.bundle_sha256;
  return m;
}

}  // namespace kiln::serve
