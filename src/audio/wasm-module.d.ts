// `import path from "./x.wasm" with { type: "file" }` yields the file's path (a /$bunfs/ path inside a
// compiled executable). Declared here because bun-types has no ambient declaration for .wasm imports.
declare module "*.wasm" {
  const path: string;
  export default path;
}
