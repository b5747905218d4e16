// Validates Kubernetes objects of CRD kinds against the @kubernetes-models npm packages (the
// kinds kubernetes-validate has no schema for). Run by scripts/deploy_check.py: reads a JSON
// array of {source, object} on stdin, prints one line per invalid object, exits 1 if any.
// The models check types, patterns, required fields and enums; they do not refuse unknown
// fields, which scripts/deploy_check.py checks with tsc against the same packages' interfaces.
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Gateway } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway";
import { GRPCRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/GRPCRoute";

const MODELS = new Map([
  ["monitoring.coreos.com/v1/ServiceMonitor", ServiceMonitor],
  ["gateway.networking.k8s.io/v1/Gateway", Gateway],
  ["gateway.networking.k8s.io/v1/GRPCRoute", GRPCRoute],
]);

let input = "";
for await (const chunk of process.stdin) input += chunk;
const items = JSON.parse(input);
const failures = [];
for (const { source, object } of items) {
  const Model = MODELS.get(`${object.apiVersion}/${object.kind}`);
  if (Model === undefined) {
    failures.push(`${source}: no model for ${object.apiVersion} ${object.kind} in scripts/validate_crds.mjs`);
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    failures.push(`${source}: ${error.message}`);
  }
}
for (const line of failures) console.log(line);
process.exit(failures.length === 0 ? 0 : 1);
