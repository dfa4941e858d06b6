#include "kiln/interop/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <utility>

#include "kiln/core/version.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export_plan.h"

namespace kiln::interop {

namespace {

using model::layer_double_param;
using model::layer_pair_param;
using model::LayerSpec;
using model::shape_str;
using model::TensorMap;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Builds one ONNX graph: nodes in order, initializers by name, fresh value names.
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* graph) : graph_(graph) {}

  /// A float32 or int64 initializer named `name` (made unique) holding `t` (CPU, any strides).
  std::string initializer(const std::string& name, const torch::Tensor& t) {
    const std::string unique = fresh(name);
    onnx::TensorProto* p = graph_->add_initializer();
    p->set_name(unique);
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    for (int64_t d : c.sizes()) p->add_dims(d);
    if (c.scalar_type() == torch::kLong) {
      p->set_data_type(onnx::TensorProto::INT64);
    } else {
      c = c.to(torch::kFloat32).contiguous();
      p->set_data_type(onnx::TensorProto::FLOAT);
      parameters_ += c.numel();
    }
    // raw_data is little-endian, as x86-64 and aarch64 hold it.
    p->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()),
                                static_cast<size_t>(c.numel()) * c.element_size()));
    return unique;
  }
  /// A 0-d float32 constant (shared per value).
  std::string scalar(double v) {
    const float f = static_cast<float>(v);
    auto it = scalars_.find(f);
    if (it != scalars_.end()) return it->second;
    return scalars_[f] = initializer("const", torch::tensor(f));
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& v) {
    return initializer(name, torch::tensor(v, torch::dtype(torch::kLong)));
  }

  /// Appends `op_type`(inputs) and returns its node; its one output is named fresh(hint).
  onnx::NodeProto* node(const std::string& op_type, const std::vector<std::string>& inputs,
                        const std::string& hint) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op_type);
    n->set_name(fresh(hint + "/" + op_type));
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(fresh(hint));
    ++ops_[op_type];
    return n;
  }
  /// node(...)'s output name.
  std::string op(const std::string& op_type, const std::vector<std::string>& inputs,
                 const std::string& hint) {
    return node(op_type, inputs, hint)->output(0);
  }

  static void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void set_float(onnx::NodeProto* n, const std::string& name, double v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(static_cast<float>(v));
  }
  static void set_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }

  const std::map<std::string, int64_t>& ops() const { return ops_; }
  int64_t parameters() const { return parameters_; }

 private:
  std::string fresh(const std::string& hint) {
    const int64_t n = names_[hint]++;
    return n == 0 ? hint : hint + "_" + std::to_string(n);
  }

  onnx::GraphProto* graph_;
  std::map<std::string, int64_t> names_;
  std::map<float, std::string> scalars_;
  std::map<std::string, int64_t> ops_;
  int64_t parameters_ = 0;
};

/// The network part: each layer of the spec as ONNX nodes over `state`'s tensors, tracking the
/// per-sample shape as export_torchscript does (same checks, same errors).
class NetworkBuilder {
 public:
  NetworkBuilder(const TensorMap& state, GraphBuilder& g) : state_(state), g_(g) {}

  Status layers(const std::vector<LayerSpec>& layers, const std::string& prefix,
                std::vector<int64_t>* shape, std::string* x) {
    for (size_t i = 0; i < layers.size(); ++i)
      KILN_RETURN_IF_ERROR(layer(layers[i], prefix + std::to_string(i), shape, x));
    return Status::Ok();
  }

  /// Every state tensor must have been used (num_batches_tracked excepted).
  Status check_all_used(const std::string& model_name) const {
    for (const auto& [name, t] : state_) {
      if (initializers_.count(name) || ends_with(name, "num_batches_tracked")) continue;
      return Status::InvalidArgument("state tensor \"" + name +
                                     "\" is not used by any layer of model '" + model_name +
                                     "' (spec and weights do not match)");
    }
    return Status::Ok();
  }

