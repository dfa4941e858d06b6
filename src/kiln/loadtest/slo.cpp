#include "kiln/loadtest/slo.h"

#include <cctype>
#include <cstdlib>

#include "kiln/loadtest/histogram.h"

namespace kiln::loadtest {
namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

/// A plain non-negative decimal number (digits, optional fraction); the whole string.
bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  bool digit = false, dot = false;
  for (char c : s) {
    if (std::isdigit(static_cast<unsigned char>(c)))
      digit = true;
    else if (c == '.' && !dot)
      dot = true;
    else
      return false;
  }
  if (!digit) return false;
  *out = std::strtod(s.c_str(), nullptr);
  return true;
}

Expected<SloTerm> parse_term(const std::string& raw) {
  const std::string t = trim(raw);
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("--slo: term '" + t + "': " + why +
                                   " (expected pNN[.N]<VALUE(us|ms|s) or errors<X%)");
  };
  const size_t lt = t.find('<');
  if (lt == std::string::npos) return bad("no '<'");
  const std::string lhs = trim(t.substr(0, lt));
  const std::string rhs = trim(t.substr(lt + 1));
  SloTerm term;
  term.text = t;
  if (lhs == "errors") {
    if (rhs.empty() || rhs.back() != '%') return bad("the error bound must end in '%'");
    double pct = 0;
    if (!parse_number(rhs.substr(0, rhs.size() - 1), &pct) || pct > 100)
      return bad("the error bound must be a percentage from 0 to 100");
    term.kind = SloTerm::Kind::kErrors;
    term.max_error_ratio = pct / 100.0;
    return term;
  }
  if (lhs.size() < 2 || lhs[0] != 'p') return bad("unknown metric '" + lhs + "'");
  double pct = 0;
  if (!parse_number(lhs.substr(1), &pct) || pct <= 0 || pct > 100)
    return bad("the percentile must be a number in (0, 100]");
  size_t unit = rhs.size();
  while (unit > 0 && std::isalpha(static_cast<unsigned char>(rhs[unit - 1]))) --unit;
  const std::string suffix = rhs.substr(unit);
  double value = 0;
  if (!parse_number(rhs.substr(0, unit), &value)) return bad("the bound must be a number");
  double scale = 0;
  if (suffix == "us")
    scale = 1e3;
  else if (suffix == "ms")
    scale = 1e6;
  else if (suffix == "s")
    scale = 1e9;
  else
    return bad(suffix.empty() ? "the bound needs a unit" : "unknown unit '" + suffix + "'");
  if (value <= 0) return bad("the bound must be positive");
  term.kind = SloTerm::Kind::kLatency;
  term.percentile = pct;
  term.bound_ns = value * scale;
  return term;
}

}  // namespace

Expected<std::vector<SloTerm>> parse_slo(const std::string& text) {
  std::vector<SloTerm> terms;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string part = text.substr(start, comma - start);
    if (trim(part).empty()) return Status::InvalidArgument("--slo '" + text + "': empty term");
    KILN_ASSIGN_OR_RETURN(SloTerm term, parse_term(part));
    terms.push_back(term);
    start = comma + 1;
  }
  return terms;
}

std::vector<SloCheck> check_slo(const std::vector<SloTerm>& terms, const Histogram& latency_ns,
                                int64_t requests, int64_t errors) {
  std::vector<SloCheck> out;
  for (const SloTerm& t : terms) {
    SloCheck c;
    c.term = t;
    if (t.kind == SloTerm::Kind::kErrors) {
      c.observed = requests > 0 ? static_cast<double>(errors) / static_cast<double>(requests) : 0;
      // errors<0% reads as "no errors at all".
      c.ok = requests > 0 &&
             (c.observed < t.max_error_ratio || (errors == 0 && t.max_error_ratio == 0));
    } else {
      c.observed = static_cast<double>(latency_ns.value_at_percentile(t.percentile));
      c.ok = latency_ns.total_count() > 0 && c.observed < t.bound_ns;
    }
    out.push_back(c);
  }
  return out;
}

bool slo_ok(const std::vector<SloCheck>& checks) {
  for (const auto& c : checks)
    if (!c.ok) return false;
  return true;
}

}  // namespace kiln::loadtest
