// Bundles src/ into dist/: content-hashed JS and CSS (cacheable for ever behind CloudFront) and an
// index.html that points at them. config.json is not part of the build: `streamcube serve`
// answers it locally and the deploy step writes it next to index.html on AWS.
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(root, 'src');
const out = path.join(root, 'dist');

await rm(out, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: [path.join(src, 'main.js'), path.join(src, 'style.css')],
  bundle: true,
  minify: true,
  sourcemap: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: out,
  entryNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
});

// The hashed file name of each entry point, by its source name.
const built = {};
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  if (meta.entryPoint) built[path.basename(meta.entryPoint)] = path.basename(file);
}
let html = await readFile(path.join(src, 'index.html'), 'utf8');
for (const [name, hashed] of Object.entries(built)) {
  const ref = `"./${name}"`;
  if (!html.includes(ref)) throw new Error(`src/index.html does not reference ${ref}`);
  html = html.replace(ref, `"./${hashed}"`);
}
await writeFile(path.join(out, 'index.html'), html);

const sizes = Object.entries(result.metafile.outputs)
  .filter(([file]) => !file.endsWith('.map'))
  .map(([file, meta]) => `${path.relative(root, file)} ${(meta.bytes / 1024).toFixed(1)} KiB`);
console.log(['built dist/index.html', ...sizes].join('\n  '));
