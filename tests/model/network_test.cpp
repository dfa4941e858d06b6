// Networks built from specs: shapes, parameter names, shape errors, init seeds, clone, memory
// formats and bf16 autocast.
#include "kiln/model/network.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <set>

#include "kiln/model/spec.h"

namespace kiln::model {
namespace {

using Names = std::set<std::string>;

ModelSpec parse(const std::string& text) {
  Expected<ModelSpec> spec = parse_model_spec(Json::parse(text));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec();
}

ModelSpec zoo(const std::string& name, const Json& params = Json::object()) {
  Expected<ModelSpec> spec = zoo_model(name, params);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec();
}

std::shared_ptr<NetworkImpl> build(const ModelSpec& spec, std::vector<int64_t> shape,
                                   int64_t outputs, uint64_t seed = 0) {
  auto net = NetworkImpl::Create(spec, shape, outputs, seed);
  EXPECT_TRUE(net.ok()) << net.status();
  return net.ok() ? *net : nullptr;
}

Status build_error(const ModelSpec& spec, std::vector<int64_t> shape, int64_t outputs) {
  auto net = NetworkImpl::Create(spec, shape, outputs);
  EXPECT_FALSE(net.ok());
  return net.status();
}

Names names(const NetworkImpl& net) {
  Names out;
  for (const auto& p : net.named_parameters()) out.insert(p.key());
  for (const auto& b : net.named_buffers()) out.insert(b.key());
  return out;
}

Names bn(const std::string& prefix) {
  return {prefix + ".weight", prefix + ".bias", prefix + ".running_mean", prefix + ".running_var",
          prefix + ".num_batches_tracked"};
}

const char* kPeerCnn = R"({"layers": [
    {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "out": 64, "kernel": 3, "padding": 1}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "linear", "out": 128}, {"type": "relu"},
    {"type": "linear", "out": "outputs"}]})";

TEST(NetworkTest, PeerCnnShapesParamsAndFlops) {
  auto net = build(parse(kPeerCnn), {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  EXPECT_EQ(net->total_params(), 421642);
  int64_t counted = 0;
  for (const auto& p : net->parameters()) counted += p.numel();
  EXPECT_EQ(counted, 421642);
  const auto& infos = net->layer_infos();
  ASSERT_EQ(infos.size(), 10u);
  EXPECT_EQ(infos[2].output_shape, (std::vector<int64_t>{32, 14, 14}));
  EXPECT_EQ(infos[6].output_shape, (std::vector<int64_t>{3136}));
  EXPECT_EQ(infos[0].flops, 2 * 1 * 9 * 32 * 28 * 28);
  EXPECT_EQ(infos[3].flops, 2 * 32 * 9 * 64 * 14 * 14);
  EXPECT_EQ(infos[7].flops, 2 * 3136 * 128);
  EXPECT_EQ(infos[9].flops, 2 * 128 * 10);
  EXPECT_EQ(
      infos[0].hparams,
      Json::parse(
          R"({"in": 1, "out": 32, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "bias": true})"));
  EXPECT_EQ(infos[2].hparams,
            Json::parse(R"({"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]})"));
  EXPECT_EQ(names(*net),
            (Names{"layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias",
                   "layers.7.weight", "layers.7.bias", "layers.9.weight", "layers.9.bias"}));
  torch::Tensor y = net->forward(torch::randn({5, 1, 28, 28}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{5, 10}));
}

TEST(NetworkTest, ZooModelsBuildAndProduceOutputs) {
  struct Case {
    std::string name;
    Json params;
    std::vector<int64_t> shape;
    int64_t outputs;
  };
  for (const Case& c :
       std::vector<Case>{{"mlp", Json::object(), {1, 28, 28}, 10},
                         {"mlp", {{"hidden", {16}}, {"dropout", 0.3}}, {30}, 1},
                         {"cnn-small", Json::object(), {1, 28, 28}, 10},
                         {"cnn-small", {{"width", 8}}, {3, 32, 32}, 10},
                         {"cnn-small", {{"width", 8}, {"convs", 2}}, {1, 28, 28}, 10},
                         {"resnet-small", Json::object(), {3, 32, 32}, 10},
                         {"resnet-small", {{"depth", 2}, {"width", 8}}, {1, 28, 28}, 3}}) {
    SCOPED_TRACE(c.name + " " + c.params.dump());
    auto net = build(zoo(c.name, c.params), c.shape, c.outputs, 1);
    ASSERT_TRUE(net);
    std::vector<int64_t> in = {4};
    in.insert(in.end(), c.shape.begin(), c.shape.end());
    net->train();
    torch::Tensor y = net->forward(torch::randn(in));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, c.outputs}));
    y.sum().backward();
    for (const auto& p : net->named_parameters())
      EXPECT_TRUE(p.value().grad().defined()) << p.key();
    net->eval();
    EXPECT_EQ(net->forward(torch::randn(in)).sizes(), (std::vector<int64_t>{4, c.outputs}));
  }
}

