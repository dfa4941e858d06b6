#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::monitor {

/// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;

/// A monotonically increasing value. Lock-free; thread-safe.
class Counter {
 public:
  void inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

/// A value that goes up and down. Lock-free; thread-safe.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1.0);
  void dec(double v = 1.0) { inc(-v); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

/// Cumulative histogram over fixed upper bounds (+Inf implied). observe() is lock-free;
/// thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  /// Per-bucket counts (not cumulative; the last one is the +Inf bucket), sum and count.
  struct Snapshot {
    std::vector<uint64_t> buckets;
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

/// One named metric with a fixed list of label names; `with(values)` returns the child for those
/// label values, created on first use. Children live as long as the family, so callers may keep
/// the reference (hot paths should: with() takes a mutex). Thread-safe.
template <typename M>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<M>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}

  M& with(const LabelValues& values) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = children_[values];
    if (!slot) slot = make_();
    return *slot;
  }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  /// Calls fn(values, metric) for each child, in label order, under the family's lock.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, m] : children_) fn(values, *m);
  }

 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<M>()> make_;
  mutable std::mutex mu_;
  std::map<LabelValues, std::unique_ptr<M>> children_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

/// Exponential bucket bounds: start, start*factor, ... (count bounds).
std::vector<double> exponential_buckets(double start, double factor, int count);

/// A set of metric families rendered in the Prometheus text exposition format (version 0.0.4),
/// which `promtool check metrics` accepts. Families are registered once (a name registered twice
/// returns the first family); collectors add values computed at scrape time (process stats).
/// Thread-safe; families are owned by the registry and outlive every reference handed out.
///
///   MetricsRegistry reg;
///   auto& req = reg.counter("kiln_requests_total", "Requests.", {"model", "outcome"});
///   req.with({"mlp", "success"}).inc();
///   std::string text = reg.expose();
class MetricsRegistry {
 public:
  CounterFamily& counter(const std::string& name, const std::string& help,
                         std::vector<std::string> label_names = {});
  GaugeFamily& gauge(const std::string& name, const std::string& help,
                     std::vector<std::string> label_names = {});
  HistogramFamily& histogram(const std::string& name, const std::string& help,
                             std::vector<std::string> label_names, std::vector<double> bounds);
  /// A scrape-time source: appends complete exposition text (HELP, TYPE and samples).
  void add_collector(std::function<void(std::string* out)> collector);

  /// The whole registry as Prometheus text.
  std::string expose() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> order_;
  std::map<std::string, std::unique_ptr<CounterFamily>> counters_;
  std::map<std::string, std::unique_ptr<GaugeFamily>> gauges_;
  std::map<std::string, std::unique_ptr<HistogramFamily>> histograms_;
  std::vector<std::function<void(std::string*)>> collectors_;
};

/// Escapes a label value for the exposition format (backslash, quote, newline).
std::string escape_label_value(const std::string& v);
/// A sample value as Prometheus writes it ("+Inf", "NaN", shortest round-trip otherwise).
std::string format_value(double v);

}  // namespace kiln::monitor
