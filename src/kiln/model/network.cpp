#include "kiln/model/network.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/utils.h>

#include <functional>
#include <numeric>

namespace kiln::model {
namespace {

namespace nn = torch::nn;
using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
}

/// body(x) + shortcut(x); shortcut is the identity unless `projection`. reset() only recreates
/// the (empty) containers, which is all Cloneable::clone() needs: it then clones each child.
class ResidualImpl : public nn::Cloneable<ResidualImpl> {
 public:
  explicit ResidualImpl(bool projection) : projection_(projection) { reset(); }

  void reset() override {
    body = register_module("body", nn::Sequential());
    if (projection_) shortcut = register_module("shortcut", nn::Sequential());
  }

  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = body->forward(x);
    return y + (projection_ ? shortcut->forward(x) : x);
  }

  bool projection_ = false;
  nn::Sequential body{nullptr};
  nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(Residual);

struct Pair {
  int64_t h = 0, w = 0;
  Json to_json() const { return Json::array({h, w}); }
  bool operator==(const Pair& o) const { return h == o.h && w == o.w; }
};

Pair get_pair(const Json& params, const char* key, Pair fallback) {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (it->is_array()) return {(*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()};
  int64_t v = it->get<int64_t>();
  return {v, v};
}

template <typename T>
T get_or(const Json& params, const char* key, T fallback) {
  auto it = params.find(key);
  return it == params.end() ? fallback : it->get<T>();
}

int64_t count_params(const nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

void apply_init(const std::string& init, const torch::Tensor& weight, const torch::Tensor& bias,
                bool is_conv) {
  torch::NoGradGuard no_grad;
  if (init == "kaiming") {
    if (is_conv)
      nn::init::kaiming_normal_(weight, 0, torch::kFanOut, torch::kReLU);
    else
      nn::init::kaiming_normal_(weight, 0, torch::kFanIn, torch::kReLU);
  } else if (init == "xavier") {
    nn::init::xavier_uniform_(weight);
  } else if (init == "normal") {
    nn::init::normal_(weight, 0.0, 0.01);
  } else if (init == "zeros") {
    nn::init::zeros_(weight);
  }
  if (bias.defined()) nn::init::zeros_(bias);
}

/// Builds layers into a Sequential, tracking the per-sample shape. Errors name the layer by its
/// label ("layer 5", "layer 3.body[1]") and type.
class Builder {
 public:
  explicit Builder(int64_t outputs) : outputs_(outputs) {}

  Status build_sequence(const std::vector<LayerSpec>& layers, Shape* shape,
                        const std::string& label_prefix, const std::string& name_prefix,
                        nn::Sequential& seq, std::vector<LayerInfo>* infos) {
    pre_flatten_.clear();
    for (size_t i = 0; i < layers.size(); ++i) {
      LayerInfo info;
      info.name = name_prefix + std::to_string(i);
      info.type = layers[i].type;
      info.input_shape = *shape;
      std::string label =
          label_prefix + std::to_string(i) + (label_prefix.back() == '[' ? "]" : "");
      label += " (" + layers[i].type + ")";
      Expected<nn::AnyModule> module = build_layer(layers[i], label, &info);
      if (!module.ok()) return module.status();
      seq->push_back(std::move(*module));
      *shape = info.output_shape;
      infos->push_back(std::move(info));
    }
    return Status::Ok();
  }

 private:
  Status fail(const std::string& label, const std::string& what) {
    return Status::InvalidArgument(label + ": " + what);
  }

  Status need_image(const std::string& label, const Shape& in) {
    if (in.size() == 3) return Status::Ok();
    return fail(label, "expects an image input [C,H,W], got shape " + shape_to_string(in));
  }

  int64_t resolve_out(const Json& params) const {
    const Json& out = params["out"];
    return out.is_string() ? outputs_ : out.get<int64_t>();
  }

  // Output size of a sliding window; <= 0 when it does not fit.
  static int64_t window_out(int64_t in, int64_t k, int64_t s, int64_t p) {
    return in + 2 * p - k < 0 ? 0 : (in + 2 * p - k) / s + 1;
  }

  Status window_shape(const std::string& label, const Shape& in, Pair k, Pair s, Pair p,
                      Shape* out) {
    int64_t h = window_out(in[1], k.h, s.h, p.h), w = window_out(in[2], k.w, s.w, p.w);
    if (h < 1 || w < 1) {
      return fail(label, "kernel " + shape_to_string({k.h, k.w}) + " with padding " +
                             shape_to_string({p.h, p.w}) + " does not fit input shape " +
                             shape_to_string(in));
    }
    *out = {in[0], h, w};
    return Status::Ok();
  }

  Expected<nn::AnyModule> build_layer(const LayerSpec& l, const std::string& label,
                                      LayerInfo* info) {
    const Shape in = info->input_shape;
    const Json& p = l.params;
    const std::string& t = l.type;
    Json& hp = info->hparams;
    std::string came_from = pre_flatten_;
    if (t != "dropout") pre_flatten_.clear();
    nn::AnyModule module;
    if (t == "linear") {
      if (in.size() != 1) {
        return fail(label, "expects a flat input (one dimension), got shape " +
                               shape_to_string(in) + ": add a flatten layer before it");
      }
      if (p.contains("in") && p["in"].get<int64_t>() != in[0]) {
        return fail(label, "expects " + std::to_string(p["in"].get<int64_t>()) +
                               " input features, got " + std::to_string(in[0]) + " from shape " +
                               (came_from.empty() ? shape_to_string(in) : came_from));
      }
      int64_t out = resolve_out(p);
      bool bias = get_or<bool>(p, "bias", true);
      nn::Linear m(nn::LinearOptions(in[0], out).bias(bias));
      if (p.contains("init"))
        apply_init(p["init"].get<std::string>(), m->weight, bias ? m->bias : torch::Tensor(),
                   false);
      hp = {{"in", in[0]}, {"out", out}, {"bias", bias}};
      info->output_shape = {out};
      info->flops = 2 * in[0] * out;
      module = nn::AnyModule(m);
    } else if (t == "conv2d") {
      KILN_RETURN_IF_ERROR(need_image(label, in));
      if (p.contains("in") && p["in"].get<int64_t>() != in[0]) {
        return fail(label, "expects " + std::to_string(p["in"].get<int64_t>()) +
                               " input channels, got " + std::to_string(in[0]) + " from shape " +
                               shape_to_string(in));
      }
      int64_t out = resolve_out(p);
      Pair k = get_pair(p, "kernel", {1, 1}), s = get_pair(p, "stride", {1, 1}),
           pad = get_pair(p, "padding", {0, 0});
      bool bias = get_or<bool>(p, "bias", true);
      Shape o;
      KILN_RETURN_IF_ERROR(window_shape(label, in, k, s, pad, &o));
      o[0] = out;
      nn::Conv2d m(nn::Conv2dOptions(in[0], out, torch::ExpandingArray<2>({k.h, k.w}))
                       .stride(torch::ExpandingArray<2>({s.h, s.w}))
                       .padding(torch::ExpandingArray<2>({pad.h, pad.w}))
                       .bias(bias));
      if (p.contains("init"))
        apply_init(p["init"].get<std::string>(), m->weight, bias ? m->bias : torch::Tensor(), true);
      hp = {{"in", in[0]},
            {"out", out},
            {"kernel", k.to_json()},
            {"stride", s.to_json()},
            {"padding", pad.to_json()},
            {"bias", bias}};
      info->output_shape = o;
      info->flops = 2 * in[0] * k.h * k.w * numel(o);
      module = nn::AnyModule(m);
    } else if (t == "batchnorm1d" || t == "batchnorm2d") {
      bool two_d = t == "batchnorm2d";
      if (two_d) {
        KILN_RETURN_IF_ERROR(need_image(label, in));
      } else if (in.size() != 1 && in.size() != 2) {
        return fail(label, "expects [F] or [C,L] input, got shape " + shape_to_string(in) +
                               (in.size() == 3 ? " (use batchnorm2d for images)" : ""));
      }
      double eps = get_or<double>(p, "eps", 1e-5), momentum = get_or<double>(p, "momentum", 0.1);
      hp = {{"features", in[0]}, {"eps", eps}, {"momentum", momentum}};
      if (two_d)
        module = nn::AnyModule(
            nn::BatchNorm2d(nn::BatchNorm2dOptions(in[0]).eps(eps).momentum(momentum)));
      else
        module = nn::AnyModule(
            nn::BatchNorm1d(nn::BatchNorm1dOptions(in[0]).eps(eps).momentum(momentum)));
      info->output_shape = in;
      info->flops = 2 * numel(in);
    } else if (t == "dropout") {
      double prob = get_or<double>(p, "p", 0.5);
      hp = {{"p", prob}};
      module = nn::AnyModule(nn::Dropout(nn::DropoutOptions(prob)));
      info->output_shape = in;
    } else if (t == "maxpool2d" || t == "avgpool2d") {
      KILN_RETURN_IF_ERROR(need_image(label, in));
      Pair k = get_pair(p, "kernel", {2, 2});
      Pair s = get_pair(p, "stride", k), pad = get_pair(p, "padding", {0, 0});
      if (2 * pad.h > k.h || 2 * pad.w > k.w)
        return fail(label, "padding must be at most half the kernel size");
      Shape o;
      KILN_RETURN_IF_ERROR(window_shape(label, in, k, s, pad, &o));
      hp = {{"kernel", k.to_json()}, {"stride", s.to_json()}, {"padding", pad.to_json()}};
      torch::ExpandingArray<2> ka({k.h, k.w}), sa({s.h, s.w}), pa({pad.h, pad.w});
      if (t == "maxpool2d")
        module = nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(ka).stride(sa).padding(pa)));
      else
        module = nn::AnyModule(nn::AvgPool2d(nn::AvgPool2dOptions(ka).stride(sa).padding(pa)));
      info->output_shape = o;
      info->flops = k.h * k.w * numel(o);
    } else if (t == "adaptive_avgpool2d") {
      KILN_RETURN_IF_ERROR(need_image(label, in));
      Pair o = get_pair(p, "output_size", {1, 1});
      hp = {{"output_size", o.to_json()}};
      module = nn::AnyModule(nn::AdaptiveAvgPool2d(
          nn::AdaptiveAvgPool2dOptions(torch::ExpandingArrayWithOptionalElem<2>({o.h, o.w}))));
      info->output_shape = {in[0], o.h, o.w};
      info->flops = numel(in);
    } else if (t == "flatten") {
      module = nn::AnyModule(nn::Flatten());
      info->output_shape = {numel(in)};
      if (in.size() > 1) pre_flatten_ = shape_to_string(in);
    } else if (t == "residual") {
      return build_residual(l, label, info);
    } else {
      info->output_shape = in;
      info->flops = numel(in);
      if (t == "relu")
        module = nn::AnyModule(nn::ReLU());
      else if (t == "gelu")
        module = nn::AnyModule(nn::GELU());
      else if (t == "tanh")
        module = nn::AnyModule(nn::Tanh());
      else if (t == "sigmoid")
        module = nn::AnyModule(nn::Sigmoid());
      else if (t == "silu")
        module = nn::AnyModule(nn::SiLU());
      else if (t == "elu") {
        double alpha = get_or<double>(p, "alpha", 1.0);
        hp = {{"alpha", alpha}};
        module = nn::AnyModule(nn::ELU(nn::ELUOptions().alpha(alpha)));
      } else if (t == "leaky_relu") {
        double slope = get_or<double>(p, "slope", 0.01);
        hp = {{"slope", slope}};
        module = nn::AnyModule(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(slope)));
      } else {
        return fail(label, "unknown layer type '" + t + "'");
      }
    }
    info->params = count_params(*module.ptr());
    return module;
  }

