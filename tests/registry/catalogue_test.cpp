// What only a shared catalogue does, on a throwaway PostgreSQL server: writers on separate
// connections allocate gap-free numbers, alias moves reach listeners at once (LISTEN/NOTIFY),
// an SQLite registry migrates over whole, a store reconnects after a crash; and how a catalogue
// is chosen, with its errors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/core/ports.h"
#include "kiln/registry/sql_store.h"
#include "registry_helpers.h"
#include "support/postgres_server.h"
#include "support/test_support.h"

namespace kiln::registry {
namespace {

using kiln::testing::TempDir;
using testing::make_bundle;

std::unique_ptr<SqlModelStore> open_sql(const fs::path& root, const std::string& catalogue) {
  auto s = open_sql_store(StoreOptions().root(root).catalogue(catalogue));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(PostgresCatalogueTest, WritersOnSeparateConnectionsGetGapFreeNumbers) {
  TempDir tmp;
  const std::string url = kiln::testing::fresh_postgres_database();
  fs::path b = make_bundle(tmp / "b", 1, "x");
  constexpr int kWriters = 4, kPushes = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&] {
      auto store = open_sql(tmp / "home", url);  // its own connection, like another host
      if (!store) {
        ++failures;
        return;
      }
      for (int i = 0; i < kPushes; ++i) {
        auto v = store->push(PushRequest(b, "m").tag("writer", "w"));
        if (!v.ok()) {
          ADD_FAILURE() << v.status();
          ++failures;
        }
      }
    });
  for (auto& t : writers) t.join();
  ASSERT_EQ(failures.load(), 0);
  auto all = open_sql(tmp / "home", url)->list(ListQuery().name("m"));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(kWriters * kPushes));
  for (size_t i = 0; i < all->size(); ++i)
    EXPECT_EQ((*all)[i].version, static_cast<int64_t>(i + 1));
}

TEST(PostgresCatalogueTest, AliasMovesReachListenersAtOnce) {
  TempDir tmp;
  const std::string url = kiln::testing::fresh_postgres_database();
  auto writer = open_sql(tmp / "home", url);
  auto server = open_sql(tmp / "home", url);
  ASSERT_TRUE(writer && server);
  EXPECT_TRUE(server->notifies_changes());
  ASSERT_TRUE(writer->push(PushRequest(make_bundle(tmp / "b", 1, "x"), "m")).ok());
  ASSERT_TRUE(writer->push(PushRequest(tmp / "b", "m")).ok());
  // Nothing pending: a wait times out with false.
  auto idle = server->wait_for_change(std::chrono::milliseconds(200));
  ASSERT_TRUE(idle.ok()) << idle.status();  // also starts listening
  EXPECT_FALSE(*idle);
  // A wait far longer than any poll interval returns as soon as the alias moves elsewhere.
  auto waited = std::async(std::launch::async,
                           [&] { return server->wait_for_change(std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(writer->set_alias("m", "production", 2).ok());
  ASSERT_EQ(waited.wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << "no notification";
  auto got = waited.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got);
  EXPECT_EQ(server->resolve("m@production")->version, 2);
  // A refused change notifies nobody.
  EXPECT_FALSE(writer->set_alias("m", "production", 99).ok());
  EXPECT_FALSE(writer->remove("m@2").ok());  // production points at it
  auto after = server->wait_for_change(std::chrono::milliseconds(300));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(*after);
  // SQLite has no notifications: servers poll it.
  auto sqlite = open_sql(tmp / "other", "sqlite");
  EXPECT_FALSE(sqlite->notifies_changes());
}

// A long-lived store (a server's) outlives a PostgreSQL crash: the statement that meets the
// dead connection fails Unavailable, the next ones connect again, reads and writes alike, with
// their prepared statements prepared anew.
TEST(PostgresCatalogueTest, StoreReconnectsAfterTheServerRestarts) {
  TempDir tmp;
  std::unique_ptr<kiln::testing::PostgresServer> pg = kiln::testing::PostgresServer::Start();
  ASSERT_TRUE(pg);
  const std::string url = pg->create_database("reconnect");
  auto store = open_sql(tmp / "home", url);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->push(PushRequest(make_bundle(tmp / "b", 1, "x"), "m")).ok());
  ASSERT_TRUE(store->set_alias("m", "production", 1).ok());
  ASSERT_EQ(store->resolve("m@production")->version, 1);
  ASSERT_TRUE(pg->crash_and_restart(std::chrono::milliseconds(200)));
  auto first = store->resolve("m@production");
  if (!first.ok()) {
    EXPECT_EQ(first.status().code(), StatusCode::kUnavailable) << first.status();
    EXPECT_NE(first.status().message().find("unreachable"), std::string::npos) << first.status();
  }
  auto again = store->resolve("m@production");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version, 1);
  auto pushed = store->push(PushRequest(tmp / "b", "m"));
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->version, 2);
  ASSERT_TRUE(store->set_alias("m", "production", 2).ok());
  EXPECT_EQ(store->resolve("m@production")->version, 2);
}

