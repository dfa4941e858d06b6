#include "kiln/core/threads.h"

#include <cstdlib>
#include <string>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kiln {

void configure_allocator_for_tensors() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
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

}  // namespace kiln
