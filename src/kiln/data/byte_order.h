#pragma once

#include <cstdint>

namespace kiln::data {

/// Reverses the byte order of `count` elements of `elem_size` bytes (2, 4 or 8) in place: for
/// big-endian file formats (IDX, .npy with '>') on this little-endian host.
inline void swap_bytes(void* data, int64_t count, int64_t elem_size) {
  if (elem_size == 2) {
    auto* p = static_cast<uint16_t*>(data);
    for (int64_t i = 0; i < count; ++i) p[i] = __builtin_bswap16(p[i]);
  } else if (elem_size == 4) {
    auto* p = static_cast<uint32_t*>(data);
    for (int64_t i = 0; i < count; ++i) p[i] = __builtin_bswap32(p[i]);
  } else if (elem_size == 8) {
    auto* p = static_cast<uint64_t*>(data);
    for (int64_t i = 0; i < count; ++i) p[i] = __builtin_bswap64(p[i]);
  }
}

}  // namespace kiln::data
