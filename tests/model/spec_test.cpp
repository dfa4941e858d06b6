// Model specs: parsing, round trip, zoo expansion, files and error paths.
#include "kiln/model/spec.h"

#include <gtest/gtest.h>

#include "kiln/model/zoo.h"
#include "support/test_support.h"

namespace kiln::model {
namespace {

using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

Status parse_error(const std::string& text) {
  Expected<ModelSpec> spec = parse_model_spec(Json::parse(text));
  EXPECT_FALSE(spec.ok()) << text;
  return spec.status();
}

std::vector<std::string> types(const std::vector<LayerSpec>& layers) {
  std::vector<std::string> out;
  for (const auto& l : layers) out.push_back(l.type);
  return out;
}

TEST(ModelSpecTest, ParsesCustomLayersAndRoundTrips) {
  Json j = Json::parse(R"({"layers": [
      {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1, "init": "kaiming"},
      {"type": "relu"}, {"type": "maxpool2d"}, {"type": "flatten"},
      {"type": "residual", "projection_batchnorm": false, "body": [{"type": "linear", "out": 16}]},
      {"type": "dropout", "p": 0.25}, {"type": "adaptive_avgpool2d", "output_size": [2, 3]},
      {"type": "linear", "out": "outputs", "bias": false}]})");
  Expected<ModelSpec> spec = parse_model_spec(j);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "custom");
  EXPECT_TRUE(spec->zoo_params.empty());
  ASSERT_EQ(spec->layers.size(), 8u);
  EXPECT_EQ(spec->layers[0].type, "conv2d");
  EXPECT_EQ(spec->layers[0].params,
            Json::parse(R"({"out": 32, "kernel": 3, "padding": 1, "init": "kaiming"})"));
  EXPECT_EQ(spec->layers[4].body.size(), 1u);
  EXPECT_EQ(spec->layers[4].params["projection_batchnorm"], false);
  EXPECT_EQ(spec->layers[7].params["out"], "outputs");
  Json saved = spec->to_json();
  EXPECT_EQ(saved["layers"][4]["body"][0]["type"], "linear");
  Expected<ModelSpec> again = ModelSpec::from_json(saved);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->to_json(), saved);
  Expected<ModelSpec> via_parse = parse_model_spec(saved);
  ASSERT_TRUE(via_parse.ok()) << via_parse.status();
  EXPECT_EQ(via_parse->to_json(), saved);
}

