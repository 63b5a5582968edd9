// The two ways to point the unmodified @fal-ai/client at a framecast server (protocol.md §8.2).
// Nothing but the server's address and an API key is configured.
import { createFalClient } from "@fal-ai/client";

// Mode A: rewrite fal's three hard-coded hosts onto our routes.
export function middlewareClient(local, key) {
  return createFalClient({
    credentials: key,
    requestMiddleware: async (request) => ({
      ...request,
      url: request.url
        .replace(/^https:\/\/queue\.fal\.run\//, `${local}/queue/`)
        .replace(/^https:\/\/fal\.run\//, `${local}/run/`)
        .replace(/^https:\/\/rest\.fal\.ai\//, `${local}/`),
    }),
  });
}

// Mode B: fal's proxy protocol; every call goes to one URL with the real one in `x-fal-target-url`.
// `when: "always"` because outside a browser a plain proxyUrl string is ignored.
export function proxyClient(local, key) {
  return createFalClient({
    credentials: key,
    proxyUrl: { url: `${local}/api/fal/proxy`, when: "always" },
  });
}

export const CLIENTS = { middleware: middlewareClient, proxy: proxyClient };
