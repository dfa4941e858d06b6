#include "kiln/model/bundle.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <set>
#include <sstream>

#include "kiln/core/clock.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/threads.h"
#include "kiln/core/version.h"
#include "kiln/model/network.h"

namespace kiln::model {

namespace {

Expected<std::string> module_bytes(const torch::jit::Module& scripted) {
  try {
    std::ostringstream os;
    scripted.save(os);
    return os.str();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("cannot serialise the TorchScript module: ") +
                            e.what_without_backtrace());
  }
}

Expected<std::string> weights_bytes(const TensorMap& state) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : state) {
    if (!t.defined())
      return Status::InvalidArgument("weights: tensor \"" + name + "\" is undefined");
    dict.insert(name, t.detach().to(at::kCPU).contiguous());
  }
  std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  return std::string(bytes.begin(), bytes.end());
}

std::atomic<uint64_t> g_sequence{0};

/// Reads a file the manifest lists and checks its sha256; DataLoss names it.
Expected<std::string> read_verified(const Bundle& b, const std::string& name) {
  const fs::path path = b.dir / name;
  const Json& files = b.manifest.contains("files") ? b.manifest.at("files") : Json();
  if (!files.is_object() || !files.contains(name) || !files.at(name).is_string())
    return Status::DataLoss((b.dir / kBundleManifestFile).string() + ": \"files\" does not list " +
                            name);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    return Status::DataLoss(path.string() + ": missing (listed in the bundle manifest)");
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  if (sha256_hex(bytes) != files.at(name).get<std::string>())
    return Status::DataLoss(path.string() + ": sha256 does not match the bundle manifest");
  return bytes;
}

}  // namespace

namespace {
Expected<fs::path> publish_bundle(const fs::path& dir, Json m,
                                  const std::vector<std::pair<std::string, std::string>>& files,
                                  bool non_empty);
}  // namespace

Expected<fs::path> write_bundle(const fs::path& dir, const Json& manifest, const TensorMap& state,
                                const torch::jit::Module& scripted,
                                const std::map<std::string, std::string>& extra_files,
                                const WriteBundleOptions& options) {
  const std::string where = dir.string() + ": ";
  if (!manifest.is_object() || !manifest.contains("model"))
    return Status::InvalidArgument(where +
                                   "manifest: missing \"model\" (write_module_bundle writes "
                                   "TorchScript-only bundles)");
  KILN_RETURN_IF_ERROR(
      validate_bundle_manifest(manifest).with_context(dir.string() + ": manifest"));
  for (const auto& [name, bytes] : extra_files) {
    (void)bytes;
    if (!is_plain_bundle_file_name(name) || name == kBundleManifestFile ||
        name == kBundleWeightsFile || name == kBundleModuleFile)
      return Status::InvalidArgument(where + "extra file name \"" + name +
                                     "\" is not a plain file name or is reserved");
  }
  std::error_code ec;
  const bool exists = fs::exists(dir, ec);
  if (exists && !fs::is_directory(dir, ec))
    return Status::AlreadyExists(where + "exists and is not a directory");
  const bool non_empty = exists && !fs::is_empty(dir, ec);
  if (non_empty && !options.overwrite_)
    return Status::AlreadyExists(where + "exists and is not empty (pass overwrite to replace it)");

  // Serialise first: nothing touches the disk unless every piece encodes.
  std::vector<std::pair<std::string, std::string>> files;
  KILN_ASSIGN_OR_RETURN(std::string weights, weights_bytes(state));
  files.emplace_back(kBundleWeightsFile, std::move(weights));
  KILN_ASSIGN_OR_RETURN(std::string module, module_bytes(scripted));
  files.emplace_back(kBundleModuleFile, std::move(module));
  for (const auto& [name, bytes] : extra_files) files.emplace_back(name, bytes);

  Json m = Json::object();
  m["format"] = kBundleFormat;
  m["format_version"] = kBundleFormatVersion;
  for (const auto& [key, value] : manifest.items())
    if (key != "format" && key != "format_version" && key != "files" && key != kManifestHashKey)
      m[key] = value;
  if (!m.contains("signature")) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape,
                          json_int_list(m.at("input_shape"), "input_shape"));
    Json pre = m.contains("preprocessing") ? m.at("preprocessing") : Json();
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> raw, raw_input_shape(pre, shape));
    m["signature"] =
        bundle_signature(m.at("task").get<std::string>(), raw, m.at("outputs").get<int64_t>());
  }
  return publish_bundle(dir, std::move(m), files, non_empty);
}

namespace {

Expected<fs::path> publish_bundle(const fs::path& dir, Json m,
                                  const std::vector<std::pair<std::string, std::string>>& files,
                                  bool non_empty) {
  const std::string where = dir.string() + ": ";
  std::error_code ec;
  const bool exists = fs::exists(dir, ec);
  if (!m.contains("lineage") || !m.at("lineage").is_object()) m["lineage"] = Json::object();
  if (!m["lineage"].contains("kiln_version")) m["lineage"]["kiln_version"] = kVersion;
  if (!m["lineage"].contains("git_commit")) m["lineage"]["git_commit"] = kGitCommit;
  if (!m.contains("created_at")) m["created_at"] = utc_now_iso8601();
  Json hashes = Json::object();
  for (const auto& [name, bytes] : files) hashes[name] = sha256_hex(bytes);
  m["files"] = hashes;
  m.erase(kManifestHashKey);
  m[kManifestHashKey] = manifest_sha256(m);  // last, so it seals everything above

  KILN_ASSIGN_OR_RETURN(StagingDirectory staging, StagingDirectory::Create(dir));
  for (const auto& [name, bytes] : files)
    KILN_RETURN_IF_ERROR(write_file_atomic(staging.path() / name, bytes));
  KILN_RETURN_IF_ERROR(write_json_file_atomic(staging.path() / kBundleManifestFile, m));

  if (!non_empty) {
    if (exists) fs::remove(dir, ec);  // an empty directory: the rename replaces it anyway
    KILN_RETURN_IF_ERROR(staging.publish());
    return dir;
  }
  // Overwrite: move the old bundle aside, publish, then delete it (restore it on failure).
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  const fs::path old =
      parent / ("." + dir.filename().string() + ".old." + std::to_string(::getpid()) + "." +
                std::to_string(g_sequence.fetch_add(1)));
  fs::rename(dir, old, ec);
  if (ec) return Status::IoError(where + "cannot move the old bundle aside: " + ec.message());
  Status st = staging.publish();
  if (!st.ok()) {
    fs::rename(old, dir, ec);
    return st;
  }
  fs::remove_all(old, ec);
  return dir;
}

}  // namespace

