import { defineConfig } from 'vite';

// The api serves the built app at /desk/ (see api/src/routes/desk.rs).
export default defineConfig({
  base: '/desk/',
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true },
  server: { proxy: { '/v1': 'http://127.0.0.1:8080' } },
});
