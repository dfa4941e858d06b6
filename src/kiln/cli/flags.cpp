#include "kiln/cli/flags.h"

#include <cstdio>
#include <stdexcept>

#include "kiln/cli/commands.h"

namespace kiln::cli {
namespace {

// The one flag table.
const FlagSpec kFlags[] = {
    {Flag::kTarget, "--target,-t", "target (label) column of a CSV given directly", ""},
    {Flag::kCategorical, "--categorical",
     "a column of number codes to one-hot encode as categories, e.g. --categorical sex "
     "(repeatable; adds to the spec's categories.columns)",
     ""},
    {Flag::kTargetEncode, "--target-encode",
     "a categorical column (text or number codes) to target-encode: each category becomes its "
     "smoothed mean target, e.g. --target-encode zip (repeatable; adds to the spec's "
     "categories.target_encode)",
     ""},
    {Flag::kReport, "--report", "also write the full result as JSON to this file", ""},
    {Flag::kJson, "--json", "print machine-readable JSON instead of tables", "false"},
    {Flag::kOut, "--out,-o", "output directory", ""},
    {Flag::kSeed, "--seed",
     "random seed: the same seed makes the same random choices (data prepare: default the "
     "spec's seed; tune: the sampler's seed, default 0)",
     ""},
    {Flag::kOutlierZ, "--outlier-z",
     "robust z-score (0.6745*|x-median|/MAD) above which a value is an extreme outlier", "100"},
    {Flag::kNaTokens, "--na", "cell values read as missing (replaces the defaults)",
     "'' NA N/A NaN nan null NULL None"},
    {Flag::kThreads, "--threads",
     "intra-op threads (default: KILN_THREADS, OMP_NUM_THREADS, cores)", ""},
    {Flag::kLimit, "--limit", "read at most this many records per split (0: all)", "0"},
    {Flag::kInput, "--input", "input shape without the batch dim: C,H,W for images, F for tables",
     "1,28,28"},
    {Flag::kOutputs, "--outputs", "number of model outputs (classes, or 1 for regression)", "10"},
    {Flag::kName, "--name", "registered model name ([A-Za-z0-9._-], at most 128 characters)", ""},
    {Flag::kTag, "--tag", "a tag KEY=VALUE (repeatable)", ""},
    {Flag::kDescription, "--description", "free-text description", ""},
    {Flag::kFormat, "--format", "what the input file is: bundle (a directory) or torchscript",
     "bundle"},
    {Flag::kTensorInput, "--input",
     "TorchScript input NAME:DTYPE:SHAPE, e.g. input:FP32:-1,784 (repeatable, in forward order)",
     ""},
    {Flag::kTensorOutput, "--output",
     "TorchScript output NAME:DTYPE:SHAPE, e.g. logits:FP32:-1,10 (repeatable)", ""},
    {Flag::kLabels, "--labels",
     "class names in output order, comma-separated (makes a TorchScript push a classifier)", ""},
    {Flag::kParent, "--parent", "the version this one was fine-tuned or compressed from (REF)", ""},
    {Flag::kWhere, "--where",
     "filter KEY OP VALUE, e.g. 'metrics.accuracy>0.9', 'tags.stage=prod' (repeatable, ANDed)", ""},
    {Flag::kSort, "--sort", "sort by a field, e.g. metrics.accuracy; '-' first for descending", ""},
    {Flag::kLineage, "--lineage", "also walk the parent chain", "false"},
    {Flag::kGrace, "--grace",
     "keep unreferenced artifacts younger than this many seconds (a push in flight)", "3600"},
    {Flag::kModel, "--model,-m",
     "model to serve: a bundle directory, or NAME@ALIAS / NAME@VERSION from the registry "
     "(repeat for several)",
     ""},
    {Flag::kHost, "--host", "address to listen on", "127.0.0.1"},
    {Flag::kPort, "--port", "TCP port to listen on (0: any free port, printed when ready)", "8000"},
    {Flag::kMaxBatch, "--max-batch", "most samples the dynamic batcher puts in one forward", "64"},
    {Flag::kMaxDelayUs, "--max-delay-us",
     "longest a request waits for its batch to fill (microseconds)", "2000"},
    {Flag::kApiKeyFile, "--api-key-file",
     "require this file's key ('Authorization: Bearer KEY' or 'X-API-Key: KEY') on every route "
     "but /v2/health/*",
     ""},
    {Flag::kPollIntervalMs, "--poll-interval-ms",
     "how often to re-resolve each --model for hot reload (0: never)", "1000"},
    {Flag::kRequestTimeoutMs, "--request-timeout-ms",
     "fail a request with 503 when its batch has not started after this long (0: never)", "30000"},
    {Flag::kMaxBodyBytes, "--max-body-bytes", "largest request body accepted (larger: 413)",
     "16777216"},
    {Flag::kIoThreads, "--io-threads", "HTTP threads (parse, encode, network)", "1"},
    {Flag::kAccessLog, "--access-log", "one JSON line per request on stderr", "false"},
    {Flag::kNoPrepack, "--no-prepack",
     "serve model.pt as saved (default: models without convolutions get XNNPACK's prepacked "
     "linear layers at load, kept only when their outputs match)",
     "false"},
    {Flag::kServePrecision, "--precision",
     "number format to serve: auto (the bundle's bf16 module where it records one and the CPU "
     "has avx512_bf16, checked against model.pt at load), fp32, or bf16",
     "auto"},
    {Flag::kDevice, "--device",
     "where to compute: auto (the first GPU when LibTorch sees one, else the CPU), cpu, cuda or "
     "cuda:N",
     "auto"},
    {Flag::kBatchGapUs, "--batch-gap-us",
     "dispatch a filling batch once no request arrived for this long (-1: max-delay/10, at most "
     "100)",
     "-1"},
    {Flag::kSpace, "--space", "search space YAML (params: name -> {type, low, high, ...})", ""},
    {Flag::kTrials, "--trials", "number of finished trials the study ends with", "20"},
    {Flag::kWorkers, "--workers", "trials run at once, each a separate process", "1"},
    {Flag::kStudy, "--study", "study name (default: derived from the config and space files)", ""},
    {Flag::kTimeout, "--timeout", "seconds after which no new trial starts (0: none)", "0"},
    {Flag::kPush, "--push", "push the best trial's bundle to the registry under this name", ""},
    {Flag::kObjectiveCmd, "--objective-cmd",
     "black-box mode: command run with {param} placeholders; the last line it prints is the "
     "objective",
     ""},
    {Flag::kDirection, "--direction", "minimize | maximize the objective",
     "maximize (training), required (black-box)"},
    {Flag::kSampler, "--sampler", "random | grid | tpe", "tpe"},
    {Flag::kPruner, "--pruner", "none | median | asha", "none"},
    {Flag::kMetric, "--metric", "metrics.jsonl field the study optimises (best epoch)",
     "val_accuracy"},
    {Flag::kReductionFactor, "--reduction-factor", "asha: keep the top 1/eta at each rung", "4"},
    {Flag::kMinResource, "--min-resource", "asha: epochs before the first rung", "1"},
    {Flag::kKeepTrials, "--keep-trials",
     "trial files kept: all | best (the best trial's training output; other trials keep only "
     "their logs and metrics) | none (logs and metrics only, after --push)",
     "best"},
};

template <typename T>
CLI::Option* add_typed(CLI::App& command, Flag flag, T* value) {
  const FlagSpec& spec = flag_spec(flag);
  CLI::Option* opt = command.add_option(spec.names, *value, spec.help);
  if (*spec.default_text) opt->default_str(spec.default_text);
  return opt;
}

}  // namespace

const FlagSpec& flag_spec(Flag flag) {
  for (const auto& spec : kFlags)
    if (spec.flag == flag) return spec;
  throw std::logic_error("flag missing from the flag table");
}

CLI::Option* add_flag(CLI::App& c, Flag f, std::string* v) { return add_typed(c, f, v); }
CLI::Option* add_flag(CLI::App& c, Flag f, double* v) { return add_typed(c, f, v); }
CLI::Option* add_flag(CLI::App& c, Flag f, int* v) { return add_typed(c, f, v); }
CLI::Option* add_flag(CLI::App& c, Flag f, int64_t* v) { return add_typed(c, f, v); }
CLI::Option* add_flag(CLI::App& c, Flag f, std::vector<std::string>* v) {
  return add_typed(c, f, v);
}
CLI::Option* add_flag(CLI::App& c, Flag f, bool* v) {
  const FlagSpec& spec = flag_spec(f);
  return c.add_flag(spec.names, *v, spec.help);
}

int report_failure(const Status& status) {
  std::fprintf(stderr, "kiln: error: %s\n", status.message().c_str());
  return exit_code_for(status);
}

}  // namespace kiln::cli
