#include "kiln/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace kiln {

void init_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("kiln");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  std::string chosen = level;
  if (const char* env = std::getenv("KILN_LOG_LEVEL"); env && *env) chosen = env;
  spdlog::set_level(spdlog::level::from_str(chosen));
}

}  // namespace kiln
