#include "kiln/data/snapshot.h"

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/data/npy.h"

namespace kiln::data {

const std::string& Snapshot::hash() const {
  static const std::string kEmpty;
  auto it = manifest.find("content_hash");
  return it != manifest.end() && it->is_string() ? it->get_ref<const std::string&>() : kEmpty;
}

std::vector<std::string> Snapshot::split_names() const {
  std::vector<std::string> names;
  for (const char* s : {"train", "val", "test"})
    if (splits.count(s)) names.push_back(s);
  return names;
}

Expected<fs::path> write_snapshot(const fs::path& parent, const std::string& name, Json manifest,
                                  const std::map<std::string, SplitTensors>& splits) {
  // Encode tensors first: their hashes go into the manifest, which names the directory.
  std::vector<std::pair<std::string, std::string>> files;  // file name -> bytes
  for (const char* split : {"train", "val", "test"}) {
    auto it = splits.find(split);
    if (it == splits.end()) continue;
    KILN_ASSIGN_OR_RETURN(std::string xb, encode_npy(it->second.x.contiguous()));
    KILN_ASSIGN_OR_RETURN(std::string yb, encode_npy(it->second.y.contiguous()));
    files.emplace_back(std::string(split) + "_x.npy", std::move(xb));
    files.emplace_back(std::string(split) + "_y.npy", std::move(yb));
    if (it->second.raw_x.defined()) {
      KILN_ASSIGN_OR_RETURN(std::string rb, encode_npy(it->second.raw_x.contiguous()));
      files.emplace_back(std::string(split) + "_raw_x.npy", std::move(rb));
    }
  }
  Json file_hashes = Json::object();
  for (const auto& [fname, bytes] : files) file_hashes[fname] = sha256_hex(bytes);
  manifest["format"] = kSnapshotFormat;
  manifest["format_version"] = kSnapshotFormatVersion;
  manifest["files"] = file_hashes;
  manifest.erase("content_hash");
  const std::string hash = sha256_hex(canonical_json(manifest));
  manifest["content_hash"] = hash;

  const fs::path final_dir = parent / (name + "-" + hash.substr(0, 12));
  std::error_code ec;
  if (fs::is_directory(final_dir, ec) && fs::exists(final_dir / "manifest.json", ec))
    return final_dir;  // content-addressed: identical snapshot already there
  KILN_ASSIGN_OR_RETURN(StagingDirectory staging, StagingDirectory::Create(final_dir));
  for (const auto& [fname, bytes] : files)
    KILN_RETURN_IF_ERROR(write_file_atomic(staging.path() / fname, bytes));
  KILN_RETURN_IF_ERROR(write_json_file_atomic(staging.path() / "manifest.json", manifest));
  KILN_RETURN_IF_ERROR(staging.publish());
  return final_dir;
}

Expected<Snapshot> read_snapshot(const fs::path& dir) {
  Snapshot snap;
  snap.dir = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return Status::NotFound(dir.string() + ": not a snapshot directory");
  KILN_ASSIGN_OR_RETURN(snap.manifest, read_json_file(dir / "manifest.json"));
  if (snap.manifest.value("format", "") != kSnapshotFormat)
    return Status::InvalidArgument((dir / "manifest.json").string() +
                                   ": not a Kiln snapshot manifest");
  if (snap.manifest.value("format_version", 0) > kSnapshotFormatVersion)
    return Status::InvalidArgument((dir / "manifest.json").string() + ": snapshot format version " +
                                   std::to_string(snap.manifest.value("format_version", 0)) +
                                   " is newer than this Kiln supports");
  const Json& files = snap.manifest["files"];
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [fname, expected] : files.items()) {
    KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(dir / fname));
    if (sha256_hex(bytes) != expected.get<std::string>())
      return Status::DataLoss((dir / fname).string() + ": sha256 does not match the manifest");
    KILN_ASSIGN_OR_RETURN(tensors[fname], decode_npy(bytes, (dir / fname).string()));
  }
  for (const char* split : {"train", "val", "test"}) {
    auto x = tensors.find(std::string(split) + "_x.npy");
    auto y = tensors.find(std::string(split) + "_y.npy");
    if (x == tensors.end() || y == tensors.end()) continue;
    auto raw = tensors.find(std::string(split) + "_raw_x.npy");
    snap.splits[split] =
        SplitTensors{x->second, y->second, raw == tensors.end() ? torch::Tensor() : raw->second};
  }
  return snap;
}

}  // namespace kiln::data
