// `kiln compress REF --quantize int8 --out DIR`: a smaller, faster bundle from a trained one
// (issue 18).
#include <iostream>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/compress/compress.h"

namespace kiln::cli {

void register_compress_command(CLI::App& app, int* exit_code) {
  struct Args {
    compress::CompressOptions options;
    std::string out;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  compress::CompressOptions& o = a->options;
  CLI::App* c = app.add_subcommand("compress", kCompressHelp);
  c->footer(
      "--prune R: every conv2d and linear layer but the last keeps the (1 - R) share of its "
      "output channels with the largest L1 norms (with the batch norm after it and the next "
      "layer's inputs), then the pruned network is fine-tuned for --fine-tune-epochs with the "
      "model's recorded training recipe on its training data. With --quantize as well, the "
      "pruned network is then quantised.\n"
      "int8: post-training static quantisation on oneDNN's quantised operators: each conv2d and "
      "linear layer with its batch norm folded in and a following ReLU fused, per-channel qint8 "
      "weights, quint8 activations whose ranges are observed on --calibration-rows training "
      "rows. The new bundle's model.pt is the int8 module and its metrics are that module's on "
      "the test split; manifest \"compression\" holds the report (accuracy, size and samples/s "
      "at batch 1 and 64 on one thread, before and after) and lineage.parent names REF.\n"
      "Example:\n  kiln compress fmnist@production --quantize int8 --out fmnist-int8\n"
      "  kiln compress fmnist@production --prune 0.5 --quantize int8 --out fmnist-small\n"
      "  kiln registry push fmnist-int8 --name fmnist");
  c->add_option("model", o.model_ref, "NAME@VERSION, NAME@ALIAS or a bundle directory")->required();
  c->add_option("--data", o.data,
                "dataset spec or snapshot for calibration (train split) and evaluation (test "
                "split); default: the snapshot the model was trained on");
  c->add_option("--quantize", o.quantize, "int8: post-training static quantisation")
      ->check(CLI::IsMember({"int8"}));
  c->add_option("--prune", o.prune,
                "structured pruning: the fraction of each hidden conv2d / linear layer's output "
                "channels to remove (smallest L1 norm first), then fine-tuning")
      ->check(CLI::Range(0.0, 0.95));
  c->add_option("--distill", o.distill,
                "a student YAML (model: {...}; optional epochs, temperature 4, alpha 0.7) "
                "trained on the model's softened outputs with its own recipe and data");
  c->add_option("--ensemble", o.ensemble,
                "another teacher for --distill (repeatable): the student learns the mean of all "
                "teachers' softened outputs. Each must predict the same classes from data "
                "prepared the same way");
  c->add_option("--max-drop", o.max_drop,
                "accuracy budget in percentage points: pick the strongest of prune 0.75/0.5/0.25 "
                "(+int8) and int8 whose validation accuracy stays within it")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--fine-tune-epochs", o.fine_tune_epochs,
                "epochs of the model's own training recipe after pruning")
      ->default_val(3)
      ->check(CLI::NonNegativeNumber);
  c->add_option("--calibration-rows", o.calibration_rows,
                "training rows the activation ranges are observed on")
      ->default_val(1000)
      ->check(CLI::PositiveNumber);
  c->add_option("--timing-seconds", o.timing_seconds,
                "seconds per throughput measurement (batch 1 and 64, one thread); 0: none")
      ->default_val(1.0)
      ->check(CLI::NonNegativeNumber);
  add_flag(*c, Flag::kSeed, &o.seed);
  add_flag(*c, Flag::kDevice, &o.device)
      ->description(
          "where pruning's fine-tuning and distillation train: auto, cpu, cuda or cuda:N "
          "(quantisation, evaluation and timing run on the CPU)");
  add_flag(*c, Flag::kOut, &a->out)->required();
  add_flag(*c, Flag::kJson, &a->json);
  c->callback([a, exit_code] {
    a->options.out = a->out;
    Expected<compress::CompressResult> r =
        compress::compress(a->options, a->json ? &std::cerr : &std::cout);
    if (!r.ok()) {
      *exit_code = report_failure(r.status());
      return;
    }
    if (a->json) {
      Json out = r->report;
      out["bundle"] = r->bundle_dir.string();
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << "bundle " << r->bundle_dir.string() << "\n";
    }
    *exit_code = 0;
  });
}

}  // namespace kiln::cli
