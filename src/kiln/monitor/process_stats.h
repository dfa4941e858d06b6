#pragma once

#include <cstdint>

#include "kiln/core/expected.h"

namespace kiln::monitor {

class MetricsRegistry;

/// This process's resource use, read from /proc/self (Linux).
struct ProcessStats {
  double cpu_seconds = 0;         ///< user + system CPU time
  int64_t resident_bytes = 0;     ///< RSS
  int64_t virtual_bytes = 0;      ///< VSZ
  int64_t threads = 0;            ///< OS threads
  int64_t open_fds = 0;           ///< entries of /proc/self/fd
  double start_time_seconds = 0;  ///< since the Unix epoch
};

/// Reads /proc/self/stat and /proc/self/fd. IoError when /proc is not there. Thread-safe.
Expected<ProcessStats> read_process_stats();

/// Adds a collector exposing the standard process_* metrics (process_cpu_seconds_total,
/// process_resident_memory_bytes, process_virtual_memory_bytes, process_threads,
/// process_open_fds, process_start_time_seconds), read at each scrape.
void register_process_metrics(MetricsRegistry& registry);

}  // namespace kiln::monitor
