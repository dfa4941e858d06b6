// Device names: spelling, and what they resolve to on the machine running the test.
#include "kiln/model/device.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "export_helpers.h"
#include "kiln/model/export.h"

namespace kiln::model {
namespace {

TEST(DeviceTest, AcceptsTheDocumentedSpellings) {
  for (const char* name : {"auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:15"})
    EXPECT_TRUE(check_device_name(name, "device").ok()) << name;
}

TEST(DeviceTest, RejectsOtherNamesNamingTheField) {
  for (const char* name :
       {"", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:1234", "mps", "cpu:0", " cpu"}) {
    Status s = check_device_name(name, "train.device");
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("train.device"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("cuda:N"), std::string::npos) << s.message();
  }
}

TEST(DeviceTest, CpuIsAlwaysThere) {
  Expected<torch::Device> d = resolve_device("cpu", "device");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_cpu());
  EXPECT_EQ(device_name(*d), "cpu");
}

TEST(DeviceTest, AutoPicksTheFirstGpuOnlyWhenOneIsPresent) {
  Expected<torch::Device> d = resolve_device("auto", "device");
  ASSERT_TRUE(d.ok()) << d.status();
  if (cuda_device_count() > 0) {
    EXPECT_TRUE(d->is_cuda());
    EXPECT_EQ(device_name(*d), "cuda:0");
  } else {
    EXPECT_TRUE(d->is_cpu());
  }
}

TEST(DeviceTest, CudaWithoutAGpuIsAClearError) {
  const int count = cuda_device_count();
  Expected<torch::Device> first = resolve_device("cuda", "--device");
  if (count == 0) {
    ASSERT_FALSE(first.ok());
    EXPECT_EQ(first.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(first.status().message().find("--device: cuda: no CUDA device here"),
              std::string::npos)
        << first.status().message();
  } else {
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(device_name(*first), "cuda:0");
  }
  // One past the last device is never there.
  Expected<torch::Device> missing = resolve_device("cuda:" + std::to_string(count), "--device");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
}

constexpr const char* kSmallCnn = R"({"layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"}, {"type": "linear", "out": 16},
    {"type": "relu"}, {"type": "linear", "out": "outputs"}]})";

TEST(DeviceTest, ModulesArePlacedAndAnInt8ModuleStaysOnTheCpu) {
  auto net = testing::build_net(kSmallCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  auto fp32 = export_torchscript(*net);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  ASSERT_TRUE(place_module(*fp32, torch::Device(torch::kCPU), "m").ok());
  EXPECT_TRUE(module_device(*fp32).is_cpu());
  torch::manual_seed(3);
  const torch::Tensor calibration = torch::rand({64, 1, 28, 28}) * 255;
  auto int8 = export_int8(net->spec(), network_state(*net), net->input_shape(), net->outputs(),
                          Json(), kTtaNone, calibration);
  ASSERT_TRUE(int8.ok()) << int8.status();
  ASSERT_TRUE(place_module(*int8, torch::Device(torch::kCPU), "m").ok());
  // Refused before anything is moved, so this holds with or without a GPU.
  Status s = place_module(*int8, torch::Device(torch::kCUDA, 0), "fm@3");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("fm@3: an int8 module (packed quantised operators"), std::string::npos)
      << s.message();
  EXPECT_TRUE(module_device(*int8).is_cpu());
}

}  // namespace
}  // namespace kiln::model
