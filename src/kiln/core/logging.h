#pragma once

#include <spdlog/spdlog.h>

namespace kiln {

/// Configures the process-wide logger: stderr, "[time] [level] message". `level` is one of
/// trace/debug/info/warn/error/off; `KILN_LOG_LEVEL` overrides it. Call once from main().
void init_logging(const std::string& level = "info");

}  // namespace kiln

// Use spdlog's macros through these names so the backend can change in one place.
#define KILN_LOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
#define KILN_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define KILN_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define KILN_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
