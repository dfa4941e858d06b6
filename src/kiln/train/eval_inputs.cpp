#include "kiln/train/eval_inputs.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/json.h"
#include "kiln/data/images.h"
#include "kiln/data/npy.h"
#include "kiln/data/prepare.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/spec.h"
#include "kiln/model/device.h"
#include "kiln/registry/model_store.h"

namespace kiln::train {

Expected<RawInputs> read_raw_inputs(const model::Bundle& b, const fs::path& path,
                                    bool want_targets) {
  std::string ext = path.extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::vector<int64_t> raw_shape = b.raw_input_shape();
  RawInputs in;
  if (ext == ".csv") {
    std::vector<std::string> features = b.feature_names();
    if (features.empty())
      return Status::InvalidArgument(b.dir.string() +
                                     ": the bundle records no feature columns, so it "
                                     "cannot read CSV rows (give .npy or .idx input)");
    const model::TableColumns columns(b);
    KILN_ASSIGN_OR_RETURN(CsvTable t, read_csv(path));
    if (!t.ragged.empty())
      return Status::InvalidArgument(path.string() + " line " + std::to_string(t.ragged[0].line) +
                                     ": expected " + std::to_string(t.header.size()) +
                                     " fields, got " + std::to_string(t.ragged[0].fields));
    std::vector<int64_t> cols;
    for (const auto& name : features) {
      int64_t c = t.column_index(name);
      if (c < 0)
        return Status::InvalidArgument(path.string() + ": missing feature column '" + name + "'");
      cols.push_back(c);
    }
    const int64_t n = static_cast<int64_t>(t.rows.size()), f = static_cast<int64_t>(cols.size());
    in.x = torch::empty({n, f}, torch::kFloat32);
    auto xa = in.x.accessor<float, 2>();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < f; ++j) {
        const std::string& cell =
            t.rows[static_cast<size_t>(r)][static_cast<size_t>(cols[static_cast<size_t>(j)])];
        if (columns.categorical(static_cast<size_t>(j))) {
          xa[r][j] = columns.code(static_cast<size_t>(j), cell, t.is_missing(cell));
          continue;
        }
        double v = std::numeric_limits<double>::quiet_NaN();
        if (!t.is_missing(cell) && !parse_double(cell, &v))
          return Status::InvalidArgument(path.string() + " line " +
                                         std::to_string(t.lines[static_cast<size_t>(r)]) +
                                         ": column '" + features[static_cast<size_t>(j)] + "': '" +
                                         cell + "' is not a number");
        xa[r][j] = static_cast<float>(v);
      }
    in.lines = t.lines;
    in.source = path.string();
    std::string target =
        b.manifest.contains("schema") ? b.manifest["schema"]["target"].value("name", "") : "";
    int64_t tc = target.empty() ? -1 : t.column_index(target);
    if (want_targets) {
      if (tc < 0)
        return Status::InvalidArgument(path.string() + ": no target column '" + target + "'");
      if (b.task() == "classification") {
        std::vector<std::string> labels = b.labels();
        std::vector<int64_t> y;
        for (size_t r = 0; r < t.rows.size(); ++r) {
          const std::string& cell = t.rows[r][static_cast<size_t>(tc)];
          auto it = std::find(labels.begin(), labels.end(), cell);
          if (it == labels.end())
            return Status::InvalidArgument(path.string() + " line " + std::to_string(t.lines[r]) +
                                           ": label '" + cell +
                                           "' is not one of the bundle's classes");
          y.push_back(it - labels.begin());
        }
        in.targets = torch::tensor(y, torch::kLong);
      } else {
        std::vector<float> y;
        for (size_t r = 0; r < t.rows.size(); ++r) {
          double v;
          if (!parse_double(t.rows[r][static_cast<size_t>(tc)], &v))
            return Status::InvalidArgument(path.string() + " line " + std::to_string(t.lines[r]) +
                                           ": target is not a number");
          y.push_back(static_cast<float>(v));
        }
        in.targets = torch::tensor(y, torch::kFloat32);
      }
    }
    in.table = std::make_shared<const CsvTable>(std::move(t));
    return in;
  }
  torch::Tensor x;
  if (ext == ".npy") {
    KILN_ASSIGN_OR_RETURN(x, data::read_npy(path));
  } else {  // IDX, gzip or raw (…-idx3-ubyte[.gz])
    KILN_ASSIGN_OR_RETURN(x, data::read_idx(path));
  }
  // Images given without the channel dim (N×H×W) get one.
  if (x.dim() == static_cast<int64_t>(raw_shape.size()) && raw_shape.size() == 3 &&
      raw_shape[0] == 1)
    x = x.unsqueeze(1);
  std::vector<int64_t> want = {x.size(0)};
  want.insert(want.end(), raw_shape.begin(), raw_shape.end());
  if (x.sizes().vec() != want) {
    std::ostringstream got, exp;
    got << x.sizes();
    exp << torch::IntArrayRef(want);
    return Status::InvalidArgument(path.string() + ": input shape " + got.str() +
                                   " does not match the bundle's " + exp.str());
  }
  in.x = x.to(torch::kFloat32).contiguous();
  in.source = path.string();
  return in;
}

