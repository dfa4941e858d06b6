#include "kiln/serve/prediction_log.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include "kiln/core/logging.h"
#include "kiln/monitor/metrics.h"
#include "kiln/serve/protocol.h"

namespace kiln::serve {

namespace fs = std::filesystem;

namespace {

/// Lines are written out once this much is buffered (and at the end of every drain).
constexpr size_t kWriteChunk = size_t{1} << 20;

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void append_fixed(std::string* out, double v, int precision) {
  char buf[48];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, precision);
  out->append(buf, r.ptr);
}

/// Nice value of the writer thread (0 = the serving threads').
constexpr int kWriterNice = 10;
/// Longest stretch of traffic the writer formats in one go.
constexpr std::chrono::milliseconds kFormatSlice{100};

/// 16 lowercase hex digits, most significant first (XXH128's canonical form, half by half).
void append_hex64(std::string* out, uint64_t v) {
  static const char* kHex = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) out->push_back(kHex[(v >> shift) & 15]);
}

fs::path with_suffix(const fs::path& p, int k) {
  return fs::path(p.string() + "." + std::to_string(k));
}

}  // namespace

Expected<PredictionLogInputs> parse_prediction_log_inputs(std::string_view text) {
  if (text == "off") return PredictionLogInputs::kOff;
  if (text == "hash") return PredictionLogInputs::kHash;
  if (text == "inputs") return PredictionLogInputs::kInputs;
  return Status::InvalidArgument("--prediction-log: '" + std::string(text) +
                                 "' is not one of off, hash, inputs");
}

const char* to_string(PredictionLogInputs mode) {
  switch (mode) {
    case PredictionLogInputs::kOff:
      return "off";
    case PredictionLogInputs::kHash:
      return "hash";
    case PredictionLogInputs::kInputs:
      return "inputs";
  }
  return "?";
}

std::string PredictionLogOptions::to_string() const {
  return std::string("inputs=") + serve::to_string(inputs_) +
         " file=" + (dir_ / file_name_).string() + " max_bytes=" + std::to_string(max_bytes_) +
         " max_files=" + std::to_string(max_files_) +
         " max_queue_bytes=" + std::to_string(max_queue_bytes_) +
         " flush_interval_ms=" + std::to_string(flush_interval_.count());
}

int64_t PredictionLog::Record::bytes() const {
  return static_cast<int64_t>(sizeof(Record) + id.size() + truth_json.size() +
                              inputs.hashes.size() * sizeof(uint64_t) +
                              (inputs.values.size() + outputs.size()) * sizeof(float));
}

PredictionLog::PredictionLog(const PredictionLogOptions& options, PredictionLogMetrics metrics)
    : options_(options), metrics_(metrics) {}

Expected<std::unique_ptr<PredictionLog>> PredictionLog::Create(const PredictionLogOptions& options,
                                                               PredictionLogMetrics metrics) {
  std::unique_ptr<PredictionLog> log(new PredictionLog(options, metrics));
  if (!log->enabled()) return log;
  if (options.dir_.empty()) return Status::InvalidArgument("prediction log: no directory given");
  if (options.max_bytes_ < 1)
    return Status::InvalidArgument("prediction log: max_bytes must be at least 1, got " +
                                   std::to_string(options.max_bytes_));
  if (options.max_files_ < 0)
    return Status::InvalidArgument("prediction log: max_files must not be negative, got " +
                                   std::to_string(options.max_files_));
  if (options.max_queue_bytes_ < 1)
    return Status::InvalidArgument("prediction log: max_queue_bytes must be at least 1");
  std::error_code ec;
  fs::create_directories(options.dir_, ec);
  if (ec)
    return Status::IoError("prediction log: cannot create " + options.dir_.string() + ": " +
                           ec.message());
  log->path_ = options.dir_ / options.file_name_;
  KILN_RETURN_IF_ERROR(log->open_file());
  if (options.background_writer_)
    log->writer_ = std::thread([raw = log.get()] { raw->run_writer(); });
  return log;
}

PredictionLog::~PredictionLog() { close(); }

Status PredictionLog::open_file() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0)
    return Status::IoError("prediction log: cannot open " + path_.string() + ": " +
                           std::strerror(errno));
  struct stat st {};
  file_bytes_ = ::fstat(fd_, &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  return Status::Ok();
}

void PredictionLog::count_dropped(int64_t rows) {
  rows_dropped_.fetch_add(rows, std::memory_order_relaxed);
  if (metrics_.dropped) metrics_.dropped->inc(static_cast<double>(rows));
}

void PredictionLog::enqueue(Record&& record) {
  const int64_t bytes = record.bytes();
  const int64_t rows = record.rows;
  const int64_t threshold = std::max<int64_t>(1, options_.max_queue_bytes_ / 4);
  bool queued = false, wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    if (queued_bytes_ + bytes <= options_.max_queue_bytes_) {
      // Wake the writer early only when the queue crosses a quarter of its room; otherwise it
      // comes by itself every flush_interval (no system call per request).
      wake = queued_bytes_ < threshold && queued_bytes_ + bytes >= threshold;
      queued_bytes_ += bytes;
      queue_.push_back(std::move(record));
      queued = true;
    }
  }
  if (!queued) return count_dropped(rows);
  if (wake) wake_.notify_one();
}

