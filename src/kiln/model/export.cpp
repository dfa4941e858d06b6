#include "kiln/model/export.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "kiln/model/export_plan.h"
#include "kiln/model/network.h"

namespace kiln::model {

namespace {

/// A double as a TorchScript float literal that parses back to the same value.
std::string float_literal(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  std::string s(buf);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string int_list(int64_t a, int64_t b) {
  return "[" + std::to_string(a) + ", " + std::to_string(b) + "]";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---- The generator: TorchScript source plus the tensors it refers to.

/// A state tensor's module attribute name ("layers.0.weight" -> "layers_0_weight").
std::string attr_name(std::string name) {
  for (char& c : name)
    if (c == '.') c = '_';
  return name;
}

class Generator {
 public:
  /// A convolution or linear layer of an int8 network: its float32 weight and bias (batch norm
  /// folded in), packed into a module attribute `attr` once the module is built.
  struct PackedLayer {
    std::string attr;
    bool conv = false;
    torch::Tensor weight, bias;
    std::pair<int64_t, int64_t> stride{1, 1}, padding{0, 0};
  };
  /// int8 generation: with `calibrate`, the float32 network with batch norm folded that records
  /// each quantisation point's range (self.obs_min / self.obs_max[k]); without, the quantised
  /// network using `ranges` (one [lo, hi] per point, from a calibration run).
  struct Int8Plan {
    bool calibrate = true;
    std::vector<std::pair<double, double>> ranges;
  };
  void set_int8_plan(const Int8Plan* plan) { int8_ = plan; }
  /// int8 only (set_int8_plan): the network over the top-level `layers`, quantising at its start
  /// and dequantising at its end.
  Status quantized_network(const std::vector<LayerSpec>& layers, std::vector<int64_t>* shape);
  const std::vector<PackedLayer>& packed() const { return packed_; }
  int64_t quantisation_points() const { return points_; }

  /// `bf16`: the network (not the prologue) runs in bfloat16, channels_last for images, with
  /// every batch norm folded into the convolution or linear layer before it, or else applied as
  /// a per-channel affine (no batch_norm kernel runs in bf16). `channels_last`: the network's
  /// image activations are kept channels_last (the caller makes the input and weights so).
  Generator(const TensorMap& state, bool bf16 = false, bool channels_last = false)
      : state_(state), bf16_(bf16), channels_last_(channels_last) {}

  /// Emits the preprocessing prologue; sets *raw_shape to the shape forward() takes.
  Status prologue(const Json& pre, const std::vector<int64_t>& model_shape,
                  std::vector<int64_t>* raw_shape);
  /// Emits `layers` (tensor names `prefix<i>.<tensor>`), tracking the per-sample shape.
  Status layers(const std::vector<LayerSpec>& layers, const std::string& prefix,
                std::vector<int64_t>* shape, int indent);
  /// Every state tensor must have been used (num_batches_tracked excepted).
  Status check_all_used(const std::string& model_name) const;

  /// Emits one line of the network section (indent 1).
  void emit_line(const std::string& line) { emit(1, line); }
  /// The lines emitted since the last call, which start the next section.
  std::string take_lines() {
    std::string lines = body_.str();
    body_.str("");
    return lines;
  }
  const std::vector<std::pair<std::string, torch::Tensor>>& parameters() const { return params_; }
  const std::vector<std::pair<std::string, torch::Tensor>>& buffers() const { return buffers_; }

 private:
  Status layer(const LayerSpec& l, const std::string& name, std::vector<int64_t>* shape,
               int indent);
  /// bf16 only: the folded weight and bias of `weight_name` (conv2d or linear, bias optional)
  /// followed by the batch norm whose tensors start with `bn` (eval statistics, `eps`).
  Expected<std::pair<std::string, std::string>> fold_batch_norm(const std::string& weight_name,
                                                                const std::string& bias_name,
                                                                const std::string& bn, double eps,
                                                                const std::string& where);
  /// The weight and bias (zeros when it has none) of `weight_name`/`bias_name`, with the batch
  /// norm whose tensors start with `bn` folded in (none when `bn` is empty); float32. Marks the
  /// tensors used.
  Expected<std::pair<torch::Tensor, torch::Tensor>> folded_tensors(const std::string& weight_name,
                                                                   const std::string& bias_name,
                                                                   const std::string& bn,
                                                                   double eps,
                                                                   const std::string& where);
  /// bf16 only: the batch norm with tensors `bn` as "x * scale + shift" on `var`; `rank` is the
  /// per-sample rank of its input (the statistics broadcast over trailing axes).
  Status batch_norm_affine(const std::string& var, const std::string& bn, double eps, size_t rank,
                           const std::string& where, int indent);
  /// Per-channel scale gamma / sqrt(var + eps) and shift beta - mean * scale of a batch norm
  /// (float32; gamma 1 and beta 0 when it has no affine parameters). Marks its tensors used.
  Expected<std::pair<torch::Tensor, torch::Tensor>> batch_norm_scale_shift(
      const std::string& bn, double eps, const std::string& where);

  void emit(int indent, const std::string& line) {
    body_ << std::string(static_cast<size_t>(4 * indent), ' ') << line << "\n";
  }
  bool has(const std::string& name) const { return state_.count(name) > 0; }
  /// "self.<attr>" for a state tensor, registering it; InvalidArgument when absent.
  Expected<std::string> use(const std::string& name, const std::string& where);
  Expected<torch::Tensor> tensor(const std::string& name, const std::string& where) const {
    auto it = state_.find(name);
    if (it == state_.end() || !it->second.defined())
      return Status::InvalidArgument(where + ": state has no tensor \"" + name + "\"");
    return it->second;
  }
  /// "self.<attr>" for a generated constant (a buffer).
  std::string constant(const std::string& attr, torch::Tensor t) {
    buffers_.emplace_back(attr, std::move(t));
    return "self." + attr;
  }

  const TensorMap& state_;
  const bool bf16_;
  const bool channels_last_;
  const Int8Plan* int8_ = nullptr;
  std::vector<PackedLayer> packed_;
  int64_t points_ = 0;
  int folded_ = 0;
  /// int8: the quint8 scale and zero point of whole pixel values when the prologue folded the
  /// image normalisation into the input quantisation (see prologue()).
  std::optional<std::pair<double, int64_t>> pixel_input_;
  std::ostringstream body_;
  std::set<std::string> used_;
  std::vector<std::pair<std::string, torch::Tensor>> params_, buffers_;
  int shortcuts_ = 0;
};

Expected<std::string> Generator::use(const std::string& name, const std::string& where) {
  KILN_ASSIGN_OR_RETURN(torch::Tensor t, tensor(name, where));
  const std::string attr = attr_name(name);
  if (used_.insert(name).second) {
    torch::Tensor copy = t.detach().to(torch::kCPU).clone();
    const bool buffer = ends_with(name, "running_mean") || ends_with(name, "running_var");
    (buffer ? buffers_ : params_).emplace_back(attr, copy);
  }
  return "self." + attr;
}

Status Generator::check_all_used(const std::string& model_name) const {
  for (const auto& [name, t] : state_) {
    if (used_.count(name) || ends_with(name, "num_batches_tracked")) continue;
    return Status::InvalidArgument("state tensor \"" + name +
                                   "\" is not used by any layer of model '" + model_name +
                                   "' (spec and weights do not match)");
  }
  return Status::Ok();
}

/// Whether the flatten at layers[i] (input `shape` [C,H,W]) and the linear layer after it may run
/// as one convolution whose kernel covers the whole map in an int8 network (dropout and relu
/// between are elementwise): no copy of the NHWC activations to NCHW order, and oneDNN's conv
/// path costs less per call than its linear one at the small batches a server sees.
bool flatten_feeds_linear(const std::vector<LayerSpec>& layers, size_t i,
                          const std::vector<int64_t>& shape) {
  if (layers[i].type != "flatten" || shape.size() != 3) return false;
  size_t next = i + 1;
  while (next < layers.size() && (layers[next].type == "dropout" || layers[next].type == "relu"))
    ++next;
  return next < layers.size() && layers[next].type == "linear";
}

/// The quint8 (scale, zero point) under which whole pixel values 0..255 are the normalised
/// input of image step `s`, when one exists: inputs scaled by 1/255, one mean and one std for all
/// channels, and the normalised 0 representable.
std::optional<std::pair<double, int64_t>> pixel_quantisation(const PrologueStep& s) {
  if (std::abs(s.input_scale * 255.0 - 1.0) > 1e-9) return std::nullopt;
  const torch::Tensor mean = s.a.to(torch::kFloat64), stdev = s.b.to(torch::kFloat64);
  const double m = mean.flatten()[0].item<double>(), sd = stdev.flatten()[0].item<double>();
  if (!torch::all(mean == m).item<bool>() || !torch::all(stdev == sd).item<bool>())
    return std::nullopt;
  const int64_t zero_point = std::llround(255.0 * m);
  if (zero_point < 0 || zero_point > 255) return std::nullopt;
  return std::make_pair(1.0 / (255.0 * sd), zero_point);
}

Status Generator::prologue(const Json& pre, const std::vector<int64_t>& model_shape,
                           std::vector<int64_t>* raw_shape) {
  KILN_ASSIGN_OR_RETURN(Prologue plan, parse_prologue(pre, model_shape));
  *raw_shape = plan.raw_shape;
  if (!plan.steps.empty() && plan.steps.front().kind == PrologueStep::Kind::kImageNormalize) {
    const PrologueStep& s = plan.steps.front();
    if (int8_ && !int8_->calibrate) {
      pixel_input_ = pixel_quantisation(s);
      if (pixel_input_) {
        // (p / 255 - mean) / std is (q - zero_point) * scale with q the whole pixel value p,
        // scale 1 / (255 std) and zero_point round(255 mean): the quint8 input is the pixels
        // themselves (no float arithmetic, no quantize pass), padding dequantises to exactly 0,
        // and the mean is off by under half a grey level. quantized_network() wraps x.
        emit(1, "# preprocessing: image_normalize, folded into the int8 input (pixels 0..255)");
        emit(1, "x = torch.clamp(torch.round(x), 0.0, 255.0).to(" +
                    std::to_string(static_cast<int>(at::kByte)) + ")  # uint8");
        return Status::Ok();
      }
    }
    emit(1, "# preprocessing: image_normalize");
    emit(1, "x = (x * " + float_literal(s.input_scale) + " - " + constant("pre_mean", s.a) +
                ") / " + constant("pre_std", s.b));
    return Status::Ok();
  }
  const CategoricalTail& tail = plan.categorical;
  if (!tail.columns.empty()) {
    const std::string numeric = std::to_string(plan.raw_shape[0] - tail.columns.size());
    emit(1, "# preprocessing: the last " + std::to_string(tail.columns.size()) +
                " columns are category codes, one-hot encoded after the numeric steps");
    emit(1, "codes = x[:, " + numeric + ":]");
    emit(1, "x = x[:, :" + numeric + "]");
  }
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const PrologueStep& s = plan.steps[i];
    const std::string p = "pre_" + std::to_string(s.index) + "_";
    if (i == 0 || plan.steps[i - 1].index != s.index) emit(1, "# " + s.where);
    switch (s.kind) {
      case PrologueStep::Kind::kImpute:
        emit(1, "x = torch.where(torch.isnan(x), " + constant(p + "fill", s.a) + ", x)");
        break;
      case PrologueStep::Kind::kShiftScale:
        emit(1, "x = (x - " + constant(p + "shift", s.a) + ") * " + constant(p + "scale", s.b));
        break;
      case PrologueStep::Kind::kClamp:
        emit(1, "x = torch.clamp(x, " + float_literal(s.lo) + ", " + float_literal(s.hi) + ")");
        break;
      case PrologueStep::Kind::kSelect:
        emit(1, "x = torch.index_select(x, 1, " + constant(p + "kept", s.a) + ")");
        break;
      case PrologueStep::Kind::kProject:
        emit(1, "x = torch.matmul(x - " + constant(p + "mean", s.a) + ", " +
                    constant(p + "projection", s.b) + ")");
        break;
      case PrologueStep::Kind::kImageNormalize:
        return Status::Internal(s.where + ": an image step inside a table pipeline");
    }
  }
  if (!tail.columns.empty()) {
    // (code == arange(K)) is the one-hot row; a code outside 0..K-1 (or NaN) matches nothing.
    // A target-encoded column's one-hot row times its table: the category's row (0s for none).
    std::string parts = "x";
    for (size_t j = 0; j < tail.columns.size(); ++j) {
      const bool target = tail.target_tables[j].defined();
      emit(1, "# " + tail.columns[j] + ": " + std::to_string(tail.sizes[j]) + " categories" +
                  (target ? ", target-encoded" : ""));
      std::string onehot = "(codes[:, " + std::to_string(j) + ":" + std::to_string(j + 1) +
                           "] == " +
                           constant("pre_categories_" + std::to_string(j),
                                    torch::arange(tail.sizes[j], torch::kFloat32)) +
                           ").float()";
      if (target)
        onehot = "torch.matmul(" + onehot + ", " +
                 constant("pre_target_table_" + std::to_string(j), tail.target_tables[j]) + ")";
      parts += ", " + onehot;
    }
    emit(1, "x = torch.cat([" + parts + "], 1)");
  }
  return Status::Ok();
}

Status Generator::layers(const std::vector<LayerSpec>& layers, const std::string& prefix,
                         std::vector<int64_t>* shape, int indent) {
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string name = prefix + std::to_string(i);
    if (bf16_ && i + 1 < layers.size() && layers[i].type == "relu" &&
        layers[i + 1].type == "maxpool2d") {
      // max_pool(relu(x)) == relu(max_pool(x)) exactly (both monotone): the ReLU then runs on
      // a quarter of the values (2x2 pools), ~10% of the bf16 CNN's forward.
      KILN_RETURN_IF_ERROR(layer(layers[i + 1], prefix + std::to_string(i + 1), shape, indent));
      KILN_RETURN_IF_ERROR(layer(layers[i], name, shape, indent));
      ++i;
      continue;
    }
    const bool foldable = bf16_ && i + 1 < layers.size() &&
                          ((layers[i].type == "conv2d" && layers[i + 1].type == "batchnorm2d") ||
                           (layers[i].type == "linear" && layers[i + 1].type == "batchnorm1d"));
    if (!foldable) {
      KILN_RETURN_IF_ERROR(layer(layers[i], name, shape, indent));
      continue;
    }
    // Emit the layer as usual (it checks shapes and names its tensors), then swap its weight
    // and bias for the folded ones: the emitted line names them by attribute.
    const std::string bn = prefix + std::to_string(i + 1) + ".";
    const std::string where = name + " (" + layers[i].type + ") + " + prefix +
                              std::to_string(i + 1) + " (" + layers[i + 1].type + ")";
    KILN_ASSIGN_OR_RETURN(double eps, layer_double_param(layers[i + 1].params, "eps", 1e-5, where));
    KILN_ASSIGN_OR_RETURN(auto folded,
                          fold_batch_norm(name + ".weight", name + ".bias", bn, eps, where));
    std::ostringstream saved;
    saved << body_.str();
    body_.str("");
    KILN_RETURN_IF_ERROR(layer(layers[i], name, shape, indent));
    std::string line = body_.str();
    body_.str(saved.str());
    body_.seekp(0, std::ios_base::end);
    // fold_batch_norm() marked the unfolded weight and bias used, so layer() did not register
    // them; its line names them, and they are swapped for the folded ones here.
    auto replace = [&](const std::string& from, const std::string& to) {
      const size_t at = line.find(from);
      if (at != std::string::npos) line.replace(at, from.size(), to);
    };
    replace("self." + attr_name(name + ".weight"), folded.first);
    const std::string bias_arg = has(name + ".bias") ? "self." + attr_name(name + ".bias") : "None";
    replace(", " + bias_arg + ")", ", " + folded.second + ")");
    replace(", " + bias_arg + ", ", ", " + folded.second + ", ");
    body_ << line;
    emit(indent, "# " + bn.substr(0, bn.size() - 1) + " (" + layers[i + 1].type +
                     "): folded into the layer above");
    ++i;
  }
  return Status::Ok();
}

Expected<std::pair<torch::Tensor, torch::Tensor>> Generator::batch_norm_scale_shift(
    const std::string& bn, double eps, const std::string& where) {
  KILN_ASSIGN_OR_RETURN(torch::Tensor mean, tensor(bn + "running_mean", where));
  KILN_ASSIGN_OR_RETURN(torch::Tensor var, tensor(bn + "running_var", where));
  mean = mean.detach().to(torch::kCPU, torch::kFloat64);
  var = var.detach().to(torch::kCPU, torch::kFloat64);
  torch::Tensor gamma = torch::ones_like(mean), beta = torch::zeros_like(mean);
  if (has(bn + "weight")) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor g, tensor(bn + "weight", where));
    gamma = g.detach().to(torch::kCPU, torch::kFloat64);
  }
  if (has(bn + "bias")) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor b, tensor(bn + "bias", where));
    beta = b.detach().to(torch::kCPU, torch::kFloat64);
  }
  for (const char* t : {"running_mean", "running_var", "weight", "bias"})
    if (has(bn + t)) used_.insert(bn + t);
  torch::Tensor scale = gamma / torch::sqrt(var + eps);
  return std::make_pair(scale, beta - mean * scale);
}

