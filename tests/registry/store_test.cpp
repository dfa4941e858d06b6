// The registry suite, run on both catalogues (SQLite and a throwaway PostgreSQL server) through
// the ModelStore interface: push/list/show/alias/rollback/tag/diff/pull/delete/gc/verify,
// references and names, dedup, tampering, threads sharing one store.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/model/bundle.h"
#include "kiln/registry/model_store.h"
#include "kiln/registry/query.h"
#include "registry_helpers.h"
#include "support/postgres_server.h"
#include "support/test_support.h"

namespace kiln::registry {
namespace {

using kiln::testing::TempDir;
using testing::make_bundle;

/// Each test on each catalogue: "sqlite" (ROOT/registry.db) or "postgresql" (a fresh database
/// on the test process's throwaway server, shared by every store the test opens).
class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    catalogue_ = GetParam() == "postgresql" ? kiln::testing::fresh_postgres_database() : "sqlite";
  }
  std::unique_ptr<ModelStore> open_at(const fs::path& root) {
    auto s = open_model_store(StoreOptions().root(root).catalogue(catalogue_));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::string catalogue_;
};

INSTANTIATE_TEST_SUITE_P(Catalogues, StoreTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

/// Flips one byte in the middle of a (read-only) file.
void flip_byte(const fs::path& path) {
  ::chmod(path.c_str(), 0644);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(fs::file_size(path) / 2));
  char c;
  f.read(&c, 1);
  f.seekp(static_cast<std::streamoff>(fs::file_size(path) / 2));
  c = static_cast<char>(c ^ 0x5a);
  f.write(&c, 1);
}

TEST(ModelRefTest, ParsesVersionsAliasesAndPaths) {
  auto v = parse_model_ref("fmnist@3");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, ModelRef::Kind::kVersion);
  EXPECT_EQ(v->name, "fmnist");
  EXPECT_EQ(v->version, 3);
  auto a = parse_model_ref("fmnist@production");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->kind, ModelRef::Kind::kAlias);
  EXPECT_EQ(a->alias, "production");
  EXPECT_EQ(a->to_string(), "fmnist@production");
  auto p = parse_model_ref("runs/x/bundle");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->is_path());
  for (const char* bad :
       {"", "fmnist", "fmnist@", "fmnist@0", "a b@1", "@1", "x@has space", "x@..", ".hidden@1"}) {
    auto r = parse_model_ref(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(validate_name(std::string(129, 'a')).ok());
  EXPECT_TRUE(validate_name(std::string(128, 'a')).ok());
  EXPECT_FALSE(validate_name("a/b").ok());
  EXPECT_FALSE(validate_name("a..b").ok());
  EXPECT_FALSE(validate_alias("123").ok());
}

TEST(QueryTest, WhereAndSort) {
  Json r = {{"version", 3}, {"metrics", {{"accuracy", 0.93}}}, {"tags", {{"stage", "prod"}}}};
  auto w = parse_where("metrics.accuracy>0.9");
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->matches(r));
  EXPECT_FALSE(parse_where("metrics.accuracy>=0.95")->matches(r));
  EXPECT_TRUE(parse_where("tags.stage=prod")->matches(r));
  EXPECT_TRUE(parse_where("tags.stage != dev")->matches(r));
  EXPECT_FALSE(parse_where("tags.missing=1")->matches(r));
  EXPECT_FALSE(parse_where("accuracy").ok());
  std::vector<Json> rs = {{{"v", 2}}, {{"v", 10}}, {{"v", 1}}};
  ASSERT_TRUE(sort_records(&rs, "-v").ok());
  EXPECT_EQ(rs[0]["v"], 10);
  EXPECT_EQ(rs[2]["v"], 1);
}

