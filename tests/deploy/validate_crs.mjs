// Validates prometheus-operator custom resources (ServiceMonitor, PrometheusRule)
// against the CRD schemas shipped by @kubernetes-models/prometheus-operator, which
// kubernetes-validate does not know. Used by tests/deploy/_tools.py.
//
//   node validate_crs.mjs <path of @kubernetes-models/prometheus-operator> < objects.json
// stdin: a JSON list of objects; stdout: {"Kind/name": null | "error"}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const models = await import(
  pathToFileURL(join(process.argv[2], "monitoring.coreos.com", "v1", "index.js")).href
);
const objects = JSON.parse(readFileSync(0, "utf8"));
const verdicts = {};
for (const object of objects) {
  const Model = models[object.kind];
  const key = `${object.kind}/${object.metadata?.name}`;
  if (Model === undefined) {
    verdicts[key] = `no prometheus-operator model for kind ${object.kind}`;
    continue;
  }
  try {
    new Model(object).validate();
    verdicts[key] = null;
  } catch (error) {
    verdicts[key] = String(error.message ?? error);
  }
}
process.stdout.write(JSON.stringify(verdicts));
