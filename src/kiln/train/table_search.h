#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::train {

/// One model the tabular quick path may choose: a `model:` and an L2 strength for a full-batch
/// L-BFGS fit (optimizer lbfgs, `epochs` steps). Plain value type.
struct TableCandidate {
  std::string name;             ///< "linear", "mlp-100", ...
  std::vector<int64_t> hidden;  ///< hidden widths; empty: a linear model
  double weight_decay = 0;      ///< optimizer.weight_decay (see l2_penalty in optim.h)
  int64_t epochs = 15;          ///< L-BFGS steps (kLbfgsIterationsPerStep iterations each)

  /// The `model:` of a training config ({zoo: mlp, hidden: [...], dropout: 0}).
  Json model_json() const;
  /// The `optimizer:` of a training config ({name: lbfgs, weight_decay: ...}).
  Json optimizer_json() const;
};

/// The quick path's fixed candidate list, simplest first (a linear model before an MLP, a
/// stronger penalty before a weaker one): the order the one-standard-error rule prefers. The
/// same for every table: nothing is tuned to a dataset.
const std::vector<TableCandidate>& default_table_candidates();

/// Tables of up to this many training rows are cross-validated kSmallTableRepeats times.
inline constexpr int64_t kRepeatedSearchMaxRows = 1000;
inline constexpr int64_t kSmallTableRepeats = 3;

/// How search_table_model() cross-validates.
///
///   auto opts = TableSearchOptions().folds(5).seed(42).threads(2);
struct TableSearchOptions {
  /// k of k-fold cross-validation (stratified by class for classification). Fewer when a class
  /// has fewer training rows than k (down to 2); see search_table_model.
  TableSearchOptions& folds(int64_t k) {
    folds_ = k;
    return *this;
  }
  /// Fold assignment and network initialisation.
  TableSearchOptions& seed(uint64_t s) {
    seed_ = s;
    return *this;
  }
  /// Fits run on this many threads at once (each with one intra-op thread).
  TableSearchOptions& threads(int n) {
    threads_ = n;
    return *this;
  }
  /// Cross-validation rounds over differently shuffled folds; 0 (the default):
  /// kSmallTableRepeats for tables of up to kRepeatedSearchMaxRows rows, else 1.
  TableSearchOptions& repeats(int64_t r) {
    repeats_ = r;
    return *this;
  }
  TableSearchOptions& candidates(std::vector<TableCandidate> c) {
    candidates_ = std::move(c);
    return *this;
  }

  int64_t folds_ = 5;
  int64_t repeats_ = 0;
  uint64_t seed_ = 42;
  int threads_ = 2;
  std::vector<TableCandidate> candidates_ = default_table_candidates();
};

/// What the search measured and chose. Plain value type.
struct TableSearchResult {
  struct Score {
    TableCandidate candidate;
    std::vector<double> fold_scores;  ///< accuracy (classification) or R² per fold and repeat
    double mean = 0;
    double standard_error = 0;  ///< std of fold_scores / sqrt(folds)
  };
  std::vector<Score> scores;  ///< in candidate order
  size_t chosen = 0;          ///< index into scores
  int64_t folds = 0;          ///< k actually used
  int64_t repeats = 1;        ///< rounds of k-fold cross-validation
  double seconds = 0;

  const TableCandidate& choice() const { return scores[chosen].candidate; }
  /// {"folds", "rule", "chosen", "seconds", "candidates": [{name, hidden, weight_decay, mean,
  /// standard_error, fold_scores}]}.
  Json to_json() const;
};

/// Chooses a model for a prepared table by k-fold cross-validation on `x`/`y` (the training rows
/// only; features already transformed as the snapshot stores them). Every candidate is fitted on
/// k-1 folds exactly as `kiln train` fits it (train::make_optimizer's L-BFGS, l2_penalty, the
/// network built from the candidate's spec with the seed) and scored on the held-out fold. The
/// choice follows the one-standard-error rule between architectures: the simplest architecture
/// (linear, then narrower MLPs) whose best candidate scores within one standard error of the best
/// mean, so noise between near-equal models favours the simpler one; within that architecture the
/// weight_decay with the best mean.
///
/// `task` is "classification" (y int64 class indices < `classes`) or "regression" (y float).
/// Errors: InvalidArgument when 2 folds of at least 5 rows (each with every class) cannot be made
/// (the caller then trains a default without a search and says why), or for an empty candidate
/// list or a bad task.
/// Blocks; runs fits on options.threads_ threads and sets LibTorch's intra-op threads to 1 for
/// the call (restored after). Not re-entrant (intra-op threads and the default generator are
/// process state).
///
///   KILN_ASSIGN_OR_RETURN(TableSearchResult r,
///                         search_table_model(train.x, train.y, "classification", 2, {}));
///   std::cout << r.choice().name;
Expected<TableSearchResult> search_table_model(const torch::Tensor& x, const torch::Tensor& y,
                                               const std::string& task, int64_t classes,
                                               const TableSearchOptions& options = {});

}  // namespace kiln::train
