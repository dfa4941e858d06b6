// `kiln registry <verb>`: push, list, show, alias, rollback, tag, diff, pull, delete, gc, verify,
// migrate.
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/json.h"
#include "kiln/registry/model_store.h"
#include "kiln/registry/sql_store.h"
#include "kiln/registry/torchscript_import.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;
using registry::ModelStore;
using registry::VersionInfo;

Expected<std::unique_ptr<ModelStore>> open_store() { return registry::open_model_store(); }

std::string human_size(int64_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20))
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  else if (bytes >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(bytes) / 1024);
  else
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  return buf;
}

std::string join(const std::vector<std::string>& items, const std::string& sep = ",") {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : sep) + i;
  return s;
}

/// "accuracy 0.93" / "r2 0.41" / "" : the headline metric of a version.
std::string headline(const VersionInfo& v) {
  const Json m = v.metrics();
  for (const char* key : {"accuracy", "r2", "mse"})
    if (m.contains(key) && m.at(key).is_number()) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%s=%.4f", key, m.at(key).get<double>());
      return buf;
    }
  return "-";
}

Expected<std::pair<std::string, std::string>> split_kv(const std::string& text,
                                                       const std::string& what) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    return Status::InvalidArgument(what + " '" + text + "': expected KEY=VALUE");
  return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
}

// ---- push

struct PushArgs {
  std::string source;
  std::string name;
  std::vector<std::string> tags;
  std::string description;
  std::string format = "bundle";
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::string labels;
  std::string parent;
  bool json = false;
};

int run_push(const PushArgs& a) {
  Status valid = registry::validate_name(a.name).with_context("--name");
  if (!valid.ok()) return report_failure(valid);
  registry::PushRequest req(a.source, a.name);
  for (const auto& t : a.tags) {
    auto kv = split_kv(t, "--tag");
    if (!kv.ok()) return report_failure(kv.status());
    req.tag(kv->first, kv->second);
  }
  req.description(a.description).parent(a.parent);
  fs::path temp;
  if (a.format == "torchscript") {
    registry::TorchScriptImport imp;
    for (const auto& s : a.inputs) {
      auto d = registry::parse_tensor_decl(s, "--input");
      if (!d.ok()) return report_failure(d.status());
      imp.inputs.push_back(*d);
    }
    for (const auto& s : a.outputs) {
      auto d = registry::parse_tensor_decl(s, "--output");
      if (!d.ok()) return report_failure(d.status());
      imp.outputs.push_back(*d);
    }
    std::stringstream ss(a.labels);
    for (std::string l; std::getline(ss, l, ',');)
      if (!l.empty()) imp.labels.push_back(l);
    if (!engine_hooks().import_torchscript) return hand_off_to_engine();  // loads the module
    auto dir = make_temp_directory("kiln-push-");
    if (!dir.ok()) return report_failure(dir.status());
    temp = *dir;
    auto bundle = engine_hooks().import_torchscript(a.source, imp, temp / "bundle");
    if (!bundle.ok()) {
      fs::remove_all(temp);
      return report_failure(bundle.status());
    }
    req.bundle_dir_ = *bundle;
  } else if (a.format != "bundle") {
    return report_failure(Status::InvalidArgument("--format: '" + a.format +
                                                  "' is not supported (bundle, torchscript)"));
  } else if (!a.inputs.empty() || !a.outputs.empty() || !a.labels.empty()) {
    return report_failure(Status::InvalidArgument(
        "--input/--output/--labels declare a TorchScript file's signature: add --format "
        "torchscript (a bundle carries its own)"));
  }
  auto store = open_store();
  Expected<VersionInfo> v =
      store.ok() ? (*store)->push(req) : Expected<VersionInfo>(store.status());
  if (!temp.empty()) fs::remove_all(temp);
  if (!v.ok()) return report_failure(v.status());
  if (a.json) {
    std::cout << v->to_json().dump(2) << "\n";
  } else {
    std::cout << "pushed " << v->name << "@" << v->version << " (" << v->task << ", "
              << human_size(v->size_bytes) << ", sha256 " << v->bundle_sha256.substr(0, 12)
              << ")\n";
  }
  return 0;
}