TEST(ModelSpecTest, ErrorsNameThePathAndListValidValues) {
  Status s = parse_error(R"({"layers": [{"type": "conv2d", "out": 8, "kernel": 3}, {"type": "relu"},
      {"type": "flatten"}, {"type": "conv3d"}]})");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(
      s.message().find("model.layers[3].type: unknown layer 'conv3d' (valid: linear, conv2d,"),
      std::string::npos)
      << s;
  EXPECT_NE(s.message().find("residual)"), std::string::npos) << s;

  s = parse_error(R"({"layers": [{"type": "conv2d", "out": 8, "kernal": 3}]})");
  EXPECT_NE(s.message().find("model.layers[0].kernal: unknown key for conv2d (valid: type, out, "
                             "kernel, stride, padding, bias, in, init)"),
            std::string::npos)
      << s;

  s = parse_error(
      R"({"layers": [{"type": "relu"}, {"type": "residual", "body": [{"type": "linear", "out": -3}]}]})");
  EXPECT_NE(s.message().find(
                "model.layers[1].body[0].out: expected an integer >= 1 or \"outputs\", got -3"),
            std::string::npos)
      << s;

  s = parse_error(R"({"layers": [{"type": "dropout", "p": 1.5}]})");
  EXPECT_NE(s.message().find("model.layers[0].p: expected a number in [0, 1)"), std::string::npos)
      << s;

  s = parse_error(R"({"layers": [{"type": "linear", "out": 4, "init": "he"}]})");
  EXPECT_NE(
      s.message().find(
          "model.layers[0].init: unknown init \"he\" (valid: kaiming, xavier, normal, zeros)"),
      std::string::npos)
      << s;

  s = parse_error(R"({"layers": [{"type": "conv2d", "out": 4}]})");
  EXPECT_NE(s.message().find("model.layers[0]: conv2d needs 'kernel'"), std::string::npos) << s;
  s = parse_error(R"({"layers": [{"type": "maxpool2d", "kernel": [2, 0]}]})");
  EXPECT_NE(s.message().find("model.layers[0].kernel"), std::string::npos) << s;
  s = parse_error(R"({"layers": [{"out": 3}]})");
  EXPECT_NE(s.message().find("model.layers[0]: missing 'type'"), std::string::npos) << s;
  s = parse_error(R"({"layers": []})");
  EXPECT_NE(s.message().find("model.layers: expected at least one layer"), std::string::npos) << s;
  s = parse_error(R"({"layers": [{"type": "residual"}]})");
  EXPECT_NE(s.message().find("model.layers[0]: residual needs 'body'"), std::string::npos) << s;
  s = parse_error(R"({"layers": [{"type": "relu", "body": []}]})");
  EXPECT_NE(s.message().find("model.layers[0].body: unknown key for relu"), std::string::npos) << s;
  s = parse_error(R"({"width": 3})");
  EXPECT_NE(
      s.message().find(
          "model: expected 'zoo: <name>' (valid: mlp, cnn-small, resnet-small) or 'layers: [...]'"),
      std::string::npos)
      << s;
  s = parse_error(R"({"zoo": "vgg"})");
  EXPECT_NE(
      s.message().find("model.zoo: unknown zoo model 'vgg' (valid: mlp, cnn-small, resnet-small)"),
      std::string::npos)
      << s;
  s = parse_error(R"({"zoo": "cnn-small", "widht": 3})");
  EXPECT_NE(s.message().find("model.widht: unknown parameter for zoo model cnn-small (valid: "
                             "width, hidden, dropout, convs)"),
            std::string::npos)
      << s;
  s = parse_error(R"({"zoo": "cnn-small", "convs": 5})");
  EXPECT_NE(s.message().find("model.convs: expected at most 4, got 5"), std::string::npos) << s;
  s = parse_error(R"({"zoo": "cnn-small", "width": 0})");
  EXPECT_NE(s.message().find("model.width: expected an integer >= 1, got 0"), std::string::npos)
      << s;
  s = parse_error(R"({"zoo": "mlp", "activation": "swish"})");
  EXPECT_NE(s.message().find("model.activation: unknown activation \"swish\" (valid: relu, gelu"),
            std::string::npos)
      << s;
  s = parse_error(R"({"zoo": "mlp", "layers": []})");
  EXPECT_NE(s.message().find("not both"), std::string::npos) << s;
  s = ModelSpec::from_json(Json::parse(R"({"name": "x", "layerz": []})")).status();
  EXPECT_NE(s.message().find("model.layerz: unknown key (valid: name, zoo_params, layers)"),
            std::string::npos)
      << s;
}