 private:
  bool has(const std::string& name) const { return state_.count(name) > 0; }
  Expected<torch::Tensor> tensor(const std::string& name, const std::string& where) const {
    auto it = state_.find(name);
    if (it == state_.end() || !it->second.defined())
      return Status::InvalidArgument(where + ": state has no tensor \"" + name + "\"");
    return it->second;
  }
  /// The initializer for state tensor `name` (`transform` applied once, e.g. a transpose); a
  /// second pass over the network (flip TTA) shares it.
  Expected<std::string> use(const std::string& name, const std::string& where,
                            const std::function<torch::Tensor(torch::Tensor)>& transform = {}) {
    auto it = initializers_.find(name);
    if (it != initializers_.end()) return it->second;
    KILN_ASSIGN_OR_RETURN(torch::Tensor t, tensor(name, where));
    if (transform) t = transform(t);
    return initializers_[name] = g_.initializer(name, t);
  }
  /// A batch norm's four inputs (scale and bias as ones/zeros when it has no affine parameters).
  Expected<std::vector<std::string>> batch_norm_inputs(const std::string& p,
                                                       const std::string& where) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor rm, tensor(p + "running_mean", where));
    std::vector<std::string> in;
    for (const char* affine : {"weight", "bias"}) {
      const std::string key = p + affine;
      if (has(key)) {
        KILN_ASSIGN_OR_RETURN(std::string s, use(key, where));
        in.push_back(s);
      } else {
        auto it = initializers_.find(key);
        if (it == initializers_.end())
          it = initializers_
                   .emplace(key, g_.initializer(key, std::string(affine) == "weight"
                                                         ? torch::ones_like(rm)
                                                         : torch::zeros_like(rm)))
                   .first;
        in.push_back(it->second);
      }
    }
    for (const char* stat : {"running_mean", "running_var"}) {
      KILN_ASSIGN_OR_RETURN(std::string s, use(p + stat, where));
      in.push_back(s);
    }
    return in;
  }

  Status layer(const LayerSpec& l, const std::string& name, std::vector<int64_t>* shape,
               std::string* x);

  const TensorMap& state_;
  GraphBuilder& g_;
  std::map<std::string, std::string> initializers_;  ///< state name -> initializer name
};

/// A convolution's or pooling's kernel_shape, strides and pads (the same padding on both sides).
void set_window(onnx::NodeProto* n, const model::Window2d& win) {
  GraphBuilder::set_ints(n, "kernel_shape", {win.kernel.first, win.kernel.second});
  GraphBuilder::set_ints(n, "strides", {win.stride.first, win.stride.second});
  GraphBuilder::set_ints(
      n, "pads", {win.padding.first, win.padding.second, win.padding.first, win.padding.second});
}

