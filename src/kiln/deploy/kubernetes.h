#pragma once

// `kiln deploy k8s CLUSTER.yaml --out DIR`: the same cluster as Kubernetes manifests for a real
// cluster (Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler, ConfigMap, the
// registry volume claim, and the prometheus-adapter rule the autoscaler's metric needs).

#include <map>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/deploy/cluster.h"

namespace kiln::deploy {

/// How the manifests are rendered beyond the cluster file. Plain value.
struct KubernetesOptions {
  std::string image = "kiln:latest";  ///< the container image (see the repository's Dockerfile)
  std::string namespace_name = "default";
  int max_replicas = 0;  ///< the autoscaler's ceiling (0: 3 x replicas)
  /// Requests per second per pod above which the autoscaler adds pods (the Pods metric
  /// kiln_inference_requests_per_second, served by prometheus-adapter from kiln serve's
  /// kiln_inference_requests_total).
  int target_requests_per_second = 200;
  std::string storage_class;  ///< of the registry claim ("": the cluster's default)
  std::string registry_size = "10Gi";
  std::string cpu = "1";  ///< requests per pod (and the limit: 2x)
  std::string memory = "1Gi";
};

/// The manifests for `spec`, by file name ("deployment.yaml", "service.yaml", "pdb.yaml",
/// "hpa.yaml", "configmap.yaml", "registry-pvc.yaml", "prometheus-adapter-rules.yaml"), each one
/// YAML document:
///  - Deployment: spec.replicas `kiln serve` pods (args: the models, --host 0.0.0.0 --port 8000,
///    serve_args), KILN_HOME on the registry volume; startup probe GET /v2/health/ready
///    (10 s x 30), readiness /v2/health/ready (5 s, 3 failures), liveness /v2/health/live
///    (10 s, 3 failures); rolling update with maxSurge 1, maxUnavailable 0; preStop sleep 5 s (the
///    endpoint leaves the load balancers before SIGTERM), terminationGracePeriodSeconds 45 (kiln
///    serve drains in-flight requests for up to 30 s on SIGTERM); Prometheus scrape annotations.
///  - Service (ClusterIP, port 80 -> 8000), PodDisruptionBudget (maxUnavailable 1),
///    HorizontalPodAutoscaler (autoscaling/v2: CPU 70% and the requests-per-second Pods metric),
///    ConfigMap (the cluster file), PersistentVolumeClaim (ReadWriteMany) for the registry.
/// InvalidArgument for a name Kubernetes refuses (DNS-1123: lower case, digits, '-').
Expected<std::map<std::string, std::string>> kubernetes_manifests(const ClusterSpec& spec,
                                                                  const KubernetesOptions& options);

/// A JSON value as block-style YAML (what the manifests are written in).
std::string to_yaml(const Json& value);

}  // namespace kiln::deploy
