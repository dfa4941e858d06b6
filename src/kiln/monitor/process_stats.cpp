#include "kiln/monitor/process_stats.h"

#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "kiln/monitor/metrics.h"

namespace kiln::monitor {

Expected<ProcessStats> read_process_stats() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!in || !std::getline(in, line))
    return Status::IoError("/proc/self/stat: cannot read (is /proc mounted?)");
  // Field 2 (comm) may hold spaces: parse after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return Status::IoError("/proc/self/stat: unexpected format");
  std::istringstream is(line.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string tok; is >> tok;) f.push_back(tok);
  if (f.size() < 22) return Status::IoError("/proc/self/stat: too few fields");
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  ProcessStats s;
  // Field n is f[n - 3]: utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24.
  s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
  s.threads = std::stoll(f[17]);
  s.virtual_bytes = std::stoll(f[20]);
  s.resident_bytes = static_cast<int64_t>(std::stod(f[21]) * page);
  // Boot time from /proc/stat "btime".
  double btime = 0;
  std::ifstream st("/proc/stat");
  for (std::string l; std::getline(st, l);)
    if (l.rfind("btime ", 0) == 0) btime = std::stod(l.substr(6));
  s.start_time_seconds = btime + std::stod(f[19]) / ticks;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++s.open_fds;
  return s;
}

void register_process_metrics(MetricsRegistry& registry) {
  registry.add_collector([](std::string* out) {
    Expected<ProcessStats> s = read_process_stats();
    if (!s.ok()) return;
    auto emit = [out](const char* name, const char* help, const char* type, double v) {
      *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
              name + " " + format_value(v) + "\n";
    };
    emit("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter",
         s->cpu_seconds);
    emit("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
         static_cast<double>(s->resident_bytes));
    emit("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
         static_cast<double>(s->virtual_bytes));
    emit("process_threads", "Number of OS threads in the process.", "gauge",
         static_cast<double>(s->threads));
    emit("process_open_fds", "Number of open file descriptors.", "gauge",
         static_cast<double>(s->open_fds));
    emit("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
         "gauge", s->start_time_seconds);
  });
}

}  // namespace kiln::monitor
