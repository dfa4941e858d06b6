// `kiln model <verb>`: inspect model specs.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/json.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/model/summary.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

/// "1,28,28" -> {1, 28, 28}; "30" -> {30}.
Expected<std::vector<int64_t>> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string part;
  auto bad = [&] {
    return Status::InvalidArgument("--input: '" + text +
                                   "' is not a shape (C,H,W for images, F for tables)");
  };
  while (std::getline(ss, part, ',')) {
    try {
      size_t pos = 0;
      long long v = std::stoll(part, &pos);
      if (pos != part.size() || v < 1) return bad();
      shape.push_back(v);
    } catch (const std::exception&) {
      return bad();
    }
  }
  if (shape.empty() || (shape.size() != 1 && shape.size() != 3) || text.back() == ',') return bad();
  return shape;
}

/// A model spec file (YAML/JSON) or a zoo name.
Expected<model::ModelSpec> resolve_spec(const std::string& spec) {
  std::error_code ec;
  if (fs::exists(spec, ec)) return model::load_model_spec_file(spec);
  const auto& zoo = model::zoo_names();
  if (std::find(zoo.begin(), zoo.end(), spec) != zoo.end()) return model::zoo_model(spec);
  std::string names;
  for (const auto& n : zoo) names += (names.empty() ? "" : ", ") + n;
  return Status::InvalidArgument("'" + spec + "' is neither a model spec file nor a zoo model (" +
                                 names + ")");
}

struct SummaryArgs {
  std::string spec;
  std::string input = "1,28,28";
  int64_t outputs = 10;
  bool json = false;
};

int run_summary(const SummaryArgs& a) {
  Expected<std::vector<int64_t>> shape = parse_shape(a.input);
  if (!shape.ok()) return report_failure(shape.status());
  Expected<model::ModelSpec> spec = resolve_spec(a.spec);
  if (!spec.ok()) return report_failure(spec.status());
  auto net = model::NetworkImpl::Create(*spec, *shape, a.outputs);
  if (!net.ok()) return report_failure(net.status());
  if (a.json)
    std::cout << model::summary_json(**net).dump(2) << "\n";
  else
    std::cout << model::render_summary(**net);
  return 0;
}

}  // namespace

void register_model_commands(CLI::App& app, int* exit_code) {
  CLI::App* model = app.add_subcommand("model", kModelHelp);
  model->require_subcommand(1);

  auto args = std::make_shared<SummaryArgs>();
  CLI::App* summary = model->add_subcommand(
      "summary", "Build a model for an input shape and print its layers, shapes, params and FLOPs");
  summary
      ->add_option("spec", args->spec,
                   "model spec (.yaml/.json, top level or under model:) or a zoo name (mlp, "
                   "cnn-small, resnet-small)")
      ->required();
  add_flag(*summary, Flag::kInput, &args->input);
  add_flag(*summary, Flag::kOutputs, &args->outputs)->check(CLI::PositiveNumber);
  add_flag(*summary, Flag::kJson, &args->json);
  summary->callback([args, exit_code] { *exit_code = run_summary(*args); });
}

}  // namespace kiln::cli
