#include "kiln/registry/model_store.h"

#include <cstdlib>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/yaml.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/sql_store.h"

namespace kiln::registry {

Json VersionInfo::metrics() const {
  Json out = Json::object();
  const Json m = manifest.value("metrics", Json::object());
  if (!m.is_object()) return out;
  if (m.contains("test") && m.at("test").is_object()) {
    out = m.at("test");
    if (m.contains("val") && m.at("val").is_object()) out["val"] = m.at("val");
    return out;
  }
  for (const auto& [k, v] : m.items())
    if (v.is_number() || v.is_string() || v.is_boolean()) out[k] = v;
  return out;
}

Json VersionInfo::to_json(bool with_manifest) const {
  Json tags_json = Json::object();
  for (const auto& [k, v] : tags) tags_json[k] = v;
  Json files_json = Json::object();
  for (const auto& [f, s] : files) files_json[f] = s;
  Json parent = lineage.parent_name.empty()
                    ? Json()
                    : Json(lineage.parent_name + "@" + std::to_string(lineage.parent_version));
  Json j = {{"name", name},
            {"version", version},
            {"ref", name + "@" + std::to_string(version)},
            {"bundle_sha256", bundle_sha256},
            {"task", task},
            {"description", description},
            {"created_at", created_at},
            {"size_bytes", size_bytes},
            {"metrics", metrics()},
            {"tags", tags_json},
            {"aliases", aliases},
            {"lineage",
             {{"snapshot_hash", lineage.snapshot_hash},
              {"config_hash", lineage.config_hash},
              {"parent", parent},
              {"kiln_version", lineage.kiln_version},
              {"git_commit", lineage.git_commit}}},
            {"files", files_json}};
  if (with_manifest) j["manifest"] = manifest;
  return j;
}

Json GcReport::to_json() const {
  return {{"artifacts_removed", artifacts_removed},
          {"bytes_removed", bytes_removed},
          {"cache_entries_removed", cache_entries_removed},
          {"temp_files_removed", temp_files_removed},
          {"artifacts_kept_young", artifacts_kept_young}};
}

Json VerifyReport::to_json() const {
  return {{"clean", clean()},
          {"versions_checked", versions_checked},
          {"artifacts_checked", artifacts_checked},
          {"problems", problems}};
}

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

/// The catalogue setting and where it came from (for error messages).
Expected<std::pair<std::string, std::string>> catalogue_setting(const StoreOptions& options,
                                                                const fs::path& root) {
  if (!options.catalogue_.empty())
    return std::make_pair(options.catalogue_, std::string("catalogue"));
  if (const char* env = std::getenv("KILN_REGISTRY"); env != nullptr && *env != '\0')
    return std::make_pair(std::string(env), std::string("KILN_REGISTRY"));
  const fs::path config = root / "registry.yaml";
  std::error_code ec;
  if (!fs::exists(config, ec)) return std::make_pair(std::string("sqlite"), std::string());
  KILN_ASSIGN_OR_RETURN(Json doc, read_yaml_file(config));
  if (!doc.is_object() || !doc.contains("catalogue") || !doc.at("catalogue").is_string())
    return Status::InvalidArgument(config.string() +
                                   ": expected 'catalogue: sqlite' or 'catalogue: "
                                   "postgresql://HOST:PORT/DB'");
  return std::make_pair(doc.at("catalogue").get<std::string>(), config.string());
}

}  // namespace

Json MigrationReport::to_json() const {
  return {{"models", models},
          {"versions", versions},
          {"aliases", aliases},
          {"alias_events", alias_events},
          {"tags", tags},
          {"artifacts_copied", artifacts_copied},
          {"bytes_copied", bytes_copied}};
}

Expected<std::unique_ptr<SqlModelStore>> open_sql_store(const StoreOptions& options) {
  const fs::path root = options.root_.empty() ? kiln_home() : options.root_;
  KILN_ASSIGN_OR_RETURN(auto setting, catalogue_setting(options, root));
  const auto& [catalogue, source] = setting;
  std::unique_ptr<Catalogue> opened;
  if (catalogue == "sqlite") {
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec)
      return Status::IoError("cannot create directory " + root.string() + ": " + ec.message());
    KILN_ASSIGN_OR_RETURN(opened,
                          open_sqlite_catalogue(root / "registry.db", options.busy_timeout_ms_));
  } else if (starts_with(catalogue, "postgresql://") || starts_with(catalogue, "postgres://")) {
    KILN_ASSIGN_OR_RETURN(opened, open_postgres_catalogue(catalogue));
  } else {
    return Status::InvalidArgument((source.empty() ? std::string("registry") : source) +
                                   ": unknown catalogue '" + redact_url(catalogue) +
                                   "' (expected 'sqlite' or a postgresql://HOST:PORT/DB URL)");
  }
  return SqlModelStore::Create(std::move(opened), root);
}

Expected<std::unique_ptr<ModelStore>> open_model_store(const StoreOptions& options) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<SqlModelStore> store, open_sql_store(options));
  return std::unique_ptr<ModelStore>(std::move(store));
}

Expected<ResolvedModel> resolve_model_ref(const std::string& ref) {
  KILN_ASSIGN_OR_RETURN(ModelRef parsed, parse_model_ref(ref));
  if (parsed.is_path()) {
    ResolvedModel r;
    r.bundle_dir = model::bundle_dir_of(parsed.path);
    fs::path p = parsed.path;
    if (p.filename().empty()) p = p.parent_path();
    r.name = p.filename().string();
    r.version = 0;
    std::error_code ec;
    if (!fs::is_directory(parsed.path, ec))
      return Status::NotFound(ref +
                              ": no such bundle directory (a reference is NAME@VERSION, "
                              "NAME@ALIAS or a bundle directory)");
    KILN_ASSIGN_OR_RETURN(std::string manifest, read_file(r.bundle_dir / "manifest.json"));
    r.bundle_sha256 = sha256_hex(manifest);
    return r;
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ModelStore> store, open_model_store());
  return store->resolve(ref);
}

}  // namespace kiln::registry
