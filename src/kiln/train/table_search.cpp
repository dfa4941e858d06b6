#include "kiln/train/table_search.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <thread>

#include "kiln/core/random.h"
#include "kiln/model/loss.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/train/config.h"
#include "kiln/train/optim.h"

namespace kiln::train {
namespace {

// Fold index of every row: per class (or all rows for regression) a seeded shuffle dealt round
// robin, so each fold holds every class in proportion.
std::vector<int64_t> assign_folds(const torch::Tensor& y, bool stratify, int64_t k, uint64_t seed) {
  const int64_t n = y.size(0);
  std::map<int64_t, std::vector<int64_t>> groups;
  torch::Tensor labels = stratify ? y.to(torch::kLong).contiguous() : torch::Tensor();
  for (int64_t i = 0; i < n; ++i) groups[stratify ? labels.data_ptr<int64_t>()[i] : 0].push_back(i);
  std::vector<int64_t> fold(static_cast<size_t>(n), 0);
  int64_t next = 0;  // continue the deal across classes so fold sizes stay even
  for (auto& [label, members] : groups) {
    deterministic_shuffle(members, mix_seed(seed, static_cast<uint64_t>(label), 0x5eed));
    for (int64_t i : members) fold[static_cast<size_t>(i)] = next++ % k;
  }
  return fold;
}

double score_of(const torch::Tensor& out, const torch::Tensor& y, bool classification) {
  if (classification) return out.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  torch::Tensor pred = out.reshape({-1}).to(torch::kFloat64), t = y.to(torch::kFloat64);
  const double ss_res = (pred - t).pow(2).sum().item<double>();
  const double ss_tot = (t - t.mean()).pow(2).sum().item<double>();
  return ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
}

// Restores LibTorch's intra-op thread count on scope exit.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int n) : previous_(torch::get_num_threads()) {
    torch::set_num_threads(n);
  }
  ~IntraOpThreads() { torch::set_num_threads(previous_); }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int previous_;
};

}  // namespace

Json TableCandidate::model_json() const {
  return {{"zoo", "mlp"}, {"hidden", hidden}, {"dropout", 0.0}};
}

Json TableCandidate::optimizer_json() const {
  return {{"name", "lbfgs"}, {"weight_decay", weight_decay}};
}

const std::vector<TableCandidate>& default_table_candidates() {
  static const std::vector<TableCandidate> candidates = {
      {"linear", {}, 1e-2},     {"linear", {}, 3e-3},     {"linear", {}, 1e-3},
      {"linear", {}, 1e-4},     {"mlp-100", {100}, 1e-1}, {"mlp-100", {100}, 1e-2},
      {"mlp-100", {100}, 1e-3}, {"mlp-256", {256}, 1e-1}, {"mlp-256", {256}, 1e-2},
  };
  return candidates;
}

Json TableSearchResult::to_json() const {
  Json list = Json::array();
  for (const auto& s : scores)
    list.push_back({{"name", s.candidate.name},
                    {"hidden", s.candidate.hidden},
                    {"weight_decay", s.candidate.weight_decay},
                    {"epochs", s.candidate.epochs},
                    {"mean", s.mean},
                    {"standard_error", s.standard_error},
                    {"fold_scores", s.fold_scores}});
  return {{"folds", folds},
          {"repeats", repeats},
          {"rule",
           "the simplest architecture within one standard error of the best mean; its best "
           "weight_decay"},
          {"chosen", chosen},
          {"seconds", seconds},
          {"candidates", list}};
}

