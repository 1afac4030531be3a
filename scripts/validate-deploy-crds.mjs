// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule)
// against the operator's own schemas, as packaged by
// @kubernetes-models/prometheus-operator (generated from the operator's Go
// API types). Called by scripts/validate-deploy.py:
//
//   node scripts/validate-deploy-crds.mjs <node_modules dir>  < objects.json
//
// stdin: a JSON array of objects. stdout: one line per error. Exit 1 on any.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const pkg = join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const kinds = {};
for (const kind of ["ServiceMonitor", "PrometheusRule"]) {
  kinds[kind] = (await import(pathToFileURL(join(pkg, `${kind}.js`)).href))[kind];
}

let failed = false;
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Model = kinds[obj.kind];
  if (!Model) {
    console.log(`${name}: no schema for ${obj.apiVersion} ${obj.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.log(`${name} (prometheus-operator schema): ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