Expected<std::pair<torch::Tensor, torch::Tensor>> Generator::folded_tensors(
    const std::string& weight_name, const std::string& bias_name, const std::string& bn, double eps,
    const std::string& where) {
  KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(weight_name, where));
  torch::Tensor w64 = w.detach().to(torch::kCPU, torch::kFloat64);
  torch::Tensor b64 = torch::zeros({w.size(0)}, torch::kFloat64);
  if (has(bias_name)) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor b, tensor(bias_name, where));
    b64 = b.detach().to(torch::kCPU, torch::kFloat64);
  }
  if (!bn.empty()) {
    KILN_ASSIGN_OR_RETURN(auto scale_shift, batch_norm_scale_shift(bn, eps, where));
    const auto& [scale, shift] = scale_shift;
    if (w.dim() < 2 || w.size(0) != scale.size(0))
      return Status::InvalidArgument(where + ": " + std::to_string(w.size(0)) +
                                     " outputs but the batch norm has " +
                                     std::to_string(scale.size(0)) + " channels");
    std::vector<int64_t> view(static_cast<size_t>(w.dim()), 1);
    view[0] = -1;
    w64 = w64 * scale.view(view);
    b64 = b64 * scale + shift;
  }
  used_.insert(weight_name);
  if (has(bias_name)) used_.insert(bias_name);
  return std::make_pair(w64.to(torch::kFloat32), b64.to(torch::kFloat32));
}

