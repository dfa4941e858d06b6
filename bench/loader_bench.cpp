// Throughput and memory of kiln::data::Loader on Fashion-MNIST train (60,000 images).
//
//   loader_bench [--epochs N] [--workers N] [--batch N] [--data DIR]
//
// For each configuration it runs `epochs` full epochs (after one warm-up epoch), consuming each
// batch trivially, and prints samples/s and the peak resident memory of that phase (VmHWM,
// reset between phases through /proc/self/clear_refs).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "kiln/data/images.h"
#include "kiln/data/loader.h"

namespace {

using kiln::data::AugmentOptions;
using kiln::data::Batch;
using kiln::data::Loader;
using kiln::data::LoaderOptions;

double status_mib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1) / 1024.0;
  }
  return -1;
}

void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
}

struct Result {
  double samples_per_s = 0;
  double peak_mib = 0;
};

Result run(const kiln::data::ImageSet& data, const LoaderOptions& options, int epochs,
           const char* name) {
  auto created = Loader::Create(data, options);
  if (!created.ok()) {
    std::cerr << created.status() << "\n";
    std::exit(1);
  }
  Loader& loader = **created;
  reset_peak_rss();
  double checksum = 0;
  auto consume_epoch = [&](int64_t epoch) -> int64_t {
    if (auto s = loader.start_epoch(epoch); !s.ok()) {
      std::cerr << s << "\n";
      std::exit(1);
    }
    int64_t samples = 0;
    while (true) {
      auto b = loader.next();
      if (!b.ok()) {
        std::cerr << b.status() << "\n";
        std::exit(1);
      }
      if (!b->has_value()) break;
      const Batch& batch = **b;
      samples += batch.size();
      checksum += batch.inputs.data_ptr<float>()[0];  // touch it, as a training step would
    }
    return samples;
  };
  consume_epoch(0);  // warm-up: threads started, allocator primed
  int64_t samples = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int e = 1; e <= epochs; ++e) samples += consume_epoch(e);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Result r;
  r.samples_per_s = samples / secs;
  r.peak_mib = status_mib("VmHWM");
  std::printf(
      "%-34s workers=%lld batch=%lld epochs=%d  %9.0f samples/s  %6.3f s/epoch  "
      "peak RSS %.1f MiB  (checksum %.3g)\n",
      name, static_cast<long long>(options.workers_), static_cast<long long>(options.batch_size_),
      epochs, r.samples_per_s, secs / epochs, r.peak_mib, checksum);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int epochs = 5;
  int64_t workers = 2;
  int64_t batch = 128;
  std::string dir = "/usr/share/datasets/fashion-mnist";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--epochs")
      epochs = std::atoi(argv[i + 1]);
    else if (flag == "--workers")
      workers = std::atoll(argv[i + 1]);
    else if (flag == "--batch")
      batch = std::atoll(argv[i + 1]);
    else if (flag == "--data")
      dir = argv[i + 1];
    else {
      std::cerr << "unknown flag " << flag
                << "\nusage: loader_bench [--epochs N] [--workers N] [--batch N] [--data DIR]\n";
      return 2;
    }
  }

  std::printf("intra-op threads (consumer): %d\n", at::get_num_threads());
  const double rss_before = status_mib("VmRSS");
  const auto t0 = std::chrono::steady_clock::now();
  auto data = kiln::data::read_idx_images(dir + "/train-images-idx3-ubyte.gz",
                                          dir + "/train-labels-idx1-ubyte.gz");
  if (!data.ok()) {
    std::cerr << data.status() << "\n";
    return 1;
  }
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double dataset_mib = (data->images.nbytes() + data->labels.nbytes()) / (1024.0 * 1024.0);
  std::printf("dataset: %lld images %s, %.1f MiB in memory, read in %.2f s; RSS %.1f -> %.1f MiB\n",
              static_cast<long long>(data->size()), c10::str(data->images.sizes()).c_str(),
              dataset_mib, load_s, rss_before, status_mib("VmRSS"));
  const double batch_mib = batch * 28 * 28 * 4 / (1024.0 * 1024.0);
  const double load_peak_mib = status_mib("VmHWM");
  std::printf("one float32 batch: %.2f MiB; prefetch window %lld batches\n", batch_mib,
              static_cast<long long>(2 * workers));

  const auto augment = AugmentOptions().crop_padding(2).hflip(0.5f).noise_std(0.02f).erase(0.25f);
  const auto base = LoaderOptions(batch).shuffle(true).seed(1).normalize({0.2860f}, {0.3530f});

  Result plain = run(*data, LoaderOptions(base).workers(workers), epochs, "no augmentation");
  Result aug = run(*data, LoaderOptions(base).workers(workers).augment(augment), epochs,
                   "augmentation (crop2+flip+noise+erase)");
  Result sync = run(*data, LoaderOptions(base).workers(0).augment(augment), epochs,
                    "augmentation, consumer thread only");
  std::printf("target: >= 25000 samples/s with augmentation: %s (%.0f)\n",
              aug.samples_per_s >= 25000 ? "met" : "MISSED", aug.samples_per_s);
  std::printf("peak RSS over the whole run: %.1f MiB (reading the gzip files: %.1f MiB)\n",
              std::max({load_peak_mib, plain.peak_mib, aug.peak_mib, sync.peak_mib}),
              load_peak_mib);
  return 0;
}
