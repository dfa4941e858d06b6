#pragma once
// The prediction log of `kiln serve`: one JSON line per inference row and per feedback item, in
// $KILN_HOME/logs/, bounded in size and rotated, written by a background thread so that serving
// never waits on the disk. Torch-free.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::monitor {
class Counter;
}

namespace kiln::serve {

/// What a prediction line records of the row's inputs.
enum class PredictionLogInputs {
  kOff,     ///< no log at all (no file, no thread)
  /// "input_xxh128": XXH3-128 of the row's float32 bytes (little-endian, row-major), in the
  /// canonical hex that `xxh128sum` and Python's `xxhash.xxh3_128_hexdigest` print
  kHash,
  kInputs,  ///< "inputs": the row's values as a JSON array
};

/// "off", "hash" or "inputs" (the `--prediction-log` values); InvalidArgument otherwise.
Expected<PredictionLogInputs> parse_prediction_log_inputs(std::string_view text);
const char* to_string(PredictionLogInputs mode);

/// Options of PredictionLog. The file is `dir/file_name`; its rotated predecessors are
/// `file_name.1` (newest) to `file_name.<max_files>` (oldest), so the log never takes more than
/// max_bytes × (max_files + 1) on disk.
///
///   PredictionLogOptions(kiln_home() / "logs").file_name("predictions-8000.jsonl").max_files(3)
struct PredictionLogOptions {
  PredictionLogOptions() = default;
  explicit PredictionLogOptions(std::filesystem::path dir) : dir_(std::move(dir)) {}
  PredictionLogOptions& dir(std::filesystem::path v) {
    dir_ = std::move(v);
    return *this;
  }
  PredictionLogOptions& file_name(std::string v) {
    file_name_ = std::move(v);
    return *this;
  }
  PredictionLogOptions& inputs(PredictionLogInputs v) {
    inputs_ = v;
    return *this;
  }
  /// Largest size of one file; a line that would take the file past it goes to a fresh one
  /// (a line longer than this alone is dropped and counted).
  PredictionLogOptions& max_bytes(int64_t v) {
    max_bytes_ = v;
    return *this;
  }
  /// Rotated files kept beside the live one (0: the live file is cut and restarted).
  PredictionLogOptions& max_files(int v) {
    max_files_ = v;
    return *this;
  }
  /// Memory the queued rows (their raw inputs and outputs) may take; beyond it, rows are
  /// dropped and counted rather than wait.
  PredictionLogOptions& max_queue_bytes(int64_t v) {
    max_queue_bytes_ = v;
    return *this;
  }
  /// Longest a logged line waits in memory before it is written to the file.
  PredictionLogOptions& flush_interval(std::chrono::milliseconds v) {
    flush_interval_ = v;
    return *this;
  }
  /// false: no writer thread; lines are written only by flush() and close() (tests, and callers
  /// that want to choose when the disk is touched).
  PredictionLogOptions& background_writer(bool v) {
    background_writer_ = v;
    return *this;
  }
  /// "inputs=hash max_bytes=67108864 ..." for logs and run records.
  std::string to_string() const;

  std::filesystem::path dir_;  ///< created if missing
  std::string file_name_ = "predictions.jsonl";
  PredictionLogInputs inputs_ = PredictionLogInputs::kHash;
  int64_t max_bytes_ = int64_t{64} << 20;
  int max_files_ = 5;
  int64_t max_queue_bytes_ = int64_t{32} << 20;
  std::chrono::milliseconds flush_interval_{1000};
  bool background_writer_ = true;
};

/// The served model version a logged row came from, shared by all of its rows (build it once per
/// version). `labels` empty: a regression model, whose prediction is its first output.
struct LoggedModel {
  std::string model, version;
  std::vector<std::string> labels;
};

/// What the log keeps of a request's input rows until they are written: each row's XXH3-128
/// (hash mode) or its values (inputs mode). Made by PredictionLog::capture_inputs().
struct LoggedInputs {
  std::vector<uint64_t> hashes;  ///< 2 per row: high and low 64 bits
  std::vector<float> values;     ///< rows × width
};

/// Counters the log keeps up to date (either may be null): lines written, rows dropped (queue
/// full, or a line longer than max_bytes, or a failed write). Owned by the caller; they must
/// outlive the log.
struct PredictionLogMetrics {
  monitor::Counter* lines = nullptr;
  monitor::Counter* dropped = nullptr;
};

/// Appends prediction and feedback lines (JSON Lines) to a size-bounded, rotated file.
///
/// Prediction line, one per row (`id` is the request's for one row, `ID#k` for row k of a batch,
/// the ids feedback uses):
///   {"ts": 1718000000.123, "id": "r1#0", "model": "mlp", "version": "3",
///    "prediction": "cat", "confidence": 0.91, "input_xxh128": "9f86…"}
/// (regression: "prediction": 12.5; `--prediction-log inputs`: "inputs": [0.1, …] instead of
/// the hash). Feedback line: {"ts": …, "id": "r1#0", "model": "mlp", "version": "3",
/// "truth": "dog"}.
///
/// capture_inputs() takes what a row's line records of its inputs on the request path (the hash:
/// XXH3 runs at memory speed, ~0.1 us for a 784-pixel row; or a copy of the values); log_*()
/// only queue (a lock, no formatting, no I/O) and never block on the disk: when the queue is full
/// the rows are dropped and counted. One writer thread, at a lower CPU priority than the serving
/// threads, formats and writes the lines (buffered; written out within flush_interval), rotating
/// between whole lines, so no file ever holds half a line. Thread-safe; owns its thread and file.
///
///   KILN_ASSIGN_OR_RETURN(auto log, PredictionLog::Create(PredictionLogOptions(dir), metrics));
///   LoggedInputs inputs = log->capture_inputs(x, rows, row_numel);  // before x is moved on
///   log->log_predictions(model, "r1", rows, std::move(inputs), std::move(logits));
///   log->close();  // drains, writes, joins (the destructor does too)
class PredictionLog {
 public:
  /// Creates the directory and opens (appends to) the live file; with inputs off, a log that
  /// records nothing and opens nothing.
  static Expected<std::unique_ptr<PredictionLog>> Create(const PredictionLogOptions& options,
                                                         PredictionLogMetrics metrics = {});
  ~PredictionLog();
  PredictionLog(const PredictionLog&) = delete;
  PredictionLog& operator=(const PredictionLog&) = delete;