Expected<std::pair<std::string, std::string>> Generator::fold_batch_norm(
    const std::string& weight_name, const std::string& bias_name, const std::string& bn, double eps,
    const std::string& where) {
  KILN_ASSIGN_OR_RETURN(auto folded, folded_tensors(weight_name, bias_name, bn, eps, where));
  const std::string id = "folded" + std::to_string(folded_++);
  return std::make_pair(constant(id + "_weight", folded.first),
                        constant(id + "_bias", folded.second));
}

Status Generator::batch_norm_affine(const std::string& var, const std::string& bn, double eps,
                                    size_t rank, const std::string& where, int indent) {
  KILN_ASSIGN_OR_RETURN(auto scale_shift, batch_norm_scale_shift(bn, eps, where));
  std::vector<int64_t> view(rank, 1);
  view[0] = -1;
  const std::string id = "affine" + std::to_string(folded_++);
  const std::string sc = constant(id + "_scale", scale_shift.first.to(torch::kFloat32).view(view));
  const std::string sh = constant(id + "_shift", scale_shift.second.to(torch::kFloat32).view(view));
  emit(indent, var + " = " + var + " * " + sc + " + " + sh);
  return Status::Ok();
}

Status Generator::layer(const LayerSpec& l, const std::string& name, std::vector<int64_t>* shape,
                        int indent) {
  const std::string where = name + " (" + l.type + ")";
  const std::string p = name + ".";
  const Json& params = l.params;
  auto need_rank = [&](size_t rank, const char* what) -> Status {
    if (shape->size() == rank) return Status::Ok();
    return Status::InvalidArgument(where + ": expects " + what + " input, got " +
                                   shape_str(*shape));
  };
  auto optional = [&](const std::string& t) -> Expected<std::string> {
    if (!has(p + t)) return std::string("None");
    return use(p + t, where);
  };
  emit(indent, "# " + where);
  const std::string& t = l.type;
  if (t == "linear") {
    if (shape->empty()) return need_rank(1, "1-D");
    KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(p + "weight", where));
    KILN_RETURN_IF_ERROR(check_linear_weight(w, *shape, where));
    KILN_ASSIGN_OR_RETURN(std::string ws, use(p + "weight", where));
    KILN_ASSIGN_OR_RETURN(std::string bs, optional("bias"));
    emit(indent, "x = torch.linear(x, " + ws + ", " + bs + ")");
    shape->back() = w.size(0);
  } else if (t == "conv2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(p + "weight", where));
    KILN_ASSIGN_OR_RETURN(const Window2d win, conv2d_window(params, w, *shape, where));
    KILN_ASSIGN_OR_RETURN(std::string ws, use(p + "weight", where));
    KILN_ASSIGN_OR_RETURN(std::string bs, optional("bias"));
    emit(indent, "x = torch.conv2d(x, " + ws + ", " + bs + ", " +
                     int_list(win.stride.first, win.stride.second) + ", " +
                     int_list(win.padding.first, win.padding.second) + ", [1, 1], 1)");
    // With one input channel NCHW and channels_last strides coincide and oneDNN returns NCHW,
    // whose bf16 ReLU and pooling ran 8x slower than channels_last's (Fashion-MNIST CNN).
    if (channels_last_ && (*shape)[0] == 1)
      emit(indent, "x = x.contiguous(memory_format=" +
                       std::to_string(static_cast<int>(at::MemoryFormat::ChannelsLast)) + ")");
    *shape = win.out_shape;
  } else if (t == "batchnorm1d" || t == "batchnorm2d") {
    if (t == "batchnorm2d") KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    if (t == "batchnorm1d" && shape->size() != 1 && shape->size() != 2)
      return need_rank(1, "[C] or [C,L]");
    KILN_ASSIGN_OR_RETURN(double eps, layer_double_param(params, "eps", 1e-5, where));
    KILN_ASSIGN_OR_RETURN(double momentum, layer_double_param(params, "momentum", 0.1, where));
    KILN_ASSIGN_OR_RETURN(torch::Tensor rm, tensor(p + "running_mean", where));
    KILN_RETURN_IF_ERROR(check_batch_norm_stats(rm, *shape, where));
    if (bf16_) return batch_norm_affine("x", p, eps, shape->size(), where, indent);
    KILN_ASSIGN_OR_RETURN(std::string ws, optional("weight"));
    KILN_ASSIGN_OR_RETURN(std::string bs, optional("bias"));
    KILN_ASSIGN_OR_RETURN(std::string ms, use(p + "running_mean", where));
    KILN_ASSIGN_OR_RETURN(std::string vs, use(p + "running_var", where));
    emit(indent, "x = torch.batch_norm(x, " + ws + ", " + bs + ", " + ms + ", " + vs + ", False, " +
                     float_literal(momentum) + ", " + float_literal(eps) + ", False)");
  } else if (t == "dropout") {
    emit(indent, "pass  # identity in eval mode");
  } else if (t == "maxpool2d" || t == "avgpool2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(const Window2d win, pool2d_window(params, *shape, where));
    const std::string args = int_list(win.kernel.first, win.kernel.second) + ", " +
                             int_list(win.stride.first, win.stride.second) + ", " +
                             int_list(win.padding.first, win.padding.second);
    if (t == "maxpool2d")
      emit(indent, "x = torch.max_pool2d(x, " + args + ", [1, 1], False)");
    else
      emit(indent, "x = torch.avg_pool2d(x, " + args + ", False, True, None)");
    *shape = win.out_shape;
  } else if (t == "adaptive_avgpool2d") {
    KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    KILN_ASSIGN_OR_RETURN(auto o, layer_pair_param(params, "output_size", {1, 1}, where));
    emit(indent, "x = torch.adaptive_avg_pool2d(x, " + int_list(o.first, o.second) + ")");
    *shape = {(*shape)[0], o.first, o.second};
  } else if (t == "flatten") {
    const int64_t n =
        std::accumulate(shape->begin(), shape->end(), int64_t{1}, std::multiplies<int64_t>());
    emit(indent, "x = torch.flatten(x, 1)");
    *shape = {n};
  } else if (t == "relu" || t == "tanh" || t == "sigmoid" || t == "silu") {
    emit(indent, "x = torch." + t + "(x)");
  } else if (t == "gelu") {
    const std::string approx = params.is_object() ? params.value("approximate", "none") : "none";
    if (approx != "none" && approx != "tanh")
      return Status::InvalidArgument(where + ": \"approximate\" must be \"none\" or \"tanh\"");
    emit(indent,
         approx == "none" ? "x = torch.gelu(x)" : "x = torch.gelu(x, approximate=\"tanh\")");
  } else if (t == "elu") {
    KILN_ASSIGN_OR_RETURN(double alpha, layer_double_param(params, "alpha", 1.0, where));
    emit(indent, "x = torch.elu(x, " + float_literal(alpha) + ")");
  } else if (t == "leaky_relu") {
    KILN_ASSIGN_OR_RETURN(double slope, layer_double_param(params, "slope", 0.01, where));
    emit(indent, "x = torch.leaky_relu(x, " + float_literal(slope) + ")");
  } else if (t == "residual") {
    const std::string sc = "shortcut" + std::to_string(shortcuts_++);
    const std::vector<int64_t> in_shape = *shape;
    const bool projection = has(p + "shortcut.0.weight");
    if (projection) KILN_RETURN_IF_ERROR(need_rank(3, "[C,H,W]"));
    emit(indent, sc + " = x");
    KILN_RETURN_IF_ERROR(layers(l.body, p + "body.", shape, indent));
    if (projection) {
      const std::string pw = p + "shortcut.0.weight";
      const std::string bn = p + "shortcut.1.";
      KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(pw, where));
      KILN_ASSIGN_OR_RETURN(auto stride, projection_stride(w, in_shape, *shape, where));
      KILN_ASSIGN_OR_RETURN(std::string ws, use(pw, where));
      emit(indent, sc + " = torch.conv2d(" + sc + ", " + ws + ", None, " +
                       int_list(stride.first, stride.second) + ", [0, 0], [1, 1], 1)");
      if (has(bn + "running_mean") && bf16_) {
        KILN_RETURN_IF_ERROR(batch_norm_affine(sc, bn, 1e-5, 3, where, indent));
      } else if (has(bn + "running_mean")) {  // projection_batchnorm (the default)
        auto opt = [&](const std::string& tn) -> Expected<std::string> {
          if (!has(bn + tn)) return std::string("None");
          return use(bn + tn, where);
        };
        KILN_ASSIGN_OR_RETURN(std::string bw, opt("weight"));
        KILN_ASSIGN_OR_RETURN(std::string bb, opt("bias"));
        KILN_ASSIGN_OR_RETURN(std::string bm, use(bn + "running_mean", where));
        KILN_ASSIGN_OR_RETURN(std::string bv, use(bn + "running_var", where));
        emit(indent, sc + " = torch.batch_norm(" + sc + ", " + bw + ", " + bb + ", " + bm + ", " +
                         bv + ", False, 0.10000000000000001, 1.0000000000000001e-05, False)");
      }
    } else if (*shape != in_shape) {
      return Status::InvalidArgument(where + ": body maps " + shape_str(in_shape) + " to " +
                                     shape_str(*shape) + " but there is no shortcut projection");
    }
    emit(indent, "x = x + " + sc);
  } else {
    return Status::InvalidArgument(where + ": layer type not supported by the TorchScript export");
  }
  return check_output_shape(*shape, where);
}