// ---- list / show

struct ListArgs {
  std::string name;
  std::vector<std::string> where;
  std::string sort;
  bool json = false;
};

int run_list(const ListArgs& a) {
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  registry::ListQuery q;
  q.name(a.name).sort(a.sort);
  for (const auto& w : a.where) q.where(w);
  auto versions = (*store)->list(q);
  if (!versions.ok()) return report_failure(versions.status());
  if (a.json) {
    Json out = Json::array();
    for (const auto& v : *versions) out.push_back(v.to_json());
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%-24s %7s %-15s %-18s %-10s %-20s %-21s %s\n", "NAME", "VERSION", "TASK", "METRIC",
              "SIZE", "ALIASES", "CREATED", "TAGS");
  for (const auto& v : *versions) {
    std::vector<std::string> tags;
    for (const auto& [k, val] : v.tags) tags.push_back(k + "=" + val);
    std::printf("%-24s %7lld %-15s %-18s %-10s %-20s %-21s %s\n", v.name.c_str(),
                static_cast<long long>(v.version), v.task.c_str(), headline(v).c_str(),
                human_size(v.size_bytes).c_str(), v.aliases.empty() ? "-" : join(v.aliases).c_str(),
                v.created_at.c_str(), tags.empty() ? "-" : join(tags).c_str());
  }
  return 0;
}

void print_version(const VersionInfo& v) {
  std::cout << v.name << "@" << v.version << "\n";
  std::cout << "  task         " << v.task << "\n";
  if (!v.description.empty()) std::cout << "  description  " << v.description << "\n";
  std::cout << "  created      " << v.created_at << "\n";
  std::cout << "  size         " << human_size(v.size_bytes) << "\n";
  std::cout << "  sha256       " << v.bundle_sha256 << "\n";
  std::cout << "  aliases      " << (v.aliases.empty() ? "-" : join(v.aliases, ", ")) << "\n";
  std::vector<std::string> tags;
  for (const auto& [k, val] : v.tags) tags.push_back(k + "=" + val);
  std::cout << "  tags         " << (tags.empty() ? "-" : join(tags, ", ")) << "\n";
  const Json m = v.metrics();
  for (const auto& [k, val] : m.items())
    if (val.is_number()) std::cout << "  metric       " << k << " " << val.get<double>() << "\n";
  const Json sig = v.manifest.value("signature", Json::object());
  for (const char* side : {"inputs", "outputs"})
    if (sig.contains(side))
      for (const auto& t : sig.at(side))
        std::cout << "  " << (side[0] == 'i' ? "input " : "output") << "       "
                  << t.value("name", "") << " " << t.value("dtype", "") << " "
                  << t.value("shape", Json::array()).dump() << "\n";
  const auto& l = v.lineage;
  std::cout << "  lineage      snapshot "
            << (l.snapshot_hash.empty() ? "-" : l.snapshot_hash.substr(0, 12)) << ", config "
            << (l.config_hash.empty() ? "-" : l.config_hash.substr(0, 12)) << ", parent "
            << (l.parent_name.empty() ? "-"
                                      : l.parent_name + "@" + std::to_string(l.parent_version))
            << ", kiln " << (l.kiln_version.empty() ? "-" : l.kiln_version) << "\n";
  for (const auto& [f, sha] : v.files)
    std::cout << "  file         " << f << " " << sha.substr(0, 12) << "\n";
}

struct ShowArgs {
  std::string ref;
  bool lineage = false;
  bool json = false;
};

