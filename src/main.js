/**
 * The People page of Recognize: AppAPI's top menu page loads this script, which mounts the
 * app into the page's #content.
 */
import { createApp } from 'vue'
import App from './App.vue'

createApp(App).mount('#content')
