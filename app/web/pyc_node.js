// Compile Python sources to .pyc with Pyodide's own interpreter (run by build.py under node).
//   node pyc_node.js PYODIDE_DIR WORK_DIR
// WORK_DIR/in.zip holds sources named by the path they will have in the browser;
// WORK_DIR/out.zip receives <name>c for each file that compiled. Prints a JSON summary.
"use strict";
const path = require("path");
const [pyodideDir, workDir] = process.argv.slice(2).map((p) => path.resolve(p));
const { loadPyodide } = require(path.join(pyodideDir, "pyodide.js"));

const COMPILE = `
import importlib.util, json, zipfile
from importlib._bootstrap_external import _code_to_hash_pyc

failed = []
with zipfile.ZipFile("/work/in.zip") as src, zipfile.ZipFile("/work/out.zip", "w") as dst:
    for name in src.namelist():
        source = src.read(name)
        try:
            code = compile(source, name, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            failed.append(f"{name}: {exc}")
            continue
        # Unchecked hash-based pyc: Python uses it without looking at any source.
        data = _code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False)
        dst.writestr(name + "c", bytes(data))
print(json.dumps({"failed": failed}))
`;

(async () => {
  const py = await loadPyodide({
    indexURL: pyodideDir + "/",
    lockFileURL: path.join(workDir, "lock.json"),
  });
  py.FS.mkdir("/work");
  py.mountNodeFS("/work", workDir);
  py.runPython(COMPILE);
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
