// Debian's Chromium, headless, driven through puppeteer-core; and a recorder of what a page did
// on the network and in its console, for the pytest side to assert on.
//
// Every request is seen through the DevTools protocol (Network domain) rather than puppeteer's
// request events, because the protocol gives the exact request body bytes (posthog-js gzips
// them) and reports beacons sent while the page unloads.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import puppeteer from "puppeteer-core";

export const CHROMIUM = process.env.BKLOG_CHROMIUM || "/usr/bin/chromium";

// Off the network everything but loopback: no background updates, sync, QUIC or first-run calls.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "bklog-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    userDataDir: profile,
    defaultViewport: { width: 1280, height: 900 },
  });
  const close = async () => {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { browser, close };
}

function bodyOf(request) {
  const entries = request.postDataEntries || [];
  if (entries.length) {
    return Buffer.concat(entries.map((entry) => Buffer.from(entry.bytes || "", "base64")));
  }
  return request.postData === undefined ? null : Buffer.from(request.postData, "utf8");
}

function describeBody(body) {
  if (body === null) return { body_bytes: 0, body_kind: null, body_head: null };
  const gzip = body.length >= 2 && body[0] === 0x1f && body[1] === 0x8b;
  return {
    body_bytes: body.length,
    body_kind: gzip ? "gzip" : "text",
    body_head: gzip ? null : body.subarray(0, 300).toString("utf8"),
  };
}

// Records every request the page makes: method, url, type, request headers, what the body was,
// and the answer (status, content type) or why there was none (net error, CORS).
export async function record(page) {
  const requests = new Map();
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const where = message.location() && message.location().url;
    consoleErrors.push(where ? `${message.text()} (${where})` : message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(`pageerror: ${error.message}`));

  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable", { maxPostDataSize: 1 << 20 });
  cdp.on("Network.requestWillBeSent", ({ requestId, request, type }) => {
    if (request.url.startsWith("data:")) return;
    requests.set(requestId, {
      method: request.method,
      url: request.url,
      type: type || null,
      request_headers: request.headers,
      ...describeBody(bodyOf(request)),
      status: null,
      content_type: null,
      response_headers: null,
      response_body: null,
      failure: null,
      done: false,
    });
    // A beacon's Blob body is not in the event; the protocol hands it over on request.
    if (request.hasPostData && !(request.postDataEntries || []).length && request.postData === undefined) {
      cdp
        .send("Network.getRequestPostData", { requestId })
        .then(({ postData, base64Encoded }) => {
          const entry = requests.get(requestId);
          if (entry) Object.assign(entry, describeBody(Buffer.from(postData, base64Encoded ? "base64" : "utf8")));
        })
        .catch(() => {});
    }
  });
  cdp.on("Network.responseReceived", ({ requestId, response }) => {
    const entry = requests.get(requestId);
    if (!entry) return;
    entry.status = response.status;
    entry.content_type = response.mimeType;
    entry.response_headers = response.headers;
  });
  // A response the CORS check hides from the page still has its status and headers here.
  cdp.on("Network.responseReceivedExtraInfo", ({ requestId, statusCode, headers }) => {
    const entry = requests.get(requestId);
    if (!entry || entry.status !== null) return;
    entry.status = statusCode;
    entry.response_headers = headers;
  });
  cdp.on("Network.loadingFinished", async ({ requestId }) => {
    const entry = requests.get(requestId);
    if (!entry) return;
    if (entry.status >= 300) {
      entry.response_body = await cdp
        .send("Network.getResponseBody", { requestId })
        .then(({ body }) => body.slice(0, 300))
        .catch(() => null);
    }
    entry.done = true;
  });
  cdp.on("Network.loadingFailed", ({ requestId, errorText, corsErrorStatus, blockedReason }) => {
    const entry = requests.get(requestId);
    if (!entry) return;
    entry.done = true;
    entry.failure = [errorText, corsErrorStatus && corsErrorStatus.corsError, blockedReason].filter(Boolean).join(" ");
  });

  return {
    requests: () => [...requests.values()],
    consoleErrors,
    // Until every request has its answer (or failed), at most `timeout` ms.
    async settle(timeout = 15000) {
      const deadline = Date.now() + timeout;
      while (Date.now() < deadline && [...requests.values()].some((entry) => !entry.done)) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async until(predicate, timeout = 15000) {
      const deadline = Date.now() + timeout;
      while (Date.now() < deadline) {
        if (predicate([...requests.values()])) return true;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return false;
    },
  };
}
