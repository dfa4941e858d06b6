#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/tune/space.h"
#include "kiln/tune/storage.h"

namespace kiln::tune {

/// `kiln tune show --json`: {"study", "direction", "best": {number, value, params} or null,
/// "trials": [{number, state, value, params, duration, intermediate, note}], "importance"}.
/// Pure.
Json study_json(const StudyInfo& study, const std::vector<TrialRecord>& trials);

/// Parameter importance, a documented fANOVA-lite: for each parameter, the share of the variance
/// of the complete trials' objective explained by the parameter alone (the correlation ratio
/// η² = between-group variance / total variance, numeric values cut into up to 5 quantile bins,
/// categories as groups, trials lacking the parameter as one more group), normalised to sum to 1.
/// Empty when fewer than kMinTrialsForImportance complete trials (with fewer, the bins hold one
/// or two trials each and the shares are noise). Pure.
inline constexpr size_t kMinTrialsForImportance = 5;
std::vector<std::pair<std::string, double>> param_importance(
    const SearchSpace& space, const std::vector<TrialRecord>& trials);

/// The human table of `kiln tune show`. Pure.
std::string study_table(const StudyInfo& study, const std::vector<TrialRecord>& trials);

/// Writes history.svg (objective per trial and best so far), parallel_coordinates.svg and
/// importance.svg into `dir` (created). Blocks (file I/O); atomic per file.
Status write_study_plots(const StudyInfo& study, const std::vector<TrialRecord>& trials,
                         const std::filesystem::path& dir);

}  // namespace kiln::tune