Status NetworkBuilder::layer(const LayerSpec& l, const std::string& name,
                             std::vector<int64_t>* shape, std::string* x) {
  const std::string where = name + " (" + l.type + ")";
  const std::string p = name + ".";
  const Json& params = l.params;
  auto need_rank = [&](size_t rank, const char* what) -> Status {
    if (shape->size() == rank) return Status::Ok();
    return Status::InvalidArgument(where + ": expects " + what + " input, got " +
                                   shape_str(*shape));
  };
  const std::string& t = l.type;
  if (t == "linear") {
    if (shape->empty()) return need_rank(1, "1-D");
    KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(p + "weight", where));
    KILN_RETURN_IF_ERROR(model::check_linear_weight(w, *shape, where));
    if (shape->size() == 1) {  // [batch, in]: one Gemm
      KILN_ASSIGN_OR_RETURN(std::string ws, use(p + "weight", where));
      std::vector<std::string> in = {*x, ws};
      if (has(p + "bias")) {
        KILN_ASSIGN_OR_RETURN(std::string bs, use(p + "bias", where));
        in.push_back(bs);
      }
      onnx::NodeProto* n = g_.node("Gemm", in, name);
      GraphBuilder::set_int(n, "transB", 1);
      *x = n->output(0);
    } else {  // [batch, ..., in]: MatMul with W^T, then the bias
      KILN_ASSIGN_OR_RETURN(std::string wt, use(p + "weight", where, [](torch::Tensor w) {
                              return w.t().contiguous();
                            }));
      *x = g_.op("MatMul", {*x, wt}, name);
      if (has(p + "bias")) {
        KILN_ASSIGN_OR_RETURN(std::string bs, use(p + "bias", where));
        *x = g_.op("Add", {*x, bs}, name);
      }
    }
    shape->back() = w.size(0);
  } else if (t == "conv2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(p + "weight", where));
    KILN_ASSIGN_OR_RETURN(const model::Window2d win,
                          model::conv2d_window(params, w, *shape, where));
    KILN_ASSIGN_OR_RETURN(std::string ws, use(p + "weight", where));
    std::vector<std::string> in = {*x, ws};
    if (has(p + "bias")) {
      KILN_ASSIGN_OR_RETURN(std::string bs, use(p + "bias", where));
      in.push_back(bs);
    }
    onnx::NodeProto* n = g_.node("Conv", in, name);
    set_window(n, win);
    GraphBuilder::set_ints(n, "dilations", {1, 1});
    GraphBuilder::set_int(n, "group", 1);
    *x = n->output(0);
    *shape = win.out_shape;
  } else if (t == "batchnorm1d" || t == "batchnorm2d") {
    if (t == "batchnorm2d") KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    if (t == "batchnorm1d" && shape->size() != 1 && shape->size() != 2)
      return need_rank(1, "[C] or [C,L]");
    KILN_ASSIGN_OR_RETURN(double eps, layer_double_param(params, "eps", 1e-5, where));
    KILN_ASSIGN_OR_RETURN(torch::Tensor rm, tensor(p + "running_mean", where));
    KILN_RETURN_IF_ERROR(model::check_batch_norm_stats(rm, *shape, where));
    KILN_ASSIGN_OR_RETURN(std::vector<std::string> bn, batch_norm_inputs(p, where));
    bn.insert(bn.begin(), *x);
    onnx::NodeProto* n = g_.node("BatchNormalization", bn, name);
    GraphBuilder::set_float(n, "epsilon", eps);
    *x = n->output(0);
  } else if (t == "dropout") {
    // identity in eval mode
  } else if (t == "maxpool2d" || t == "avgpool2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(const model::Window2d win, model::pool2d_window(params, *shape, where));
    onnx::NodeProto* n = g_.node(t == "maxpool2d" ? "MaxPool" : "AveragePool", {*x}, name);
    set_window(n, win);
    GraphBuilder::set_int(n, "ceil_mode", 0);
    // torch's avg_pool2d default: padded zeros count in the mean.
    if (t == "avgpool2d") GraphBuilder::set_int(n, "count_include_pad", 1);
    *x = n->output(0);
    *shape = win.out_shape;
  } else if (t == "adaptive_avgpool2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(auto o, layer_pair_param(params, "output_size", {1, 1}, where));
    const int64_t h = (*shape)[1], w = (*shape)[2];
    if (o.first == 1 && o.second == 1) {
      *x = g_.op("GlobalAveragePool", {*x}, name);
    } else if (o.first > 0 && o.second > 0 && h % o.first == 0 && w % o.second == 0) {
      // Equal windows: adaptive pooling is a plain average pool.
      onnx::NodeProto* n = g_.node("AveragePool", {*x}, name);
      GraphBuilder::set_ints(n, "kernel_shape", {h / o.first, w / o.second});
      GraphBuilder::set_ints(n, "strides", {h / o.first, w / o.second});
      *x = n->output(0);
    } else {
      return Status::InvalidArgument(where + ": output size " + shape_str({o.first, o.second}) +
                                     " does not divide input " + shape_str(*shape) +
                                     " (ONNX has no adaptive pooling; only equal windows export)");
    }
    *shape = {(*shape)[0], o.first, o.second};
  } else if (t == "flatten") {
    const int64_t n =
        std::accumulate(shape->begin(), shape->end(), int64_t{1}, std::multiplies<int64_t>());
    onnx::NodeProto* f = g_.node("Flatten", {*x}, name);
    GraphBuilder::set_int(f, "axis", 1);
    *x = f->output(0);
    *shape = {n};
  } else if (t == "relu") {
    *x = g_.op("Relu", {*x}, name);
  } else if (t == "tanh") {
    *x = g_.op("Tanh", {*x}, name);
  } else if (t == "sigmoid") {
    *x = g_.op("Sigmoid", {*x}, name);
  } else if (t == "silu") {
    *x = g_.op("Mul", {*x, g_.op("Sigmoid", {*x}, name)}, name);
  } else if (t == "gelu") {
    const std::string approx = params.is_object() ? params.value("approximate", "none") : "none";
    if (approx != "none" && approx != "tanh")
      return Status::InvalidArgument(where + ": \"approximate\" must be \"none\" or \"tanh\"");
    std::string inner;
    if (approx == "none") {  // 0.5 x (1 + erf(x / sqrt 2))
      inner = g_.op("Erf", {g_.op("Div", {*x, g_.scalar(std::sqrt(2.0))}, name)}, name);
    } else {  // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
      const std::string cube = g_.op("Mul", {*x, g_.op("Mul", {*x, *x}, name)}, name);
      const std::string sum =
          g_.op("Add", {*x, g_.op("Mul", {cube, g_.scalar(0.044715)}, name)}, name);
      inner = g_.op("Tanh", {g_.op("Mul", {sum, g_.scalar(std::sqrt(2.0 / M_PI))}, name)}, name);
    }
    const std::string half_x = g_.op("Mul", {*x, g_.scalar(0.5)}, name);
    *x = g_.op("Mul", {half_x, g_.op("Add", {inner, g_.scalar(1.0)}, name)}, name);
  } else if (t == "elu") {
    KILN_ASSIGN_OR_RETURN(double alpha, layer_double_param(params, "alpha", 1.0, where));
    onnx::NodeProto* n = g_.node("Elu", {*x}, name);
    GraphBuilder::set_float(n, "alpha", alpha);
    *x = n->output(0);
  } else if (t == "leaky_relu") {
    KILN_ASSIGN_OR_RETURN(double slope, layer_double_param(params, "slope", 0.01, where));
    onnx::NodeProto* n = g_.node("LeakyRelu", {*x}, name);
    GraphBuilder::set_float(n, "alpha", slope);
    *x = n->output(0);
  } else if (t == "residual") {
    const std::vector<int64_t> in_shape = *shape;
    std::string shortcut = *x;
    const bool projection = has(p + "shortcut.0.weight");
    if (projection) KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_RETURN_IF_ERROR(layers(l.body, p + "body.", shape, x));
    if (projection) {
      const std::string pw = p + "shortcut.0.weight";
      const std::string bn = p + "shortcut.1.";
      KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(pw, where));
      KILN_ASSIGN_OR_RETURN(auto stride, model::projection_stride(w, in_shape, *shape, where));
      KILN_ASSIGN_OR_RETURN(std::string ws, use(pw, where));
      onnx::NodeProto* n = g_.node("Conv", {shortcut, ws}, name + ".shortcut");
      GraphBuilder::set_ints(n, "kernel_shape", {1, 1});
      GraphBuilder::set_ints(n, "strides", {stride.first, stride.second});
      shortcut = n->output(0);
      if (has(bn + "running_mean")) {  // projection_batchnorm (the default)
        KILN_ASSIGN_OR_RETURN(std::vector<std::string> in, batch_norm_inputs(bn, where));
        in.insert(in.begin(), shortcut);
        onnx::NodeProto* b = g_.node("BatchNormalization", in, name + ".shortcut");
        GraphBuilder::set_float(b, "epsilon", 1e-5);
        shortcut = b->output(0);
      }
    } else if (*shape != in_shape) {
      return Status::InvalidArgument(where + ": body maps " + shape_str(in_shape) + " to " +
                                     shape_str(*shape) + " but there is no shortcut projection");
    }
    *x = g_.op("Add", {*x, shortcut}, name);
  } else {
    return Status::InvalidArgument(where + ": layer type not supported by the ONNX export");
  }
  return model::check_output_shape(*shape, where);
}