/// quint8 scale and zero point covering [lo, hi] (widened to hold 0, as PyTorch's observers do).
std::pair<double, int64_t> quint8_params(double lo, double hi) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const double scale = std::max(hi - lo, 1e-6) / 255.0;
  const int64_t zero_point = std::clamp<int64_t>(std::llround(-lo / scale), 0, 255);
  return {scale, zero_point};
}

Status Generator::quantized_network(const std::vector<LayerSpec>& layers,
                                    std::vector<int64_t>* shape) {
  const bool calibrate = int8_->calibrate;
  int64_t point = 0;
  auto qparams = [&](int64_t k) -> Expected<std::pair<double, int64_t>> {
    if (k >= static_cast<int64_t>(int8_->ranges.size()))
      return Status::Internal("int8: no calibrated range for quantisation point " +
                              std::to_string(k));
    return quint8_params(int8_->ranges[static_cast<size_t>(k)].first,
                         int8_->ranges[static_cast<size_t>(k)].second);
  };
  auto observe = [&](int64_t k) {
    const std::string at = "[" + std::to_string(k) + "]";
    emit(1, "self.obs_min" + at + " = torch.minimum(self.obs_min" + at + ", torch.min(x))");
    emit(1, "self.obs_max" + at + " = torch.maximum(self.obs_max" + at + ", torch.max(x))");
  };
  if (calibrate) {
    observe(point);
  } else if (pixel_input_) {
    emit(1, "x = torch._make_per_tensor_quantized_tensor(x, " + float_literal(pixel_input_->first) +
                ", " + std::to_string(pixel_input_->second) + ")  # quint8 pixels");
  } else {
    KILN_ASSIGN_OR_RETURN(auto q, qparams(point));
    emit(1, "x = torch.quantize_per_tensor(x, " + float_literal(q.first) + ", " +
                std::to_string(q.second) + ", " + std::to_string(static_cast<int>(at::kQUInt8)) +
                ")  # quint8");
  }
  ++point;
  // The [C,H,W] of a flatten left out, which the next linear layer takes as a convolution.
  std::vector<int64_t> whole_map;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    const std::string name = "layers." + std::to_string(i);
    const std::string where = name + " (" + l.type + ")";
    if (l.type == "flatten" && !calibrate && flatten_feeds_linear(layers, i, *shape)) {
      whole_map = *shape;
      emit(1, "# " + where + ": left to the linear layer's whole-map convolution");
      *shape = {
          std::accumulate(shape->begin(), shape->end(), int64_t{1}, std::multiplies<int64_t>())};
      continue;
    }
    if (l.type == "conv2d" || l.type == "linear") {
      const bool conv = l.type == "conv2d";
      size_t next = i + 1;
      std::string bn;
      double eps = 1e-5;
      if (next < layers.size() && layers[next].type == (conv ? "batchnorm2d" : "batchnorm1d")) {
        bn = "layers." + std::to_string(next) + ".";
        KILN_ASSIGN_OR_RETURN(eps, layer_double_param(layers[next].params, "eps", 1e-5, where));
        ++next;
      }
      const bool relu = next < layers.size() && layers[next].type == "relu";
      if (relu) ++next;
      KILN_ASSIGN_OR_RETURN(auto wb,
                            folded_tensors(name + ".weight", name + ".bias", bn, eps, where));
      // layer() checks the shapes and tracks them; its float32 line is not used.
      const std::string kept = body_.str();
      body_.str("");
      KILN_RETURN_IF_ERROR(layer(l, name, shape, 1));
      body_.str(kept);
      body_.seekp(0, std::ios_base::end);
      PackedLayer packed;
      packed.attr = "packed" + std::to_string(point);
      packed.conv = conv;
      packed.weight = wb.first;
      packed.bias = wb.second;
      // A linear layer over a map [C,H,W] is a convolution with an HxW kernel (its weight's
      // columns are in C,H,W order already).
      const bool whole_map_conv = !conv && !whole_map.empty();
      if (whole_map_conv) {
        packed.conv = true;
        packed.weight =
            packed.weight.reshape({packed.weight.size(0), whole_map[0], whole_map[1], whole_map[2]})
                .contiguous();
        whole_map.clear();
      }
      if (conv) {
        KILN_ASSIGN_OR_RETURN(packed.stride, layer_pair_param(l.params, "stride", {1, 1}, where));
        KILN_ASSIGN_OR_RETURN(packed.padding, layer_pair_param(l.params, "padding", {0, 0}, where));
      }
      emit(1, "# " + where + (bn.empty() ? "" : " + batch norm") + (relu ? " + relu" : ""));
      if (calibrate) {
        const std::string w = constant(packed.attr + "_weight", packed.weight);
        const std::string b = constant(packed.attr + "_bias", packed.bias);
        emit(1, conv ? "x = torch.conv2d(x, " + w + ", " + b + ", " +
                           int_list(packed.stride.first, packed.stride.second) + ", " +
                           int_list(packed.padding.first, packed.padding.second) + ", [1, 1], 1)"
                     : "x = torch.linear(x, " + w + ", " + b + ")");
        if (relu) emit(1, "x = torch.relu(x)");
        observe(point);
      } else {
        KILN_ASSIGN_OR_RETURN(auto q, qparams(point));
        emit(1, "x = quantized." + std::string(packed.conv ? "conv2d" : "linear") +
                    (relu ? "_relu" : "") + "(x, self." + packed.attr + ", " +
                    float_literal(q.first) + ", " + std::to_string(q.second) + ")");
        if (whole_map_conv) emit(1, "x = torch.flatten(x, 1)  # [N, out, 1, 1]: a view");
        packed_.push_back(std::move(packed));
      }
      ++point;
      i = next - 1;
      continue;
    }
    static const std::set<std::string> kPassThrough = {
        "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "flatten", "dropout", "relu"};
    if (!kPassThrough.count(l.type))
      return Status::InvalidArgument(
          where +
          ": not supported by int8 quantisation (supported: conv2d and linear, each optionally "
          "followed by its batch norm and a relu; max/avg pooling, flatten, dropout, relu)");
    KILN_RETURN_IF_ERROR(layer(l, name, shape, 1));
  }
  if (!calibrate) emit(1, "x = torch.dequantize(x)");
  points_ = point;
  return Status::Ok();
}

}  // namespace