Expected<TableSearchResult> search_table_model(const torch::Tensor& x, const torch::Tensor& y,
                                               const std::string& task, int64_t classes,
                                               const TableSearchOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (task != "classification" && task != "regression")
    return Status::InvalidArgument("model search: task '" + task + "' is not a table task");
  if (o.candidates_.empty()) return Status::InvalidArgument("model search: no candidates");
  const bool classification = task == "classification";
  const int64_t n = x.size(0);
  // Every fold holds at least kMinFoldRows rows, and stratified folds need every class in every
  // fold: k is at most the smallest class count.
  constexpr int64_t kMinFoldRows = 5;
  int64_t k = std::min<int64_t>(o.folds_, n / kMinFoldRows);
  if (classification) {
    torch::Tensor counts = torch::bincount(y.to(torch::kLong), {}, classes);
    torch::Tensor present = counts.index({counts.gt(0)});
    if (present.numel() > 0) k = std::min<int64_t>(k, present.min().item<int64_t>());
  }
  if (k < 2)
    return Status::InvalidArgument(
        "model search: " + std::to_string(n) +
        " training rows are too few for cross-validation (2 folds of at least " +
        std::to_string(kMinFoldRows) + " rows" +
        (classification ? ", each with a row of every class)" : ")"));

  // Small tables are cross-validated several times over differently shuffled folds: their
  // scores are the noisiest, and their fits the cheapest.
  const int64_t repeats =
      o.repeats_ > 0 ? o.repeats_ : (n <= kRepeatedSearchMaxRows ? kSmallTableRepeats : 1);
  std::vector<torch::Tensor> train_idx, val_idx;  // [repeat * k + fold]
  for (int64_t r = 0; r < repeats; ++r) {
    const std::vector<int64_t> fold =
        assign_folds(y, classification, k, mix_seed(o.seed_, static_cast<uint64_t>(r)));
    torch::Tensor fold_t = torch::tensor(fold, torch::kLong);
    for (int64_t f = 0; f < k; ++f) {
      train_idx.push_back(fold_t.ne(f).nonzero().reshape({-1}));
      val_idx.push_back(fold_t.eq(f).nonzero().reshape({-1}));
    }
  }
  const int64_t fits = repeats * k;
  const torch::Tensor xf = x.to(torch::kFloat32).contiguous();
  const torch::Tensor yt = classification ? y.to(torch::kLong) : y.to(torch::kFloat32);
  const int64_t outputs = classification ? classes : 1;
  model::LossOptions loss_options;
  if (!classification) loss_options.kind("mse");
  KILN_ASSIGN_OR_RETURN(model::LossFn loss_fn, model::make_loss(loss_options, outputs));

  // Networks are built on this thread (construction seeds the process's default generator);
  // the fits, which draw no random numbers, run in parallel.
  struct Job {
    size_t candidate;
    int64_t fold;
    std::shared_ptr<model::NetworkImpl> net;
    double score = 0;
    std::string error;
  };
  std::vector<Job> jobs;
  for (size_t c = 0; c < o.candidates_.size(); ++c) {
    KILN_ASSIGN_OR_RETURN(model::ModelSpec spec,
                          model::parse_model_spec(o.candidates_[c].model_json(), "model"));
    for (int64_t f = 0; f < fits; ++f) {
      KILN_ASSIGN_OR_RETURN(auto net,
                            model::NetworkImpl::Create(spec, {x.size(1)}, outputs, o.seed_));
      jobs.push_back({c, f, net, 0.0, ""});
    }
  }
  auto run = [&](Job& job) {
    const TableCandidate& cand = o.candidates_[job.candidate];
    const torch::Tensor xtr = xf.index_select(0, train_idx[job.fold]);
    const torch::Tensor ytr = yt.index_select(0, train_idx[job.fold]);
    OptimizerConfig oc;
    oc.name = "lbfgs";
    oc.lr = 1.0;
    auto optimizer = make_optimizer(job.net->parameters(), oc);
    if (!optimizer.ok()) {
      job.error = optimizer.status().message();
      return;
    }
    job.net->train();
    for (int64_t e = 0; e < cand.epochs; ++e)
      lbfgs_step(**optimizer, [&] {
        return loss_fn(job.net->forward(xtr), ytr) +
               l2_penalty(job.net->parameters(), cand.weight_decay);
      });
    job.net->eval();
    torch::NoGradGuard no_grad;
    job.score = score_of(job.net->forward(xf.index_select(0, val_idx[job.fold])),
                         yt.index_select(0, val_idx[job.fold]), classification);
    if (!std::isfinite(job.score)) job.score = classification ? 0.0 : -1e300;
  };
  {
    IntraOpThreads single(1);
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t i = next++; i < jobs.size(); i = next++) {
        try {
          run(jobs[i]);
        } catch (const std::exception& e) {
          jobs[i].error = e.what();
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < std::max(1, o.threads_); ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
  }

  TableSearchResult result;
  result.folds = k;
  result.repeats = repeats;
  result.scores.resize(o.candidates_.size());
  for (size_t c = 0; c < o.candidates_.size(); ++c) result.scores[c].candidate = o.candidates_[c];
  for (const Job& job : jobs) {
    if (!job.error.empty())
      return Status::Internal("model search: fitting " + o.candidates_[job.candidate].name +
                              " on fold " + std::to_string(job.fold) + ": " + job.error);
    result.scores[job.candidate].fold_scores.push_back(job.score);
  }
  size_t best = 0;
  for (size_t c = 0; c < result.scores.size(); ++c) {
    auto& s = result.scores[c];
    double sum = 0, sq = 0;
    for (double v : s.fold_scores) sum += v;
    s.mean = sum / static_cast<double>(fits);
    for (double v : s.fold_scores) sq += (v - s.mean) * (v - s.mean);
    // The standard error of one k-fold estimate: repeats share their rows, so they narrow the
    // mean's noise less than independent data would.
    s.standard_error = std::sqrt(sq / static_cast<double>(std::max<int64_t>(1, fits - 1))) /
                       std::sqrt(static_cast<double>(k));
    if (s.mean > result.scores[best].mean) best = c;
  }
  // The one-standard-error rule between architectures: the first (simplest) architecture whose
  // best candidate is within one standard error of the overall best; within it, the penalty with
  // the best mean (the first on a tie, the stronger penalty).
  const double threshold = result.scores[best].mean - result.scores[best].standard_error;
  result.chosen = best;
  for (size_t c = 0; c < result.scores.size(); ++c) {
    if (result.scores[c].mean < threshold) continue;
    const std::vector<int64_t>& family = result.scores[c].candidate.hidden;
    result.chosen = c;
    for (size_t d = c + 1; d < result.scores.size(); ++d)
      if (result.scores[d].candidate.hidden == family &&
          result.scores[d].mean > result.scores[result.chosen].mean)
        result.chosen = d;
    break;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace kiln::train