/// The preprocessing steps as nodes on `x`.
std::string prologue_nodes(const model::Prologue& plan, GraphBuilder& g, std::string x) {
  using Kind = model::PrologueStep::Kind;
  const model::CategoricalTail& tail = plan.categorical;
  const int64_t numeric =
      plan.raw_shape.empty() ? 0 : plan.raw_shape[0] - static_cast<int64_t>(tail.columns.size());
  auto columns = [&](const std::string& from, int64_t begin, int64_t end) {
    return g.op("Slice",
                {from, g.ints("pre_cat.begin", {begin}), g.ints("pre_cat.end", {end}),
                 g.ints("pre_cat.axis", {1})},
                "pre_cat");
  };
  std::string codes;
  if (!tail.columns.empty()) {
    codes = columns(x, numeric, plan.raw_shape[0]);
    x = columns(x, 0, numeric);
  }
  for (const model::PrologueStep& s : plan.steps) {
    const std::string hint =
        s.kind == Kind::kImageNormalize ? "preprocessing" : "pre_" + std::to_string(s.index);
    switch (s.kind) {
      case Kind::kImageNormalize:
        x = g.op("Mul", {x, g.scalar(s.input_scale)}, hint);
        x = g.op("Sub", {x, g.initializer(hint + ".mean", s.a)}, hint);
        x = g.op("Div", {x, g.initializer(hint + ".std", s.b)}, hint);
        break;
      case Kind::kImpute:
        x = g.op("Where", {g.op("IsNaN", {x}, hint), g.initializer(hint + ".fill", s.a), x}, hint);
        break;
      case Kind::kShiftScale:
        x = g.op("Sub", {x, g.initializer(hint + ".shift", s.a)}, hint);
        x = g.op("Mul", {x, g.initializer(hint + ".scale", s.b)}, hint);
        break;
      case Kind::kClamp:
        x = g.op("Clip", {x, g.scalar(s.lo), g.scalar(s.hi)}, hint);
        break;
      case Kind::kSelect: {
        onnx::NodeProto* n = g.node("Gather", {x, g.initializer(hint + ".kept", s.a)}, hint);
        GraphBuilder::set_int(n, "axis", 1);
        x = n->output(0);
        break;
      }
      case Kind::kProject:
        x = g.op("Sub", {x, g.initializer(hint + ".mean", s.a)}, hint);
        x = g.op("MatMul", {x, g.initializer(hint + ".projection", s.b)}, hint);
        break;
    }
  }
  if (!tail.columns.empty()) {
    // As the TorchScript module: (code == arange(K)) as float, appended after the numeric part.
    std::vector<std::string> parts = {x};
    for (size_t j = 0; j < tail.columns.size(); ++j) {
      const int64_t at = static_cast<int64_t>(j);
      const std::string hint = "pre_onehot";
      const std::string match =
          g.op("Equal",
               {columns(codes, at, at + 1),
                g.initializer(hint + ".categories", torch::arange(tail.sizes[j], torch::kFloat32))},
               hint);
      onnx::NodeProto* cast = g.node("Cast", {match}, hint);
      GraphBuilder::set_int(cast, "to", onnx::TensorProto::FLOAT);
      if (tail.target_tables[j].defined())  // target-encoded: the one-hot row times the table
        parts.push_back(g.op("MatMul",
                             {cast->output(0), g.initializer("pre_target." + std::to_string(j),
                                                             tail.target_tables[j])},
                             "pre_target"));
      else
        parts.push_back(cast->output(0));
    }
    onnx::NodeProto* cat = g.node("Concat", parts, "pre_cat");
    GraphBuilder::set_int(cat, "axis", 1);
    x = cat->output(0);
  }
  return x;
}