TEST_P(StoreTest, PushNumbersVersionsAndDeduplicatesArtifacts) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  fs::path b1 = make_bundle(tmp / "b1", 1, "one");
  auto v1 = store->push(PushRequest(b1, "m").tag("stage", "dev").description("first"));
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->version, 1);
  EXPECT_EQ(v1->tags.at("stage"), "dev");
  EXPECT_EQ(v1->description, "first");
  EXPECT_EQ(v1->task, "classification");
  EXPECT_EQ(v1->lineage.snapshot_hash, "snap1");
  EXPECT_EQ(v1->lineage.config_hash, "cfg0.01");
  EXPECT_FALSE(v1->lineage.kiln_version.empty());
  EXPECT_GT(v1->size_bytes, 0);
  EXPECT_EQ(v1->metrics()["accuracy"], 0.9);
  auto manifest = read_file(b1 / "manifest.json");
  EXPECT_EQ(v1->bundle_sha256, sha256_hex(*manifest));
  // The same bundle again: version 2, same identity, no new artifacts.
  auto count_artifacts = [&] {
    int n = 0;
    for (const auto& e : fs::recursive_directory_iterator(tmp / "home" / "artifacts"))
      n += e.is_regular_file();
    return n;
  };
  const int before = count_artifacts();
  auto v2 = store->push(PushRequest(b1, "m"));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 2);
  EXPECT_EQ(v2->bundle_sha256, v1->bundle_sha256);
  EXPECT_EQ(count_artifacts(), before);
  // A bundle differing in one small file shares the weights and module artifacts.
  fs::path b3 = tmp / "b3";
  fs::copy(b1, b3);
  {
    auto m = read_json_file(b3 / "manifest.json");
    (*m)["files"]["notes.txt"] = sha256_hex("three");
    ASSERT_TRUE(write_file_atomic(b3 / "notes.txt", "three").ok());
    kiln::testing::write_sealed_manifest(b3, *m);
  }
  auto v3 = store->push(PushRequest(b3, "m"));
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_NE(v3->bundle_sha256, v1->bundle_sha256);
  EXPECT_EQ(count_artifacts(), before + 2);  // new notes.txt and manifest.json only
  EXPECT_EQ(v3->files.at("weights.pt"), v1->files.at("weights.pt"));
  // Artifacts are read-only and named by their content.
  const fs::path w = tmp / "home" / "artifacts" / v1->files.at("weights.pt").substr(0, 2) /
                     v1->files.at("weights.pt");
  EXPECT_EQ(*sha256_file(w), v1->files.at("weights.pt"));
  EXPECT_EQ(fs::status(w).permissions() & fs::perms::owner_write, fs::perms::none);
}

TEST_P(StoreTest, BadPushesAreRefusedWithoutAVersion) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  fs::path b = make_bundle(tmp / "b", 1, "x");
  for (const char* bad : {"", "../evil", "a/b", "x y"}) {
    auto r = store->push(PushRequest(b, bad));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(store->push(PushRequest(b, "m").tag("bad key", "v")).ok());
  auto missing = store->push(PushRequest(tmp / "nope", "m"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  flip_byte(b / "weights.pt");
  auto tampered = store->push(PushRequest(b, "m"));
  EXPECT_EQ(tampered.status().code(), StatusCode::kDataLoss) << tampered.status();
  auto all = store->list(ListQuery());
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

TEST_P(StoreTest, ResolveMaterialisesAVerifiedReadOnlyBundle) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  auto v = store->push(PushRequest(make_bundle(tmp / "b", 1, "x"), "m"));
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(store->set_alias("m", "production", 1).ok());
  auto r = store->resolve("m@production");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "m");
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->bundle_sha256, v->bundle_sha256);
  auto b = model::read_bundle(r->bundle_dir);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(model::load_bundle_module(*b).ok());
  EXPECT_TRUE(store->resolve("m@1").ok());
  EXPECT_EQ(store->resolve("m@latest")->version, 1);
  // Bad references name what exists.
  auto nov = store->resolve("m@7");
  EXPECT_EQ(nov.status().code(), StatusCode::kNotFound);
  EXPECT_NE(nov.status().message().find("versions: 1"), std::string::npos) << nov.status();
  EXPECT_NE(nov.status().message().find("production -> 1"), std::string::npos);
  auto noa = store->resolve("m@staging");
  EXPECT_NE(noa.status().message().find("no alias 'staging'"), std::string::npos);
  auto nom = store->resolve("other@1");
  EXPECT_NE(nom.status().message().find("models: m"), std::string::npos) << nom.status();
  // Another store object on the same root (another process) sees the same thing.
  auto again = open_at(tmp / "home")->resolve("m@production");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->bundle_dir, r->bundle_dir);
}

