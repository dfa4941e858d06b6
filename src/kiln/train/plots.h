#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kiln/core/json.h"

namespace kiln::train {

/// One line of a line chart: a name and its (x, y) points (non-finite y values are skipped).
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

/// A self-contained SVG line chart (axes, ticks, legend), e.g. loss vs epoch. Pure.
///
///   std::string svg = line_chart_svg("loss", "epoch", {{"train", train_pts}, {"val", val_pts}});
std::string line_chart_svg(const std::string& title, const std::string& x_label,
                           const std::vector<Series>& series);

/// A self-contained SVG heat map of a confusion matrix (rows: true, columns: predicted) with
/// counts in the cells and class names on the axes. Pure.
std::string confusion_matrix_svg(const Json& matrix, const std::vector<std::string>& labels);

/// A self-contained SVG reliability diagram from evaluate()'s `reliability` ({count,
/// confidence, accuracy} per equal-width bin of the top-1 confidence): per non-empty bin a bar
/// of its accuracy and a marker at its mean confidence, the diagonal a calibrated model would
/// follow, and `ece` in the title. Pure.
std::string reliability_svg(const Json& reliability, double ece);

}  // namespace kiln::train