Expected<torch::Tensor> run_module(torch::jit::Module& module, const torch::Tensor& x,
                                   int64_t batch_size) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> outs;
  const torch::Device device = model::module_device(module);
  try {
    for (int64_t i = 0; i < x.size(0); i += batch_size)
      outs.push_back(module.forward({x.slice(0, i, std::min(x.size(0), i + batch_size)).to(device)})
                         .toTensor()
                         .to(torch::kCPU));
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("the model rejected the input: ") + e.what());
  }
  if (outs.empty()) return torch::empty({0});
  return torch::cat(outs);
}

bool is_snapshot_dir(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return false;
  auto m = read_json_file(path / "manifest.json");
  return m.ok() && m->value("format", "") == data::kSnapshotFormat;
}

fs::path lineage_snapshot_dir(const model::Bundle& bundle) {
  const Json& lineage = bundle.manifest.contains("lineage") ? bundle.manifest["lineage"] : Json();
  const std::string hash = lineage.is_object() ? lineage.value("snapshot_hash", "") : "";
  if (hash.size() < 12) return {};
  std::error_code ec;
  const fs::path root = kiln_home() / "snapshots";
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > 13 && name.compare(name.size() - 13, 13, "-" + hash.substr(0, 12)) == 0 &&
        is_snapshot_dir(it->path()))
      return it->path();
  }
  return {};
}

namespace {
/// True the first time this process asks about `what` (a command that reads several splits of
/// one snapshot warns once).
bool first_warning_of(const std::string& what) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  return warned.insert(what).second;
}
}  // namespace

Expected<RawInputs> read_labelled_rows(const model::Bundle& bundle, const std::string& data,
                                       const std::string& split) {
  if (fs::path(data).extension() == ".csv") return read_raw_inputs(bundle, data, true);
  fs::path snapshot_dir = data;
  if (!is_snapshot_dir(snapshot_dir)) {
    KILN_ASSIGN_OR_RETURN(data::DatasetSpec spec, data::resolve_dataset(data, ""));
    KILN_ASSIGN_OR_RETURN(
        data::PrepareResult prepared,
        data::prepare_dataset(spec, data::PrepareOptions(kiln_home() / "snapshots")));
    snapshot_dir = prepared.snapshot_dir;
  }
  KILN_ASSIGN_OR_RETURN(data::Snapshot snap, data::read_snapshot(snapshot_dir));
  auto it = snap.splits.find(split);
  if (it == snap.splits.end())
    return Status::InvalidArgument(snapshot_dir.string() + ": no split '" + split + "'");
  const Json& lineage = bundle.manifest.contains("lineage") ? bundle.manifest["lineage"] : Json();
  const std::string trained_on = lineage.is_object() ? lineage.value("snapshot_hash", "") : "";
  if (!trained_on.empty() && trained_on != snap.hash() &&
      first_warning_of(snapshot_dir.string() + " " + trained_on))
    std::fprintf(stderr,
                 "kiln: warning: %s was not prepared like the bundle's training data "
                 "(snapshot %s, bundle trained on %s)\n",
                 snapshot_dir.c_str(), snap.hash().substr(0, 12).c_str(),
                 trained_on.substr(0, 12).c_str());
  if (snap.manifest.value("kind", "") == "table" && !it->second.raw_x.defined())
    return Status::InvalidArgument(snapshot_dir.string() + ": the " + split +
                                   " split has no raw features (" + split +
                                   "_raw_x.npy: prepared by an older Kiln); prepare the "
                                   "dataset again, or give a CSV");
  RawInputs in;
  in.x = it->second.served_inputs().to(torch::kFloat32).contiguous();
  in.targets = it->second.y;
  if (bundle.task() == "classification") {
    // Snapshot targets index the snapshot's class list; the model's outputs index the bundle's
    // labels. Map by name, so a bundle whose labels are in another order is scored truthfully.
    const Json& target = snap.manifest["schema"]["target"];
    if (target.contains("classes")) {
      const std::vector<std::string> labels = bundle.labels();
      std::vector<int64_t> to_bundle;
      for (const auto& cls : target["classes"]) {
        const std::string name = cls.is_string() ? cls.get<std::string>() : cls.dump();
        auto pos = std::find(labels.begin(), labels.end(), name);
        if (pos == labels.end())
          return Status::InvalidArgument(snapshot_dir.string() + ": class '" + name +
                                         "' is not one of the bundle's labels");
        to_bundle.push_back(pos - labels.begin());
      }
      in.targets = torch::tensor(to_bundle, torch::kLong).index_select(0, in.targets);
    }
  }
  in.source = snapshot_dir.string() + " split " + split;
  return in;
}

Expected<model::Bundle> read_model_ref(const std::string& ref) {
  KILN_ASSIGN_OR_RETURN(registry::ResolvedModel resolved, registry::resolve_model_ref(ref));
  return model::read_bundle(resolved.bundle_dir);
}

}  // namespace kiln::train
