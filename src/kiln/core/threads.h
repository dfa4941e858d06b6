#pragma once

namespace kiln {

/// Intra-op threads Kiln should use: `KILN_THREADS`, else `OMP_NUM_THREADS`, else the number of
/// cores (std::thread::hardware_concurrency, at least 1). Invalid values are ignored.
int default_intra_op_threads();

}  // namespace kiln
