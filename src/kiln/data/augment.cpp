#include "kiln/data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace kiln::data {
namespace {

Status check_probability(const char* field, float p) {
  if (!std::isfinite(p) || p < 0.f || p > 1.f)
    return Status::InvalidArgument(std::string("augment.") + field + ": probability " +
                                   std::to_string(p) + " is outside [0, 1]");
  return Status::Ok();
}

Status check_pixels(const char* field, int64_t px) {
  if (px < 0 || px > 4096)
    return Status::InvalidArgument(std::string("augment.") + field + ": " + std::to_string(px) +
                                   " pixels is outside [0, 4096]");
  return Status::Ok();
}

// out(c, y, x) = in(c, y - dy, x' - dx) with x' = flip ? W-1-x : x; zero outside the image.
// `scratch` holds at least channels × height × width floats.
void shift_and_flip(float* sample, int64_t channels, int64_t height, int64_t width, int64_t dy,
                    int64_t dx, bool flip, float* scratch) {
  const int64_t numel = channels * height * width;
  std::memcpy(scratch, sample, numel * sizeof(float));
  // Output columns whose source column is inside the image.
  const int64_t x_lo = flip ? std::max<int64_t>(0, -dx) : std::max<int64_t>(0, dx);
  const int64_t x_hi = flip ? std::min(width, width - dx) : std::min(width, width + dx);
  for (int64_t c = 0; c < channels; ++c) {
    const float* src_plane = scratch + c * height * width;
    float* dst_plane = sample + c * height * width;
    for (int64_t y = 0; y < height; ++y) {
      float* dst = dst_plane + y * width;
      const int64_t sy = y - dy;
      if (sy < 0 || sy >= height || x_lo >= x_hi) {
        std::fill(dst, dst + width, 0.f);
        continue;
      }
      const float* src = src_plane + sy * width;
      std::fill(dst, dst + x_lo, 0.f);
      if (flip) {
        const int64_t mirror = width - 1 - dx;  // source column of output column 0
        for (int64_t x = x_lo; x < x_hi; ++x) dst[x] = src[mirror - x];
      } else {
        std::memcpy(dst + x_lo, src + (x_lo - dx), (x_hi - x_lo) * sizeof(float));
      }
      std::fill(dst + x_hi, dst + width, 0.f);
    }
  }
}

// numel standard normal values, drawn in pairs (the last pair's second value unused when numel
// is odd).
void draw_normals(float* out, int64_t numel, Rng& rng) {
  int64_t i = 0;
  float spare;
  for (; i + 1 < numel; i += 2) rng.normal_pair(&out[i], &out[i + 1]);
  if (i < numel) rng.normal_pair(&out[i], &spare);
}

// The rectangle of a random erase that happens, or none after 10 draws that do not fit.
void draw_erase(int64_t height, int64_t width, const AugmentOptions& o, Rng& rng,
                SampleAugmentation* a) {
  const float area = static_cast<float>(height * width);
  const float log_r_lo = std::log(o.erase_ratio_min_);
  const float log_r_hi = std::log(o.erase_ratio_max_);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const float target = area * rng.uniform(o.erase_area_min_, o.erase_area_max_);
    const float ratio = std::exp(rng.uniform(log_r_lo, log_r_hi));
    const int64_t h = std::lround(std::sqrt(target * ratio));
    const int64_t w = std::lround(std::sqrt(target / ratio));
    if (h < 1 || w < 1 || h >= height || w >= width) continue;
    a->erase = true;
    a->erase_h = h;
    a->erase_w = w;
    a->erase_y = rng.uniform_int(0, height - h);
    a->erase_x = rng.uniform_int(0, width - w);
    return;
  }
}

Status check_batch(const torch::Tensor& batch) {
  if (!batch.defined()) return Status::InvalidArgument("augment: batch tensor is undefined");
  if (batch.dim() != 4)
    return Status::InvalidArgument("augment: expected an N×C×H×W batch, got rank " +
                                   std::to_string(batch.dim()));
  if (batch.scalar_type() != torch::kFloat32)
    return Status::InvalidArgument(std::string("augment: expected float32, got ") +
                                   c10::toString(batch.scalar_type()));
  if (!batch.is_contiguous())
    return Status::InvalidArgument("augment: batch must be contiguous N×C×H×W (not channels_last)");
  if (!batch.device().is_cpu()) return Status::InvalidArgument("augment: batch must be on the CPU");
  return Status::Ok();
}

}  // namespace

bool AugmentOptions::enabled() const {
  return crop_padding_ > 0 || translate_ > 0 || hflip_ > 0.f || noise_std_ > 0.f ||
         erase_prob_ > 0.f;
}