void set_value_info(onnx::ValueInfoProto* v, const std::string& name,
                    const std::vector<int64_t>& per_sample) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : per_sample) shape->add_dim()->set_dim_value(d);
}

std::vector<int64_t> with_batch(const std::vector<int64_t>& per_sample) {
  std::vector<int64_t> s{-1};
  s.insert(s.end(), per_sample.begin(), per_sample.end());
  return s;
}

}  // namespace

Expected<OnnxModel> export_onnx(const model::ModelSpec& spec, const TensorMap& state,
                                const std::vector<int64_t>& input_shape, int64_t outputs,
                                const Json& preprocessing, const std::string& tta,
                                const OnnxExportOptions& options) {
  if (options.opset < kOnnxMinOpset || options.opset > kOnnxMaxOpset)
    return Status::InvalidArgument("opset " + std::to_string(options.opset) + " is not in " +
                                   std::to_string(kOnnxMinOpset) + ".." +
                                   std::to_string(kOnnxMaxOpset));
  if (tta != model::kTtaNone && tta != model::kTtaFlip)
    return Status::InvalidArgument("test-time augmentation '" + tta +
                                   "' is not one of: none, flip");
  if (input_shape.empty() || outputs <= 0)
    return Status::InvalidArgument("model '" + spec.name + "': bad input shape " +
                                   shape_str(input_shape) + " or outputs " +
                                   std::to_string(outputs));
  if (options.input_name.empty() || options.output_name.empty() ||
      options.input_name == options.output_name)
    return Status::InvalidArgument("ONNX input and output names must be distinct and non-empty");
  KILN_ASSIGN_OR_RETURN(model::Prologue plan, model::parse_prologue(preprocessing, input_shape));
  if (tta == model::kTtaFlip && plan.raw_shape.size() != 3)
    return Status::InvalidArgument(
        "test-time augmentation 'flip' needs image inputs [C,H,W], got " +
        shape_str(plan.raw_shape));

  onnx::ModelProto proto;
  proto.set_ir_version(onnx::IR_VERSION);
  proto.set_producer_name("kiln");
  proto.set_producer_version(kVersion);
  proto.set_domain("dev.kiln");
  proto.set_model_version(1);
  if (!options.doc.empty()) proto.set_doc_string(options.doc);
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  for (const auto& [key, value] : options.metadata) {
    onnx::StringStringEntryProto* e = proto.add_metadata_props();
    e->set_key(key);
    e->set_value(value);
  }
  onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name(options.graph_name.empty() ? spec.name : options.graph_name);
  set_value_info(graph->add_input(), options.input_name, plan.raw_shape);

  GraphBuilder g(graph);
  const std::string x = prologue_nodes(plan, g, options.input_name);
  NetworkBuilder net(state, g);
  auto network = [&](std::string in) -> Expected<std::string> {
    std::vector<int64_t> shape = input_shape;
    KILN_RETURN_IF_ERROR(net.layers(spec.layers, "layers.", &shape, &in));
    if (shape != std::vector<int64_t>{outputs})
      return Status::InvalidArgument("model '" + spec.name + "' produces " + shape_str(shape) +
                                     " per sample, expected [" + std::to_string(outputs) + "]");
    return in;
  };
  KILN_ASSIGN_OR_RETURN(std::string y, network(x));
  if (tta == model::kTtaFlip) {
    // The mean of the logits of x and of its mirror along W, as the evaluator computes them.
    onnx::NodeProto* flip = g.node(
        "Slice",
        {x, g.ints("flip.starts", {-1}), g.ints("flip.ends", {std::numeric_limits<int64_t>::min()}),
         g.ints("flip.axes", {3}), g.ints("flip.steps", {-1})},
        "flip");
    KILN_ASSIGN_OR_RETURN(std::string mirrored, network(flip->output(0)));
    y = g.op("Mul", {g.op("Add", {y, mirrored}, "tta"), g.scalar(0.5)}, "tta");
  }
  KILN_RETURN_IF_ERROR(net.check_all_used(spec.name));
  onnx::NodeProto* out = graph->add_node();
  out->set_op_type("Identity");
  out->set_name("output/Identity");
  out->add_input(y);
  out->add_output(options.output_name);
  set_value_info(graph->add_output(), options.output_name, {outputs});

  // The checker and strict shape inference (what onnx.checker's full_check runs).
  try {
    onnx::checker::check_model(proto);
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const std::exception& e) {
    return Status::Internal("model '" + spec.name +
                            "': the ONNX graph fails the checker: " + e.what());
  }

  OnnxModel result;
  if (!proto.SerializeToString(&result.bytes))
    return Status::Internal("model '" + spec.name + "': ONNX serialisation failed");
  Json ops = Json::object();
  for (const auto& [op, n] : g.ops()) ops[op] = n;
  result.summary = {
      {"opset", options.opset},
      {"ir_version", proto.ir_version()},
      {"nodes", graph->node_size()},
      {"initializers", graph->initializer_size()},
      {"parameters", g.parameters()},
      {"input", {{"name", options.input_name}, {"shape", with_batch(plan.raw_shape)}}},
      {"output", {{"name", options.output_name}, {"shape", with_batch({outputs})}}},
      {"ops", ops},
      {"test_time_augmentation", tta},
      {"bytes", result.bytes.size()}};
  return result;
}

