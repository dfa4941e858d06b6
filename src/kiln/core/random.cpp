#include "kiln/core/random.h"

namespace kiln {

uint64_t Rng::below(uint64_t n) {
  // 128-bit multiply keeps the high word; reject the small biased band.
  uint64_t x = next();
  __uint128_t m = static_cast<__uint128_t>(x) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      x = next();
      m = static_cast<__uint128_t>(x) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  Rng r(a ^ 0x5851f42d4c957f2dULL);
  uint64_t h = r.next() ^ b;
  Rng r2(h);
  uint64_t h2 = r2.next() ^ c;
  Rng r3(h2);
  return r3.next();
}

}  // namespace kiln
