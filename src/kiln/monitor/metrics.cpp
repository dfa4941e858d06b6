#include "kiln/monitor/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace kiln::monitor {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::string label_text(const std::vector<std::string>& names, const LabelValues& values,
                       const std::string& extra_name = "", const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + escape_label_value(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    out += out.empty() ? "{" : ",";
    out += extra_name + "=\"" + extra_value + "\"";
  }
  if (!out.empty()) out += "}";
  return out;
}

std::string escape_help(const std::string& h) {
  std::string out;
  for (char c : h) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void header(std::string* out, const std::string& name, const std::string& help, const char* type) {
  *out += "# HELP " + name + " " + escape_help(help) + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Counter::inc(double v) { atomic_add(value_, v); }
void Gauge::inc(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.buckets.resize(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i)
    s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  s.sum = sum_.load(std::memory_order_relaxed);
  // count = sum of buckets, so the +Inf bucket always equals _count even mid-update.
  s.count = 0;
  for (uint64_t b : s.buckets) s.count += b;
  return s;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

CounterFamily& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                        std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = counters_[name];
  if (!slot) {
    slot = std::make_unique<CounterFamily>(name, help, std::move(label_names),
                                           [] { return std::make_unique<Counter>(); });
    order_.push_back(name);
  }
  return *slot;
}

GaugeFamily& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                                    std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = gauges_[name];
  if (!slot) {
    slot = std::make_unique<GaugeFamily>(name, help, std::move(label_names),
                                         [] { return std::make_unique<Gauge>(); });
    order_.push_back(name);
  }
  return *slot;
}

HistogramFamily& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                            std::vector<std::string> label_names,
                                            std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = histograms_[name];
  if (!slot) {
    slot = std::make_unique<HistogramFamily>(name, help, std::move(label_names), [bounds] {
      return std::make_unique<Histogram>(bounds);
    });
    order_.push_back(name);
  }
  return *slot;
}

void MetricsRegistry::add_collector(std::function<void(std::string*)> collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::expose() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.reserve(8192);
  for (const std::string& name : order_) {
    if (auto it = counters_.find(name); it != counters_.end()) {
      const CounterFamily& f = *it->second;
      header(&out, name, f.help(), "counter");
      f.for_each([&](const LabelValues& values, const Counter& c) {
        out += name + label_text(f.label_names(), values) + " " + format_value(c.value()) + "\n";
      });
    } else if (auto git = gauges_.find(name); git != gauges_.end()) {
      const GaugeFamily& f = *git->second;
      header(&out, name, f.help(), "gauge");
      f.for_each([&](const LabelValues& values, const Gauge& g) {
        out += name + label_text(f.label_names(), values) + " " + format_value(g.value()) + "\n";
      });
    } else if (auto hit = histograms_.find(name); hit != histograms_.end()) {
      const HistogramFamily& f = *hit->second;
      header(&out, name, f.help(), "histogram");
      f.for_each([&](const LabelValues& values, const Histogram& h) {
        Histogram::Snapshot s = h.snapshot();
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= h.bounds().size(); ++i) {
          cumulative += s.buckets[i];
          const std::string le = i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
          out += name + "_bucket" + label_text(f.label_names(), values, "le", le) + " " +
                 std::to_string(cumulative) + "\n";
        }
        out +=
            name + "_sum" + label_text(f.label_names(), values) + " " + format_value(s.sum) + "\n";
        out += name + "_count" + label_text(f.label_names(), values) + " " +
               std::to_string(s.count) + "\n";
      });
    }
  }
  for (const auto& c : collectors_) c(&out);
  return out;
}

}  // namespace kiln::monitor