TEST_P(StoreTest, AliasesRollBackThroughTheirHistory) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  fs::path b = make_bundle(tmp / "b", 1, "x");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store->push(PushRequest(b, "m")).ok());
  EXPECT_EQ(store->rollback_alias("m", "prod").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store->set_alias("m", "prod", 1).ok());
  EXPECT_EQ(store->rollback_alias("m", "prod").status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store->set_alias("m", "prod", 2).ok());
  ASSERT_TRUE(store->set_alias("m", "prod", 3).ok());
  EXPECT_EQ(*store->rollback_alias("m", "prod"), 2);
  EXPECT_EQ(store->resolve("m@prod")->version, 2);
  EXPECT_EQ(*store->rollback_alias("m", "prod"), 1);
  EXPECT_FALSE(store->rollback_alias("m", "prod").ok());
  EXPECT_EQ(store->alias_history("m", "prod")->size(), 5u);
  EXPECT_EQ(store->set_alias("m", "prod", 9).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->set_alias("m", "42", 1).code(), StatusCode::kInvalidArgument);
  // rm, then rollback restores the last target.
  ASSERT_TRUE(store->remove_alias("m", "prod").ok());
  EXPECT_FALSE(store->resolve("m@prod").ok());
  EXPECT_EQ(*store->rollback_alias("m", "prod"), 1);
  EXPECT_EQ(store->remove_alias("m", "nope").code(), StatusCode::kNotFound);
}

TEST_P(StoreTest, ListFiltersSortsAndShowsTagsAliasesLineage) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  ASSERT_TRUE(store->push(PushRequest(make_bundle(tmp / "b1", 1, "1", 0.80), "m")).ok());
  ASSERT_TRUE(
      store->push(PushRequest(make_bundle(tmp / "b2", 2, "2", 0.95, "0.1"), "m").parent("m@1"))
          .ok());
  ASSERT_TRUE(store->push(PushRequest(make_bundle(tmp / "b3", 3, "3", 0.91), "other")).ok());
  ASSERT_TRUE(store->tag("m@2", "stage", "prod").ok());
  ASSERT_TRUE(store->set_alias("m", "production", 2).ok());
  auto good = store->list(ListQuery().where("metrics.accuracy>0.9").sort("-metrics.accuracy"));
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_EQ(good->size(), 2u);
  EXPECT_EQ((*good)[0].name, "m");
  EXPECT_EQ((*good)[1].name, "other");
  auto m = store->list(ListQuery().name("m").where("tags.stage=prod"));
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].version, 2);
  EXPECT_EQ(store->list(ListQuery().name("zzz")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->list(ListQuery().where("nonsense")).status().code(),
            StatusCode::kInvalidArgument);
  auto shown = store->show("m@production");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->aliases, std::vector<std::string>{"production"});
  EXPECT_EQ(shown->lineage.parent_name, "m");
  EXPECT_EQ(shown->lineage.parent_version, 1);
  auto chain = store->lineage("m@2");
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ((*chain)[1].version, 1);
  EXPECT_FALSE(store->push(PushRequest(tmp / "b1", "m").parent("m@99")).ok());
  auto d = store->diff("m@1", "m@2");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)["config"]["training.lr"]["a"], "0.01");
  EXPECT_EQ((*d)["config"]["training.lr"]["b"], "0.1");
  EXPECT_EQ((*d)["metrics"]["accuracy"]["b"], 0.95);
  EXPECT_TRUE((*d)["lineage"].contains("parent"));
  EXPECT_TRUE((*d)["files"].contains("weights.pt"));
}

