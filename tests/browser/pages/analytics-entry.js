// analytics.js as a page loads it: @segment/analytics-next from npm, bundled into one script
// (build/analytics.js, `npm run build`) that puts AnalyticsBrowser on window.
import { AnalyticsBrowser } from "@segment/analytics-next";

window.AnalyticsBrowser = AnalyticsBrowser;
