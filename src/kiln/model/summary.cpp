#include "kiln/model/summary.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace kiln::model {
namespace {

Json info_json(const LayerInfo& info, int64_t index) {
  Json j = Json::object();
  if (index >= 0) j["index"] = index;
  j["name"] = info.name;
  j["type"] = info.type;
  j["input_shape"] = info.input_shape;
  j["output_shape"] = info.output_shape;
  j["params"] = info.params;
  j["flops"] = info.flops;
  j["hparams"] = info.hparams;
  if (!info.children.empty()) {
    Json c = Json::array();
    for (const auto& child : info.children) c.push_back(info_json(child, -1));
    j["children"] = std::move(c);
  }
  return j;
}

struct Row {
  std::string index, name, type, shape, params, flops;
};

void collect(const LayerInfo& info, const std::string& index, int depth, std::vector<Row>* rows) {
  rows->push_back({index, std::string(2 * depth, ' ') + info.name, info.type,
                   shape_to_string(info.output_shape), with_thousands(info.params),
                   with_thousands(info.flops)});
  for (const auto& c : info.children) collect(c, "", depth + 1, rows);
}

std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof buf, "%.2fG", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000)
    std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

}  // namespace

std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string render_summary(const NetworkImpl& net) {
  std::vector<Row> rows = {{"#", "layer", "type", "output shape", "params", "FLOPs"}};
  const auto& infos = net.layer_infos();
  for (size_t i = 0; i < infos.size(); ++i) collect(infos[i], std::to_string(i), 0, &rows);
  size_t w[6] = {0, 0, 0, 0, 0, 0};
  for (const auto& r : rows) {
    const std::string* cells[6] = {&r.index, &r.name, &r.type, &r.shape, &r.params, &r.flops};
    for (int c = 0; c < 6; ++c) w[c] = std::max(w[c], cells[c]->size());
  }
  std::ostringstream os;
  os << "model " << net.spec().name;
  if (!net.spec().zoo_params.empty()) os << " " << net.spec().zoo_params.dump();
  os << "\ninput " << shape_to_string(net.input_shape()) << ", outputs " << net.outputs() << "\n";
  auto pad_left = [](const std::string& s, size_t n) { return std::string(n - s.size(), ' ') + s; };
  auto pad_right = [](const std::string& s, size_t n) {
    return s + std::string(n - s.size(), ' ');
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    os << pad_left(r.index, w[0]) << "  " << pad_right(r.name, w[1]) << "  "
       << pad_right(r.type, w[2]) << "  " << pad_right(r.shape, w[3]) << "  "
       << pad_left(r.params, w[4]) << "  " << pad_left(r.flops, w[5]) << "\n";
    if (i == 0) os << std::string(w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + 10, '-') << "\n";
  }
  os << "total params " << with_thousands(net.total_params()) << " (" << human(net.total_params())
     << "), FLOPs per sample " << with_thousands(net.total_flops()) << " ("
     << human(net.total_flops()) << ")\n";
  return os.str();
}

Json summary_json(const NetworkImpl& net) {
  Json layers = Json::array();
  const auto& infos = net.layer_infos();
  for (size_t i = 0; i < infos.size(); ++i)
    layers.push_back(info_json(infos[i], static_cast<int64_t>(i)));
  return Json{{"name", net.spec().name},          {"zoo_params", net.spec().zoo_params},
              {"input_shape", net.input_shape()}, {"outputs", net.outputs()},
              {"layers", std::move(layers)},      {"total_params", net.total_params()},
              {"total_flops", net.total_flops()}};
}

}  // namespace kiln::model