TEST_P(StoreTest, DeleteIsRefusedUnderAnAliasAndGcFreesArtifacts) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  auto v1 = store->push(PushRequest(make_bundle(tmp / "b1", 1, "1"), "m"));
  auto v2 = store->push(PushRequest(make_bundle(tmp / "b2", 2, "2"), "m"));
  ASSERT_TRUE(v1.ok() && v2.ok());
  ASSERT_TRUE(store->set_alias("m", "production", 1).ok());
  ASSERT_TRUE(store->resolve("m@1").ok());  // materialised
  Status refused = store->remove("m@1");
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("production"), std::string::npos);
  ASSERT_TRUE(store->set_alias("m", "production", 2).ok());
  ASSERT_TRUE(store->remove("m@1").ok());
  EXPECT_EQ(store->show("m@1").status().code(), StatusCode::kNotFound);
  // Young unreferenced artifacts survive a gc with a grace period; grace 0 removes them.
  auto kept = store->gc(3600);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->artifacts_removed, 0);
  EXPECT_GT(kept->artifacts_kept_young, 0);
  EXPECT_EQ(kept->cache_entries_removed, 1);  // v1's materialised bundle goes at once
  auto gc = store->gc(0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->artifacts_removed, 4);  // manifest, weights, model, notes of v1
  EXPECT_TRUE(store->verify()->clean());
  // Numbers are never reused.
  auto v3 = store->push(PushRequest(tmp / "b1", "m"));
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_EQ(v3->version, 3);
  EXPECT_TRUE(store->resolve("m@3").ok());
}

TEST_P(StoreTest, TamperedArtifactIsNamedByVerifyAndRefusedByPullAndLoad) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  auto v = store->push(PushRequest(make_bundle(tmp / "b", 1, "x"), "m"));
  ASSERT_TRUE(v.ok());
  auto r = store->resolve("m@1");  // materialised before the damage
  ASSERT_TRUE(r.ok());
  auto clean = store->verify();
  ASSERT_TRUE(clean.ok());
  EXPECT_TRUE(clean->clean());
  EXPECT_EQ(clean->artifacts_checked, 4);
  const std::string sha = v->files.at("weights.pt");
  const fs::path artifact = tmp / "home" / "artifacts" / sha.substr(0, 2) / sha;
  flip_byte(artifact);
  auto report = store->verify();
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_NE(report->problems[0].find(sha), std::string::npos);
  EXPECT_NE(report->problems[0].find("m@1 weights.pt"), std::string::npos);
  auto pulled = store->pull("m@1", tmp / "out");
  EXPECT_EQ(pulled.status().code(), StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // The materialised bundle shares the artifact's bytes: loading it refuses too.
  auto again = store->resolve("m@1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(model::read_bundle(again->bundle_dir).status().code(), StatusCode::kDataLoss);
  // A missing artifact is named too.
  fs::remove(artifact);
  report = store->verify();
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_NE(report->problems[0].find("missing"), std::string::npos);
}

TEST_P(StoreTest, PullWritesAVerifiedBundle) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  ASSERT_TRUE(store->push(PushRequest(make_bundle(tmp / "b", 1, "x"), "m")).ok());
  auto p = store->pull("m@latest", tmp / "out");
  ASSERT_TRUE(p.ok()) << p.status();
  auto b = model::read_bundle(tmp / "out");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(model::load_bundle_network(*b).ok());
  EXPECT_EQ(store->pull("m@1", tmp / "out").status().code(), StatusCode::kAlreadyExists);
}

TEST_P(StoreTest, ThreadsSharingOneStorePushDistinctVersions) {
  TempDir tmp;
  auto store = open_at(tmp / "home");
  fs::path b = make_bundle(tmp / "b", 1, "x");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (!store->push(PushRequest(b, "m")).ok()) ++failures;
        if (!store->resolve("m@latest").ok()) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto all = store->list(ListQuery().name("m"));
  ASSERT_EQ(all->size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ((*all)[static_cast<size_t>(i)].version, i + 1);
}

TEST(ResolveModelRefTest, TakesBundlePaths) {
  TempDir tmp;
  fs::path b = make_bundle(tmp / "mybundle", 1, "x");
  auto r = resolve_model_ref(b.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "mybundle");
  EXPECT_EQ(r->version, 0);
  EXPECT_EQ(r->bundle_dir, b);
  EXPECT_EQ(r->bundle_sha256, sha256_hex(*read_file(b / "manifest.json")));
  EXPECT_EQ(resolve_model_ref((tmp / "nope").string()).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kiln::registry
