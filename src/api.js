/**
 * Calls to the ExApp through AppAPI's proxy, with the user's Nextcloud session.
 */
import axios from '@nextcloud/axios'
import { generateUrl } from '@nextcloud/router'

export const APP_ID = 'recognize_ex'

/** The URL of an ExApp route (e.g. "/api/people/persons") through AppAPI's proxy. */
export function exAppUrl(route) {
	return generateUrl(`/apps/app_api/proxy/${APP_ID}${route}`)
}

/** The URL of a face's square thumbnail. */
export function thumbnailUrl(faceId, size = 128) {
	return exAppUrl(`/api/people/faces/${faceId}/thumbnail?size=${size}`)
}

/** The URL of a photo's preview. */
export function previewUrl(fileId, size = 1024) {
	return exAppUrl(`/api/people/photos/${fileId}/preview?size=${size}`)
}

async function get(route, params = {}) {
	return (await axios.get(exAppUrl(route), { params })).data
}

async function post(route, body = {}) {
	return (await axios.post(exAppUrl(route), body)).data
}

export const api = {
	persons: (hidden = false) => get('/api/people/persons', { hidden }),
	personFaces: (personId) => get(`/api/people/persons/${personId}/faces`),
	unassigned: () => get('/api/people/faces/unassigned'),
	unsure: () => get('/api/people/faces/unsure'),
	suggestions: () => get('/api/people/suggestions'),
	progress: () => get('/api/people/progress'),
	choice: () => get('/api/people/choice'),
	setChoice: (analyze, deleteFaces) => post('/api/people/choice', { analyze, delete_faces: deleteFaces }),
	rename: (personId, name) => post(`/api/people/persons/${personId}/name`, { name }),
	setHidden: (personId, hidden) => post(`/api/people/persons/${personId}/hidden`, { hidden }),
	merge: (into, others) => post('/api/people/merge', { into, others }),
	move: (faceId, personId) => post(`/api/people/faces/${faceId}/move`, { person_id: personId }),
	remove: (faceId) => post(`/api/people/faces/${faceId}/remove`),
	distinct: (personId, otherId) => post('/api/people/distinct', { person_id: personId, other_id: otherId }),
	undo: () => post('/api/people/undo'),
	contactSuggestions: () => get('/api/people/contacts/suggestions'),
	acceptContact: (personId, name) => post(`/api/people/contacts/suggestions/${personId}/accept`, { name }),
	rejectContact: (personId, name) => post(`/api/people/contacts/suggestions/${personId}/reject`, { name }),
}