namespace {

struct Generated {
  std::string source;
  std::vector<int64_t> raw_shape;
  std::vector<std::pair<std::string, torch::Tensor>> parameters, buffers;
  std::vector<Generator::PackedLayer> packed;  ///< int8: layers to pack into attributes
  int64_t quantisation_points = 0;             ///< int8: activation ranges observed/used
};

/// `int8` (with precision kPrecisionInt8): calibration or quantised source (Generator::Int8Plan).
Expected<Generated> generate(const ModelSpec& spec, const TensorMap& state,
                             const std::vector<int64_t>& input_shape, int64_t outputs,
                             const Json& preprocessing, const std::string& tta,
                             const std::string& precision,
                             const Generator::Int8Plan* int8 = nullptr) {
  if (tta != kTtaNone && tta != kTtaFlip)
    return Status::InvalidArgument("test-time augmentation '" + tta +
                                   "' is not one of: none, flip");
  if (precision != kPrecisionFp32 && precision != kPrecisionBf16 &&
      !(precision == kPrecisionInt8 && int8))
    return Status::InvalidArgument("precision '" + precision +
                                   "' is not one of: fp32, bf16 (int8: kiln compress)");
  const bool bf16 = precision == kPrecisionBf16;
  if (input_shape.empty())
    return Status::InvalidArgument("model '" + spec.name + "': empty input shape");
  for (int64_t d : input_shape)
    if (d <= 0)
      return Status::InvalidArgument("model '" + spec.name + "': bad input shape " +
                                     shape_str(input_shape));
  if (outputs <= 0)
    return Status::InvalidArgument("model '" + spec.name + "': outputs must be positive");
  // Image networks with convolutions run channels_last (oneDNN's fast layout): bf16 always,
  // fp32 when there is a convolution (1.8x the NCHW samples/s for the Fashion-MNIST CNN).
  const bool images = input_shape.size() == 3;
  const bool has_conv = std::any_of(spec.layers.begin(), spec.layers.end(),
                                    [](const LayerSpec& l) { return l.type == "conv2d"; });
  const bool channels_last = images && (bf16 || (precision == kPrecisionFp32 && has_conv));
  Generator gen(state, bf16, channels_last);
  gen.set_int8_plan(int8);
  Generated out;
  KILN_RETURN_IF_ERROR(gen.prologue(preprocessing, input_shape, &out.raw_shape));
  // The prologue stays in float32; the network's tensors (registered after it) go to bf16.
  const size_t prologue_parameters = gen.parameters().size();
  const size_t prologue_buffers = gen.buffers().size();
  std::string prologue = gen.take_lines();
  // Module::define's resolver has no torch.bfloat16 / torch.channels_last: their enum values.
  const std::string memory_format =
      std::to_string(static_cast<int>(at::MemoryFormat::ChannelsLast));
  if (bf16) {
    const std::string dtype = std::to_string(static_cast<int>(at::kBFloat16));
    prologue +=
        "    # bf16 network (dtype " + dtype + ")" +
        (channels_last ? ", channels_last (memory format " + memory_format + ")" : std::string()) +
        "\n    x = x.to(" + dtype + ")" +
        (channels_last ? ".contiguous(memory_format=" + memory_format + ")" : std::string()) + "\n";
  } else if (channels_last) {
    prologue += "    # channels_last network (memory format " + memory_format +
                ")\n    x = x.contiguous(memory_format=" + memory_format + ")\n";
  }
  if (tta == kTtaFlip && out.raw_shape.size() != 3)
    return Status::InvalidArgument(
        "test-time augmentation 'flip' needs image inputs [C,H,W], got " +
        shape_str(out.raw_shape));
  std::vector<int64_t> shape = input_shape;
  if (int8) {
    KILN_RETURN_IF_ERROR(gen.quantized_network(spec.layers, &shape));
  } else {
    KILN_RETURN_IF_ERROR(gen.layers(spec.layers, "layers.", &shape, 1));
  }
  if (shape != std::vector<int64_t>{outputs})
    return Status::InvalidArgument("model '" + spec.name + "' produces " + shape_str(shape) +
                                   " per sample, expected [" + std::to_string(outputs) + "]");
  KILN_RETURN_IF_ERROR(gen.check_all_used(spec.name));
  if (bf16) gen.emit_line("x = x.float()");
  const std::string network = gen.take_lines();
  if (tta == kTtaNone) {
    out.source = "def forward(self, x):\n" + prologue + network + "    return x\n";
  } else {
    // The mean of the logits of x and of its horizontal mirror, in one network pass over both
    // stacked (as the evaluator computes it): at batch 1 that is twice the work per oneDNN
    // call, 1.4x the samples/s of two passes.
    out.source = "def forward(self, x):\n" + prologue +
                 "    n = x.size(0)\n"
                 "    y = self.network(torch.cat([x, torch.flip(x, [3])], 0))\n"
                 "    return (y[:n] + y[n:]) * 0.5\n\n"
                 "def network(self, x):\n" +
                 network + "    return x\n";
  }
  out.parameters = gen.parameters();
  out.buffers = gen.buffers();
  out.packed = gen.packed();
  out.quantisation_points = gen.quantisation_points();
  if (bf16 || channels_last) {
    auto convert = [&](std::vector<std::pair<std::string, torch::Tensor>>& list, size_t from) {
      for (size_t i = from; i < list.size(); ++i) {
        torch::Tensor& t = list[i].second;
        if (bf16) t = t.to(torch::kBFloat16);
        // A copy with channels_last strides even where they are ambiguous (one input channel):
        // contiguous() would keep NCHW strides there, and oneDNN then runs every convolution
        // of the network 10x slower (Fashion-MNIST CNN, batch 64).
        if (channels_last && t.dim() == 4)
          t = torch::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::ChannelsLast))
                  .copy_(t);
      }
    };
    convert(out.parameters, prologue_parameters);
    convert(out.buffers, prologue_buffers);
  }
  return out;
}

}  // namespace