TEST(NetworkTest, ParameterNamesFollowTheContract) {
  auto cnn = build(zoo("cnn-small"), {1, 28, 28}, 10);
  ASSERT_TRUE(cnn);
  Names expected = {"layers.0.weight",  "layers.4.weight", "layers.9.weight", "layers.9.bias",
                    "layers.12.weight", "layers.12.bias"};  // convs before batchnorm have no bias
  for (const auto& n : bn("layers.1")) expected.insert(n);
  for (const auto& n : bn("layers.5")) expected.insert(n);
  EXPECT_EQ(names(*cnn), expected);

  auto res = build(zoo("resnet-small"), {3, 32, 32}, 10);
  ASSERT_TRUE(res);
  Names got = names(*res);
  // layers: 0 conv, 1 bn, 2 relu, 3 residual, 4 relu, 5 residual (stride 2, 16->32), 6 relu, ...
  for (const auto& n :
       {"layers.0.weight", "layers.3.body.0.weight", "layers.3.body.1.running_var",
        "layers.3.body.3.weight", "layers.3.body.4.num_batches_tracked", "layers.5.body.0.weight",
        "layers.5.shortcut.0.weight", "layers.5.shortcut.1.weight",
        "layers.5.shortcut.1.running_mean", "layers.5.shortcut.1.num_batches_tracked",
        "layers.7.shortcut.0.weight", "layers.11.weight", "layers.11.bias"})
    EXPECT_TRUE(got.count(n)) << n;
  EXPECT_FALSE(got.count("layers.3.shortcut.0.weight"));  // identity shortcut
  EXPECT_FALSE(got.count("layers.5.shortcut.0.bias"));
  for (const auto& n : got) EXPECT_EQ(n.rfind("layers.", 0), 0u) << n;
  EXPECT_EQ(res->named_parameters()["layers.5.shortcut.0.weight"].sizes(),
            (std::vector<int64_t>{32, 16, 1, 1}));
}

