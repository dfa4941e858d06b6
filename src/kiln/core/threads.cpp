#include "kiln/core/threads.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kiln {

void configure_allocator_for_tensors() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  // And no mmap at all: 32 MiB is glibc's ceiling for the threshold, and every activation above
  // it (a CNN's first convolution at evaluation batch 512) was a fresh mapping faulted page by
  // page, 1.1 M faults for one `kiln eval` of Fashion-MNIST. KILN_ALLOCATOR_MMAP=1 keeps glibc's
  // mmap above the threshold: less resident memory, slower.
  const char* keep_mmap = std::getenv("KILN_ALLOCATOR_MMAP");
  if (!keep_mmap || std::string(keep_mmap) != "1") mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
#endif
}

namespace {
int parse_positive(const char* text) {
  if (!text || !*text) return 0;
  try {
    size_t pos = 0;
    int n = std::stoi(text, &pos);
    return (pos == std::string(text).size() && n > 0) ? n : 0;
  } catch (...) {
    return 0;
  }
}
}  // namespace

int default_intra_op_threads() {
  if (int n = parse_positive(std::getenv("KILN_THREADS")); n > 0) return n;
  if (int n = parse_positive(std::getenv("OMP_NUM_THREADS")); n > 0) return n;
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

bool cpu_supports_bf16() {
  static const bool supported = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream words(line);
      std::string w;
      while (words >> w)
        if (w == "avx512_bf16" || w == "amx_bf16") return true;
      return false;
    }
    return false;
  }();
  return supported;
}

}  // namespace kiln
