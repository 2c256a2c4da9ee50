// Builds the People page (src/) into the files the ExApp serves (ex_app/web/static):
// js/recognize_ex-main.js (a classic script: AppAPI adds it to its top menu page) and
// css/recognize_ex-main.css.
import { readFileSync } from 'node:fs'
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// @nextcloud/vue reads the app's id and version from the globals `appName` and `appVersion`,
// which the bundler must replace (else it logs an error and names the app "missing-app-name"):
// the ExApp's id and version as appinfo/info.xml declares them.
const info = readFileSync(new URL('./appinfo/info.xml', import.meta.url), 'utf8')
const declared = (tag) => info.match(new RegExp(`<${tag}>([^<]+)</${tag}>`))[1]

export default defineConfig({
	plugins: [vue()],
	define: {
		'process.env.NODE_ENV': JSON.stringify('production'),
		appName: JSON.stringify(declared('id')),
		appVersion: JSON.stringify(declared('version')),
	},
	build: {
		outDir: 'ex_app/web/static',
		emptyOutDir: false,
		copyPublicDir: false,
		sourcemap: false,
		lib: {
			entry: 'src/main.js',
			name: 'RecognizePeople',
			formats: ['iife'],
			fileName: () => 'js/recognize_ex-main.js',
			cssFileName: 'css/recognize_ex-main',
		},
	},
})
