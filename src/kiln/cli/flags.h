#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace kiln::cli {

/// Every flag any `kiln` command takes, declared once: name, help text and default live in the
/// table in flags.cpp, so the same flag means the same thing in every command (llama.cpp's
/// single-table approach). Commands pick the flags they accept with add_flag().
enum class Flag {
  kTarget,
  kCategorical,
  kTargetEncode,
  kReport,
  kJson,
  kOut,
  kSeed,
  kOutlierZ,
  kNaTokens,
  kThreads,
  kLimit,
  kInput,
  kOutputs,
  kName,
  kTag,
  kDescription,
  kFormat,
  kTensorInput,
  kTensorOutput,
  kLabels,
  kParent,
  kWhere,
  kSort,
  kLineage,
  kGrace,
  kModel,
  kHost,
  kPort,
  kMaxBatch,
  kMaxDelayUs,
  kApiKeyFile,
  kPollIntervalMs,
  kRequestTimeoutMs,
  kMaxBodyBytes,
  kIoThreads,
  kAccessLog,
  kNoPrepack,
  kServePrecision,
  kDevice,
  kBatchGapUs,
  kSpace,
  kTrials,
  kWorkers,
  kStudy,
  kTimeout,
  kPush,
  kObjectiveCmd,
  kDirection,
  kSampler,
  kPruner,
  kMetric,
  kReductionFactor,
  kMinResource,
  kKeepTrials,
};

struct FlagSpec {
  Flag flag;
  const char* names;  ///< CLI11 name list, e.g. "--report"
  const char* help;
  const char* default_text;  ///< shown in --help; "" for none
};

/// The table row for a flag.
const FlagSpec& flag_spec(Flag flag);

/// Adds `flag` to `command`, bound to `*value` (whose current value is the default).
CLI::Option* add_flag(CLI::App& command, Flag flag, std::string* value);
CLI::Option* add_flag(CLI::App& command, Flag flag, double* value);
CLI::Option* add_flag(CLI::App& command, Flag flag, int* value);
CLI::Option* add_flag(CLI::App& command, Flag flag, int64_t* value);
CLI::Option* add_flag(CLI::App& command, Flag flag, bool* value);
CLI::Option* add_flag(CLI::App& command, Flag flag, std::vector<std::string>* value);

}  // namespace kiln::cli
