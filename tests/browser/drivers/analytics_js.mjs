// analytics.js (@segment/analytics-next) on a page of another origin: track, identify and page,
// each awaited until analytics.js has delivered it to bklog's Segment paths.
//
// Input: {"url"}; output: the ids it used, what analytics.js said of each delivery, every
// request with its answer, and the console errors.
import { launch, record } from "./chromium.mjs";
import { main } from "./scenario.mjs";

main(async ({ url }) => {
  const { browser, close } = await launch();
  try {
    const page = await browser.newPage();
    const recorder = await record(page);
    await page.goto(url, { waitUntil: "load" });
    const result = await page.evaluate(async () => {
      const [analytics] = await window.analytics;
      const delivered = (ctx) => ({ type: ctx.event.type, failed: ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null });
      const anonymousId = analytics.user().anonymousId();
      const track = await analytics.track("Signed Up", { plan: "pro" });
      const userId = `${anonymousId}-user`;
      const identify = await analytics.identify(userId, { email: `${userId}@example.com` });
      const pageCall = await analytics.page("Docs", "Getting started");
      return { anonymous_id: anonymousId, user_id: userId, deliveries: [track, identify, pageCall].map(delivered) };
    });
    await recorder.settle();
    return { ...result, requests: recorder.requests(), console_errors: recorder.consoleErrors };
  } finally {
    await close();
  }
});
