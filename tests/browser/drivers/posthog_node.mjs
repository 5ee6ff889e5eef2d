// posthog-node as a server uses it: capture, identify and alias, then shutdown() (which flushes).
// The capture mode is the SDK's own: POSTHOG_CAPTURE_MODE=v1 in the environment makes it send
// Capture v1 (POST /i/v1/analytics/events, Bearer token), else it posts /batch/.
//
// Input: {"host", "token", "distinct_id"}; output: every request the SDK made with its answer,
// and the errors it reported.
import { PostHog } from "posthog-node";

import { main } from "./scenario.mjs";

main(async ({ host, token, distinct_id: distinctId }) => {
  const requests = [];
  const errors = [];
  // posthog-node takes a fetch implementation; this one is the platform's, noting each exchange.
  const recordingFetch = async (url, options) => {
    const entry = { method: options.method, url: String(url), request_headers: options.headers, status: null, body: null };
    requests.push(entry);
    const response = await fetch(url, options);
    entry.status = response.status;
    entry.body = await response.clone().text();
    return response;
  };
  const client = new PostHog(token, { host, flushAt: 10, flushInterval: 0, fetch: recordingFetch, fetchRetryCount: 0 });
  client.on("error", (error) => errors.push(String((error && error.message) || error)));
  client.capture({ distinctId, event: "node_signed_up", properties: { plan: "pro" } });
  client.capture({ distinctId, event: "node_purchase", properties: { amount: 42 } });
  client.identify({ distinctId, properties: { email: `${distinctId}@example.com` } });
  client.alias({ distinctId, alias: `${distinctId}-alias` });
  await client.shutdown(10000);
  return { capture_mode: process.env.POSTHOG_CAPTURE_MODE || "v0", requests, errors };
});
