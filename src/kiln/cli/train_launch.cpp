#include "kiln/cli/train_launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>

#include "kiln/core/ports.h"
#include "kiln/core/process.h"

namespace kiln::cli {

namespace {

namespace fs = std::filesystem;

pid_t start_rank(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env) {
  SpawnOptions o;
  o.argv = args;
  o.exec_path = "/proc/self/exe";  // this very binary, even if a rebuild replaced the file
  o.stdin_path.clear();            // ranks share the launcher's terminal
  for (const auto& [k, v] : env) o.env.push_back(k + "=" + v);
  Expected<pid_t> pid = spawn_process(o);
  if (!pid.ok()) {
    std::fprintf(stderr, "kiln train: cannot start a rank: %s\n", pid.status().message().c_str());
    return -1;
  }
  return *pid;
}

struct Outcome {
  int exit_code = 0;  ///< for the command
  bool restartable = false;
};

/// Waits for `ranks` (pid -> rank); on the first failure stops the others.
Outcome wait_ranks(std::map<pid_t, int> ranks) {
  Outcome outcome;
  bool stopping = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (!ranks.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid == 0) {  // stopping, nobody exited yet
      if (std::chrono::steady_clock::now() > deadline)
        for (const auto& [p, r] : ranks) ::kill(p, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (pid < 0) break;
    auto it = ranks.find(pid);
    if (it == ranks.end()) continue;
    const int rank = it->second;
    ranks.erase(it);
    const bool signalled = WIFSIGNALED(status);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 || stopping) continue;
    std::fprintf(stderr, "kiln train: rank %d %s %d; stopping the other ranks\n", rank,
                 signalled ? "was killed by signal" : "exited with",
                 signalled ? WTERMSIG(status) : code);
    outcome.exit_code = code;
    // A rank that died, or lost a peer (exit 1: unavailable), can go on from the checkpoint; a
    // bad config or data (exit 2) would only fail again.
    outcome.restartable = signalled || code == 1;
    stopping = true;
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (const auto& [p, r] : ranks) ::kill(p, SIGTERM);
  }
  return outcome;
}

}  // namespace

int launch_ranks(const LaunchPlan& plan,
                 const std::function<std::vector<std::string>(bool resume)>& rank_argv) {
  std::string addr = "127.0.0.1";
  int port = 0;
  if (!plan.master.empty()) {
    const auto colon = plan.master.rfind(':');
    addr = plan.master.substr(0, colon);
    port = std::atoi(plan.master.substr(colon + 1).c_str());
  }
  const int world = plan.nproc * plan.nnodes;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads =
      std::to_string(std::max(1u, cores / static_cast<unsigned>(plan.nproc)));
  bool resume = false;
  for (int attempt = 0;; ++attempt) {
    // A fresh port per attempt: the dead job's may still be in TIME_WAIT.
    const int master_port = port > 0 ? port : free_loopback_port(29500);
    std::map<pid_t, int> ranks;
    for (int local = 0; local < plan.nproc; ++local) {
      const int rank = plan.node_rank * plan.nproc + local;
      std::map<std::string, std::string> env = {{"RANK", std::to_string(rank)},
                                                {"WORLD_SIZE", std::to_string(world)},
                                                {"LOCAL_RANK", std::to_string(local)},
                                                {"LOCAL_WORLD_SIZE", std::to_string(plan.nproc)},
                                                {"MASTER_ADDR", addr},
                                                {"MASTER_PORT", std::to_string(master_port)},
                                                {"GROUP_RANK", std::to_string(plan.node_rank)}};
      if (!std::getenv("KILN_THREADS")) env["KILN_THREADS"] = threads;
      ranks[start_rank(rank_argv(resume), env)] = rank;
    }
    std::fprintf(stderr, "kiln train: %d rank(s) on this node of %d, rendezvous %s:%d%s\n",
                 plan.nproc, world, addr.c_str(), master_port,
                 resume ? " (resumed from the last checkpoint)" : "");
    const Outcome outcome = wait_ranks(std::move(ranks));
    if (outcome.exit_code == 0) return 0;
    std::error_code ec;
    if (!outcome.restartable || attempt >= plan.max_restarts ||
        !fs::exists(plan.out / "checkpoint.pt", ec)) {
      if (outcome.restartable && attempt >= plan.max_restarts)
        std::fprintf(stderr, "kiln train: giving up after %d restart(s) (--max-restarts)\n",
                     attempt);
      return outcome.exit_code;
    }
    std::fprintf(stderr, "kiln train: restarting every rank from %s (restart %d of %d)\n",
                 (plan.out / "checkpoint.pt").c_str(), attempt + 1, plan.max_restarts);
    resume = true;
  }
}

}  // namespace kiln::cli
