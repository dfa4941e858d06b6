#include "kiln/train/plots.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "kiln/core/xml.h"

namespace kiln::train {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};

}  // namespace

std::string line_chart_svg(const std::string& title, const std::string& x_label,
                           const std::vector<Series>& series) {
  const double w = 640, h = 400, left = 70, right = 150, top = 40, bottom = 50;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y) || !std::isfinite(x)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const double pw = w - left - right, ph = h - top - bottom;
  auto sx = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << w / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
     << xml_escape(title) << "</text>\n"
     << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
     << "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double yv = y0 + (y1 - y0) * i / 4.0, xv = x0 + (x1 - x0) * i / 4.0;
    os << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << sy(yv) << "\" y2=\""
       << sy(yv) << "\" stroke=\"#ddd\"/>\n"
       << "<text x=\"" << left - 6 << "\" y=\"" << sy(yv) + 4 << "\" text-anchor=\"end\">"
       << num(yv) << "</text>\n"
       << "<text x=\"" << sx(xv) << "\" y=\"" << top + ph + 18 << "\" text-anchor=\"middle\">"
       << num(xv) << "</text>\n";
  }
  os << "<text x=\"" << left + pw / 2 << "\" y=\"" << h - 10 << "\" text-anchor=\"middle\">"
     << xml_escape(x_label) << "</text>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % (sizeof kColors / sizeof kColors[0])];
    std::ostringstream pts;
    for (const auto& [x, y] : series[i].points)
      if (std::isfinite(x) && std::isfinite(y)) pts << sx(x) << "," << sy(y) << " ";
    os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\""
       << pts.str() << "\"/>\n";
    for (const auto& [x, y] : series[i].points)
      if (std::isfinite(x) && std::isfinite(y))
        os << "<circle cx=\"" << sx(x) << "\" cy=\"" << sy(y) << "\" r=\"3\" fill=\"" << color
           << "\"/>\n";
    const double ly = top + 16 + 20.0 * static_cast<double>(i);
    os << "<line x1=\"" << left + pw + 12 << "\" x2=\"" << left + pw + 32 << "\" y1=\"" << ly - 4
       << "\" y2=\"" << ly - 4 << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n"
       << "<text x=\"" << left + pw + 38 << "\" y=\"" << ly << "\">" << xml_escape(series[i].name)
       << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

std::string confusion_matrix_svg(const Json& matrix, const std::vector<std::string>& labels) {
  const size_t k = matrix.is_array() ? matrix.size() : 0;
  const double cell = k > 12 ? 28 : 44, left = 130, top = 60;
  const double size = cell * static_cast<double>(k);
  const double w = left + size + 20, h = top + size + 110;
  double max_v = 1;
  for (const auto& row : matrix)
    for (const auto& v : row) max_v = std::max(max_v, v.get<double>());
  auto label = [&](size_t i) { return i < labels.size() ? labels[i] : std::to_string(i); };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
     << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << w / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
     << "Confusion matrix (rows: true, columns: predicted)</text>\n";
  for (size_t r = 0; r < k; ++r) {
    const double y = top + cell * static_cast<double>(r);
    os << "<text x=\"" << left - 6 << "\" y=\"" << y + cell / 2 + 4 << "\" text-anchor=\"end\">"
       << xml_escape(label(r)) << "</text>\n";
    for (size_t c = 0; c < k; ++c) {
      const double v = matrix[r][c].get<double>();
      const double x = left + cell * static_cast<double>(c);
      const double a = v / max_v;
      const int shade = static_cast<int>(255 - 200 * a);
      os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell << "\" height=\"" << cell
         << "\" fill=\"rgb(" << shade << "," << shade << ",255)\" stroke=\"#fff\"/>\n"
         << "<text x=\"" << x + cell / 2 << "\" y=\"" << y + cell / 2 + 4
         << "\" text-anchor=\"middle\" fill=\"" << (a > 0.6 ? "white" : "black") << "\">"
         << static_cast<int64_t>(v) << "</text>\n";
    }
  }
  for (size_t c = 0; c < k; ++c) {
    const double x = left + cell * static_cast<double>(c) + cell / 2;
    const double y = top + size + 8;
    os << "<text x=\"" << x << "\" y=\"" << y << "\" text-anchor=\"end\" transform=\"rotate(-60 "
       << x << " " << y << ")\">" << xml_escape(label(c)) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

std::string reliability_svg(const Json& reliability, double ece) {
  const Json& count = reliability.at("count");
  const Json& confidence = reliability.at("confidence");
  const Json& accuracy = reliability.at("accuracy");
  const size_t bins = count.size();
  const double left = 60, top = 50, size = 320, w = left + size + 30, h = top + size + 60;
  auto x_of = [&](double v) { return left + size * v; };
  auto y_of = [&](double v) { return top + size * (1 - v); };
  char title[96];
  std::snprintf(title, sizeof title, "Reliability (ECE %.4f)", ece);
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
     << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << w / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << title
     << "</text>\n"
     << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << size << "\" height=\"" << size
     << "\" fill=\"none\" stroke=\"#888\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = t / 4.0;
    os << "<text x=\"" << x_of(v) << "\" y=\"" << top + size + 16 << "\" text-anchor=\"middle\">"
       << v << "</text>\n"
       << "<text x=\"" << left - 6 << "\" y=\"" << y_of(v) + 4 << "\" text-anchor=\"end\">" << v
       << "</text>\n";
  }
  for (size_t b = 0; b < bins; ++b) {
    const int64_t rows = count[b].get<int64_t>();
    if (rows == 0) continue;
    const double lo = static_cast<double>(b) / static_cast<double>(bins);
    const double hi = static_cast<double>(b + 1) / static_cast<double>(bins);
    const double acc = accuracy[b].get<double>(), conf = confidence[b].get<double>();
    os << "<rect x=\"" << x_of(lo) << "\" y=\"" << y_of(acc) << "\" width=\"" << x_of(hi) - x_of(lo)
       << "\" height=\"" << y_of(0) - y_of(acc) << "\" fill=\"#6b8fd6\" stroke=\"white\"><title>"
       << rows << " rows, accuracy " << acc << ", confidence " << conf << "</title></rect>\n"
       << "<circle cx=\"" << x_of(conf) << "\" cy=\"" << y_of(acc)
       << "\" r=\"3\" fill=\"#d62728\"/>\n";
  }
  os << "<line x1=\"" << x_of(0) << "\" y1=\"" << y_of(0) << "\" x2=\"" << x_of(1) << "\" y2=\""
     << y_of(1) << "\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n"
     << "<text x=\"" << left + size / 2 << "\" y=\"" << top + size + 36
     << "\" text-anchor=\"middle\">confidence (top-1 probability)</text>\n"
     << "<text x=\"16\" y=\"" << top + size / 2
     << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " << top + size / 2
     << ")\">accuracy</text>\n"
     << "</svg>\n";
  return os.str();
}

}  // namespace kiln::train
