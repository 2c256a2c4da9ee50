// The PHP Recognize app's face pipeline, as its src/classifier_faces.js runs it in pure-JS mode:
// @vladmandic/face-api's SSD MobileNet v1 detector, 68-point landmarks and recognition net on
// TensorFlow.js with the WASM backend (single-threaded: tfjs never enables WASM threads in Node).
//
//   node embed.mjs MANIFEST.json
//
// MANIFEST.json lists the images as raw RGB bytes: [{"raw": path, "width": w, "height": h}, ...].
// Prints one JSON line per image ({"faces": n, "seconds": wall, "cpu_seconds": cpu}, for the
// analysis alone, not the reading) and a last line {"about": "..."}. The first image is run once
// more before timing, to compile the kernels; that run is not reported.

import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(import.meta.url)
const tf = require('@tensorflow/tfjs')
require('@tensorflow/tfjs-backend-wasm')
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js')

const MODEL_DIR = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model')

async function loadImage({ raw, width, height }) {
	const pixels = new Uint8Array(await readFile(raw))
	return tf.tensor3d(pixels, [height, width, 3], 'int32')
}

async function analyze(tensor) {
	// The same call as classifier_faces.js: default SsdMobilenetv1Options (minConfidence 0.5).
	const results = await faceapi.detectAllFaces(tensor).withFaceLandmarks().withFaceDescriptors()
	return results.length
}

async function main() {
	const manifest = JSON.parse(await readFile(process.argv[2], 'utf8'))
	await tf.setBackend('wasm')
	await tf.ready()
	await faceapi.nets.ssdMobilenetv1.loadFromDisk(MODEL_DIR)
	await faceapi.nets.faceLandmark68Net.loadFromDisk(MODEL_DIR)
	await faceapi.nets.faceRecognitionNet.loadFromDisk(MODEL_DIR)

	const warmup = await loadImage(manifest[0])
	await analyze(warmup)
	warmup.dispose()

	for (const image of manifest) {
		const tensor = await loadImage(image)
		const start = process.hrtime.bigint()
		const cpuStart = process.cpuUsage()
		const faces = await analyze(tensor)
		const seconds = Number(process.hrtime.bigint() - start) / 1e9
		const cpu = process.cpuUsage(cpuStart)
		tensor.dispose()
		console.log(JSON.stringify({ faces, seconds, cpu_seconds: (cpu.user + cpu.system) / 1e6 }))
	}
	const about = `face-api ${faceapi.version}, TensorFlow.js ${tf.version.tfjs}, ${tf.getBackend()} backend`
	console.log(JSON.stringify({ about }))
}

main().catch((error) => {
	console.error(error)
	process.exit(1)
})
