#!/usr/bin/env node
// Compiles contracts/*.sol and contracts/test/*.sol with the solc pinned in package.json (solcjs, standard JSON)
// and writes one artifact per contract: <out>/<Name>.json = {contractName, abi, bytecode, deployedBytecode,
// solcVersion, sourceHash}. The output depends only on the sources and the settings below, so two builds give
// identical bytes. Usage: node contracts/build.js [outDir]   (default contracts/build)
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SOURCE_DIRS = ["contracts", "contracts/test"];
const SETTINGS = {
  // Fixed, so that a newer solc default never changes the bytecode silently.
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function readSources() {
  const sources = {};
  for (const dir of SOURCE_DIRS) {
    const names = fs.readdirSync(path.join(ROOT, dir)).filter((n) => n.endsWith(".sol")).sort();
    for (const name of names) {
      // Unit names are repository-relative paths: absolute paths would leak into the metadata hash.
      sources[`${dir}/${name}`] = { content: fs.readFileSync(path.join(ROOT, dir, name), "utf8") };
    }
  }
  return sources;
}

function main() {
  const outDir = path.resolve(process.argv[2] || path.join(ROOT, "contracts", "build"));
  const input = { language: "Solidity", sources: readSources(), settings: SETTINGS };
  const inputJson = JSON.stringify(input);
  const output = JSON.parse(solc.compile(inputJson));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length > 0) process.exit(1);
  const sourceHash = crypto.createHash("sha256").update(inputJson).digest("hex");
  fs.mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const unit of Object.keys(output.contracts).sort()) {
    for (const name of Object.keys(output.contracts[unit]).sort()) {
      const c = output.contracts[unit][name];
      if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts cannot be deployed
      const artifact = {
        contractName: name,
        sourceUnit: unit,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        solcVersion: solc.version(),
        sourceHash: sourceHash,
      };
      fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
      written.push(name);
    }
  }
  process.stdout.write(`compiled ${written.join(", ")} with solc ${solc.version()} into ${outDir}\n`);
}

main();
