#pragma once
// The monitoring dashboard of `kiln serve` (GET /dashboard): one self-contained HTML page (style
// and script inline, no CDN), compiled into the binary from src/kiln/serve/dashboard.html.

#include <string_view>

namespace kiln::serve {

/// The page's bytes; static storage, valid for the program's life. Thread-safe.
std::string_view dashboard_page();

}  // namespace kiln::serve