  Expected<nn::AnyModule> build_residual(const LayerSpec& l, const std::string& label,
                                         LayerInfo* info) {
    const Shape in = info->input_shape;
    if (l.body.empty()) return fail(label, "residual body is empty");
    // Build the body first (into a scratch container) to learn its output shape.
    std::string body_label = label.substr(0, label.find(" (")) + ".body[";
    nn::Sequential body;
    Shape shape = in;
    KILN_RETURN_IF_ERROR(
        build_sequence(l.body, &shape, body_label, info->name + ".body.", body, &info->children));
    pre_flatten_.clear();
    bool projection = shape != in;
    bool with_bn = get_or<bool>(l.params, "projection_batchnorm", true);
    Residual block(projection);
    block->body = block->replace_module("body", body);
    Pair stride{1, 1};
    if (projection) {
      if (in.size() != 3 || shape.size() != 3) {
        return fail(label, "body maps shape " + shape_to_string(in) + " to " +
                               shape_to_string(shape) +
                               ": a projection shortcut needs [C,H,W] on both sides");
      }
      auto find_stride = [](int64_t a, int64_t b) -> int64_t {
        for (int64_t s = 1; s <= a; ++s)
          if ((a - 1) / s + 1 == b) return s;
        return 0;
      };
      stride = {find_stride(in[1], shape[1]), find_stride(in[2], shape[2])};
      if (stride.h == 0 || stride.w == 0) {
        return fail(label, "no 1x1 strided projection maps shape " + shape_to_string(in) +
                               " to the body's output shape " + shape_to_string(shape));
      }
      nn::Conv2d proj(nn::Conv2dOptions(in[0], shape[0], 1)
                          .stride(torch::ExpandingArray<2>({stride.h, stride.w}))
                          .bias(false));
      block->shortcut->push_back(proj);
      LayerInfo sc;
      sc.name = info->name + ".shortcut";
      sc.type = "shortcut";
      sc.input_shape = in;
      sc.output_shape = shape;
      sc.flops = 2 * in[0] * numel(shape);
      sc.hparams = {
          {"in", in[0]}, {"out", shape[0]}, {"stride", stride.to_json()}, {"batchnorm", with_bn}};
      if (with_bn) {
        block->shortcut->push_back(nn::BatchNorm2d(shape[0]));
        sc.flops += 2 * numel(shape);
      }
      sc.params = count_params(*block->shortcut);
      info->children.push_back(std::move(sc));
    }
    info->hparams = {{"projection", projection},
                     {"stride", stride.to_json()},
                     {"projection_batchnorm", with_bn}};
    info->output_shape = shape;
    int64_t flops = numel(shape);  // the sum
    for (const auto& c : info->children) flops += c.flops;
    info->flops = flops;
    info->params = count_params(*block);
    return nn::AnyModule(block);
  }