TEST(NetworkTest, ShapeMismatchNamesLayerAndShapesBeforeTraining) {
  // Two pools of a 28x28 input with 32 channels give 32*7*7 = 1568 features, not 3136.
  ModelSpec spec = parse(R"({"layers": [
      {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1}, {"type": "relu"},
      {"type": "maxpool2d"}, {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1},
      {"type": "maxpool2d"}, {"type": "flatten"}, {"type": "dropout"},
      {"type": "linear", "in": 3136, "out": 128}, {"type": "linear", "out": "outputs"}]})");
  Status s = build_error(spec, {1, 28, 28}, 10);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "layer 7 (linear): expects 3136 input features, got 1568 from shape [32,7,7]");

  s = build_error(parse(R"({"layers": [{"type": "conv2d", "out": 8, "kernel": 3},
      {"type": "linear", "out": 10}]})"),
                  {1, 28, 28}, 10);
  EXPECT_EQ(s.message(),
            "layer 1 (linear): expects a flat input (one dimension), got shape "
            "[8,26,26]: add a flatten layer before it");

  s = build_error(parse(R"({"layers": [{"type": "conv2d", "out": 8, "kernel": 3}]})"), {30}, 2);
  EXPECT_EQ(s.message(), "layer 0 (conv2d): expects an image input [C,H,W], got shape [30]");

  s = build_error(parse(R"({"layers": [{"type": "conv2d", "in": 3, "out": 8, "kernel": 3}]})"),
                  {1, 28, 28}, 2);
  EXPECT_EQ(s.message(), "layer 0 (conv2d): expects 3 input channels, got 1 from shape [1,28,28]");

  s = build_error(
      parse(R"({"layers": [{"type": "maxpool2d", "kernel": 4}, {"type": "maxpool2d", "kernel": 4},
      {"type": "maxpool2d", "kernel": 4}]})"),
      {1, 28, 28}, 2);
  EXPECT_EQ(s.message(),
            "layer 2 (maxpool2d): kernel [4,4] with padding [0,0] does not fit input "
            "shape [1,1,1]");

  s = build_error(parse(R"({"layers": [{"type": "flatten"}, {"type": "linear", "out": 5}]})"),
                  {1, 28, 28}, 10);
  EXPECT_NE(s.message().find("the last layer outputs shape [5], expected [10]"), std::string::npos)
      << s;

  s = build_error(parse(R"({"layers": [{"type": "relu"}, {"type": "residual", "body": [
      {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, {"type": "batchnorm1d"}]}]})"),
                  {1, 8, 8}, 2);
  EXPECT_EQ(s.message(),
            "layer 1.body[1] (batchnorm1d): expects [F] or [C,L] input, got shape "
            "[4,8,8] (use batchnorm2d for images)");

  EXPECT_EQ(build_error(parse(kPeerCnn), {1, 28, 28}, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(build_error(parse(kPeerCnn), {1, 28}, 10).code(), StatusCode::kInvalidArgument);

  auto net = build(parse(kPeerCnn), {1, 28, 28}, 10);
  EXPECT_THROW(net->forward(torch::randn({2, 3, 28, 28})), c10::Error);
}

TEST(NetworkTest, ResidualWithProjection) {
  ModelSpec spec = parse(R"({"layers": [
      {"type": "residual", "body": [
          {"type": "conv2d", "out": 8, "kernel": 3, "stride": 2, "padding": 1},
          {"type": "batchnorm2d"}, {"type": "relu"},
          {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}]},
      {"type": "residual", "projection_batchnorm": false, "body": [
          {"type": "conv2d", "out": 6, "kernel": 1}]},
      {"type": "residual", "body": [{"type": "relu"}]},
      {"type": "flatten"}, {"type": "linear", "out": "outputs"}]})");
  auto net = build(spec, {3, 9, 9}, 4, 3);
  ASSERT_TRUE(net);
  const auto& infos = net->layer_infos();
  EXPECT_EQ(infos[0].output_shape, (std::vector<int64_t>{8, 5, 5}));
  EXPECT_EQ(infos[0].hparams["projection"], true);
  EXPECT_EQ(infos[0].hparams["stride"], Json::parse("[2, 2]"));
  ASSERT_EQ(infos[0].children.size(), 5u);
  EXPECT_EQ(infos[0].children[4].name, "layers.0.shortcut");
  EXPECT_EQ(infos[0].children[0].name, "layers.0.body.0");
  EXPECT_EQ(infos[1].hparams["projection_batchnorm"], false);
  EXPECT_EQ(infos[2].hparams["projection"], false);
  Names got = names(*net);
  EXPECT_TRUE(got.count("layers.0.shortcut.1.running_mean"));
  EXPECT_TRUE(got.count("layers.1.shortcut.0.weight"));
  EXPECT_FALSE(got.count("layers.1.shortcut.1.weight"));

  // Recompute a projection block by hand from its tensors: body(x) + bn(conv1x1_stride2(x)).
  ModelSpec one = parse(R"({"layers": [
      {"type": "residual", "body": [
          {"type": "conv2d", "out": 8, "kernel": 3, "stride": 2, "padding": 1},
          {"type": "batchnorm2d"}, {"type": "relu"},
          {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}]},
      {"type": "flatten"}, {"type": "linear", "out": "outputs"}]})");
  auto small = build(one, {3, 9, 9}, 4, 3);
  ASSERT_TRUE(small);
  // Non-trivial batchnorm statistics: one training step's worth.
  small->train();
  small->forward(torch::randn({8, 3, 9, 9}) * 2 + 1);
  small->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({2, 3, 9, 9});
  auto p = small->named_parameters();
  auto b = small->named_buffers();
  auto bn_eval = [&](const torch::Tensor& t, const std::string& pre) {
    return torch::batch_norm(t, p[pre + ".weight"], p[pre + ".bias"], b[pre + ".running_mean"],
                             b[pre + ".running_var"], false, 0.1, 1e-5, false);
  };
  torch::Tensor body =
      torch::conv2d(x, p["layers.0.body.0.weight"], p["layers.0.body.0.bias"], 2, 1);
  body = torch::relu(bn_eval(body, "layers.0.body.1"));
  body = torch::conv2d(body, p["layers.0.body.3.weight"], p["layers.0.body.3.bias"], 1, 1);
  torch::Tensor shortcut =
      bn_eval(torch::conv2d(x, p["layers.0.shortcut.0.weight"], {}, 2), "layers.0.shortcut.1");
  torch::Tensor expected =
      torch::linear((body + shortcut).flatten(1), p["layers.2.weight"], p["layers.2.bias"]);
  EXPECT_TRUE(torch::allclose(small->forward(x), expected, 1e-5, 1e-5));
}

