// Grafana's dashboard schema as JSON Schema, for tests/stack/test_grafana.py.
//
// Grafana publishes its dashboard schema (written in CUE) as TypeScript types in the npm package
// @grafana/schema, one version per Grafana release; it ships no JSON Schema. This turns the types
// that a dashboard file is made of into JSON Schema with ts-json-schema-generator:
//   - `dashboard`: the dashboard JSON model (raw/dashboard/x: Dashboard, Panel, RowPanel, ...),
//     as the types declare it: unknown keys are errors and required fields are required;
//   - `panels.<plugin>`: each core panel plugin's `Options` and `FieldConfig` (what goes in a
//     panel's `options` and `fieldConfig.defaults.custom`). Unknown keys and wrong types are
//     errors; nothing there is required, because Grafana fills every missing option from the
//     plugin's defaults when it loads a panel.
//
// scripts/setup --test runs it in a directory whose node_modules holds @grafana/schema and
// ts-json-schema-generator:  node grafana-schema.mjs DIR OUTPUT
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createGenerator } from "ts-json-schema-generator";

const [dir, output] = process.argv.slice(2);
if (!dir || !output) {
  console.error("usage: node grafana-schema.mjs DIR OUTPUT");
  process.exit(2);
}
const packageDir = join(dir, "node_modules", "@grafana", "schema");
const { version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8"));
const tsconfig = join(dir, "tsconfig.json");
writeFileSync(
  tsconfig,
  JSON.stringify({
    compilerOptions: { module: "esnext", moduleResolution: "bundler", skipLibCheck: true, strict: true },
  }),
);

function generate(path, type, expose) {
  return createGenerator({ path, tsconfig, type, expose, skipTypeCheck: true, jsDoc: "basic" })
    .createSchema(type);
}

// The dashboard model: its types have unique names, so they stay named definitions.
const dashboard = generate(
  join(packageDir, "dist", "types", "raw", "dashboard", "x", "types.gen.d.ts"),
  "Dashboard",
  "export",
);

// Every panel plugin's options in one program: their types share names (each has an `Options`),
// so everything is inlined (expose "none") under one interface with a member per plugin.
const composable = join(packageDir, "dist", "types", "raw", "composable");
const plugins = readdirSync(composable).filter((name) => {
  try {
    return readdirSync(join(composable, name, "panelcfg", "x")).includes("types.gen.d.ts");
  } catch {
    return false;
  }
});
const lines = [];
const members = [];
for (const plugin of plugins) {
  const file = join(composable, plugin, "panelcfg", "x", "types.gen.d.ts");
  const exported = readFileSync(file, "utf8");
  const alias = `p_${plugin}`;
  lines.push(`import type * as ${alias} from ${JSON.stringify(file.replace(/\.d\.ts$/, ""))};`);
  const parts = [];
  if (/export (interface|type) Options\b/.test(exported)) parts.push(`options: ${alias}.Options;`);
  if (/export (interface|type) FieldConfig\b/.test(exported)) parts.push(`fieldConfig: ${alias}.FieldConfig;`);
  members.push(`  ${JSON.stringify(plugin)}: { ${parts.join(" ")} };`);
}
const entry = join(dir, "panels.ts");
writeFileSync(entry, `${lines.join("\n")}\nexport interface Panels {\n${members.join("\n")}\n}\n`);
const panels = generate(entry, "Panels", "none");

function withoutRequired(schema) {
  if (Array.isArray(schema)) return schema.map(withoutRequired);
  if (schema === null || typeof schema !== "object") return schema;
  const copy = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key !== "required") copy[key] = withoutRequired(value);
  }
  return copy;
}

const byPlugin = {};
for (const [plugin, schema] of Object.entries(panels.definitions.Panels.properties)) {
  byPlugin[plugin] = {};
  for (const [part, partSchema] of Object.entries(schema.properties)) {
    byPlugin[plugin][part] = { $schema: panels.$schema, ...withoutRequired(partSchema) };
  }
}

mkdirSync(join(output, ".."), { recursive: true });
writeFileSync(
  output,
  JSON.stringify({ package: "@grafana/schema", version, dashboard, panels: byPlugin }),
);
console.log(`${output}: @grafana/schema ${version}, dashboard and ${plugins.length} panel plugins`);
