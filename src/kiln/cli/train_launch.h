#pragma once

// `kiln train --nproc N [--nnodes M --node-rank R --master ADDR:PORT]`: starts this node's ranks
// of a data-parallel training job as kiln-engine processes with torchrun's environment
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), watches them, and restarts the whole
// job from its last checkpoint when a rank dies.

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kiln::cli {

/// This node's share of a job. Plain value.
struct LaunchPlan {
  int nproc = 1;       ///< ranks on this node
  int nnodes = 1;      ///< nodes in the job
  int node_rank = 0;   ///< this node (0 hosts rank 0 and the rendezvous)
  std::string master;  ///< ADDR:PORT of rank 0; empty: 127.0.0.1 and a free port (one node)
  int max_restarts = 3;
  std::filesystem::path out;  ///< the run directory every rank shares
};

/// Runs the ranks: `rank_argv(resume)` is the command line of each (kiln-engine's `train ...`
/// with --out, or --resume on a restart), started with the rank's environment and
/// KILN_THREADS = cores / nproc unless set. When a rank fails, the others are stopped (SIGTERM,
/// then SIGKILL after 10 s). A rank killed by a signal, or failing for a lost peer (exit 1), makes
/// the job restart from out/checkpoint.pt, at most max_restarts times; a bad input (exit 2) ends
/// it. Returns the exit code for the command (0 when every rank finished). Blocks; prints what
/// it does on stderr.
int launch_ranks(const LaunchPlan& plan,
                 const std::function<std::vector<std::string>(bool resume)>& rank_argv);

}  // namespace kiln::cli
