// Validate glTF files with the Khronos glTF validator (npm package gltf-validator) and
// print its report as JSON, one object per file: {"uri": ..., "report": {...}}.
//   node tests/web/validate_glb.mjs FILE.glb [...]
// Exit status 0 once every file was validated (the caller reads the issue counts).
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import validator from "gltf-validator";

const results = [];
for (const path of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(data, {
    uri: basename(path),
    maxIssues: 0, // every issue, not the first 100
    // A GLB names no external resources; refuse any instead of reading the disk.
    externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri}`)),
  });
  results.push({ uri: path, report });
}
console.log(JSON.stringify(results));
