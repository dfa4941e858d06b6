#pragma once
// Escaping text for XML, SVG and HTML documents Kiln writes (plots, reports, JUnit files).

#include <string>
#include <string_view>

namespace kiln {

/// `text` safe inside XML/HTML character data and quoted attribute values: & < > " ' become
/// entities, and control characters XML 1.0 forbids (all below 0x20 but tab, newline and
/// carriage return) are dropped. Pure; thread-safe.
std::string xml_escape(std::string_view text);

}  // namespace kiln