LoggedInputs PredictionLog::capture_inputs(const float* data, int64_t rows, int64_t width) const {
  LoggedInputs captured;
  if (rows < 1 || width < 0) return captured;
  if (options_.inputs_ == PredictionLogInputs::kHash) {
    captured.hashes.reserve(static_cast<size_t>(2 * rows));
    for (int64_t r = 0; r < rows; ++r) {
      const XXH128_hash_t h =
          XXH3_128bits(data + r * width, static_cast<size_t>(width) * sizeof(float));
      captured.hashes.push_back(h.high64);
      captured.hashes.push_back(h.low64);
    }
  } else if (options_.inputs_ == PredictionLogInputs::kInputs) {
    captured.values.assign(data, data + rows * width);
  }
  return captured;
}

void PredictionLog::log_predictions(std::shared_ptr<const LoggedModel> model, std::string id,
                                    int64_t rows, LoggedInputs inputs,
                                    std::vector<float> outputs) {
  if (!enabled() || rows < 1) return;
  Record r;
  r.ts = unix_seconds_now();
  r.model = std::move(model);
  r.id = std::move(id);
  r.rows = rows;
  r.inputs = std::move(inputs);
  r.outputs = std::move(outputs);
  enqueue(std::move(r));
}

void PredictionLog::log_feedback(std::string_view model, std::string_view version, std::string id,
                                 std::string truth_json) {
  if (!enabled()) return;
  Record r;
  r.ts = unix_seconds_now();
  r.model = std::make_shared<const LoggedModel>(
      LoggedModel{std::string(model), std::string(version), {}});
  r.id = std::move(id);
  r.rows = 1;
  r.truth_json = truth_json.empty() ? "null" : std::move(truth_json);
  enqueue(std::move(r));
}

void PredictionLog::run_writer() {
  // Below the serving threads: on a saturated core the lines wait (the queue is bounded, and
  // overflow is counted), requests do not. Per-thread nice on Linux; failure changes nothing.
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kWriterNice) != 0) {
  }
  // Lines are formatted in slices of at most kFormatSlice of traffic, so the writer never holds
  // the core for long, and written out once a chunk is buffered or flush_interval has passed.
  const auto slice = std::min<std::chrono::milliseconds>(options_.flush_interval_, kFormatSlice);
  const int64_t threshold = std::max<int64_t>(1, options_.max_queue_bytes_ / 4);
  auto last_write = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!closed_) {
    wake_.wait_for(lock, slice, [&] { return closed_ || queued_bytes_ >= threshold; });
    lock.unlock();
    {
      std::lock_guard<std::mutex> w(write_mu_);
      const auto now = std::chrono::steady_clock::now();
      const bool due = now - last_write >= options_.flush_interval_;
      drain_locked(due);
      if (due) last_write = now;
    }
    lock.lock();
  }
}

void PredictionLog::flush() {
  if (!enabled()) return;
  std::lock_guard<std::mutex> w(write_mu_);
  drain_locked(true);
}

