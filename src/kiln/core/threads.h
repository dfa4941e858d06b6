#pragma once

namespace kiln {

/// Intra-op threads Kiln should use: `KILN_THREADS`, else `OMP_NUM_THREADS`, else the number of
/// cores (std::thread::hardware_concurrency, at least 1). Invalid values are ignored.
int default_intra_op_threads();

/// Makes glibc's allocator keep freed memory in the process instead of handing it back to the
/// kernel after every free: every allocation comes from the heap (no mmap, whatever the size)
/// and the heap is trimmed only above 1 GiB free. With glibc's defaults every training batch
/// re-faults its activation buffers: the first epoch of examples/fashion-mnist/cnn.yaml took
/// 2.9 M page faults and 6 s of system time (10.1 s instead of 6.3 s); with a 32 MiB threshold
/// (glibc's ceiling) the CNN's evaluation at batch 512 still ran at 0.2x its batch-256 speed.
/// KILN_ALLOCATOR_MMAP=1 keeps glibc's mmap for allocations above 32 MiB (about 25% less peak
/// memory for the default CNN's training, and 3x its wall time: docs/benchmarks.md). Call once at start-up,
/// before threads start; does nothing on other C libraries. Not thread-safe.
void configure_allocator_for_tensors();

/// True when the CPU advertises avx512_bf16 or amx_bf16 (/proc/cpuinfo): bf16 training (autocast)
/// and bf16 serving pay off only there. Cached after the first call; thread-safe.
bool cpu_supports_bf16();

}  // namespace kiln