TensorMap network_state(const NetworkImpl& net) {
  TensorMap state;
  for (const auto& item : net.named_parameters(/*recurse=*/true))
    state[item.key()] = item.value().detach();
  for (const auto& item : net.named_buffers(/*recurse=*/true))
    state[item.key()] = item.value().detach();
  return state;
}

Expected<std::vector<int64_t>> raw_input_shape(const Json& preprocessing,
                                               const std::vector<int64_t>& model_input_shape) {
  KILN_ASSIGN_OR_RETURN(Prologue plan, parse_prologue(preprocessing, model_input_shape));
  return plan.raw_shape;
}

Expected<std::string> torchscript_source(const ModelSpec& spec, const TensorMap& state,
                                         const std::vector<int64_t>& input_shape, int64_t outputs,
                                         const Json& preprocessing, const std::string& tta,
                                         const std::string& precision) {
  KILN_ASSIGN_OR_RETURN(Generated g,
                        generate(spec, state, input_shape, outputs, preprocessing, tta, precision));
  return g.source;
}

namespace {

/// Resolves `quantized.<op>` (the quantised operators) besides `torch.<op>` in generated source.
struct QuantizedOpsResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name,
                                                         torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "quantized") return std::make_shared<torch::jit::BuiltinModule>("quantized");
    return nullptr;
  }
};