  int64_t outputs_;
  std::string pre_flatten_;  // shape before the last flatten, while only dropout followed it
};

/// Seeds the default CPU generator for the scope, then restores its state.
class SeedScope {
 public:
  explicit SeedScope(uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
    saved_ = gen_.get_state();
    gen_.set_current_seed(seed);
  }
  ~SeedScope() { gen_.set_state(saved_); }
  SeedScope(const SeedScope&) = delete;
  SeedScope& operator=(const SeedScope&) = delete;

 private:
  at::Generator gen_;
  torch::Tensor saved_;
};

}  // namespace

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

NetworkImpl::NetworkImpl(ModelSpec spec, std::vector<int64_t> input_shape, int64_t outputs,
                         uint64_t init_seed)
    : spec_(std::move(spec)),
      input_shape_(std::move(input_shape)),
      outputs_(outputs),
      init_seed_(init_seed) {}

Expected<std::shared_ptr<NetworkImpl>> NetworkImpl::Create(const ModelSpec& spec,
                                                           std::vector<int64_t> input_shape,
                                                           int64_t outputs, uint64_t init_seed) {
  if (outputs < 1)
    return Status::InvalidArgument("model outputs must be >= 1, got " + std::to_string(outputs));
  if (input_shape.empty() || input_shape.size() > 3)
    return Status::InvalidArgument("model input shape must be [F] or [C,H,W], got " +
                                   shape_to_string(input_shape));
  for (int64_t d : input_shape)
    if (d < 1)
      return Status::InvalidArgument("model input shape " + shape_to_string(input_shape) +
                                     " has a dimension < 1");
  if (spec.layers.empty()) return Status::InvalidArgument("model: no layers");
  std::shared_ptr<NetworkImpl> net(
      new NetworkImpl(spec, std::move(input_shape), outputs, init_seed));
  KILN_RETURN_IF_ERROR(net->build());
  return net;
}