TEST(ModelSpecTest, ZooModelsExpandToPlainLayers) {
  Expected<ModelSpec> cnn = zoo_model("cnn-small", {{"width", 8}});
  ASSERT_TRUE(cnn.ok()) << cnn.status();
  EXPECT_EQ(cnn->name, "cnn-small");
  EXPECT_EQ(cnn->zoo_params, Json::parse(R"({"width": 8, "hidden": 128, "dropout": 0.2, "convs": 1})"));
  EXPECT_EQ(types(cnn->layers),
            (std::vector<std::string>{"conv2d", "batchnorm2d", "relu", "maxpool2d", "conv2d",
                                      "batchnorm2d", "relu", "maxpool2d", "flatten", "linear",
                                      "relu", "dropout", "linear"}));
  EXPECT_EQ(cnn->layers[4].params["out"], 16);
  EXPECT_EQ(cnn->layers[12].params["out"], "outputs");

  Expected<ModelSpec> mlp =
      zoo_model("mlp", {{"hidden", {64}}, {"activation", "gelu"}, {"dropout", 0.1}});
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(types(mlp->layers),
            (std::vector<std::string>{"flatten", "linear", "gelu", "dropout", "linear"}));
  Expected<ModelSpec> mlp_default = zoo_model("mlp");
  ASSERT_TRUE(mlp_default.ok());
  EXPECT_EQ(types(mlp_default->layers),
            (std::vector<std::string>{"flatten", "linear", "relu", "linear", "relu", "linear"}));

  Expected<ModelSpec> res = zoo_model("resnet-small", {{"depth", 2}});
  ASSERT_TRUE(res.ok()) << res.status();
  // stem (3) + 3 stages x 2 blocks x (residual, relu) + pool, flatten, linear
  EXPECT_EQ(res->layers.size(), 3u + 12u + 3u);
  EXPECT_EQ(res->layers[3].type, "residual");
  EXPECT_EQ(types(res->layers[3].body),
            (std::vector<std::string>{"conv2d", "batchnorm2d", "relu", "conv2d", "batchnorm2d"}));
  EXPECT_EQ(res->layers[7].body[0].params["stride"], 2);  // first block of stage 1
  EXPECT_EQ(res->layers[7].body[0].params["out"], 32);

  // A zoo spec round-trips as plain layers.
  Expected<ModelSpec> back = ModelSpec::from_json(res->to_json());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->name, "resnet-small");
  EXPECT_EQ(back->to_json(), res->to_json());

  Status bad = zoo_model("lenet", Json::object()).status();
  EXPECT_NE(bad.message().find("unknown zoo model 'lenet' (valid: mlp, cnn-small, resnet-small)"),
            std::string::npos)
      << bad;
  EXPECT_EQ(zoo_defaults("resnet-small"), Json::parse(R"({"width": 16, "depth": 1, "stages": 3})"));
  EXPECT_EQ(zoo_names().size(), 3u);
}

TEST(ModelSpecTest, LoadsYamlAndJsonFiles) {
  Expected<ModelSpec> peer =
      load_model_spec_file(source_dir() / "examples/fashion-mnist/peer-cnn-model.yaml");
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->layers.size(), 10u);
  EXPECT_EQ(peer->layers[0].params, Json::parse(R"({"out": 32, "kernel": 3, "padding": 1})"));
  EXPECT_EQ(peer->layers[9].params["out"], "outputs");

  TempDir dir;
  write_text(dir / "top.yaml", "zoo: mlp\nhidden: [32, 16]\ndropout: 0.5\n");
  Expected<ModelSpec> top = load_model_spec_file(dir / "top.yaml");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->zoo_params["hidden"], Json::parse("[32, 16]"));
  EXPECT_EQ(top->zoo_params["dropout"], 0.5);

  write_text(
      dir / "m.json",
      R"({"model": {"layers": [{"type": "flatten"}, {"type": "linear", "out": 3, "bias": false}]}})");
  Expected<ModelSpec> js = load_model_spec_file(dir / "m.json");
  ASSERT_TRUE(js.ok()) << js.status();
  EXPECT_EQ(js->layers[1].params["bias"], false);

  // Quoted scalars stay strings, so "3" is not a kernel size.
  write_text(dir / "quoted.yaml",
             "model:\n  layers:\n    - {type: conv2d, out: 4, kernel: \"3\"}\n");
  Status s = load_model_spec_file(dir / "quoted.yaml").status();
  EXPECT_NE(s.message().find("quoted.yaml: model.layers[0].kernel: expected an integer >= 1"),
            std::string::npos)
      << s;

  write_text(dir / "broken.yaml", "model: [unclosed\n");
  s = load_model_spec_file(dir / "broken.yaml").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("broken.yaml"), std::string::npos) << s;
  s = load_model_spec_file(dir / "missing.yaml").status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
}

TEST(ModelSpecTest, YamlScalarsBecomeTypedJson) {
  TempDir dir;
  write_text(dir / "s.yaml", "a: 3\nb: 0.5\nc: true\nd: ~\ne: hello\nf: '7'\ng: -2\nh: 1e-5\n");
  Expected<Json> j = read_yaml_file(dir / "s.yaml");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(
      *j,
      Json::parse(
          R"({"a": 3, "b": 0.5, "c": true, "d": null, "e": "hello", "f": "7", "g": -2, "h": 1e-5})"));
}

}  // namespace
}  // namespace kiln::model