/// Calls a registered operator by name with boxed arguments; its first result.
c10::IValue call_operator(const char* name, std::vector<c10::IValue> stack) {
  c10::Dispatcher::singleton().findSchemaOrThrow(name, "").callBoxed(&stack);
  return stack.at(0);
}

/// Per-output-channel symmetric qint8 weights, as oneDNN's default qconfig makes them.
torch::Tensor quantize_weight(const torch::Tensor& w) {
  torch::Tensor scales =
      (std::get<0>(w.abs().flatten(1).max(1)) / 127.0).clamp_min(1e-12).to(torch::kFloat64);
  return torch::quantize_per_channel(w.contiguous(), scales,
                                     torch::zeros({w.size(0)}, torch::kLong), 0, torch::kQInt8);
}

/// The module for `g`: its parameters and buffers, `extra` attributes, the compiled source, eval
/// mode and a dry run on zeros (a failure there is a Kiln bug).
Expected<torch::jit::Module> build_module(const Generated& g, const std::string& model_name,
                                          int64_t outputs,
                                          const std::function<void(torch::jit::Module&)>& extra) {
  torch::jit::Module module("KilnModel");
  try {
    for (const auto& [name, t] : g.parameters) module.register_parameter(name, t, false);
    for (const auto& [name, t] : g.buffers) module.register_buffer(name, t);
    for (const Generator::PackedLayer& p : g.packed) {
      auto ints = [](std::pair<int64_t, int64_t> v) {
        return c10::IValue(c10::List<int64_t>({v.first, v.second}));
      };
      c10::IValue packed =
          p.conv ? call_operator("quantized::conv2d_prepack",
                                 {quantize_weight(p.weight), p.bias, ints(p.stride),
                                  ints(p.padding), ints({1, 1}), int64_t{1}})
                 : call_operator("quantized::linear_prepack", {quantize_weight(p.weight), p.bias});
      module.register_attribute(p.attr, packed.type(), packed);
    }
    if (extra) extra(module);
    module.define(g.source, std::make_shared<QuantizedOpsResolver>());
  } catch (const c10::Error& e) {
    return Status::Internal("model '" + model_name + "': generated TorchScript does not compile: " +
                            e.what_without_backtrace() + "\n--- source ---\n" + g.source);
  }
  module.eval();
  std::vector<int64_t> sample{1};
  sample.insert(sample.end(), g.raw_shape.begin(), g.raw_shape.end());
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor y = module.forward({torch::zeros(sample)}).toTensor();
    if (y.sizes() != c10::IntArrayRef{1, outputs})
      return Status::Internal("model '" + model_name + "': exported module returns " +
                              shape_str(y.sizes().vec()) + " for one sample, expected [1," +
                              std::to_string(outputs) + "]");
  } catch (const c10::Error& e) {
    return Status::Internal("model '" + model_name + "': exported module fails a dry run on " +
                            shape_str(sample) + ": " + e.what_without_backtrace());
  }
  return module;
}

}  // namespace

