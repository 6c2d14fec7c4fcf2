// Service worker: keeps this build of the site in Cache Storage, so a repeat visit loads
// nothing from the network (the 10 MB WebAssembly runtime included, whatever the host's cache
// headers) and the site works offline once it has been loaded.
//
// Cache-first within a cache named after the build (build.py fills in BUILD). A new build
// installs beside the old one and takes over only when a page has finished loading (it posts
// "skip-waiting"), so one page never mixes files of two builds; the next visit is the new
// build. The page also posts the URLs it loaded before this worker controlled it ("cache").
"use strict";
const CACHE = "llmqp-" + "__BUILD__";

self.addEventListener("install", () => {});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith("llmqp-") && key !== CACHE) {
          await caches.delete(key);
        }
      }
      await self.clients.claim();
    })()
  );
});

self.addEventListener("message", (event) => {
  const msg = event.data || {};
  if (msg.type === "skip-waiting") {
    self.skipWaiting();
  } else if (msg.type === "cache" && Array.isArray(msg.urls)) {
    const done = cacheUrls(msg.urls).then(() => event.source.postMessage({type: "cached"}));
    event.waitUntil(done);
  }
});

function cacheable(url) {
  return url.origin === self.location.origin && !url.pathname.endsWith("/sw.js");
}

function cacheKey(request) {
  // A page is cached once, whatever its query string (shared links carry the app's state).
  if (request.mode === "navigate") {
    const url = new URL(request.url);
    return url.origin + url.pathname;
  }
  return request;
}

async function cacheUrls(urls) {
  const cache = await caches.open(CACHE);
  for (const text of urls) {
    const url = new URL(text, self.location.href);
    if (!cacheable(url) || (await cache.match(url.href))) {
      continue;
    }
    try {
      const response = await fetch(url.href);
      if (response.ok && response.type === "basic") {
        await cache.put(url.href, response);
      }
    } catch (e) {
      // offline or gone: the next visit tries again
    }
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (
    request.method !== "GET" ||
    request.headers.has("range") ||
    !cacheable(new URL(request.url))
  ) {
    return;
  }
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const navigate = request.mode === "navigate";
      const hit = await cache.match(cacheKey(request), {ignoreSearch: navigate});
      if (hit) {
        return hit;
      }
      const response = await fetch(request);
      if (!response.ok || response.type !== "basic") {
        return response;
      }
      if (new URL(request.url).pathname.endsWith(".wasm")) {
        // Served from the cache already on this first visit: Chrome keeps the compiled code
        // of a module it compiled from Cache Storage, so the next visit skips compiling.
        await cache.put(cacheKey(request), response);
        return (await cache.match(cacheKey(request))) || fetch(request);
      }
      event.waitUntil(cache.put(cacheKey(request), response.clone()));
      return response;
    })()
  );
});