  bool enabled() const { return options_.inputs_ != PredictionLogInputs::kOff; }
  /// The live file (empty when off).
  const std::filesystem::path& path() const { return path_; }

  /// What the log records of `rows` rows of `width` float32 values each (row-major, as the
  /// model receives them): their hashes or a copy, by the log's mode; empty when off. Any thread.
  LoggedInputs capture_inputs(const float* data, int64_t rows, int64_t width) const;
  /// Queues `rows` rows: `inputs` from capture_inputs(), `outputs` rows × (outputs.size() / rows)
  /// of the model's first output (logits for a classifier). Never blocks on I/O; drops (and
  /// counts) the rows when the queue is full.
  void log_predictions(std::shared_ptr<const LoggedModel> model, std::string id, int64_t rows,
                       LoggedInputs inputs, std::vector<float> outputs);
  /// Queues a feedback line; `truth_json` is the truth as JSON text (e.g. "\"cat\"" or "3.5").
  void log_feedback(std::string_view model, std::string_view version, std::string id,
                    std::string truth_json);

  /// Writes every queued line to the file now. Blocks on the disk; any thread.
  void flush();
  /// Stops the writer thread after writing every queued line, and closes the file; later log_*()
  /// calls are ignored. Blocks. Idempotent.
  void close();

  int64_t lines_written() const { return lines_written_.load(std::memory_order_relaxed); }
  int64_t rows_dropped() const { return rows_dropped_.load(std::memory_order_relaxed); }

 private:
  struct Record {
    double ts = 0;
    std::shared_ptr<const LoggedModel> model;
    std::string id;
    int64_t rows = 0;
    LoggedInputs inputs;
    std::vector<float> outputs;
    std::string truth_json;  ///< feedback line when not empty
    int64_t bytes() const;
  };

  PredictionLog(const PredictionLogOptions& options, PredictionLogMetrics metrics);
  Status open_file();
  void enqueue(Record&& record);
  void run_writer();
  /// Formats the queued records into the buffer, and writes the buffer out when `write_out` or a
  /// chunk is full (holding write_mu_).
  void drain_locked(bool write_out);
  void append_line(const std::string& line);
  void write_buffer();
  void rotate();
  void count_dropped(int64_t rows);

  const PredictionLogOptions options_;
  const PredictionLogMetrics metrics_;
  std::filesystem::path path_;

  std::mutex mu_;  ///< guards the queue
  std::condition_variable wake_;
  std::vector<Record> queue_;  ///< swapped with draining_, so neither reallocates once warm
  int64_t queued_bytes_ = 0;
  bool closed_ = false;

  std::mutex write_mu_;  ///< guards the file and the buffer below
  int fd_ = -1;
  int64_t file_bytes_ = 0;  ///< bytes in the live file, written or buffered
  std::string buffer_;      ///< whole lines not yet written
  std::vector<Record> draining_;  ///< the records being formatted
  int64_t buffered_lines_ = 0;
  bool warned_ = false;

  std::atomic<int64_t> lines_written_{0};
  std::atomic<int64_t> rows_dropped_{0};
  std::thread writer_;
};

}  // namespace kiln::serve
