// Builds the People page (src/) into the files the ExApp serves (ex_app/web/static):
// js/recognize_ex-main.js (a classic script: AppAPI adds it to its top menu page) and
// css/recognize_ex-main.css.
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

export default defineConfig({
	plugins: [vue()],
	define: {
		'process.env.NODE_ENV': JSON.stringify('production'),
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