TEST(PostgresCatalogueTest, MigrateCopiesAnSqliteRegistryWhole) {
  TempDir tmp;
  auto from = open_sql(tmp / "home", "sqlite");
  ASSERT_TRUE(from);
  ASSERT_TRUE(from->push(PushRequest(make_bundle(tmp / "b1", 1, "1", 0.8), "m")).ok());
  ASSERT_TRUE(
      from->push(PushRequest(make_bundle(tmp / "b2", 2, "2", 0.9), "m").parent("m@1")).ok());
  ASSERT_TRUE(from->push(PushRequest(make_bundle(tmp / "b3", 3, "3", 0.95), "m")).ok());
  ASSERT_TRUE(from->push(PushRequest(tmp / "b1", "other").tag("stage", "dev")).ok());
  ASSERT_TRUE(from->set_alias("m", "production", 1).ok());
  ASSERT_TRUE(from->set_alias("m", "production", 2).ok());
  ASSERT_TRUE(from->set_alias("m", "candidate", 3).ok());
  ASSERT_TRUE(from->remove_alias("m", "candidate").ok());
  ASSERT_TRUE(from->remove("m@3").ok());  // its number stays used

  // Into PostgreSQL on a new shared root: artifacts are copied and verified.
  const std::string url = kiln::testing::fresh_postgres_database();
  auto to = open_sql(tmp / "shared", url);
  ASSERT_TRUE(to);
  auto report = SqlModelStore::Migrate(*from, *to);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->models, 2);
  EXPECT_EQ(report->versions, 3);
  EXPECT_EQ(report->aliases, 1);
  EXPECT_EQ(report->alias_events, 4);
  EXPECT_EQ(report->tags, 1);
  EXPECT_GT(report->artifacts_copied, 0);

  auto a = from->list(ListQuery());
  auto b = to->list(ListQuery());
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i)
    EXPECT_EQ((*a)[i].to_json(true).dump(), (*b)[i].to_json(true).dump()) << i;
  EXPECT_EQ(to->alias_history("m", "production")->size(), 2u);
  EXPECT_EQ(*to->rollback_alias("m", "production"), 1);
  EXPECT_EQ(to->lineage("m@2")->size(), 2u);
  EXPECT_TRUE(to->verify()->clean());
  auto resolved = to->resolve("m@production");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_TRUE(model::read_bundle(resolved->bundle_dir).ok());
  // Numbering goes on where SQLite left it: 3 was deleted, never reused.
  auto next = to->push(PushRequest(tmp / "b1", "m"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->version, 4);

  // A second migration into the same registry is refused, naming the models; nothing changes.
  auto again = SqlModelStore::Migrate(*from, *to);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("m, other"), std::string::npos) << again.status();
  EXPECT_EQ(to->list(ListQuery())->size(), 4u);
}

TEST(CatalogueChoiceTest, ErrorsNameTheSettingAndHideThePassword) {
  TempDir tmp;
  const int port = free_loopback_port();
  auto down =
      open_model_store(StoreOptions()
                           .root(tmp / "home")
                           .catalogue("postgresql://kiln:s3cret@127.0.0.1:" + std::to_string(port) +
                                      "/kiln?connect_timeout=5"));
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable) << down.status();
  EXPECT_NE(down.status().message().find("127.0.0.1:" + std::to_string(port)), std::string::npos);
  EXPECT_EQ(down.status().message().find("s3cret"), std::string::npos) << down.status();

  auto bad = open_model_store(StoreOptions().root(tmp / "home").catalogue("mysql://x/y"));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("mysql://x/y"), std::string::npos) << bad.status();

  // ROOT/registry.yaml picks the catalogue when neither the option nor KILN_REGISTRY does.
  kiln::testing::write_text(tmp / "cfg" / "registry.yaml", "catalogue: oracle://db\n");
  ::unsetenv("KILN_REGISTRY");
  auto from_file = open_model_store(StoreOptions().root(tmp / "cfg"));
  EXPECT_EQ(from_file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(from_file.status().message().find("registry.yaml"), std::string::npos)
      << from_file.status();
  const std::string url = kiln::testing::fresh_postgres_database();
  kiln::testing::write_text(tmp / "cfg" / "registry.yaml", "catalogue: " + url + "\n");
  auto pg = open_model_store(StoreOptions().root(tmp / "cfg"));
  ASSERT_TRUE(pg.ok()) << pg.status();
  EXPECT_EQ((*pg)->catalogue_location(), url);
  // KILN_REGISTRY overrides the file.
  ::setenv("KILN_REGISTRY", "sqlite", 1);
  auto sqlite = open_model_store(StoreOptions().root(tmp / "cfg"));
  ::unsetenv("KILN_REGISTRY");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  EXPECT_EQ((*sqlite)->catalogue_location(), (tmp / "cfg" / "registry.db").string());
}

}  // namespace
}  // namespace kiln::registry