Expected<fs::path> write_module_bundle(const fs::path& dir, const Json& manifest,
                                       const std::string& module_bytes,
                                       const WriteBundleOptions& options) {
  if (manifest.contains("model"))
    return Status::InvalidArgument(dir.string() +
                                   ": manifest: a TorchScript-only bundle takes no \"model\"");
  KILN_RETURN_IF_ERROR(
      validate_bundle_manifest(manifest).with_context(dir.string() + ": manifest"));
  std::error_code ec;
  const bool exists = fs::exists(dir, ec);
  if (exists && !fs::is_directory(dir, ec))
    return Status::AlreadyExists(dir.string() + ": exists and is not a directory");
  const bool non_empty = exists && !fs::is_empty(dir, ec);
  if (non_empty && !options.overwrite_)
    return Status::AlreadyExists(dir.string() +
                                 ": exists and is not empty (pass overwrite to replace it)");
  Json m = Json::object();
  m["format"] = kBundleFormat;
  m["format_version"] = kBundleFormatVersion;
  for (const auto& [key, value] : manifest.items())
    if (key != "format" && key != "format_version" && key != "files" && key != kManifestHashKey)
      m[key] = value;
  return publish_bundle(dir, std::move(m), {{kBundleModuleFile, module_bytes}}, non_empty);
}

Expected<TensorMap> load_bundle_weights(const Bundle& bundle) {
  if (!bundle.has_network())
    return Status::InvalidArgument(bundle.dir.string() +
                                   ": a TorchScript-only bundle has no weights.pt (only model.pt)");
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_verified(bundle, kBundleWeightsFile));
  const std::string path = (bundle.dir / kBundleWeightsFile).string();
  TensorMap out;
  try {
    c10::IValue v = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
    if (!v.isGenericDict()) return Status::DataLoss(path + ": not a dictionary of tensors");
    for (const auto& e : v.toGenericDict()) {
      if (!e.key().isString() || !e.value().isTensor())
        return Status::DataLoss(path + ": not a dictionary of name -> tensor");
      out[e.key().toStringRef()] = e.value().toTensor();
    }
  } catch (const c10::Error& e) {
    return Status::DataLoss(path + ": cannot read weights: " + e.what_without_backtrace());
  }
  return out;
}

Expected<torch::jit::Module> load_bundle_module(const Bundle& bundle,
                                                const std::string& precision) {
  const Json entry = bundle.precision_entry(precision);
  if (!entry.is_object() || !entry.contains("file") || !entry.at("file").is_string())
    return Status::NotFound(bundle.dir.string() + ": the bundle records no " + precision +
                            " module (Kiln records bf16 for convolutional models trained on a "
                            "CPU with avx512_bf16; train it again there, or serve fp32)");
  const std::string file = entry.at("file").get<std::string>();
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_verified(bundle, file));
  try {
    std::istringstream is(bytes);
    torch::jit::Module m = torch::jit::load(is, c10::Device(c10::kCPU));
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    return Status::DataLoss((bundle.dir / file).string() +
                            ": cannot load TorchScript: " + e.what_without_backtrace());
  }
}

Status load_network_state(NetworkImpl& net, const TensorMap& state) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : net.named_parameters(true)) targets[item.key()] = item.value();
  for (const auto& item : net.named_buffers(true)) targets[item.key()] = item.value();
  for (const auto& [name, target] : targets) {
    auto it = state.find(name);
    if (it == state.end()) return Status::InvalidArgument("weights: no tensor \"" + name + "\"");
    if (it->second.sizes() != target.sizes())
      return Status::InvalidArgument("weights: \"" + name + "\" has shape " +
                                     shape_to_string(it->second.sizes().vec()) + ", the network " +
                                     shape_to_string(target.sizes().vec()));
  }
  for (const auto& [name, t] : state)
    if (!targets.count(name))
      return Status::InvalidArgument("weights: unexpected tensor \"" + name + "\"");
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(state.at(name));
  return Status::Ok();
}

Expected<std::shared_ptr<NetworkImpl>> load_bundle_network(const Bundle& bundle) {
  KILN_ASSIGN_OR_RETURN(ModelSpec spec, bundle.model_spec());
  KILN_ASSIGN_OR_RETURN(auto net,
                        NetworkImpl::Create(spec, bundle.input_shape(), bundle.outputs()));
  KILN_ASSIGN_OR_RETURN(TensorMap weights, load_bundle_weights(bundle));
  KILN_RETURN_IF_ERROR(load_network_state(*net, weights).with_context(bundle.dir.string()));
  net->eval();
  return net;
}

std::string auto_precision(const Bundle& bundle) {
  return bundle.precision_entry(kPrecisionBf16).is_object() && cpu_supports_bf16() ? kPrecisionBf16
                                                                                   : kPrecisionFp32;
}

}  // namespace kiln::model