Status NetworkImpl::build() {
  SeedScope seed(init_seed_);
  layer_infos_.clear();
  nn::Sequential layers;
  Builder builder(outputs_);
  Shape shape = input_shape_;
  KILN_RETURN_IF_ERROR(
      builder.build_sequence(spec_.layers, &shape, "layer ", "layers.", layers, &layer_infos_));
  if (shape != Shape{outputs_}) {
    return Status::InvalidArgument("model: the last layer outputs shape " + shape_to_string(shape) +
                                   ", expected [" + std::to_string(outputs_) +
                                   "] (one value per output): end with linear(out: outputs)");
  }
  // reset() on a built network replaces the container; Create() and clone() register it.
  if (named_children().contains("layers"))
    layers_ = replace_module("layers", layers);
  else
    layers_ = register_module("layers", layers);
  return Status::Ok();
}

void NetworkImpl::reset() {
  Status st = build();
  KILN_CHECK(st.ok(), st.message());
}

torch::Tensor NetworkImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(input_shape_.size()) + 1 &&
                  x.sizes().slice(1).vec() == input_shape_,
              "Network expects input N x ", shape_to_string(input_shape_), ", got ",
              shape_to_string(x.sizes().vec()));
  return layers_->forward(x);
}

int64_t NetworkImpl::total_params() const {
  int64_t n = 0;
  for (const auto& l : layer_infos_) n += l.params;
  return n;
}

int64_t NetworkImpl::total_flops() const {
  int64_t n = 0;
  for (const auto& l : layer_infos_) n += l.flops;
  return n;
}

}  // namespace kiln::model
