#include "kiln/pipeline/dag_render.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "kiln/core/xml.h"

namespace kiln::pipeline {
namespace {}  // namespace

std::string dag_text(const PipelineFile& file) {
  size_t width = 0;
  for (const StageSpec& s : file.stages) width = std::max(width, s.name.size());
  std::ostringstream out;
  const auto layers = file.layers();
  for (const StageSpec& s : file.stages) {
    std::string line = std::string(2 * layers.at(s.name), ' ') + s.name;
    line.resize(std::max(line.size(), width + 2 * layers.at(s.name) + 2), ' ');
    out << line << " [" << stage_kind_name(s.kind) << "]";
    if (!s.needs.empty()) {
      out << " <- ";
      for (size_t i = 0; i < s.needs.size(); ++i) out << (i ? ", " : "") << s.needs[i];
    }
    if (!s.gate.empty()) out << " (gate: " << s.gate << ")";
    out << "\n";
  }
  return out.str();
}

std::string dag_svg(const PipelineFile& file) {
  constexpr int kBoxW = 140, kBoxH = 44, kGapX = 60, kGapY = 24, kMargin = 20;
  const auto layers = file.layers();
  std::map<int, int> rows_in_layer;
  std::map<std::string, std::pair<int, int>> pos;  // top-left corner
  int max_layer = 0, max_rows = 0;
  for (const StageSpec& s : file.stages) {
    const int l = layers.at(s.name);
    const int row = rows_in_layer[l]++;
    pos[s.name] = {kMargin + l * (kBoxW + kGapX), kMargin + row * (kBoxH + kGapY)};
    max_layer = std::max(max_layer, l);
    max_rows = std::max(max_rows, row + 1);
  }
  const int width = 2 * kMargin + (max_layer + 1) * kBoxW + max_layer * kGapX;
  const int height = 2 * kMargin + max_rows * kBoxH + (max_rows - 1) * kGapY;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"13\">\n"
      << "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
         "markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" "
         "fill=\"#555\"/></marker></defs>\n";
  for (const StageSpec& s : file.stages) {
    const auto [x, y] = pos[s.name];
    for (const std::string& u : s.upstream()) {
      const auto [ux, uy] = pos[u];
      const bool gate_only =
          u == s.gate && std::find(s.needs.begin(), s.needs.end(), u) == s.needs.end();
      svg << "<line x1=\"" << ux + kBoxW << "\" y1=\"" << uy + kBoxH / 2 << "\" x2=\"" << x
          << "\" y2=\"" << y + kBoxH / 2 << "\" stroke=\"#555\" marker-end=\"url(#arrow)\""
          << (gate_only || u == s.gate ? " stroke-dasharray=\"5,3\"" : "") << "/>\n";
    }
  }
  for (const StageSpec& s : file.stages) {
    const auto [x, y] = pos[s.name];
    svg << "<g><rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << kBoxW << "\" height=\""
        << kBoxH << "\" rx=\"6\" fill=\"#eef3fb\" stroke=\"#3465a4\"/>"
        << "<text x=\"" << x + kBoxW / 2 << "\" y=\"" << y + 18
        << "\" text-anchor=\"middle\" font-weight=\"bold\">" << xml_escape(s.name) << "</text>"
        << "<text x=\"" << x + kBoxW / 2 << "\" y=\"" << y + 35
        << "\" text-anchor=\"middle\" fill=\"#555\">" << stage_kind_name(s.kind)
        << (s.gate.empty() ? "" : ", gate " + xml_escape(s.gate)) << "</text></g>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace kiln::pipeline
