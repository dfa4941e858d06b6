#!/usr/bin/env node
// Runs an ONNX model with ONNX Runtime (CPU) over raw float32 rows: what Kiln's tests and
// bench/onnx_bench.sh use to check `kiln export --format onnx` against Kiln's own outputs.
//
//   node tools/onnxruntime/run.js MODEL.onnx --input X.f32 --shape 1,28,28 --output Y.f32
//        [--batch 256] [--threads 1] [--bench-seconds 0]
//
// X.f32 holds N rows of prod(shape) little-endian float32 values; Y.f32 gets N rows of the
// model's first output. Prints one JSON line: {rows, input, output, output_dims, seconds,
// samples_per_s} (with --bench-seconds S also {bench: {batch, samples_per_s}}: repeated runs of
// one batch for S seconds). Exits 2 on bad arguments, 1 when ONNX Runtime refuses the model.
'use strict';
const fs = require('fs');
const path = require('path');

function fail(code, message) {
  process.stderr.write(`onnxruntime run: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const args = {batch: 256, threads: 1, benchSeconds: 0};
  const rest = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) fail(2, `${a} needs a value`);
      return argv[++i];
    };
    if (a === '--input') args.input = next();
    else if (a === '--output') args.output = next();
    else if (a === '--shape') args.shape = next().split(',').map(Number);
    else if (a === '--batch') args.batch = Number(next());
    else if (a === '--threads') args.threads = Number(next());
    else if (a === '--bench-seconds') args.benchSeconds = Number(next());
    else if (a.startsWith('--')) fail(2, `unknown option ${a}`);
    else rest.push(a);
  }
  if (rest.length !== 1) fail(2, 'usage: run.js MODEL.onnx --input X.f32 --shape D1,D2,.. [--output Y.f32]');
  args.model = rest[0];
  if (!args.input || !args.shape) fail(2, '--input and --shape are required');
  if (args.shape.some((d) => !Number.isInteger(d) || d <= 0)) fail(2, `bad --shape ${args.shape}`);
  if (!(args.batch > 0) || !(args.threads > 0)) fail(2, '--batch and --threads must be positive');
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
  } catch (e) {
    fail(2, `onnxruntime-node is not installed (scripts/install-deps.sh runs npm ci in ${__dirname}): ${e.message}`);
  }
  const rowSize = args.shape.reduce((a, b) => a * b, 1);
  const buf = fs.readFileSync(args.input);
  if (buf.length % (4 * rowSize) !== 0)
    fail(2, `${args.input}: ${buf.length} bytes is not a whole number of rows of ${rowSize} float32`);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const rows = all.length / rowSize;
  let session;
  try {
    session = await ort.InferenceSession.create(args.model, {
      intraOpNumThreads: args.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    fail(1, `${args.model}: ${e.message}`);
  }
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const chunks = [];
  let outDims = null;
  const started = process.hrtime.bigint();
  for (let at = 0; at < rows; at += args.batch) {
    const n = Math.min(args.batch, rows - at);
    const x = new ort.Tensor('float32', all.slice(at * rowSize, (at + n) * rowSize), [n, ...args.shape]);
    const r = await session.run({[inputName]: x});
    const y = r[outputName];
    outDims = y.dims;
    chunks.push(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (args.output) fs.writeFileSync(args.output, Buffer.concat(chunks));
  const report = {
    rows, input: inputName, output: outputName,
    output_dims: outDims ? [rows, ...outDims.slice(1)] : [0],
    seconds, samples_per_s: rows / seconds,
  };
  if (args.benchSeconds > 0 && rows > 0) {
    const n = Math.min(args.batch, rows);
    const x = new ort.Tensor('float32', all.slice(0, n * rowSize), [n, ...args.shape]);
    for (let i = 0; i < 3; ++i) await session.run({[inputName]: x});  // warm up
    let runs = 0;
    const t0 = process.hrtime.bigint();
    let elapsed = 0;
    while (elapsed < args.benchSeconds) {
      await session.run({[inputName]: x});
      ++runs;
      elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    }
    report.bench = {batch: n, threads: args.threads, runs, samples_per_s: (runs * n) / elapsed};
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((e) => fail(1, e.stack || String(e)));