TEST(NetworkTest, InitIsDeterministicInTheSeedAndLeavesGlobalRngAlone) {
  ModelSpec spec = zoo("cnn-small", {{"width", 4}});
  torch::manual_seed(123);
  torch::Tensor before = torch::rand({3});
  torch::manual_seed(123);
  auto a = build(spec, {1, 28, 28}, 10, 7);
  torch::Tensor after = torch::rand({3});
  EXPECT_TRUE(torch::equal(before, after));  // Create restored the caller's random stream
  auto b = build(spec, {1, 28, 28}, 10, 7);
  auto c = build(spec, {1, 28, 28}, 10, 8);
  ASSERT_TRUE(a && b && c);
  auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
  EXPECT_FALSE(torch::equal(pa["layers.0.weight"], pc["layers.0.weight"]));
  EXPECT_FALSE(torch::equal(pa["layers.9.weight"], pc["layers.9.weight"]));

  // kaiming (fan_out, ReLU): std = sqrt(2 / (out_channels * k * k)); zero biases with init.
  ModelSpec wide = parse(R"({"layers": [
      {"type": "conv2d", "out": 256, "kernel": 3, "init": "kaiming"},
      {"type": "flatten"}, {"type": "linear", "out": "outputs", "init": "zeros"}]})");
  auto w = build(wide, {64, 3, 3}, 2, 1);
  ASSERT_TRUE(w);
  auto pw = w->named_parameters();
  double std = pw["layers.0.weight"].std().item<double>();
  EXPECT_NEAR(std, std::sqrt(2.0 / (256 * 9)), 0.05 * std::sqrt(2.0 / (256 * 9)));
  EXPECT_EQ(pw["layers.0.bias"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(pw["layers.2.weight"].abs().sum().item<double>(), 0.0);

  // reset() re-initialises exactly as Create did.
  torch::Tensor w0 = pa["layers.0.weight"].clone();
  {
    torch::NoGradGuard no_grad;
    pa["layers.0.weight"].fill_(3.0);
  }
  a->reset();
  EXPECT_TRUE(torch::equal(a->named_parameters()["layers.0.weight"], w0));
}

TEST(NetworkTest, CloneIsDeep) {
  auto net = build(zoo("resnet-small", {{"width", 4}}), {3, 16, 16}, 5, 2);
  ASSERT_TRUE(net);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.5);  // differs from a fresh init
  }
  auto copy = std::dynamic_pointer_cast<NetworkImpl>(net->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(names(*copy), names(*net));
  auto pn = net->named_parameters(), pc = copy->named_parameters();
  for (const auto& item : pn) {
    EXPECT_TRUE(torch::equal(item.value(), pc[item.key()])) << item.key();
    EXPECT_NE(item.value().data_ptr(), pc[item.key()].data_ptr()) << item.key();
  }
  net->eval();
  copy->eval();
  torch::Tensor x = torch::randn({2, 3, 16, 16});
  EXPECT_TRUE(torch::allclose(net->forward(x), copy->forward(x)));
  EXPECT_EQ(copy->layer_infos().size(), net->layer_infos().size());
  Network holder(copy);
  EXPECT_EQ(holder->outputs(), 5);
}

TEST(NetworkTest, ChannelsLastInputMatchesContiguous) {
  for (const char* name : {"cnn-small", "resnet-small", "mlp"}) {
    SCOPED_TRACE(name);
    auto net = build(zoo(name), {3, 16, 16}, 10, 5);
    ASSERT_TRUE(net);
    net->eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({3, 3, 16, 16});
    torch::Tensor a = net->forward(x);
    torch::Tensor b = net->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5));
  }
}

/// Turns CPU bf16 autocast on for the scope (API differs between LibTorch 1.x and 2.x).
class CpuAutocast {
 public:
  CpuAutocast() {
#if TORCH_VERSION_MAJOR >= 2
    at::autocast::set_autocast_enabled(at::kCPU, true);
#else
    at::autocast::set_cpu_enabled(true);
#endif
  }
  ~CpuAutocast() {
#if TORCH_VERSION_MAJOR >= 2
    at::autocast::set_autocast_enabled(at::kCPU, false);
#else
    at::autocast::set_cpu_enabled(false);
#endif
    at::autocast::clear_cache();
  }
};

TEST(NetworkTest, ForwardUnderBf16Autocast) {
  for (const char* name : {"cnn-small", "resnet-small", "mlp"}) {
    SCOPED_TRACE(name);
    auto net = build(zoo(name), {1, 28, 28}, 10, 9);
    ASSERT_TRUE(net);
    torch::Tensor x = torch::randn({4, 1, 28, 28});
    net->eval();
    torch::Tensor ref;
    {
      torch::NoGradGuard no_grad;
      ref = net->forward(x);
    }
    net->train();
    torch::Tensor y;
    {
      CpuAutocast autocast;
      y = net->forward(x);
    }
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, 10}));
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);  // autocast ran the final linear in bf16
    y.to(torch::kFloat).sum().backward();
    for (const auto& p : net->parameters()) EXPECT_TRUE(p.grad().defined());
    net->eval();
    torch::Tensor z;
    {
      CpuAutocast autocast;
      torch::NoGradGuard no_grad;
      z = net->forward(x).to(torch::kFloat);
    }
    EXPECT_TRUE(torch::allclose(z, ref, 0.1, 0.1)) << (z - ref).abs().max();
  }
}

}  // namespace
}  // namespace kiln::model
