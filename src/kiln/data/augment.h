#pragma once

#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/core/random.h"

namespace kiln::data {

using kiln::Rng;  // the one generator, core/random.h

/// Which random image augmentations to apply, per sample, and how strongly. All are off by
/// default, so `AugmentOptions()` is the identity. Values are in the loader's scaled pixel space
/// (uint8 images are divided by 255 first; mean/std normalisation comes after augmentation), so a
/// fill of 0 is black.
///
///   auto aug = AugmentOptions().crop_padding(2).hflip(0.5f).noise_std(0.02f).erase(0.25f);
struct AugmentOptions {
  /// Random crop after zero-padding each side by `px`: a shift of −px…px on each axis.
  AugmentOptions& crop_padding(int64_t px) {
    crop_padding_ = px;
    return *this;
  }
  /// Horizontal mirror with probability `p`.
  AugmentOptions& hflip(float p) {
    hflip_ = p;
    return *this;
  }
  /// A further integer shift of −px…px on each axis, zero fill. It composes with the crop into
  /// one shift, so crop 2 + translate 1 moves an image by at most 3 pixels.
  AugmentOptions& translate(int64_t px) {
    translate_ = px;
    return *this;
  }
  /// Additive gaussian noise with this standard deviation on every value (not clamped).
  AugmentOptions& noise_std(float s) {
    noise_std_ = s;
    return *this;
  }
  /// Random erasing (Zhong et al.): with probability `p`, one rectangle covering a fraction
  /// `area_min`…`area_max` of the image, aspect ratio `ratio_min`…`ratio_max` (log-uniform), is
  /// set to `erase_value` in every channel. After 10 draws that do not fit, nothing is erased.
  AugmentOptions& erase(float p) {
    erase_prob_ = p;
    return *this;
  }
  AugmentOptions& erase_area(float area_min, float area_max) {
    erase_area_min_ = area_min;
    erase_area_max_ = area_max;
    return *this;
  }
  AugmentOptions& erase_ratio(float ratio_min, float ratio_max) {
    erase_ratio_min_ = ratio_min;
    erase_ratio_max_ = ratio_max;
    return *this;
  }
  AugmentOptions& erase_value(float v) {
    erase_value_ = v;
    return *this;
  }

  /// True when some augmentation can change a sample.
  bool enabled() const;
  /// InvalidArgument naming the field when a value is out of range (negative pixels,
  /// probabilities outside [0, 1], empty or inverted area/ratio ranges, non-finite numbers).
  Status validate() const;
  /// Every field, for run records and manifests.
  Json to_json() const;
  /// One line, e.g. "crop_padding=2 hflip=0.5 ...".
  std::string to_string() const;

  int64_t crop_padding_ = 0;
  float hflip_ = 0.f;
  int64_t translate_ = 0;
  float noise_std_ = 0.f;
  float erase_prob_ = 0.f;
  float erase_area_min_ = 0.02f;
  float erase_area_max_ = 0.25f;
  float erase_ratio_min_ = 0.3f;
  float erase_ratio_max_ = 3.3f;
  float erase_value_ = 0.f;
};

/// One sample's random augmentation, drawn before any pixel is touched (Augmenter::draw), so the
/// same draws can be applied by CPU loops or by tensor ops on a GPU.
struct SampleAugmentation {
  int64_t dy = 0;  ///< shift down (crop plus translate), in pixels; negative: up
  int64_t dx = 0;  ///< shift right; negative: left
  bool flip = false;
  bool erase = false;  ///< when set, rows erase_y… (erase_h of them), columns erase_x… (erase_w)
  int64_t erase_y = 0, erase_x = 0, erase_h = 0, erase_w = 0;
};

/// Applies AugmentOptions to float32 N×C×H×W batches with plain loops over contiguous memory: no
/// ATen kernels run, so it never starts OpenMP work and is safe and cheap on loader worker
/// threads. Each sample draws its own stream from the batch Rng (`Rng(rng.next())`, in sample
/// order), so a batch's result depends only on the pixels and the Rng state. Immutable after
/// creation; apply() is thread-safe with a separate Rng per thread.
///
///   KILN_ASSIGN_OR_RETURN(Augmenter aug, Augmenter::Create(AugmentOptions().hflip(0.5f)));
///   Rng rng = Rng::from_key(seed, epoch, batch_index);
///   KILN_RETURN_IF_ERROR(aug.apply(batch, rng));  // batch: float32, contiguous N×C×H×W
class Augmenter {
 public:
  /// Validates the options (InvalidArgument naming the field).
  static Expected<Augmenter> Create(const AugmentOptions& options);

  /// Augments `batch` in place. InvalidArgument unless it is a defined, contiguous (NCHW)
  /// float32 tensor of rank 4.
  Status apply(torch::Tensor& batch, Rng& rng) const;
  /// Returns an augmented copy; `batch` is untouched. Same requirements as apply().
  Expected<torch::Tensor> augmented(const torch::Tensor& batch, Rng& rng) const;
  /// Augments one sample of `channels`×`height`×`width` contiguous floats in place, drawing from
  /// `rng` directly. `scratch` is resized as needed and may be reused across calls.
  void apply_sample(float* sample, int64_t channels, int64_t height, int64_t width, Rng& rng,
                    std::vector<float>& scratch) const;
  /// The draws apply_sample makes from `rng`, in its order, without touching pixels. With
  /// noise_std > 0 the `channels`×`height`×`width` standard normal values of the noise go to
  /// `noise` (which must hold that many floats; unused otherwise): a sample then becomes
  /// `x + noise_std * noise` after the shift and flip, before the erase.
  SampleAugmentation draw(int64_t channels, int64_t height, int64_t width, Rng& rng,
                          float* noise) const;

  const AugmentOptions& options() const { return options_; }

 private:
  explicit Augmenter(const AugmentOptions& options) : options_(options) {}
  AugmentOptions options_;
};

}  // namespace kiln::data
