#!/usr/bin/env node
// Validates Kubernetes manifests offline against the API schemas (kubernetes-models, pinned in
// this directory's lock file): what the tests run on `kiln deploy k8s` output.
//
//   node tools/kubernetes/validate.mjs FILE.yaml...
//
// Prints one JSON line per document: {file, kind, name, ok, error}. Exit 0 when every document
// is valid, 1 when one is not, 2 on bad usage or an apiVersion/kind it has no schema for.
import fs from 'node:fs';
import { parseAllDocuments } from 'yaml';

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: validate.mjs FILE.yaml...\n');
  process.exit(2);
}
let failed = 0;
for (const file of files) {
  for (const doc of parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
    if (doc.errors.length) {
      console.log(JSON.stringify({file, ok: false, error: `YAML: ${doc.errors[0].message}`}));
      failed = 1;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const {apiVersion, kind} = obj;
    const path = apiVersion && apiVersion.includes('/') ? apiVersion : `v1`;
    let Model;
    try {
      Model = (await import(`kubernetes-models/${path}/${kind}`))[kind];
    } catch (e) {
      process.stderr.write(`${file}: no schema for ${apiVersion} ${kind}\n`);
      process.exit(2);
    }
    const name = obj.metadata && obj.metadata.name;
    try {
      new Model(obj).validate();
      console.log(JSON.stringify({file, kind, name, ok: true}));
    } catch (e) {
      console.log(JSON.stringify({file, kind, name, ok: false, error: e.message}));
      failed = 1;
    }
  }
}
process.exit(failed);
