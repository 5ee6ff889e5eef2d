// posthog-js on a page of another origin, as a visitor uses it: the page view on load, a custom
// event, a click on a <button> (autocapture), a reload of its feature flags, identify, and one
// last event sent as the page is left (posthog-js flushes its queue with sendBeacon then).
//
// Input: {"pages": [{"url", "bundle"}]}; output per page: the distinct ids it used, every
// request it made with its answer, and its console errors.
import { launch, record } from "./chromium.mjs";
import { main } from "./scenario.mjs";

const CAPTURE_PATH = /^\/(e|i\/v0\/e|capture|track|batch|engage)\/?$/;

function isCapture(request) {
  return request.method === "POST" && CAPTURE_PATH.test(new URL(request.url).pathname);
}

async function visit(browser, { url, bundle }) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const recorder = await record(page);
  await page.goto(url, { waitUntil: "load" });
  // The page view goes out with the first flush of the request queue.
  const pageviewSent = await recorder.until((requests) => requests.some((r) => isCapture(r) && r.done));
  const anonymousId = await page.evaluate(() => window.posthog.get_distinct_id());
  const userId = `${anonymousId}-user`;
  await page.evaluate(() => window.posthog.capture("bklog_custom", { plan: "pro", seats: 3 }));
  await page.click("#buy");
  await page.evaluate(() => window.posthog.reloadFeatureFlags());
  const flagsAsked = await recorder.until((requests) =>
    requests.some((r) => new URL(r.url).pathname.startsWith("/flags") && r.done),
  );
  await page.evaluate((id) => window.posthog.identify(id, { email: `${id}@example.com` }), userId);
  await page.evaluate(() => window.posthog.capture("bklog_left_page"));
  const identifiedId = await page.evaluate(() => window.posthog.get_distinct_id());
  // The page is leaving: posthog-js sends what it still holds with sendBeacon. The event is the
  // browser's own on navigation; dispatched here, the page stays open so its beacon is seen.
  await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pagehide", { persisted: false })));
  const beaconSent = await recorder.until((requests) => requests.some((r) => r.type === "Ping" && isCapture(r)), 5000);
  await recorder.settle();
  await context.close();
  return {
    bundle,
    pageview_sent: pageviewSent,
    flags_asked: flagsAsked,
    beacon_sent: beaconSent,
    anonymous_id: anonymousId,
    user_id: userId,
    identified_id: identifiedId,
    requests: recorder.requests(),
    console_errors: recorder.consoleErrors,
  };
}

main(async ({ pages }) => {
  const { browser, close } = await launch();
  try {
    const visits = [];
    for (const page of pages) visits.push(await visit(browser, page));
    return { visits };
  } finally {
    await close();
  }
});