Expected<OnnxModel> export_bundle_onnx(const model::Bundle& bundle, OnnxExportOptions options) {
  const std::string what = bundle.dir.string();
  if (!bundle.has_network())
    return Status::InvalidArgument(
        what +
        ": a TorchScript-only bundle has no Kiln model spec and weights, and a compiled "
        "TorchScript module cannot be converted to ONNX without Python (torch.onnx.export on the "
        "model's original source); export from the framework it was trained in");
  const Json compression = bundle.manifest.value("compression", Json::object());
  if (compression.is_object() && compression.contains("quantize"))
    return Status::InvalidArgument(
        what + ": its model.pt is " + compression["quantize"].get<std::string>() +
        "-quantised on oneDNN's operators, which the float ONNX graph would not reproduce; "
        "export its parent (" +
        compression.value("parent", std::string("lineage.parent")) + ") instead");
  KILN_ASSIGN_OR_RETURN(model::ModelSpec spec, bundle.model_spec());
  KILN_ASSIGN_OR_RETURN(TensorMap weights, model::load_bundle_weights(bundle));
  const Json& signature = bundle.manifest.value("signature", Json::object());
  if (signature.contains("outputs") && signature["outputs"].is_array() &&
      !signature["outputs"].empty())
    options.output_name = signature["outputs"][0].value("name", options.output_name);
  if (signature.contains("inputs") && signature["inputs"].is_array() &&
      !signature["inputs"].empty())
    options.input_name = signature["inputs"][0].value("name", options.input_name);
  const std::string tta =
      bundle.manifest.value("test_time_augmentation", std::string(model::kTtaNone));
  auto meta = [&](const std::string& k, const std::string& v) {
    options.metadata.emplace_back(k, v);
  };
  meta("kiln.model", spec.name);
  meta("kiln.task", bundle.task());
  meta("kiln.labels", Json(bundle.labels()).dump());
  meta("kiln.test_time_augmentation", tta);
  meta("kiln.preprocessing", "folded");
  meta("kiln.manifest_sha256", bundle.manifest.value(model::kManifestHashKey, std::string()));
  // The headline figures of model.pt on the test split (per-class tables stay in the bundle).
  const Json test = bundle.test_metrics(model::kPrecisionFp32);
  Json headline = Json::object();
  for (const auto& [key, value] : test.items())
    if (value.is_number()) headline[key] = value;
  if (!headline.empty()) meta("kiln.metrics.test", headline.dump());
  if (options.doc.empty())
    options.doc = "Kiln model '" + spec.name + "' (" + bundle.task() +
                  "): raw float32 inputs, the bundle's preprocessing and test-time augmentation "
                  "folded in; outputs as model.pt's.";
  return export_onnx(spec, weights, bundle.input_shape(), bundle.outputs(), bundle.preprocessing(),
                     tta, options);
}

}  // namespace kiln::interop