Status AugmentOptions::validate() const {
  KILN_RETURN_IF_ERROR(check_pixels("crop_padding", crop_padding_));
  KILN_RETURN_IF_ERROR(check_pixels("translate", translate_));
  KILN_RETURN_IF_ERROR(check_probability("hflip", hflip_));
  KILN_RETURN_IF_ERROR(check_probability("erase", erase_prob_));
  if (!std::isfinite(noise_std_) || noise_std_ < 0.f)
    return Status::InvalidArgument("augment.noise_std: " + std::to_string(noise_std_) +
                                   " must be finite and >= 0");
  if (!(erase_area_min_ > 0.f && erase_area_min_ <= erase_area_max_ && erase_area_max_ <= 1.f))
    return Status::InvalidArgument("augment.erase_area: [" + std::to_string(erase_area_min_) +
                                   ", " + std::to_string(erase_area_max_) +
                                   "] must satisfy 0 < min <= max <= 1");
  if (!(erase_ratio_min_ > 0.f && erase_ratio_min_ <= erase_ratio_max_ &&
        std::isfinite(erase_ratio_max_)))
    return Status::InvalidArgument("augment.erase_ratio: [" + std::to_string(erase_ratio_min_) +
                                   ", " + std::to_string(erase_ratio_max_) +
                                   "] must satisfy 0 < min <= max < inf");
  if (!std::isfinite(erase_value_))
    return Status::InvalidArgument("augment.erase_value: must be finite");
  return Status::Ok();
}

Json AugmentOptions::to_json() const {
  Json j;
  j["crop_padding"] = crop_padding_;
  j["hflip"] = hflip_;
  j["translate"] = translate_;
  j["noise_std"] = noise_std_;
  j["erase"] = erase_prob_;
  j["erase_area"] = {erase_area_min_, erase_area_max_};
  j["erase_ratio"] = {erase_ratio_min_, erase_ratio_max_};
  j["erase_value"] = erase_value_;
  return j;
}

std::string AugmentOptions::to_string() const {
  std::ostringstream os;
  os << "crop_padding=" << crop_padding_ << " hflip=" << hflip_ << " translate=" << translate_
     << " noise_std=" << noise_std_ << " erase=" << erase_prob_ << " erase_area=["
     << erase_area_min_ << ", " << erase_area_max_ << "] erase_ratio=[" << erase_ratio_min_ << ", "
     << erase_ratio_max_ << "] erase_value=" << erase_value_;
  return os.str();
}

Expected<Augmenter> Augmenter::Create(const AugmentOptions& options) {
  KILN_RETURN_IF_ERROR(options.validate());
  return Augmenter(options);
}

SampleAugmentation Augmenter::draw(int64_t channels, int64_t height, int64_t width, Rng& rng,
                                   float* noise) const {
  const AugmentOptions& o = options_;
  SampleAugmentation a;
  if (o.crop_padding_ > 0) {
    a.dy += rng.uniform_int(-o.crop_padding_, o.crop_padding_);
    a.dx += rng.uniform_int(-o.crop_padding_, o.crop_padding_);
  }
  if (o.translate_ > 0) {
    a.dy += rng.uniform_int(-o.translate_, o.translate_);
    a.dx += rng.uniform_int(-o.translate_, o.translate_);
  }
  a.flip = rng.bernoulli(o.hflip_);
  if (o.noise_std_ > 0.f) draw_normals(noise, channels * height * width, rng);
  if (rng.bernoulli(o.erase_prob_)) draw_erase(height, width, o, rng, &a);
  return a;
}

void Augmenter::apply_sample(float* sample, int64_t channels, int64_t height, int64_t width,
                             Rng& rng, std::vector<float>& scratch) const {
  const int64_t numel = channels * height * width;
  const bool noisy = options_.noise_std_ > 0.f;
  // scratch: the shift's copy of the sample, then (with noise) the noise values.
  if (static_cast<int64_t>(scratch.size()) < (noisy ? 2 : 1) * numel)
    scratch.resize((noisy ? 2 : 1) * numel);
  float* noise = scratch.data() + numel;
  const SampleAugmentation a = draw(channels, height, width, rng, noisy ? noise : nullptr);
  if (a.dy != 0 || a.dx != 0 || a.flip)
    shift_and_flip(sample, channels, height, width, a.dy, a.dx, a.flip, scratch.data());
  if (noisy)
    for (int64_t i = 0; i < numel; ++i) sample[i] += options_.noise_std_ * noise[i];
  if (a.erase) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = a.erase_y; y < a.erase_y + a.erase_h; ++y) {
        float* row = sample + (c * height + y) * width + a.erase_x;
        std::fill(row, row + a.erase_w, options_.erase_value_);
      }
    }
  }
}

Status Augmenter::apply(torch::Tensor& batch, Rng& rng) const {
  KILN_RETURN_IF_ERROR(check_batch(batch));
  const int64_t n = batch.size(0), c = batch.size(1), h = batch.size(2), w = batch.size(3);
  float* data = batch.data_ptr<float>();
  std::vector<float> scratch;
  for (int64_t i = 0; i < n; ++i) {
    Rng sample_rng(rng.next());
    apply_sample(data + i * c * h * w, c, h, w, sample_rng, scratch);
  }
  return Status::Ok();
}

Expected<torch::Tensor> Augmenter::augmented(const torch::Tensor& batch, Rng& rng) const {
  KILN_RETURN_IF_ERROR(check_batch(batch));
  torch::Tensor copy = torch::empty_like(batch, torch::MemoryFormat::Contiguous);
  std::memcpy(copy.data_ptr<float>(), batch.data_ptr<float>(), batch.numel() * sizeof(float));
  KILN_RETURN_IF_ERROR(apply(copy, rng));
  return copy;
}

}  // namespace kiln::data