Expected<torch::jit::Module> export_torchscript(const ModelSpec& spec, const TensorMap& state,
                                                const std::vector<int64_t>& input_shape,
                                                int64_t outputs, const Json& preprocessing,
                                                const std::string& tta,
                                                const std::string& precision) {
  KILN_ASSIGN_OR_RETURN(Generated g,
                        generate(spec, state, input_shape, outputs, preprocessing, tta, precision));
  return build_module(g, spec.name, outputs, nullptr);
}

Status use_onednn_quantized_engine() {
  const auto& engines = at::globalContext().supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) == engines.end())
    return Status::FailedPrecondition(
        "int8: this LibTorch has no oneDNN quantized engine (Kiln's int8 modules use it)");
  at::globalContext().setQEngine(at::QEngine::ONEDNN);
  return Status::Ok();
}

Expected<torch::jit::Module> export_int8(const ModelSpec& spec, const TensorMap& state,
                                         const std::vector<int64_t>& input_shape, int64_t outputs,
                                         const Json& preprocessing, const std::string& tta,
                                         const torch::Tensor& calibration, Int8Report* report) {
  KILN_RETURN_IF_ERROR(use_onednn_quantized_engine());
  if (!calibration.defined() || calibration.dim() < 2 || calibration.size(0) == 0)
    return Status::InvalidArgument("int8: no calibration rows");
  // 1. The float32 network with batch norm folded, recording every quantisation point's range.
  Generator::Int8Plan plan;
  KILN_ASSIGN_OR_RETURN(Generated observed, generate(spec, state, input_shape, outputs,
                                                     preprocessing, tta, kPrecisionInt8, &plan));
  const int64_t points = observed.quantisation_points;
  KILN_ASSIGN_OR_RETURN(
      torch::jit::Module observer,
      build_module(observed, spec.name, outputs, [&](torch::jit::Module& m) {
        m.register_buffer("obs_min", torch::full({points}, std::numeric_limits<float>::infinity()));
        m.register_buffer("obs_max",
                          torch::full({points}, -std::numeric_limits<float>::infinity()));
      }));
  torch::Tensor lo = observer.attr("obs_min").toTensor(), hi = observer.attr("obs_max").toTensor();
  lo.fill_(std::numeric_limits<float>::infinity());  // forget the dry run's zeros
  hi.fill_(-std::numeric_limits<float>::infinity());
  {
    torch::NoGradGuard no_grad;
    const int64_t rows = calibration.size(0);
    try {
      for (int64_t at = 0; at < rows; at += 256)
        observer.forward({calibration.slice(0, at, std::min(rows, at + 256)).to(torch::kFloat32)});
    } catch (const c10::Error& e) {
      return Status::InvalidArgument("int8: calibration rows do not run through the model: " +
                                     std::string(e.what_without_backtrace()));
    }
  }
  // 2. The quantised network with those ranges.
  plan.calibrate = false;
  for (int64_t k = 0; k < points; ++k) {
    const double a = lo[k].item<double>(), b = hi[k].item<double>();
    if (!std::isfinite(a) || !std::isfinite(b))
      return Status::InvalidArgument(
          "int8: calibration gave no finite range at quantisation point " + std::to_string(k) +
          " (NaN or infinite activations)");
    plan.ranges.emplace_back(a, b);
  }
  KILN_ASSIGN_OR_RETURN(Generated quantised, generate(spec, state, input_shape, outputs,
                                                      preprocessing, tta, kPrecisionInt8, &plan));
  KILN_ASSIGN_OR_RETURN(torch::jit::Module module,
                        build_module(quantised, spec.name, outputs, nullptr));
  if (report) {
    report->quantised_layers = static_cast<int64_t>(quantised.packed.size());
    report->calibration_rows = calibration.size(0);
    report->ranges = plan.ranges;
  }
  return module;
}

Expected<torch::jit::Module> export_torchscript(const NetworkImpl& net, const Json& preprocessing,
                                                const std::string& tta,
                                                const std::string& precision) {
  return export_torchscript(net.spec(), network_state(net), net.input_shape(), net.outputs(),
                            preprocessing, tta, precision);
}

}  // namespace kiln::model