void PredictionLog::close() {
  if (!enabled()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
  std::lock_guard<std::mutex> w(write_mu_);
  drain_locked(true);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void PredictionLog::drain_locked(bool write_out) {
  std::vector<Record>& records = draining_;
  records.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    records.swap(queue_);
    queued_bytes_ = 0;
  }
  if (fd_ < 0 && !records.empty() && !open_file().ok()) {
    int64_t rows = 0;
    for (const Record& r : records) rows += r.rows;
    count_dropped(rows);
    return;
  }
  std::string line;
  // What every line of one model version repeats, escaped once: consecutive records mostly share
  // their version, so this is rebuilt rarely.
  const LoggedModel* cached = nullptr;
  std::string model_fields;                // , "model": "...", "version": "..."
  std::vector<std::string> label_strings;  // each label as a JSON string
  for (const Record& r : records) {
    const int64_t in_width = static_cast<int64_t>(r.inputs.values.size()) / r.rows;
    const int64_t out_width = static_cast<int64_t>(r.outputs.size()) / r.rows;
    if (r.model.get() != cached) {
      cached = r.model.get();
      model_fields = ", \"model\": ";
      append_json_string(&model_fields, r.model->model);
      model_fields += ", \"version\": ";
      append_json_string(&model_fields, r.model->version);
      label_strings.clear();
      for (const std::string& label : r.model->labels) {
        label_strings.emplace_back();
        append_json_string(&label_strings.back(), label);
      }
    }
    for (int64_t k = 0; k < r.rows; ++k) {
      line.clear();
      line += "{\"ts\": ";
      append_fixed(&line, r.ts, 3);
      line += ", \"id\": ";
      append_json_string(&line, r.rows == 1 ? r.id : r.id + "#" + std::to_string(k));
      line += model_fields;
      if (!r.truth_json.empty()) {
        line += ", \"truth\": ";
        line += r.truth_json;
        line += "}\n";
        append_line(line);
        continue;
      }
      const float* out = r.outputs.data() + k * out_width;
      if (!label_strings.empty() && out_width > 0) {
        int64_t best = 0;
        for (int64_t j = 1; j < out_width; ++j)
          if (out[j] > out[best]) best = j;
        // float exp: the confidence is written as a float32 anyway.
        float denominator = 0;
        for (int64_t j = 0; j < out_width; ++j) denominator += std::exp(out[j] - out[best]);
        line += ", \"prediction\": ";
        if (best < static_cast<int64_t>(label_strings.size()))
          line += label_strings[static_cast<size_t>(best)];
        else
          line += std::to_string(best);
        line += ", \"confidence\": ";
        append_json_float(&line, 1.0f / denominator);
      } else if (out_width == 1) {
        line += ", \"prediction\": ";
        append_json_float(&line, out[0]);
      } else {
        line += ", \"prediction\": [";
        for (int64_t j = 0; j < out_width; ++j) {
          if (j) line += ", ";
          append_json_float(&line, out[j]);
        }
        line += "]";
      }
      if (options_.inputs_ == PredictionLogInputs::kHash) {
        line += ", \"input_xxh128\": \"";
        if (static_cast<int64_t>(r.inputs.hashes.size()) >= 2 * (k + 1)) {
          append_hex64(&line, r.inputs.hashes[static_cast<size_t>(2 * k)]);
          append_hex64(&line, r.inputs.hashes[static_cast<size_t>(2 * k + 1)]);
        }
        line += "\"";
      } else {
        const float* in = r.inputs.values.data() + k * in_width;
        line += ", \"inputs\": [";
        for (int64_t j = 0; j < in_width; ++j) {
          if (j) line += ", ";
          append_json_float(&line, in[j]);
        }
        line += "]";
      }
      line += "}\n";
      append_line(line);
    }
  }
  if (write_out) write_buffer();
}

void PredictionLog::append_line(const std::string& line) {
  const int64_t n = static_cast<int64_t>(line.size());
  if (n > options_.max_bytes_) {
    if (!warned_)
      KILN_LOG_WARN(
          "prediction log: a {}-byte line exceeds the file size limit ({} bytes); such "
          "lines are dropped",
          n, options_.max_bytes_);
    warned_ = true;
    return count_dropped(1);
  }
  if (file_bytes_ + n > options_.max_bytes_) {
    write_buffer();
    rotate();
    if (fd_ < 0) return count_dropped(1);
  }
  buffer_ += line;
  file_bytes_ += n;
  ++buffered_lines_;
  if (buffer_.size() >= kWriteChunk) write_buffer();
}

void PredictionLog::write_buffer() {
  if (buffer_.empty()) return;
  const int64_t before = file_bytes_ - static_cast<int64_t>(buffer_.size());
  size_t off = 0;
  while (off < buffer_.size()) {
    const ssize_t w = fd_ < 0 ? -1 : ::write(fd_, buffer_.data() + off, buffer_.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  if (off < buffer_.size()) {
    // Disk full or the like: take back the part written, so the file ends on a whole line.
    if (!warned_)
      KILN_LOG_WARN("prediction log: writing {} failed: {}; lines dropped", path_.string(),
                    std::strerror(errno));
    warned_ = true;
    if (fd_ >= 0 && ::ftruncate(fd_, static_cast<off_t>(before)) != 0) {
      // Nothing more to do: the next rotation starts a clean file.
    }
    file_bytes_ = before;
    count_dropped(buffered_lines_);
  } else {
    lines_written_.fetch_add(buffered_lines_, std::memory_order_relaxed);
    if (metrics_.lines) metrics_.lines->inc(static_cast<double>(buffered_lines_));
  }
  buffer_.clear();
  buffered_lines_ = 0;
}

void PredictionLog::rotate() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  if (options_.max_files_ == 0) {
    fs::remove(path_, ec);
  } else {
    fs::remove(with_suffix(path_, options_.max_files_), ec);
    for (int k = options_.max_files_ - 1; k >= 1; --k) {
      if (fs::exists(with_suffix(path_, k), ec))
        fs::rename(with_suffix(path_, k), with_suffix(path_, k + 1), ec);
    }
    fs::rename(path_, with_suffix(path_, 1), ec);
  }
  if (ec && !warned_) {
    KILN_LOG_WARN("prediction log: rotating {}: {}", path_.string(), ec.message());
    warned_ = true;
  }
  if (Status s = open_file(); !s.ok() && !warned_) {
    KILN_LOG_WARN("{}", s.message());
    warned_ = true;
  }
}

}  // namespace kiln::serve
