#include "kiln/model/device.h"

#include <torch/cuda.h>

#include <cctype>

namespace kiln::model {
namespace {

// -1 for "cuda", N for "cuda:N", -2 for anything else that starts with "cuda".
int cuda_index(const std::string& name) {
  if (name == "cuda") return -1;
  const std::string prefix = "cuda:";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size() || name.size() > prefix.size() + 3)
    return -2;
  int index = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -2;
    index = index * 10 + (name[i] - '0');
  }
  return index;
}

}  // namespace

Status check_device_name(const std::string& name, const std::string& field) {
  if (name == "auto" || name == "cpu" || cuda_index(name) >= -1) return Status::Ok();
  return Status::InvalidArgument(field + ": \"" + name + "\" is not a device; expected " +
                                 kDeviceChoices);
}

int cuda_device_count() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

Expected<torch::Device> resolve_device(const std::string& name, const std::string& field) {
  KILN_RETURN_IF_ERROR(check_device_name(name, field));
  if (name == "cpu") return torch::Device(torch::kCPU);
  const int count = cuda_device_count();
  if (name == "auto")
    return count > 0 ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const int index = std::max(0, cuda_index(name));
  if (count == 0)
    return Status::FailedPrecondition(
        field + ": " + name + ": no CUDA device here (" +
        (torch::cuda::is_available() || at::hasCUDA()
             ? std::string("LibTorch has CUDA but sees no GPU")
             : std::string("this Kiln is built on a LibTorch without CUDA")) +
        "); use cpu or auto");
  if (index >= count)
    return Status::FailedPrecondition(
        field + ": " + name + ": this machine has " + std::to_string(count) + " CUDA device" +
        (count == 1 ? "" : "s") + " (cuda:0" +
        (count > 1 ? "..cuda:" + std::to_string(count - 1) : "") + ")");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string device_name(const torch::Device& device) {
  if (device.is_cpu()) return "cpu";
  return device.str();  // "cuda:0"
}

Status place_module(torch::jit::Module& module, const torch::Device& device,
                    const std::string& where) {
  if (!device.is_cpu())
    for (const auto& attribute : module.named_attributes(/*recurse=*/true))
      if (attribute.value.isCustomClass())
        return Status::InvalidArgument(where + ": an int8 module (packed quantised operators, " +
                                       attribute.name + ") runs on the CPU only; use cpu");
  try {
    module.to(device);
  } catch (const std::exception& e) {
    return Status::Unavailable(where + ": cannot place the module on " + device_name(device) +
                               ": " + e.what());
  }
  return Status::Ok();
}

torch::Device module_device(const torch::jit::Module& module) {
  for (const auto& p : module.parameters(/*recurse=*/true)) return p.device();
  for (const auto& b : module.buffers(/*recurse=*/true)) return b.device();
  return torch::Device(torch::kCPU);
}

}  // namespace kiln::model