int run_show(const ShowArgs& a) {
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  std::vector<VersionInfo> chain;
  if (a.lineage) {
    auto c = (*store)->lineage(a.ref);
    if (!c.ok()) return report_failure(c.status());
    chain = std::move(*c);
  } else {
    auto v = (*store)->show(a.ref);
    if (!v.ok()) return report_failure(v.status());
    chain.push_back(std::move(*v));
  }
  if (a.json) {
    Json out = chain.front().to_json(/*with_manifest=*/true);
    if (a.lineage) {
      Json walk = Json::array();
      for (const auto& v : chain) walk.push_back(v.to_json());
      out["lineage_chain"] = walk;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  print_version(chain.front());
  if (a.lineage) {
    std::cout << "lineage chain:\n";
    for (size_t i = 0; i < chain.size(); ++i)
      std::cout << "  " << std::string(2 * i, ' ') << chain[i].name << "@" << chain[i].version
                << " (" << chain[i].created_at << ", " << headline(chain[i]) << ")\n";
  }
  return 0;
}

// ---- alias, rollback, tag, diff, pull, delete, gc, verify

struct AliasArgs {
  std::string name;
  std::string alias;
  int64_t version = 0;
  bool json = false;
};

int run_diff(const std::string& a, const std::string& b, bool json) {
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  auto d = (*store)->diff(a, b);
  if (!d.ok()) return report_failure(d.status());
  if (json) {
    std::cout << d->dump(2) << "\n";
    return 0;
  }
  std::cout << "a = " << (*d)["a"].get<std::string>() << ", b = " << (*d)["b"].get<std::string>()
            << (d->at("same_content").get<bool>() ? " (same content)" : "") << "\n";
  for (const char* section : {"config", "metrics", "lineage", "tags", "files"}) {
    const Json& s = d->at(section);
    std::cout << section << ": " << (s.empty() ? "no differences" : "") << "\n";
    for (const auto& [k, v] : s.items()) {
      std::string va = v["a"].dump(), vb = v["b"].dump();
      if (va.size() > 60) va = va.substr(0, 57) + "...";
      if (vb.size() > 60) vb = vb.substr(0, 57) + "...";
      std::cout << "  " << k << ": " << va << " -> " << vb << "\n";
    }
  }
  return 0;
}

}  // namespace

void register_registry_commands(CLI::App& app, int* exit_code) {
  CLI::App* reg = app.add_subcommand(
      "registry", "Model registry: versions, aliases, lineage, content-addressed artifacts");
  reg->require_subcommand(1);
  reg->footer(
      "References: NAME@VERSION, NAME@ALIAS (NAME@latest: the highest version) or a bundle "
      "directory. The registry lives in KILN_HOME (registry.db, artifacts/, bundles/); "
      "KILN_REGISTRY=postgresql://HOST:PORT/DB (or 'catalogue: URL' in KILN_HOME/registry.yaml) "
      "keeps its catalogue in PostgreSQL, shared by every host that mounts KILN_HOME.");

  auto pa = std::make_shared<PushArgs>();
  CLI::App* push = reg->add_subcommand(
      "push", "Register a bundle (or a TorchScript file) as the next immutable version of NAME");
  push->add_option("source", pa->source,
                   "bundle directory, or a .pt file with --format torchscript")
      ->required();
  add_flag(*push, Flag::kName, &pa->name)->required();
  add_flag(*push, Flag::kTag, &pa->tags)->allow_extra_args(false);
  add_flag(*push, Flag::kDescription, &pa->description);
  add_flag(*push, Flag::kFormat, &pa->format);
  add_flag(*push, Flag::kTensorInput, &pa->inputs)->allow_extra_args(false);
  add_flag(*push, Flag::kTensorOutput, &pa->outputs)->allow_extra_args(false);
  add_flag(*push, Flag::kLabels, &pa->labels);
  add_flag(*push, Flag::kParent, &pa->parent);
  add_flag(*push, Flag::kJson, &pa->json);
  push->callback([pa, exit_code] { *exit_code = run_push(*pa); });

  auto la = std::make_shared<ListArgs>();
  CLI::App* list = reg->add_subcommand("list", "List versions (all models, or one)");
  list->add_option("name", la->name, "only this model");
  add_flag(*list, Flag::kWhere, &la->where)->allow_extra_args(false);
  add_flag(*list, Flag::kSort, &la->sort);
  add_flag(*list, Flag::kJson, &la->json);
  list->callback([la, exit_code] { *exit_code = run_list(*la); });

  auto sa = std::make_shared<ShowArgs>();
  CLI::App* show = reg->add_subcommand(
      "show", "Show a version: manifest, metrics, lineage, tags, aliases, size, created time");
  show->add_option("ref", sa->ref, "NAME@VERSION or NAME@ALIAS")->required();
  add_flag(*show, Flag::kLineage, &sa->lineage);
  add_flag(*show, Flag::kJson, &sa->json);
  show->callback([sa, exit_code] { *exit_code = run_show(*sa); });

  CLI::App* alias = reg->add_subcommand("alias", "Point names like 'production' at versions");
  alias->require_subcommand(1);
  auto aa = std::make_shared<AliasArgs>();
  CLI::App* aset = alias->add_subcommand("set", "Point NAME@ALIAS at VERSION");
  aset->add_option("name", aa->name, "model name")->required();
  aset->add_option("alias", aa->alias, "alias, e.g. production")->required();
  aset->add_option("version", aa->version, "version number")
      ->required()
      ->check(CLI::PositiveNumber);
  aset->callback([aa, exit_code] {
    auto store = open_store();
    if (!store.ok()) {
      *exit_code = report_failure(store.status());
      return;
    }
    Status st = (*store)->set_alias(aa->name, aa->alias, aa->version);
    if (!st.ok()) {
      *exit_code = report_failure(st);
      return;
    }
    std::cout << aa->name << "@" << aa->alias << " -> " << aa->version << "\n";
    *exit_code = 0;
  });
  CLI::App* arm = alias->add_subcommand("rm", "Remove an alias (its history is kept)");
  arm->add_option("name", aa->name, "model name")->required();
  arm->add_option("alias", aa->alias, "alias")->required();
  arm->callback([aa, exit_code] {
    auto store = open_store();
    Status st = store.ok() ? (*store)->remove_alias(aa->name, aa->alias) : store.status();
    if (!st.ok()) {
      *exit_code = report_failure(st);
      return;
    }
    std::cout << "removed " << aa->name << "@" << aa->alias << "\n";
    *exit_code = 0;
  });
  CLI::App* ahist = alias->add_subcommand("history", "Every change of an alias, oldest first");
  ahist->add_option("name", aa->name, "model name")->required();
  ahist->add_option("alias", aa->alias, "alias")->required();
  add_flag(*ahist, Flag::kJson, &aa->json);
  ahist->callback([aa, exit_code] {
    auto store = open_store();
    if (!store.ok()) {
      *exit_code = report_failure(store.status());
      return;
    }
    auto h = (*store)->alias_history(aa->name, aa->alias);
    if (!h.ok()) {
      *exit_code = report_failure(h.status());
      return;
    }
    Json out = Json::array();
    for (const auto& e : *h) {
      out.push_back({{"action", e.action}, {"version", e.version}, {"at", e.at}});
      if (!aa->json)
        std::cout << e.at << "  " << e.action << "  "
                  << (e.action == "rm" ? std::string("-") : std::to_string(e.version)) << "\n";
    }
    if (aa->json) std::cout << out.dump(2) << "\n";
    *exit_code = 0;
  });

  CLI::App* rollback =
      reg->add_subcommand("rollback", "Point an alias back at its previous target");
  rollback->add_option("name", aa->name, "model name")->required();
  rollback->add_option("alias", aa->alias, "alias")->required();
  rollback->callback([aa, exit_code] {
    auto store = open_store();
    Expected<int64_t> v = store.ok() ? (*store)->rollback_alias(aa->name, aa->alias)
                                     : Expected<int64_t>(store.status());
    if (!v.ok()) {
      *exit_code = report_failure(v.status());
      return;
    }
    std::cout << aa->name << "@" << aa->alias << " -> " << *v << " (rolled back)\n";
    *exit_code = 0;
  });

  auto tag_ref = std::make_shared<std::string>();
  auto kv = std::make_shared<std::string>();
  CLI::App* tag = reg->add_subcommand("tag", "Set a tag KEY=VALUE on a version");
  tag->add_option("ref", *tag_ref, "NAME@VERSION or NAME@ALIAS")->required();
  tag->add_option("kv", *kv, "KEY=VALUE")->required();
  tag->callback([tag_ref, kv, exit_code] {
    auto pair = split_kv(*kv, "tag");
    if (!pair.ok()) {
      *exit_code = report_failure(pair.status());
      return;
    }
    auto store = open_store();
    Status st = store.ok() ? (*store)->tag(*tag_ref, pair->first, pair->second) : store.status();
    if (!st.ok()) {
      *exit_code = report_failure(st);
      return;
    }
    std::cout << "tagged " << *tag_ref << " " << *kv << "\n";
    *exit_code = 0;
  });

  auto da = std::make_shared<std::vector<std::string>>();
  auto djson = std::make_shared<bool>(false);
  CLI::App* diff = reg->add_subcommand("diff", "Compare two versions: config, metrics, lineage");
  diff->add_option("refs", *da, "two references")->required()->expected(2);
  add_flag(*diff, Flag::kJson, djson.get());
  diff->callback([da, djson, exit_code] { *exit_code = run_diff((*da)[0], (*da)[1], *djson); });

  auto pull_ref = std::make_shared<std::string>();
  auto pull_out = std::make_shared<std::string>();
  CLI::App* pull = reg->add_subcommand("pull", "Write a verified copy of a version's bundle");
  pull->add_option("ref", *pull_ref, "NAME@VERSION or NAME@ALIAS")->required();
  add_flag(*pull, Flag::kOut, pull_out.get())
      ->required()
      ->description("bundle directory to create (absent or empty)");
  pull->callback([pull_ref, pull_out, exit_code] {
    auto store = open_store();
    Expected<fs::path> p =
        store.ok() ? (*store)->pull(*pull_ref, *pull_out) : Expected<fs::path>(store.status());
    if (!p.ok()) {
      *exit_code = report_failure(p.status());
      return;
    }
    std::cout << "pulled " << *pull_ref << " to " << p->string() << "\n";
    *exit_code = 0;
  });

  auto del_ref = std::make_shared<std::string>();
  CLI::App* del = reg->add_subcommand(
      "delete", "Delete a version (refused while an alias points at it; numbers are not reused)");
  del->add_option("ref", *del_ref, "NAME@VERSION")->required();
  del->callback([del_ref, exit_code] {
    auto store = open_store();
    Status st = store.ok() ? (*store)->remove(*del_ref) : store.status();
    if (!st.ok()) {
      *exit_code = report_failure(st);
      return;
    }
    std::cout << "deleted " << *del_ref << " (run 'kiln registry gc' to free its artifacts)\n";
    *exit_code = 0;
  });

  auto grace = std::make_shared<int64_t>(3600);
  auto gjson = std::make_shared<bool>(false);
  CLI::App* gc = reg->add_subcommand("gc", "Remove artifacts no version references");
  add_flag(*gc, Flag::kGrace, grace.get())->check(CLI::NonNegativeNumber);
  add_flag(*gc, Flag::kJson, gjson.get());
  gc->callback([grace, gjson, exit_code] {
    auto store = open_store();
    Expected<registry::GcReport> r =
        store.ok() ? (*store)->gc(*grace) : Expected<registry::GcReport>(store.status());
    if (!r.ok()) {
      *exit_code = report_failure(r.status());
      return;
    }
    if (*gjson)
      std::cout << r->to_json().dump(2) << "\n";
    else
      std::cout << "removed " << r->artifacts_removed << " artifacts ("
                << human_size(r->bytes_removed) << "), " << r->cache_entries_removed
                << " materialised bundles, " << r->temp_files_removed << " temp files; kept "
                << r->artifacts_kept_young << " unreferenced artifacts younger than " << *grace
                << " s\n";
    *exit_code = 0;
  });

  auto vjson = std::make_shared<bool>(false);
  CLI::App* verify = reg->add_subcommand(
      "verify", "Re-hash every artifact; exit 1 naming each mismatch or missing file");
  add_flag(*verify, Flag::kJson, vjson.get());
  verify->callback([vjson, exit_code] {
    auto store = open_store();
    Expected<registry::VerifyReport> r =
        store.ok() ? (*store)->verify() : Expected<registry::VerifyReport>(store.status());
    if (!r.ok()) {
      *exit_code = report_failure(r.status());
      return;
    }
    if (*vjson) {
      std::cout << r->to_json().dump(2) << "\n";
    } else {
      for (const auto& p : r->problems) std::fprintf(stderr, "kiln: error: %s\n", p.c_str());
      std::cout << (r->clean() ? "ok: " : "FAILED: ") << r->versions_checked << " versions, "
                << r->artifacts_checked << " artifacts checked, " << r->problems.size()
                << " problems\n";
    }
    *exit_code = r->clean() ? 0 : 1;
  });

  struct MigrateArgs {
    std::string to, from = "sqlite", root;
    bool json = false;
  };
  auto ma = std::make_shared<MigrateArgs>();
  CLI::App* migrate = reg->add_subcommand(
      "migrate",
      "Copy a whole registry (every version, number, tag, alias and its history) into another "
      "catalogue, e.g. from SQLite to a PostgreSQL shared by several hosts");
  migrate->add_option("--to", ma->to, "destination catalogue: postgresql://HOST:PORT/DB or sqlite")
      ->required();
  migrate->add_option("--from", ma->from, "source catalogue")->default_val("sqlite");
  migrate->add_option("--root", ma->root,
                      "destination root for artifacts (a directory every host mounts); the "
                      "artifacts are copied there, verified (default: KILN_HOME, shared as is)");
  add_flag(*migrate, Flag::kJson, &ma->json);
  migrate->callback([ma, exit_code] {
    auto run = [&]() -> Expected<registry::MigrationReport> {
      // Opening an SQLite registry creates it: check there is one to copy, and open the
      // destination (a bad --to fails there) before the source, so a refused migration writes
      // nothing.
      const fs::path source_db = kiln_home() / "registry.db";
      if (ma->from == "sqlite" && !fs::exists(source_db))
        return Status::NotFound("no SQLite registry at " + source_db.string() +
                                ": nothing to migrate (is KILN_HOME right?)");
      registry::StoreOptions to_options;
      to_options.catalogue(ma->to);
      if (!ma->root.empty()) to_options.root(ma->root);
      KILN_ASSIGN_OR_RETURN(auto to, registry::open_sql_store(to_options));
      KILN_ASSIGN_OR_RETURN(auto from,
                            registry::open_sql_store(registry::StoreOptions().catalogue(ma->from)));
      KILN_ASSIGN_OR_RETURN(registry::MigrationReport r,
                            registry::SqlModelStore::Migrate(*from, *to));
      if (ma->json) {
        Json j = r.to_json();
        j["from"] = from->catalogue_location();
        j["to"] = to->catalogue_location();
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << "migrated " << r.models << " models, " << r.versions << " versions, "
                  << r.aliases << " aliases (" << r.alias_events << " history events), " << r.tags
                  << " tags from " << from->catalogue_location() << " to "
                  << to->catalogue_location() << "; " << r.artifacts_copied << " artifacts copied ("
                  << human_size(r.bytes_copied) << ")\n";
      }
      return r;
    };
    Expected<registry::MigrationReport> r = run();
    *exit_code = r.ok() ? 0 : report_failure(r.status());
  });
}

}  // namespace kiln::cli
