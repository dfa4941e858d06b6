// Registry benchmark: push of a ~5 MB bundle (fresh content, and the same content again, which
// deduplicates) and resolving NAME@ALIAS (the server's hot-reload poll), through the ModelStore
// API in one process. Usage: registry_bench [--pushes N] [--resolves N] [--root DIR]
// [--catalogue sqlite|postgresql://HOST:PORT/DB] (default: as open_model_store picks it)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/core/files.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/registry/model_store.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

/// An MLP 64-800-800-10 (~0.7M parameters): weights.pt + model.pt about 5 MB.
fs::path make_bundle(const fs::path& dir, uint64_t seed) {
  auto spec = kiln::model::zoo_model("mlp", kiln::Json{{"hidden", kiln::Json::array({800, 800})}});
  auto net = kiln::model::NetworkImpl::Create(*spec, {64}, 10, seed);
  auto module = kiln::model::export_torchscript(**net);
  kiln::Json m = {{"task", "classification"},
                  {"model", spec->to_json()},
                  {"input_shape", {64}},
                  {"outputs", 10},
                  {"metrics", {{"test", {{"accuracy", 0.9}}}}}};
  auto w = kiln::model::write_bundle(dir, m, kiln::model::network_state(**net), *module);
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().to_string().c_str());
    std::exit(1);
  }
  return dir;
}

int64_t dir_bytes(const fs::path& dir) {
  int64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += static_cast<int64_t>(e.file_size());
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int pushes = 20, resolves = 20000;
  fs::path root;
  std::string catalogue;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--pushes")) pushes = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--resolves")) resolves = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--root")) root = argv[i + 1];
    if (!std::strcmp(argv[i], "--catalogue")) catalogue = argv[i + 1];
  }
  auto tmp = kiln::make_temp_directory("kiln-registry-bench-");
  if (root.empty()) root = *tmp / "home";
  std::vector<fs::path> bundles;
  for (int i = 0; i < pushes; ++i)
    bundles.push_back(make_bundle(*tmp / ("b" + std::to_string(i)), static_cast<uint64_t>(i + 1)));
  std::printf("bundle: %.2f MB (manifest.json, weights.pt, model.pt)\n",
              static_cast<double>(dir_bytes(bundles[0])) / 1e6);

  auto store = kiln::registry::open_model_store(
      kiln::registry::StoreOptions().root(root).catalogue(catalogue));
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().to_string().c_str());
    return 1;
  }
  std::vector<double> fresh, dedup;
  for (int i = 0; i < pushes; ++i) {
    auto t0 = Clock::now();
    auto v = (*store)->push(kiln::registry::PushRequest(bundles[static_cast<size_t>(i)], "bench"));
    fresh.push_back(ms_since(t0));
    if (!v.ok()) {
      std::fprintf(stderr, "%s\n", v.status().to_string().c_str());
      return 1;
    }
  }
  for (int i = 0; i < pushes; ++i) {
    auto t0 = Clock::now();
    auto v = (*store)->push(kiln::registry::PushRequest(bundles[0], "bench"));
    dedup.push_back(ms_since(t0));
  }
  std::printf("push, new content (%d pushes):      median %.1f ms, p90 %.1f ms, max %.1f ms\n",
              pushes, pct(fresh, 0.5), pct(fresh, 0.9), pct(fresh, 1.0));
  std::printf("push, same content again (dedup):   median %.1f ms, p90 %.1f ms, max %.1f ms\n",
              pct(dedup, 0.5), pct(dedup, 0.9), pct(dedup, 1.0));

  if (!(*store)->set_alias("bench", "production", 1).ok()) return 1;
  auto t0 = Clock::now();
  auto first = (*store)->resolve("bench@production");  // materialises (re-hashes) once
  std::printf("resolve bench@production, first (materialise): %.2f ms\n", ms_since(t0));
  if (!first.ok()) return 1;
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(resolves));
  for (int i = 0; i < resolves; ++i) {
    auto t = Clock::now();
    auto r = (*store)->resolve("bench@production");
    lat.push_back(ms_since(t) * 1000.0);
    if (!r.ok()) return 1;
  }
  std::printf(
      "resolve bench@production, warm (%d calls): median %.1f us, p99 %.1f us, max %.1f us\n",
      resolves, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1.0));
  std::error_code ec;
  fs::remove_all(*tmp, ec);
  return 0;
}
