#include "kiln/deploy/kubernetes.h"

#include <yaml-cpp/yaml.h>

#include <regex>

#include "kiln/core/files.h"

namespace kiln::deploy {

namespace {

void emit(YAML::Emitter& out, const Json& v) {
  if (v.is_object()) {
    out << YAML::BeginMap;
    for (auto it = v.begin(); it != v.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit(out, it.value());
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    out << YAML::BeginSeq;
    for (const Json& e : v) emit(out, e);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    // Quote what YAML would read as another type ("8000", "true", "1Gi" stays plain).
    const std::string s = v.get<std::string>();
    const bool ambiguous =
        s.empty() ||
        std::regex_match(
            s, std::regex("[-+]?[0-9.eE]+|true|false|null|yes|no|on|off|~", std::regex::icase));
    if (ambiguous) out << YAML::DoubleQuoted;
    out << s;
  } else if (v.is_boolean()) {
    out << (v.get<bool>() ? "true" : "false");
  } else if (v.is_number_integer()) {
    out << v.get<int64_t>();
  } else if (v.is_number()) {
    out << v.get<double>();
  } else {
    out << YAML::Null;
  }
}

Json probe(const std::string& path, int period, int failures, int timeout = 1) {
  return {{"httpGet", {{"path", path}, {"port", "http"}}},
          {"periodSeconds", period},
          {"timeoutSeconds", timeout},
          {"failureThreshold", failures}};
}

}  // namespace

std::string to_yaml(const Json& value) {
  YAML::Emitter out;
  emit(out, value);
  return std::string(out.c_str()) + "\n";
}

Expected<std::map<std::string, std::string>> kubernetes_manifests(const ClusterSpec& spec,
                                                                  const KubernetesOptions& o) {
  const std::regex dns1123("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  if (!std::regex_match(spec.name, dns1123) || spec.name.size() > 50)
    return Status::InvalidArgument(
        spec.file.string() + ": name: '" + spec.name +
        "' is not a Kubernetes name (lower-case letters, digits and '-', at most 50)");
  if (!std::regex_match(o.namespace_name, dns1123))
    return Status::InvalidArgument("--namespace: '" + o.namespace_name +
                                   "' is not a namespace name");
  const std::string name = spec.name;
  const Json labels = {{"app.kubernetes.io/name", "kiln-serve"},
                       {"app.kubernetes.io/instance", name},
                       {"app.kubernetes.io/managed-by", "kiln"}};
  const Json selector = {{"app.kubernetes.io/instance", name},
                         {"app.kubernetes.io/name", "kiln-serve"}};
  auto metadata = [&](const std::string& n) {
    return Json{{"name", n}, {"namespace", o.namespace_name}, {"labels", labels}};
  };
  Json args = {"serve"};
  for (const std::string& m : spec.models) {
    args.push_back("--model");
    args.push_back(m);
  }
  for (const char* a : {"--host", "0.0.0.0", "--port", "8000"}) args.push_back(a);
  for (const std::string& a : spec.serve_args) args.push_back(a);
  const std::string limit_cpu = std::to_string(2 * std::max(1, std::atoi(o.cpu.c_str())));

  Json container = {
      {"name", "kiln-serve"},
      {"image", o.image},
      {"imagePullPolicy", "IfNotPresent"},
      {"args", args},
      {"ports", {{{"name", "http"}, {"containerPort", 8000}, {"protocol", "TCP"}}}},
      {"env",
       {{{"name", "KILN_HOME"}, {"value", "/var/lib/kiln"}},
        {{"name", "KILN_LOG_LEVEL"}, {"value", "info"}}}},
      {"resources",
       {{"requests", {{"cpu", o.cpu}, {"memory", o.memory}}},
        {"limits", {{"cpu", limit_cpu}, {"memory", o.memory}}}}},
      // Models load before ready: up to 30 x 10 s, and liveness waits for it.
      {"startupProbe", probe("/v2/health/ready", 10, 30)},
      {"readinessProbe", probe("/v2/health/ready", 5, 3)},
      {"livenessProbe", probe("/v2/health/live", 10, 3)},
      // The endpoint leaves the Service (and the ingress) while the pod still serves; then
      // SIGTERM makes kiln serve stop accepting and answer what is in flight.
      {"lifecycle", {{"preStop", {{"exec", {{"command", {"sleep", "5"}}}}}}}},
      {"volumeMounts", {{{"name", "registry"}, {"mountPath", "/var/lib/kiln"}}}},
      {"securityContext",
       {{"allowPrivilegeEscalation", false}, {"runAsNonRoot", true}, {"runAsUser", 10001}}}};
  Json deployment = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", metadata(name)},
      // No `replicas`: the HorizontalPodAutoscaler below owns the count (minReplicas is the
      // cluster file's replicas). With it here, every `kubectl apply` of this file would reset
      // a scaled-out Deployment to that number.
      {"spec",
       {{"selector", {{"matchLabels", selector}}},
        {"strategy",
         {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxSurge", 1}, {"maxUnavailable", 0}}}}},
        {"minReadySeconds", 5},
        {"template",
         {{"metadata",
           {{"labels", labels},
            {"annotations",
             {{"prometheus.io/scrape", "true"},
              {"prometheus.io/port", "8000"},
              {"prometheus.io/path", "/metrics"}}}}},
          {"spec",
           {{"terminationGracePeriodSeconds", 45},
            {"containers", {container}},
            {"volumes",
             {{{"name", "registry"},
               {"persistentVolumeClaim", {{"claimName", name + "-registry"}}}}}}}}}}}}};
  Json service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", metadata(name)},
      {"spec",
       {{"type", "ClusterIP"},
        {"selector", selector},
        {"ports",
         {{{"name", "http"}, {"port", 80}, {"targetPort", "http"}, {"protocol", "TCP"}}}}}}};
  Json pdb = {{"apiVersion", "policy/v1"},
              {"kind", "PodDisruptionBudget"},
              {"metadata", metadata(name)},
              {"spec", {{"maxUnavailable", 1}, {"selector", {{"matchLabels", selector}}}}}};
  const int max_replicas = o.max_replicas > 0 ? o.max_replicas : 3 * spec.replicas;
  Json hpa = {
      {"apiVersion", "autoscaling/v2"},
      {"kind", "HorizontalPodAutoscaler"},
      {"metadata", metadata(name)},
      {"spec",
       {{"scaleTargetRef", {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", name}}},
        {"minReplicas", spec.replicas},
        {"maxReplicas", std::max(max_replicas, spec.replicas)},
        {"metrics",
         {{{"type", "Resource"},
           {"resource",
            {{"name", "cpu"}, {"target", {{"type", "Utilization"}, {"averageUtilization", 70}}}}}},
          {{"type", "Pods"},
           {"pods",
            {{"metric", {{"name", "kiln_inference_requests_per_second"}}},
             {"target",
              {{"type", "AverageValue"},
               {"averageValue", std::to_string(o.target_requests_per_second)}}}}}}}},
        {"behavior",
         {{"scaleDown",
           {{"stabilizationWindowSeconds", 300},
            {"policies", {{{"type", "Pods"}, {"value", 1}, {"periodSeconds", 60}}}}}}}}}}};
  // A PostgreSQL registry: its URL (credentials included) reaches the pods through a Secret;
  // the claim then holds only the artifacts, which every pod on every node may share.
  const bool postgres_registry = !spec.registry.empty() && spec.registry != "sqlite";
  Json secret;
  if (postgres_registry) {
    auto& env = deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    env.push_back(
        {{"name", "KILN_REGISTRY"},
         {"valueFrom", {{"secretKeyRef", {{"name", name + "-registry"}, {"key", "url"}}}}}});
    secret = {{"apiVersion", "v1"},
              {"kind", "Secret"},
              {"metadata", metadata(name + "-registry")},
              {"type", "Opaque"},
              {"stringData", {{"url", spec.registry}}}};
  }
  Expected<std::string> cluster_text = read_file(spec.file);
  Json configmap = {{"apiVersion", "v1"},
                    {"kind", "ConfigMap"},
                    {"metadata", metadata(name + "-cluster")},
                    {"data", {{"cluster.yaml", cluster_text.ok() ? *cluster_text : ""}}}};
  Json pvc_spec = {{"accessModes", {"ReadWriteMany"}},
                   {"resources", {{"requests", {{"storage", o.registry_size}}}}}};
  if (!o.storage_class.empty()) pvc_spec["storageClassName"] = o.storage_class;
  Json pvc = {{"apiVersion", "v1"},
              {"kind", "PersistentVolumeClaim"},
              {"metadata", metadata(name + "-registry")},
              {"spec", pvc_spec}};
  // prometheus-adapter turns kiln serve's request counter into the autoscaler's Pods metric.
  const std::string rules =
      "rules:\n"
      "- seriesQuery: 'kiln_inference_requests_total{namespace!=\"\",pod!=\"\"}'\n"
      "  resources:\n"
      "    overrides:\n"
      "      namespace: {resource: namespace}\n"
      "      pod: {resource: pod}\n"
      "  name:\n"
      "    matches: kiln_inference_requests_total\n"
      "    as: kiln_inference_requests_per_second\n"
      "  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)'\n";
  Json adapter = {{"apiVersion", "v1"},
                  {"kind", "ConfigMap"},
                  {"metadata", metadata(name + "-prometheus-adapter-rules")},
                  {"data", {{"config.yaml", rules}}}};
  const std::string header = "# Rendered by `kiln deploy k8s " + spec.file.filename().string() +
                             "` for cluster " + name + ".\n";
  std::map<std::string, std::string> files{
      {"deployment.yaml", header + to_yaml(deployment)},
      {"service.yaml", header + to_yaml(service)},
      {"pdb.yaml", header + to_yaml(pdb)},
      {"hpa.yaml", header + to_yaml(hpa)},
      {"configmap.yaml", header + to_yaml(configmap)},
      {"registry-pvc.yaml", header + to_yaml(pvc)},
      {"prometheus-adapter-rules.yaml", header + to_yaml(adapter)}};
  if (postgres_registry) files["registry-secret.yaml"] = header + to_yaml(secret);
  return files;
}

}  // namespace kiln::deploy
